-- Remember whom a campaign reached today (the provider accepted), for other campaigns'
-- frequency caps. One call per chunk with the recipients joined in one argument: a field-value
-- pair per recipient made the client spend more time encoding the command than the server did.
-- KEYS[1]  the day's hash (person -> `campaign@epoch`)
-- ARGV[1]  the value to store for each recipient
-- ARGV[2]  the recipients, joined by ','
-- ARGV[3]  seconds the hash is kept after this call
-- Returns the number of recipients stored.
local key, value = KEYS[1], ARGV[1]
local fields, count = {}, 0
local STEP = 2000 -- values unpacked into one command (Lua's stack is bounded)
for recipient in string.gmatch(ARGV[2], '[^,]+') do
  fields[#fields + 1] = recipient
  fields[#fields + 1] = value
  count = count + 1
  if #fields >= STEP then
    redis.call('HSET', key, unpack(fields))
    fields = {}
  end
end
if #fields > 0 then
  redis.call('HSET', key, unpack(fields))
end
redis.call('EXPIRE', key, ARGV[3])
return count
