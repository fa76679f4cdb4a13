-- Store a reply in the inbound stream once per provider message id.
-- KEYS[1]: the inbound stream
-- KEYS[2]: the reply's seen key (same hash slot as the stream: it carries the stream's name as
--          its hash tag), or absent when the provider gives replies no id
-- ARGV[1]: seconds to remember the id; ARGV[2]: the stream's approximate maximum length
-- ARGV[3..]: the entry's field, value pairs
-- Returns 1 when stored, 0 when the id was seen before (nothing is written).
if KEYS[2] then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
    return 0
  end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
