-- Deletes sessions of one shard.
-- KEYS[1] every session of the shard; then, per session, its hash and its
-- user's sessions (KEYS[2i], KEYS[2i+1], as the caller read them).
-- ARGV[1] '' to delete each, or a time: delete only those not seen since
-- (an expiry scan, re-checked here); ARGV[2..] the session ids.
-- Returns `{id, fields...}` of each session deleted.
local out = {}
for i = 2, #ARGV do
  local id, s, u = ARGV[i], KEYS[2 * (i - 1)], KEYS[2 * (i - 1) + 1]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if ARGV[1] == '' or (score and tonumber(score) <= tonumber(ARGV[1])) then
    local h = redis.call('HGETALL', s)
    if #h > 0 then
      redis.call('DEL', s)
      redis.call('ZREM', u, id)
      table.insert(out, {id, h})
    end
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
