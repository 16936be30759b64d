-- A node's heartbeat for one room it serves.
-- KEYS[1] the room's counts (hash node -> "count expires-at-ms"), KEYS[2]
-- this node's member list of the room, KEYS[3..10] the room's other keys
-- (timeline record, member-id block counter, policy, clock setting, chat
-- stream, chat id counter, muted users, media state), KEYS[11] the room's
-- round trips (hash node -> "ms:members,... expires-at-ms"), KEYS[12] its
-- members' drifts (the same, in 0.1 ms): every key declared and of the
-- room's slot.
-- ARGV[1] this node, ARGV[2] its count, ARGV[3] how long its entry outlives
-- this beat (the node TTL, ms), ARGV[4] the member list's TTL in ms, ARGV[5]
-- the room keys' TTL in ms, ARGV[6] '1' to refresh the room keys' TTLs
-- (one beat in REFRESH_EVERY: they last an hour, so refreshing them every
-- beat only cost Redis ten commands per room and node each second), ARGV[7]
-- this node's members' round trips ("ms:members,..."; empty: none measured),
-- ARGV[8] their drifts ("tenths:members,..."; empty: none reported; absent
-- from older nodes).
-- Writes this node's count and round trips, drops entries whose node stopped
-- beating, keeps the room's keys alive while a node serves it (they expire
-- with the room), and returns the sum of the other live nodes' counts, their
-- round trips and their drifts. Time is Redis's (TIME), so the nodes' clocks do not
-- matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Writes this node's entry `value` in hash `key` ("value expires-at-ms"; none
-- when `absent`), drops the entries whose node stopped beating and returns
-- the other live nodes' values (those matching `pattern`; any other entry is
-- dropped too).
local function share(key, value, absent, pattern)
  if absent then
    redis.call('HDEL', key, ARGV[1])
  else
    redis.call('HSET', key, ARGV[1], value .. ' ' .. (now + tonumber(ARGV[3])))
  end
  local all = redis.call('HGETALL', key)
  local out = {}
  for i = 1, #all, 2 do
    if all[i] ~= ARGV[1] then
      local v, expires = string.match(all[i + 1], '^(' .. pattern .. ') (%d+)$')
      if v and tonumber(expires) >= now then
        out[#out + 1] = v
      else
        redis.call('HDEL', key, all[i])
      end
    end
  end
  return out
end
local others = 0
for _, count in ipairs(share(KEYS[1], ARGV[2], ARGV[2] == '0', '%d+')) do
  others = others + tonumber(count)
end
local rtts = share(KEYS[11], ARGV[7], ARGV[7] == '', '%S+')
local drifts = share(KEYS[12], ARGV[8] or '', (ARGV[8] or '') == '', '%S+')
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[6] == '1' then
  redis.call('PEXPIRE', KEYS[1], 600000)
  redis.call('PEXPIRE', KEYS[11], 600000)
  redis.call('PEXPIRE', KEYS[12], 600000)
  for i = 3, 10 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
end
return {others, rtts, drifts}
