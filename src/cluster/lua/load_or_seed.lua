-- A room's timeline record, created from ARGV if missing.
-- KEYS[1] the record; ARGV[1] the seed's epoch, ARGV[2] its encoded change,
-- ARGV[3] the record's time to live in ms (refreshed either way).
local cur = redis.call('HGET', KEYS[1], 'data')
if not cur then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'data', ARGV[2])
  cur = ARGV[2]
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return cur
