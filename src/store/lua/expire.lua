
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])) do
  local h = redis.call('HGETALL', ARGV[1] .. id)
  if #h > 0 then
    local user = redis.call('HGET', ARGV[1] .. id, 'user')
    redis.call('DEL', ARGV[1] .. id)
    redis.call('ZREM', ARGV[2] .. 'u:' .. user, id)
    table.insert(out, {id, h})
  end
  redis.call('ZREM', KEYS[1], id)
end
return out
