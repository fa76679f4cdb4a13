-- Store one reply to a campaign's question, exactly once: an answer, or an unparsed reply.
-- KEYS[1]  the campaign's follow-up prefix `{ns}:{fu:CAMPAIGN}`; every key used is it and:
--   :cursor     the last inbound stream id applied to this campaign
--   :answers    hash phone -> the person's answer as JSON (code, label, text, at, region, ...)
--   :counts     hash: `answered` (people), `unparsed`, and per answer code C:
--               `option:C`, `region:R:C` (R the person's region), `day:YYYY-MM-DD:C`
--   :unparsed   list of the replies that matched no option, as JSON, the newest 10,000
-- ARGV[1]  the inbound stream id, ARGV[2] the phone, ARGV[3] the answer's code ('' unparsed),
-- ARGV[4]  the region ('' unknown), ARGV[5] the day (YYYY-MM-DD), ARGV[6] the reply as JSON
-- A person's later answer replaces their earlier one (its counts move with it).
-- Returns {'seen', ''} for a stream id applied before, {'unparsed', ''}, or
-- {'answered', the earlier answer's JSON or ''}.
local P = KEYS[1]
local id, phone, code, region, day, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local KEEP = 10000

local function after(one, than)
  local ms, seq = string.match(one, '^(%d+)-(%d+)$')
  local than_ms, than_seq = string.match(than, '^(%d+)-(%d+)$')
  ms, seq, than_ms, than_seq = tonumber(ms), tonumber(seq), tonumber(than_ms), tonumber(than_seq)
  return ms > than_ms or (ms == than_ms and seq > than_seq)
end

local function count(c, r, d, by)
  redis.call('HINCRBY', P .. ':counts', 'option:' .. c, by)
  redis.call('HINCRBY', P .. ':counts', 'region:' .. r .. ':' .. c, by)
  redis.call('HINCRBY', P .. ':counts', 'day:' .. d .. ':' .. c, by)
end

local cursor = redis.call('GET', P .. ':cursor')
if cursor and not after(id, cursor) then
  return {'seen', ''}
end
redis.call('SET', P .. ':cursor', id)

if code == '' then
  redis.call('RPUSH', P .. ':unparsed', entry)
  redis.call('LTRIM', P .. ':unparsed', -KEEP, -1)
  redis.call('HINCRBY', P .. ':counts', 'unparsed', 1)
  return {'unparsed', ''}
end

local earlier = redis.call('HGET', P .. ':answers', phone)
if earlier then
  local was = cjson.decode(earlier)
  count(was['code'], was['region'], was['day'], -1)
else
  redis.call('HINCRBY', P .. ':counts', 'answered', 1)
end
redis.call('HSET', P .. ':answers', phone, entry)
count(code, region, day, 1)
return {'answered', earlier or ''}
