-- Commits a room's timeline change by compare-and-set on its epoch.
-- KEYS[1] the record (hash: epoch, data), KEYS[2] the room's channel
-- (declared: on a cluster it is a sharded channel of the room's slot).
-- ARGV[1] the epoch expected, ARGV[2] the new epoch, ARGV[3] the encoded
-- change, ARGV[4] the record's time to live in ms, ARGV[5] 'SPUBLISH' (Redis
-- Cluster) or 'PUBLISH'.
-- Publishes on success. A missing record (Redis lost its data) accepts any
-- change. Returns 1 when committed, else the record's data (the winner).
local cur = redis.call('HGET', KEYS[1], 'epoch')
if cur == false or cur == ARGV[1] then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'data', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call(ARGV[5], KEYS[2], ARGV[3])
  return 1
end
return redis.call('HGET', KEYS[1], 'data')
