-- Token bucket, shared by token_bucket.lua, reserve.lua and admit_waiting.lua (each is loaded
-- with this file in front of it): refill by elapsed time, then take tokens if there are enough.
-- Time comes from the Redis server (TIME, read by the caller), so every API replica and worker
-- shares one clock.
--
-- key       bucket hash: tokens (float), ts (unix ms of the last refill)
-- capacity  burst size (integer > 0)
-- rate      refill rate in tokens per second (float > 0)

-- The bucket's tokens now, refilled by the time elapsed since it was last written.
local function refilled_tokens(key, capacity, rate, now)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil or ts == nil then
    return capacity
  end
  return math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
end

local function store_tokens(key, capacity, rate, tokens, now)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  -- A full bucket needs no state: let the key expire once it would have refilled completely.
  redis.call('PEXPIRE', key, math.ceil(capacity * 1000 / rate) + 1000)
end

-- Takes `cost` tokens if there are enough. `cost` 0 only asks whether one token is there; a
-- negative cost gives tokens back (up to the capacity) and is always allowed.
-- Returns 1, 0 when allowed; 0, retry_after_ms when refused (nothing is taken then).
local function take_tokens(key, capacity, rate, cost, now)
  local tokens = refilled_tokens(key, capacity, rate, now)
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
  store_tokens(key, capacity, rate, tokens, now)
  return allowed, retry_after_ms
end

-- Takes as many whole tokens as the bucket holds, `wanted` at most; returns how many it took.
local function take_up_to(key, capacity, rate, wanted, now)
  local tokens = refilled_tokens(key, capacity, rate, now)
  local taken = math.max(0, math.min(wanted, math.floor(tokens)))
  store_tokens(key, capacity, rate, tokens - taken, now)
  return taken
end

