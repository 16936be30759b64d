-- Delete the sessions of user ARGV[3] on device ARGV[4].
local ids = {}
for _, id in ipairs(redis.call('ZRANGE', ARGV[2] .. 'u:' .. ARGV[3], 0, -1)) do
  if redis.call('HGET', ARGV[1] .. id, 'device') == ARGV[4] then
    table.insert(ids, id)
  end
end
return delete_sessions(ids)
