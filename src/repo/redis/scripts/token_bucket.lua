-- Takes `cost` tokens from one bucket, atomically (bucket.lua, loaded in front, does the work).
--
-- KEYS[1]  bucket hash
-- ARGV[1]  capacity (burst size, integer > 0)
-- ARGV[2]  refill rate in tokens per second (float > 0)
-- ARGV[3]  cost of this request (integer); 0 only asks whether one token is there, -1 gives one back
-- Returns  {1, 0} when allowed; {0, retry_after_ms} when refused (nothing is taken then).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local allowed, retry_after_ms =
  take_tokens(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), now)
return {allowed, retry_after_ms}
