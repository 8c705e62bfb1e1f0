-- Undo a reservation whose message could not be published (DESIGN.md §5 step 4): the unit goes
-- back and the buyer may try again. Only the reservation holding this ticket is undone, so a
-- late undo never touches a newer attempt.
--
-- KEYS[1]  ev:{id}:stock
-- KEYS[2]  ev:{id}:buyers
-- KEYS[3]  ev:{id}:resv
-- ARGV[1]  user id
-- ARGV[2]  ticket
-- Returns  1 when undone, 0 when there was no such reservation.
local held = redis.call('HGET', KEYS[3], ARGV[1])
if not held or string.sub(held, 1, string.len(ARGV[2]) + 1) ~= ARGV[2] .. ':' then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
