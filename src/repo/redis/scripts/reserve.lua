-- Reserve one flash-sale unit for one buyer, atomically (docs/design.md §5 step 3), or give the
-- buyer a place in the event's waiting line (docs/flash-sale.md, "The waiting line"). Every key
-- carries the event's hash tag, so the script touches one Redis Cluster slot. bucket.lua and
-- reservation.lua are loaded in front of it.
--
-- KEYS[1]  ev:{id}:stock      remaining units (integer)
-- KEYS[2]  ev:{id}:meta       hash: start_ms, end_ms
-- KEYS[3]  ev:{id}:buyers     set of user ids holding a reservation or an order
-- KEYS[4]  ev:{id}:resv       hash: user id -> "<ticket>:<reserved_at_ms>"
-- KEYS[5]  ev:{id}:admission  the event's admission token bucket
-- KEYS[6]  ev:{id}:line       sorted set: waiting user id, scored by arrival (1, 2, 3, ...)
-- KEYS[7]  ev:{id}:line:tickets  hash: waiting user id -> ticket
-- KEYS[8]  ev:{id}:line:seq   the last arrival number given out
-- KEYS[9]  ev:{id}:idem:<uid>:<key>  (optional) the buyer's Idempotency-Key
-- ARGV[1]  user id
-- ARGV[2]  ticket (unique per attempt)
-- ARGV[3]  admission bucket capacity (burst)
-- ARGV[4]  admission bucket refill rate per second
-- ARGV[5]  the longest the waiting line may grow; 0: no line (an empty bucket refuses)
-- ARGV[6]  ms after which a pending Idempotency-Key is replayed: the request that set it is over
--          (the longest a request runs), so its reservation was neither undone nor confirmed
--          (the confirmation failed, or the process died): it stands, and becomes an order
-- Returns  {code, now_ms, text, position}: 0 reserved, 1 not warm (keys missing: fail closed),
--          2 not started, 3 ended, 4 duplicate buyer, 5 sold out, 6 replay of the key's
--          confirmed ticket, 7 the key's first request is still being published (text: the
--          ticket), 8 refused by the admission bucket or a full line (text: retry after, in
--          ms), 9 waiting in line (text: the ticket; position: 1 = next).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local user = ARGV[1]
local line_max = tonumber(ARGV[5])

-- A buyer already in line keeps their ticket and learns where they stand.
if line_max > 0 then
  local waiting = redis.call('HGET', KEYS[7], user)
  if waiting then
    local rank = redis.call('ZRANK', KEYS[6], user)
    if rank then
      return {9, now, waiting, rank + 1}
    end
    redis.call('HDEL', KEYS[7], user)
  end
end

if KEYS[9] then
  local earlier = redis.call('GET', KEYS[9])
  if earlier then
    -- 'pending:<ticket>:<ms>' until the publish is confirmed.
    local ticket, since = string.match(earlier, '^pending:([^:]*):?(%d*)$')
    if ticket then
      if now - (tonumber(since) or 0) < tonumber(ARGV[6]) then
        return {7, now, ticket, 0}
      end
      return {6, now, ticket, 0}
    end
    return {6, now, earlier, 0}
  end
end

local state, stock = sale_state(KEYS[1], KEYS[2], now)
if state ~= 0 then
  return {state, now, '', 0}
end
if redis.call('SISMEMBER', KEYS[3], user) == 1 then
  return {4, now, '', 0}
end
if stock <= 0 then
  return {5, now, '', 0}
end

-- Admission. While anyone waits, the bucket's tokens belong to the head of the line: a new
-- arrival joins behind them even if a token has just come back.
local capacity = tonumber(ARGV[3])
local rate = tonumber(ARGV[4])
local waiting = 0
if line_max > 0 then
  waiting = redis.call('ZCARD', KEYS[6])
end
if waiting == 0 then
  local admitted, retry_after_ms = take_tokens(KEYS[5], capacity, rate, 1, now)
  if admitted == 1 then
    local ttl = reserve_unit(KEYS[1], KEYS[3], KEYS[4], user, ARGV[2], now)
    if KEYS[9] then
      -- Pending until the publish is confirmed.
      redis.call('SET', KEYS[9], 'pending:' .. ARGV[2] .. ':' .. now)
      if ttl > 0 then
        redis.call('PEXPIRE', KEYS[9], ttl)
      end
    end
    return {0, now, ARGV[2], 0}
  end
  if line_max == 0 then
    return {8, now, tostring(retry_after_ms), 0}
  end
end
if waiting >= line_max then
  -- The line moves one place per token.
  return {8, now, tostring(math.ceil(1000 / rate)), 0}
end

-- Join the line. The ticket is the buyer's answer from now on: a retry with the key replays it
-- once the buyer has been admitted (the admission, not this request, publishes the order).
local arrival = redis.call('INCR', KEYS[8])
redis.call('ZADD', KEYS[6], arrival, user)
redis.call('HSET', KEYS[7], user, ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[6], ttl)
  redis.call('PEXPIRE', KEYS[7], ttl)
  redis.call('PEXPIRE', KEYS[8], ttl)
end
if KEYS[9] then
  redis.call('SET', KEYS[9], ARGV[2])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[9], ttl)
  end
end
return {9, now, ARGV[2], waiting + 1}
