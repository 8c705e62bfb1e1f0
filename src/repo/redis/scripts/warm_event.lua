-- Warm an event's keys, idempotently: an existing stock key is left alone (it already counts the
-- reservations made since), so warming twice never raises the stock.
--
-- KEYS[1]  ev:{id}:stock
-- KEYS[2]  ev:{id}:meta
-- KEYS[3]  ev:{id}:buyers
-- ARGV[1]  free units according to MySQL
-- ARGV[2]  start_ms
-- ARGV[3]  end_ms
-- ARGV[4]  expire_at_ms (end of the event plus a margin)
-- ARGV[5…] user ids that already hold an order in MySQL
-- Returns  1 when the stock was set now, 0 when it was already warm.
local fresh = redis.call('SET', KEYS[1], ARGV[1], 'NX')
redis.call('HSET', KEYS[2], 'start_ms', ARGV[2], 'end_ms', ARGV[3])
for i = 5, #ARGV do
  redis.call('SADD', KEYS[3], ARGV[i])
end
for i = 1, 3 do
  redis.call('PEXPIREAT', KEYS[i], ARGV[4])
end
if fresh then
  return 1
end
return 0
