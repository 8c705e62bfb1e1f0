-- Where one buyer stands in an event, read at one instant (a buyer moves from the line to a
-- reservation to a result; reading the keys one by one could miss them in between).
--
-- KEYS[1]  ev:{id}:result:<uid>
-- KEYS[2]  ev:{id}:resv
-- KEYS[3]  ev:{id}:line
-- KEYS[4]  ev:{id}:line:tickets
-- ARGV[1]  user id
-- Returns  {kind, text, position}: 'result' (text: the outcome), 'reserved' (text: the ticket),
--          'waiting' (text: the ticket; position: 1 = next) or 'none'.
local result = redis.call('GET', KEYS[1])
if result then
  return {'result', result, 0}
end
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  local ticket = string.match(held, '^(.*):[^:]*$') or held
  return {'reserved', ticket, 0}
end
local ticket = redis.call('HGET', KEYS[4], ARGV[1])
if ticket then
  local rank = redis.call('ZRANK', KEYS[3], ARGV[1])
  if rank then
    return {'waiting', ticket, rank + 1}
  end
end
return {'none', '', 0}
