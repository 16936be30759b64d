-- Writes a room's chat back after Redis lost its data (restarted empty, or a
-- replica that was behind took over), from what a node serving the room
-- holds: the id counter goes up to the room's last id (ids are never given
-- twice), the muted users are added, and the room's latest messages are
-- merged with any posted since (by id, the newest ARGV[2] kept).
-- KEYS[1] the room's chat stream, KEYS[2] its id counter, KEYS[3] its muted
-- users (a set).
-- ARGV[1] the keys' time to live in ms; ARGV[2] messages kept; ARGV[3] the
-- highest id the room has seen; ARGV[4] how many muted users follow (n);
-- ARGV[5 .. 4 + n] the muted users; then (id, record JSON) pairs, oldest
-- first.
-- Returns the number of messages written back. Ids are formatted with '%d'
-- (they reach 2^50 and more; see chat.lua).
local n = tonumber(ARGV[4])
local last = tonumber(ARGV[3])
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur < last or redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], string.format('%d', math.max(cur, last)))
end
for i = 5, 4 + n do
  redis.call('SADD', KEYS[3], ARGV[i])
end
-- The stream's entries from `from` on: {id, record} each, and a set of their ids.
local function read(from)
  local entries, have = {}, {}
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], from, '+')) do
    local id = tonumber(string.match(e[1], '^0%-(%d+)$'))
    local f = e[2]
    for j = 1, #f - 1, 2 do
      if id and f[j] == 'r' then
        entries[#entries + 1] = {id, f[j + 1]}
        have[id] = true
      end
    end
  end
  return entries, have
end
local added = 0
if ARGV[5 + n] then
  -- Usually the stream still has them all (a shard that lost nothing): only
  -- the entries from the room's oldest on are read then.
  local _, have = read('0-' .. ARGV[5 + n])
  local missing = false
  for i = 5 + n, #ARGV - 1, 2 do
    if not have[tonumber(ARGV[i])] then missing = true end
  end
  if missing then
    local entries
    entries, have = read('-')
    for i = 5 + n, #ARGV - 1, 2 do
      local id = tonumber(ARGV[i])
      if not have[id] then
        entries[#entries + 1] = {id, ARGV[i + 1]}
        have[id] = true
        added = added + 1
      end
    end
    table.sort(entries, function(a, b) return a[1] < b[1] end)
    redis.call('DEL', KEYS[1])
    for i = math.max(1, #entries - tonumber(ARGV[2]) + 1), #entries do
      redis.call('XADD', KEYS[1], '0-' .. string.format('%d', entries[i][1]), 'r', entries[i][2])
    end
  end
end
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  end
end
return added
