-- Warm an event's keys. Mode "keep" is idempotent: an existing stock key is left alone (it already
-- counts the reservations made since), so warming twice never raises the stock. Mode "reset"
-- replaces everything: only for an event that has not started (no reservation can exist yet).
--
-- KEYS[1]  ev:{id}:stock
-- KEYS[2]  ev:{id}:meta
-- KEYS[3]  ev:{id}:buyers
-- KEYS[4]  ev:{id}:resv
-- ARGV[1]  free units according to MySQL
-- ARGV[2]  start_ms
-- ARGV[3]  end_ms
-- ARGV[4]  expire_at_ms (end of the event plus a margin)
-- ARGV[5]  "keep" or "reset"
-- ARGV[6…] user ids that already hold an order in MySQL
-- Returns  1 when the stock was set now, 0 when it was already warm.
local fresh
if ARGV[5] == 'reset' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  fresh = redis.call('SET', KEYS[1], ARGV[1])
else
  fresh = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
redis.call('HSET', KEYS[2], 'start_ms', ARGV[2], 'end_ms', ARGV[3])
for i = 6, #ARGV do
  redis.call('SADD', KEYS[3], ARGV[i])
end
for i = 1, 3 do
  redis.call('PEXPIREAT', KEYS[i], ARGV[4])
end
if fresh then
  return 1
end
return 0
