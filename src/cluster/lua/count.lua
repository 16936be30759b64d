-- A node's heartbeat for one room it serves.
-- KEYS[1] the room's counts (hash node -> "count expires-at-ms"), KEYS[2]
-- this node's member list of the room, KEYS[3..10] the room's other keys
-- (timeline record, member-id block counter, policy, clock setting, chat
-- stream, chat id counter, muted users, media state), KEYS[11] the room's
-- round trips (hash node -> "ms:members,... expires-at-ms"): every key
-- declared and of the room's slot.
-- ARGV[1] this node, ARGV[2] its count, ARGV[3] how long its entry outlives
-- this beat (the node TTL, ms), ARGV[4] the member list's TTL in ms, ARGV[5]
-- the room keys' TTL in ms, ARGV[6] '1' to refresh the room keys' TTLs
-- (one beat in REFRESH_EVERY: they last an hour, so refreshing them every
-- beat only cost Redis ten commands per room and node each second), ARGV[7]
-- this node's members' round trips ("ms:members,..."; empty: none measured).
-- Writes this node's count and round trips, drops entries whose node stopped
-- beating, keeps the room's keys alive while a node serves it (they expire
-- with the room), and returns the sum of the other live nodes' counts and
-- their round trips. Time is Redis's (TIME), so the nodes' clocks do not
-- matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. (now + tonumber(ARGV[3])))
end
local all = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then
    local count, expires = string.match(all[i + 1], '^(%d+) (%d+)$')
    if count and tonumber(expires) >= now then
      others = others + tonumber(count)
    else
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
if ARGV[7] == '' then
  redis.call('HDEL', KEYS[11], ARGV[1])
else
  redis.call('HSET', KEYS[11], ARGV[1], ARGV[7] .. ' ' .. (now + tonumber(ARGV[3])))
end
local reach = redis.call('HGETALL', KEYS[11])
local rtts = {}
for i = 1, #reach, 2 do
  if reach[i] ~= ARGV[1] then
    local list, expires = string.match(reach[i + 1], '^(%S+) (%d+)$')
    if list and tonumber(expires) >= now then
      rtts[#rtts + 1] = list
    else
      redis.call('HDEL', KEYS[11], reach[i])
    end
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[6] == '1' then
  redis.call('PEXPIRE', KEYS[1], 600000)
  redis.call('PEXPIRE', KEYS[11], 600000)
  for i = 3, 10 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
end
return {others, rtts}
