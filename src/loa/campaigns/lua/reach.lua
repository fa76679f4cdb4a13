-- Remember whom a campaign reached in one chunk (see loa.campaigns.reached), with the day's
-- list kept its full memory: the entry and the expiry in one step, so no list is ever left
-- without one (a worker killed between two commands would leave numbers kept for good).
-- KEYS[1]  the day's list
-- ARGV[1]  the entry (msgpack: campaign, epoch seconds, packed numbers)
-- ARGV[2]  seconds the list is kept after this entry
-- Returns the list's length.
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return length
