
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local f = redis.call('HMGET', KEYS[1], 'expires', 'max', 'uses', 'revoked')
if f[4] == '1' or tonumber(ARGV[1]) >= tonumber(f[1]) or (f[2] and tonumber(f[3]) >= tonumber(f[2])) then
  return 1
end
redis.call('HINCRBY', KEYS[1], 'uses', 1)
return redis.call('HGETALL', KEYS[1])
