-- Undo a reservation (docs/design.md §5 step 4: its message could not be published; or the worker gave
-- up on it): the unit goes back and the buyer may try again. Only the reservation holding this
-- ticket is undone, so a late undo never touches a newer attempt. Announces the returned unit so
-- every API replica clears its local sold-out flag.
--
-- KEYS[1]  ev:{id}:stock
-- KEYS[2]  ev:{id}:buyers
-- KEYS[3]  ev:{id}:resv
-- KEYS[4]  ev:{id}:idem:<uid>:<key>  (optional) forgotten, so a retry with the key starts afresh
-- ARGV[1]  user id
-- ARGV[2]  ticket
-- ARGV[3]  pub/sub channel announcing returned stock
-- ARGV[4]  event id (the message)
-- Returns  1 when undone, 0 when there was no such reservation.
local held = redis.call('HGET', KEYS[3], ARGV[1])
if not held or string.sub(held, 1, string.len(ARGV[2]) + 1) ~= ARGV[2] .. ':' then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if KEYS[4] then
  redis.call('DEL', KEYS[4])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
