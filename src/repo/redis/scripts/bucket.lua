-- Token bucket, shared by token_bucket.lua and reserve.lua (each is loaded with this file in
-- front of it): refill by elapsed time, then take `cost` tokens if there are enough. Time comes
-- from the Redis server (TIME, read by the caller), so every API replica shares one clock.
--
-- key       bucket hash: tokens (float), ts (unix ms of the last refill)
-- capacity  burst size (integer > 0)
-- rate      refill rate in tokens per second (float > 0)
-- cost      tokens to take (integer); 0 only asks whether one token is there; a negative cost
--           gives tokens back (up to the capacity) and is always allowed
-- Returns   1, 0 when allowed; 0, retry_after_ms when refused (nothing is taken then).
local function take_tokens(key, capacity, rate, cost, now)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil or ts == nil then
    tokens = capacity
    ts = now
  end

  local elapsed = math.max(0, now - ts)
  tokens = math.min(capacity, tokens + elapsed * rate / 1000)

  local needed = math.max(cost, 1)
  local allowed = 0
  local retry_after_ms = 0
  if cost < 0 then
    tokens = math.min(capacity, tokens - cost)
    allowed = 1
  elseif tokens >= needed then
    tokens = tokens - cost
    allowed = 1
  else
    retry_after_ms = math.ceil((needed - tokens) * 1000 / rate)
  end

  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  -- A full bucket needs no state: let the key expire once it would have refilled completely.
  redis.call('PEXPIRE', key, math.ceil(capacity * 1000 / rate) + 1000)
  return allowed, retry_after_ms
end

