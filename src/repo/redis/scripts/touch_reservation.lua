-- Move a reservation's timestamp to now (the reconciler republished it), unless it changed or was
-- settled meanwhile.
--
-- KEYS[1]  ev:{id}:resv
-- ARGV[1]  user id
-- ARGV[2]  the entry as read ("<ticket>:<reserved_at_ms>")
-- ARGV[3]  the new entry ("<ticket>:<now_ms>")
-- Returns  1 when moved, 0 when the entry was no longer the one read.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
