-- Admit buyers from the head of an event's waiting line at the event's admission rate, or close
-- the line when the event has sold out or ended (docs/flash-sale.md, "The waiting line"). Atomic,
-- so any number of workers may call it at once: each buyer is popped once, by one of them, and
-- the line is never skipped over. bucket.lua and reservation.lua are loaded in front of it; an
-- admitted buyer gets exactly the reservation reserve.lua gives a buyer admitted at once.
--
-- KEYS[1]  ev:{id}:stock
-- KEYS[2]  ev:{id}:meta
-- KEYS[3]  ev:{id}:buyers
-- KEYS[4]  ev:{id}:resv
-- KEYS[5]  ev:{id}:admission
-- KEYS[6]  ev:{id}:line
-- KEYS[7]  ev:{id}:line:tickets
-- ARGV[1]  admission bucket capacity
-- ARGV[2]  admission bucket refill rate per second
-- ARGV[3]  buyers admitted (or, closing, failed) by this call, at most
-- ARGV[4]  the prefix of a buyer's result key (ev:{id}:result:), the user id follows
-- ARGV[5]  how long a result is kept, in seconds
-- ARGV[6]  the event's pub/sub channel of buyer changes
-- Returns  {code, now_ms, still_waiting, closed_reason, closed, user, ticket, user, ticket, ...}:
--          code 0 done (the users and tickets admitted by this call follow; closed_reason is
--          '' or why the line was closed, closed how many buyers it failed), 1 not warm.
-- Announces on the channel the users whose standing changed and, when the line moved, the user
-- now at the front.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local waiting = redis.call('ZCARD', KEYS[6])
if waiting == 0 then
  return {0, now, 0, '', 0}
end
local state, stock = sale_state(KEYS[1], KEYS[2], now)
if state == 1 then
  return {1, now, waiting, '', 0}
end
if state == 2 then
  return {0, now, waiting, '', 0}
end
local most = tonumber(ARGV[3])
local reply = {0, now, 0, '', 0}
local changed = {}

if state == 0 and stock > 0 then
  local wanted = math.min(waiting, stock, most)
  local taken = take_up_to(KEYS[5], tonumber(ARGV[1]), tonumber(ARGV[2]), wanted, now)
  if taken > 0 then
    local heads = redis.call('ZPOPMIN', KEYS[6], taken)
    for i = 1, #heads, 2 do
      local user = heads[i]
      local ticket = redis.call('HGET', KEYS[7], user)
      redis.call('HDEL', KEYS[7], user)
      -- A waiting buyer cannot have bought meanwhile (the line answers them first); the check
      -- keeps the one-unit-per-buyer invariant whatever happened to the keys.
      if ticket and redis.call('SISMEMBER', KEYS[3], user) == 0 then
        reserve_unit(KEYS[1], KEYS[3], KEYS[4], user, ticket, now)
        stock = stock - 1
        reply[#reply + 1] = user
        reply[#reply + 1] = ticket
      end
      changed[#changed + 1] = user
    end
  end
end

-- Sold out (or ended): everyone still waiting fails now, `most` of them per call.
local reason = ''
if state == 3 then
  reason = 'ended'
elseif stock <= 0 then
  reason = 'sold_out'
end
if reason ~= '' then
  local closing = redis.call('ZPOPMIN', KEYS[6], most)
  local outcome = 'failed:' .. reason
  for i = 1, #closing, 2 do
    local user = closing[i]
    redis.call('SET', ARGV[4] .. user, outcome, 'EX', tonumber(ARGV[5]))
    redis.call('HDEL', KEYS[7], user)
    changed[#changed + 1] = user
  end
  reply[4] = reason
  reply[5] = #closing / 2
end

waiting = redis.call('ZCARD', KEYS[6])
reply[3] = waiting
if waiting > 0 and #changed > 0 then
  -- The line moved: whoever is at the front now may be waiting to hear it.
  local front = redis.call('ZRANGE', KEYS[6], 0, 0)
  changed[#changed + 1] = front[1]
end
if #changed > 0 then
  redis.call('PUBLISH', ARGV[6], table.concat(changed, ' '))
end
return reply
