-- Correct an event's Redis stock by the ledger's drift, once the reconciler has proved nothing is
-- in flight: up by units a re-warm held back, or down by units Redis counts that MySQL does not
-- have (writes a Redis failover lost: a reservation the old master acknowledged, never
-- replicated, whose order was made all the same). Only if nothing moved since the reconciler read
-- the ledger: the stock is still what it read and no reservation is pending (a buy in between
-- would change both), so no unit is counted twice.
--
-- KEYS[1]  ev:{id}:stock
-- KEYS[2]  ev:{id}:resv
-- ARGV[1]  the stock the reconciler read
-- ARGV[2]  units to add (negative: to take away; the stock never goes below 0)
-- ARGV[3]  pub/sub channel announcing returned stock
-- ARGV[4]  event id (the message)
-- Returns  1 when the stock was corrected, 0 when something moved (try again next pass).
local stock = redis.call('GET', KEYS[1])
if stock == false or tonumber(stock) ~= tonumber(ARGV[1]) or redis.call('HLEN', KEYS[2]) ~= 0 then
  return 0
end
local by = math.max(tonumber(ARGV[2]), -tonumber(stock))
redis.call('INCRBY', KEYS[1], by)
if by > 0 then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
