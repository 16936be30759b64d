
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[4] .. id, 'device', 'room')
  if f[1] == ARGV[1] and f[2] == ARGV[2] then
    redis.call('HSET', ARGV[4] .. id, 'seen', ARGV[3])
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    redis.call('ZADD', KEYS[2], ARGV[3], id)
  end
end
return 1
