-- Meet a sent message and its receipt, whichever arrives first; keep each receipt once.
-- KEYS[1]: the receipt key of one provider id on one route. Its value is one of
--   s:<campaign|message|part>  the provider accepted the message; no receipt yet
--   r:<1|0>|<state>             a receipt came first; no message yet
--   m:<campaign|message|part>  a receipt met the message; the caller is counting it
--   d                           counted: a repeat of the receipt is a duplicate
-- ARGV[1]: "sent" (ARGV[2] = campaign|message|part) or "receipt" (ARGV[2] = 1 or 0|state)
-- ARGV[3]: seconds to keep a half that waits for the other
-- ARGV[4]: seconds to remember a met receipt, so that a repeat is known as one
-- Returns the other half when both are here, 0 for a repeated receipt, else false.
-- The receipt's caller counts what it met, then sets "d" (SET ... XX) in the same round trip
-- as the count: if it dies before, the provider sends the receipt again and "m" is counted.
local current = redis.call('GET', KEYS[1])
local kind = current and string.sub(current, 1, 1)
if ARGV[1] == 'sent' then
  if kind == 'r' then
    redis.call('SET', KEYS[1], 'd', 'EX', ARGV[4])
    return string.sub(current, 3)
  end
  redis.call('SET', KEYS[1], 's:' .. ARGV[2], 'EX', ARGV[3])
  return false
end
if kind == 'r' or kind == 'd' then
  return 0
end
if kind == 's' or kind == 'm' then
  local sent = string.sub(current, 3)
  redis.call('SET', KEYS[1], 'm:' .. sent, 'EX', ARGV[3])
  return sent
end
redis.call('SET', KEYS[1], 'r:' .. ARGV[2], 'EX', ARGV[3])
return false
