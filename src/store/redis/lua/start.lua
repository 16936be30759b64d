-- Starts or resumes a session unless the user has ARGV[5] other live devices.
-- KEYS[1] the user's sessions (scored by seen), KEYS[2] every session of the
-- user's shard, KEYS[3] the new session's hash, KEYS[4] the shard's ready
-- marker (see keys.rs), KEYS[5..] the hashes of the user's live sessions as
-- the caller read them (every key is declared: Redis Cluster runs this on
-- the user's shard).
-- ARGV: user, device, room, live after, max devices, seen, created, new id,
-- the shard's session key prefix (compared, never used to build a key).
-- Returns {1, id}, {0, the other sessions' ids} at the limit, {2, 0} while
-- Redis is recovering lost data (only a write-back of an admitted session,
-- with no limit (4294967295), passes then), or {3, 0} when the user's live
-- sessions are no longer those declared (the caller reads them and retries).
if ARGV[5] ~= '4294967295' and redis.call('EXISTS', KEYS[4]) == 0 then return {2, 0} end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[4], '+inf')
if #ids ~= #KEYS - 4 then return {3, 0} end
for i, id in ipairs(ids) do
  if KEYS[4 + i] ~= ARGV[9] .. id then return {3, 0} end
end
local devices, n = {}, 0
for i, id in ipairs(ids) do
  local f = redis.call('HMGET', KEYS[4 + i], 'device', 'room')
  if f[1] == ARGV[2] and f[2] == ARGV[3] then
    redis.call('HSET', KEYS[4 + i], 'seen', ARGV[6])
    redis.call('ZADD', KEYS[1], ARGV[6], id)
    redis.call('ZADD', KEYS[2], ARGV[6], id)
    return {1, id}
  end
  if f[1] and f[1] ~= ARGV[2] and not devices[f[1]] then
    devices[f[1]] = true
    n = n + 1
  end
end
if n >= tonumber(ARGV[5]) then return {0, ids} end
redis.call('HSET', KEYS[3], 'user', ARGV[1], 'device', ARGV[2], 'room', ARGV[3], 'created', ARGV[7], 'seen', ARGV[6], 'buf', '0')
redis.call('ZADD', KEYS[1], ARGV[6], ARGV[8])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[8])
return {1, ARGV[8]}
