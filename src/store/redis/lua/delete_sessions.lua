-- Shared by delete.lua, expire.lua and remove_device.lua (prepended).
-- KEYS[1]: the index of every session; ARGV[1]: the session key prefix;
-- ARGV[2]: the key prefix. Deletes the sessions `ids` and returns
-- `{id, fields...}` of each one that existed.
local function delete_sessions(ids)
  local out = {}
  for _, id in ipairs(ids) do
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
end
