-- Records activity of a session.
-- KEYS[1] the session's hash, KEYS[2] every session of its shard, KEYS[3]
-- its user's sessions. ARGV: now, position or '', buffering ('1'/'0'), the
-- session id, its user (as the caller read it).
-- Returns 1, or 0 when the session is gone (or not that user's).
if redis.call('HGET', KEYS[1], 'user') ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[1], 'seen', ARGV[1], 'buf', ARGV[3])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'pos', ARGV[2]) end
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[4])
return 1
