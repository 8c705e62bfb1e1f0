-- Give units back to a warm event (their orders closed unpaid or were cancelled) and announce it so
-- every API replica clears its local sold-out flag. A cold event is left alone: warming reads
-- MySQL, which already counts the unit. The buyer keeps their mark: one chance per event.
--
-- KEYS[1]  ev:{id}:stock
-- ARGV[1]  pub/sub channel announcing returned stock
-- ARGV[2]  event id (the message)
-- ARGV[3]  how many units
-- Returns  1 when the units went back, 0 when the event is not warm.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('INCRBY', KEYS[1], tonumber(ARGV[3]))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
