-- A room's timeline record, created from ARGV if missing, or (ARGV[4] '1',
-- a node loading the room again) written forward when the record is older
-- than the change offered: Redis lost committed changes (restarted empty, a
-- replica that was behind took over), and the node holds the newest it
-- confirmed. Epochs compare wrapping, as the rooms compare them.
-- KEYS[1] the record, KEYS[2] the room's channel (declared: a sharded
-- channel of the room's slot on a cluster); ARGV[1] the offered change's
-- epoch, ARGV[2] its encoding, ARGV[3] the record's time to live in ms
-- (refreshed either way), ARGV[4] '1' to write forward, ARGV[5] 'SPUBLISH'
-- (Redis Cluster) or 'PUBLISH' (a change written forward is published, so
-- nodes that missed it apply it). Returns the record's data.
local cur = redis.call('HMGET', KEYS[1], 'epoch', 'data')
local forward = false
if cur[2] and ARGV[4] == '1' then
  local d = (tonumber(ARGV[1]) - tonumber(cur[1])) % 4294967296
  forward = d ~= 0 and d < 2147483648
end
if not cur[2] or forward then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'data', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if forward then redis.call(ARGV[5], KEYS[2], ARGV[2]) end
  return ARGV[2]
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return cur[2]
