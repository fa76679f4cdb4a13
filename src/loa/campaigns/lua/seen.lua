-- Deduplicate recipients of one campaign, replay-safe: a recipient belongs to the first audience
-- line that named them. Planning the same line again after a crash is not a duplicate.
-- One call per group of rows, with two joined arguments rather than two per recipient: parsing
-- thousands of arguments cost the server more than the checks themselves.
-- KEYS[1]  the campaign's seen hash (recipient -> line)
-- ARGV[1]  the recipients, joined by ','
-- ARGV[2]  their lines, joined by ',', in the same order
-- Returns a string of one character per recipient: '1' to plan it, '0' for a duplicate of an
-- earlier line (in an earlier call, or earlier in this one).
local key = KEYS[1]
local recipients, lines = {}, {}
for recipient in string.gmatch(ARGV[1], '[^,]+') do
  recipients[#recipients + 1] = recipient
end
for line in string.gmatch(ARGV[2], '[^,]+') do
  lines[#lines + 1] = line
end
if #recipients ~= #lines then
  return redis.error_reply('seen.lua: ' .. #recipients .. ' recipients but ' .. #lines .. ' lines')
end
local STEP = 1000 -- values unpacked into one command (Lua's stack is bounded)
local flags, fresh, claimed = {}, {}, {}
for first = 1, #recipients, STEP do
  local last = math.min(first + STEP - 1, #recipients)
  local known = redis.call('HMGET', key, unpack(recipients, first, last))
  for i = first, last do
    local recipient, line = recipients[i], lines[i]
    local owner = known[i - first + 1] or claimed[recipient]
    if not owner then
      claimed[recipient] = line
      fresh[#fresh + 1] = recipient
      fresh[#fresh + 1] = line
      flags[i] = '1'
    elseif owner == line then
      flags[i] = '1'
    else
      flags[i] = '0'
    end
  end
end
for first = 1, #fresh, 2 * STEP do
  redis.call('HSET', key, unpack(fresh, first, math.min(first + 2 * STEP - 1, #fresh)))
end
return table.concat(flags)
