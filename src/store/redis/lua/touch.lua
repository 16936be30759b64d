
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'seen', ARGV[1], 'buf', ARGV[3])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'pos', ARGV[2]) end
local user = redis.call('HGET', KEYS[1], 'user')
redis.call('ZADD', ARGV[4] .. 'u:' .. user, ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
return 1
