-- What reserving one unit means, shared by reserve.lua (a buyer admitted at once) and
-- admit_waiting.lua (a buyer admitted from the waiting line), each loaded with this file in
-- front of it: both go through exactly the same checks and writes.

-- The sale's state now: 0 open (and the stock), 1 not warm (keys missing: fail closed),
-- 2 not started, 3 ended.
local function sale_state(stock_key, meta_key, now)
  local window = redis.call('HMGET', meta_key, 'start_ms', 'end_ms')
  local start_ms = tonumber(window[1])
  local end_ms = tonumber(window[2])
  local stock = tonumber(redis.call('GET', stock_key))
  if start_ms == nil or end_ms == nil or stock == nil then
    return 1, 0
  end
  if now < start_ms then
    return 2, stock
  end
  if now >= end_ms then
    return 3, stock
  end
  return 0, stock
end

-- Takes one unit for `user` under `ticket` (the caller checked the stock and that the user is
-- not a buyer yet). The reservations live as long as the event's stock key; returns that TTL.
local function reserve_unit(stock_key, buyers_key, resv_key, user, ticket, now)
  redis.call('DECR', stock_key)
  redis.call('SADD', buyers_key, user)
  redis.call('HSET', resv_key, user, ticket .. ':' .. now)
  local ttl = redis.call('PTTL', stock_key)
  if ttl > 0 and redis.call('PTTL', resv_key) < 0 then
    redis.call('PEXPIRE', resv_key, ttl)
  end
  return ttl
end

