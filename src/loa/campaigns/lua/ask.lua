-- Open a campaign's question for the people it reached today (the provider accepted), so
-- their replies within the window are matched to it (loa.followups). One call per chunk.
-- KEYS[1]  the day's hash of questions asked: person -> `campaign|at_ms|closes_ms|message|region`
-- ARGV[1]  `campaign|at_ms|closes_ms`, the same for every recipient of the call
-- ARGV[2]  the recipients, each `person|message|region`, joined by ','
-- ARGV[3]  seconds the hash must be kept at least (never shortened: windows differ)
-- A person asked again (another campaign, or a fallback channel) has the newest question open.
-- Returns the number of recipients stored.
local key, head = KEYS[1], ARGV[1]
local fields, count = {}, 0
local STEP = 2000 -- values unpacked into one command (Lua's stack is bounded)
for recipient in string.gmatch(ARGV[2], '[^,]+') do
  local person, rest = string.match(recipient, '^([^|]+)|(.*)$')
  fields[#fields + 1] = person
  fields[#fields + 1] = head .. '|' .. rest
  count = count + 1
  if #fields >= STEP then
    redis.call('HSET', key, unpack(fields))
    fields = {}
  end
end
if #fields > 0 then
  redis.call('HSET', key, unpack(fields))
end
if redis.call('TTL', key) < tonumber(ARGV[3]) then
  redis.call('EXPIRE', key, ARGV[3])
end
return count
