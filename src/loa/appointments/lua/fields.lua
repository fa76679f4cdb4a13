-- Keep registrants' other columns, for the messages (the newest file's win).
-- KEYS[1]  the drive's key prefix `{ns}:{appt:DRIVE}` (see common.lua for the keys under it)
-- ARGV[1]  one person a line: `phone<TAB>their columns as a JSON object`; one argument, as
--          a field and a value per person cost the client more to send than the server to store
-- Returns the number of people stored.
local pairs_, stored = {}, 0
local STEP = 2000 -- values unpacked into one command (Lua's stack is bounded)
for phone, values in string.gmatch(ARGV[1], '([^\t\n]+)\t([^\n]*)') do
  pairs_[#pairs_ + 1] = phone
  pairs_[#pairs_ + 1] = values
  stored = stored + 1
  if #pairs_ >= STEP then
    redis.call('HSET', P .. ':fields', unpack(pairs_))
    pairs_ = {}
  end
end
if #pairs_ > 0 then
  redis.call('HSET', P .. ':fields', unpack(pairs_))
end
return stored
