-- Give back units a re-warm held back, once the reconciler has proved them free. Only if nothing
-- moved since the reconciler read the ledger: the stock is still what it read and no reservation
-- is pending (a buy in between would change both), so the units cannot be counted twice.
--
-- KEYS[1]  ev:{id}:stock
-- KEYS[2]  ev:{id}:resv
-- ARGV[1]  the stock the reconciler read
-- ARGV[2]  units to give back
-- ARGV[3]  pub/sub channel announcing returned stock
-- ARGV[4]  event id (the message)
-- Returns  1 when the units went back, 0 when something moved (try again next pass).
local stock = redis.call('GET', KEYS[1])
if stock == false or tonumber(stock) ~= tonumber(ARGV[1]) or redis.call('HLEN', KEYS[2]) ~= 0 then
  return 0
end
redis.call('INCRBY', KEYS[1], tonumber(ARGV[2]))
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
