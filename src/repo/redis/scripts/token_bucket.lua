-- Token bucket, atomically: refill by elapsed time, then take `cost` tokens if there are enough.
-- Time comes from the Redis server (TIME), so every API replica shares one clock.
--
-- KEYS[1]  bucket hash: tokens (float), ts (unix ms of the last refill)
-- ARGV[1]  capacity (burst size, integer > 0)
-- ARGV[2]  refill rate in tokens per second (float > 0)
-- ARGV[3]  cost of this request (integer >= 0); 0 only asks whether one token is there
-- Returns  {1, 0} when allowed; {0, retry_after_ms} when refused (nothing is taken then).
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
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
if tokens >= needed then
  tokens = tokens - cost
  allowed = 1
else
  retry_after_ms = math.ceil((needed - tokens) * 1000 / rate)
end

redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
-- A full bucket needs no state: let the key expire once it would have refilled completely.
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, retry_after_ms}
