-- Reserve one flash-sale unit for one buyer, atomically (docs/design.md §5 step 3).
-- Every key carries the event's hash tag, so the script touches one Redis Cluster slot.
--
-- KEYS[1]  ev:{id}:stock   remaining units (integer)
-- KEYS[2]  ev:{id}:meta    hash: start_ms, end_ms
-- KEYS[3]  ev:{id}:buyers  set of user ids holding a reservation or an order
-- KEYS[4]  ev:{id}:resv    hash: user id -> "<ticket>:<reserved_at_ms>"
-- KEYS[5]  ev:{id}:admission  the event's admission token bucket (bucket.lua, loaded in front)
-- KEYS[6]  ev:{id}:idem:<uid>:<key>  (optional) the buyer's Idempotency-Key
-- ARGV[1]  user id
-- ARGV[2]  ticket (unique per attempt)
-- ARGV[3]  admission bucket capacity (burst)
-- ARGV[4]  admission bucket refill rate per second
-- Returns  {code, now_ms, text}: 0 reserved, 1 not warm (keys missing: fail closed),
--          2 not started, 3 ended, 4 duplicate buyer, 5 sold out, 6 replay of the key's
--          confirmed ticket, 7 the key's first request is still being published (text: the
--          ticket), 8 refused by the admission bucket (text: retry after, in ms).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- Every request that reaches Redis pays its admission token, in the same round trip.
local admitted, retry_after_ms = take_tokens(KEYS[5], tonumber(ARGV[3]), tonumber(ARGV[4]), 1, now)
if admitted == 0 then
  return {8, now, tostring(retry_after_ms)}
end

if KEYS[6] then
  local earlier = redis.call('GET', KEYS[6])
  if earlier then
    if string.sub(earlier, 1, 8) == 'pending:' then
      return {7, now, string.sub(earlier, 9)}
    end
    return {6, now, earlier}
  end
end

local window = redis.call('HMGET', KEYS[2], 'start_ms', 'end_ms')
local start_ms = tonumber(window[1])
local end_ms = tonumber(window[2])
local stock = tonumber(redis.call('GET', KEYS[1]))
if start_ms == nil or end_ms == nil or stock == nil then
  return {1, now, ''}
end
if now < start_ms then
  return {2, now, ''}
end
if now >= end_ms then
  return {3, now, ''}
end
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  return {4, now, ''}
end
if stock <= 0 then
  return {5, now, ''}
end
redis.call('DECR', KEYS[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2] .. ':' .. now)
-- The reservations and the key live as long as the event's stock key.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 and redis.call('PTTL', KEYS[4]) < 0 then
  redis.call('PEXPIRE', KEYS[4], ttl)
end
if KEYS[6] then
  -- Pending until the publish is confirmed.
  redis.call('SET', KEYS[6], 'pending:' .. ARGV[2])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[6], ttl)
  end
end
return {0, now, ARGV[2]}
