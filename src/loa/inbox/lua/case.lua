-- An operator's step on a case: assign it, record an answer sent, or close it.
-- KEYS[1]  the inbox's key prefix `{ns}:{inbox}` (see ingest.lua for the keys under it)
-- ARGV[1]  assign | answered | close
-- ARGV[2]  the case id, ARGV[3] now (ms), ARGV[4] the operator (the assignee, for assign)
-- ARGV[5]  for answered: the message sent, as JSON (for the log)
-- Returns {'ok', state before} or {'closed', 'closed'} for a closed case, {'unknown', ''}.
local P = KEYS[1]
local action, case, at, who, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = P .. ':case:' .. case
local state = redis.call('HGET', key, 'state')
if not state then
  return {'unknown', ''}
end
if state == 'closed' then
  return {'closed', state}
end
if action == 'assign' then
  redis.call('HSET', key, 'assignee', who)
  if state == 'open' then
    redis.call('HSET', key, 'state', 'assigned')
  end
elseif action == 'answered' then
  redis.call('HSET', key, 'state', 'answered', 'last', string.sub(cjson.decode(entry).text, 1, 160))
  if redis.call('HGET', key, 'assignee') == '' then
    redis.call('HSET', key, 'assignee', who)
  end
  redis.call('HINCRBY', key, 'messages', 1)
  redis.call('RPUSH', P .. ':log:' .. case, entry)
elseif action == 'close' then
  redis.call('HSET', key, 'state', 'closed')
  local phone = redis.call('HGET', key, 'phone')
  if redis.call('HGET', P .. ':open', phone) == case then
    redis.call('HDEL', P .. ':open', phone)
  end
  redis.call('ZREM', P .. ':active', case)
else
  return redis.error_reply('case.lua: unknown action ' .. action)
end
redis.call('HSET', key, 'updated_ms', at, 'by', who)
redis.call('ZADD', P .. ':cases', at, case)
if action ~= 'close' then
  redis.call('ZADD', P .. ':active', at, case)
end
return {'ok', state}
