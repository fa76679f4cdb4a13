-- Add one inbound message to its number's conversation, exactly once; a new one is a case.
-- KEYS[1]  the inbox's key prefix `{ns}:{inbox}`; every key used is it and a suffix:
--   :cursor   the last inbound stream id taken in
--   :seq      the last case number
--   :case:ID  hash: id, phone, channel, route, recipient, state (open, assigned, answered,
--             closed), assignee, urgent (0/1), opened_ms, updated_ms, messages, last (text)
--   :log:ID   list of the conversation's messages, oldest first, as JSON
--   :open     hash phone -> the case of that number that is not closed
--   :cases    sorted set of every case by its last change (ms)
--   :active   sorted set of the cases that are not closed, by their last change (ms)
-- ARGV[1]  the inbound stream id ('' for none: no cursor), ARGV[2] the phone (or sender id;
--          '' only moves the cursor on, past messages that join no conversation)
-- ARGV[3]  channel, ARGV[4] route, ARGV[5] recipient (short code), ARGV[6] the text
-- ARGV[7]  when it came (ms), ARGV[8] 1 if urgent, ARGV[9] the message as JSON (for the log)
-- A message on an answered case opens it again; an urgent one marks its case urgent.
-- Returns {case id, 1 if the case is new} or {'', 0} for a stream id taken in before.
local P = KEYS[1]
local id, phone, channel, route, recipient, text, at, urgent, entry =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]

local function after(one, than)
  local ms, seq = string.match(one, '^(%d+)-(%d+)$')
  local than_ms, than_seq = string.match(than, '^(%d+)-(%d+)$')
  ms, seq, than_ms, than_seq = tonumber(ms), tonumber(seq), tonumber(than_ms), tonumber(than_seq)
  return ms > than_ms or (ms == than_ms and seq > than_seq)
end

if id ~= '' then
  local cursor = redis.call('GET', P .. ':cursor')
  if cursor and not after(id, cursor) then
    return {'', 0}
  end
  redis.call('SET', P .. ':cursor', id)
end
if phone == '' then
  return {'', 0}
end

local case = redis.call('HGET', P .. ':open', phone)
local new = 0
if not case then
  case = tostring(redis.call('INCR', P .. ':seq'))
  new = 1
  redis.call('HSET', P .. ':open', phone, case)
  redis.call('HSET', P .. ':case:' .. case, 'id', case, 'phone', phone, 'channel', channel,
             'route', route, 'recipient', recipient, 'state', 'open', 'assignee', '',
             'urgent', '0', 'opened_ms', at, 'messages', 0)
end
local key = P .. ':case:' .. case
if redis.call('HGET', key, 'state') == 'answered' then
  redis.call('HSET', key, 'state', 'open')
end
if urgent == '1' then
  redis.call('HSET', key, 'urgent', '1')
end
-- a reply goes back the way the last message came
redis.call('HSET', key, 'updated_ms', at, 'last', string.sub(text, 1, 160), 'channel', channel,
           'route', route, 'recipient', recipient)
redis.call('HINCRBY', key, 'messages', 1)
redis.call('RPUSH', P .. ':log:' .. case, entry)
redis.call('ZADD', P .. ':cases', at, case)
redis.call('ZADD', P .. ':active', at, case)
return {case, new}
