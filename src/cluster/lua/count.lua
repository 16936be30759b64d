-- A node's heartbeat for one room it serves.
-- KEYS[1] the room's counts (hash node -> count), KEYS[2] this node's member
-- list of the room, KEYS[3] the room's timeline record, KEYS[4] its member-id
-- block counter, KEYS[5] its policy, KEYS[6] its clock setting, KEYS[7..9]
-- its chat stream, id counter and muted users, KEYS[10] its media state.
-- ARGV[1] this node, ARGV[2] its count, ARGV[3] the prefix of node presence
-- keys, ARGV[4] the member list's TTL in ms, ARGV[5] the room keys' TTL in ms.
-- Writes this node's count, drops the counts of nodes whose presence expired,
-- keeps the room's keys alive while a node serves it (they expire with the
-- room), and returns the sum of the other live nodes' counts.
if ARGV[2] == '0' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
local all = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then
    if redis.call('EXISTS', ARGV[3] .. all[i]) == 1 then
      others = others + tonumber(all[i + 1])
    else
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], 600000)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[4], ARGV[5])
redis.call('PEXPIRE', KEYS[5], ARGV[5])
redis.call('PEXPIRE', KEYS[6], ARGV[5])
for i = 7, 10 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
return others
