-- Applies one chat operation of a room and publishes it, so every node
-- delivers a room's chat in the order of this script's runs.
-- KEYS[1] the room's chat stream, KEYS[2] its id counter, KEYS[3] its muted
-- users (a set), KEYS[4] the room's chat channel (declared: on a cluster it
-- is a sharded channel of the room's slot).
-- ARGV[1] 'SPUBLISH' (Redis Cluster) or 'PUBLISH'; ARGV[2] 'post', 'delete'
-- or 'mute'; ARGV[3] the operation (JSON, a post's id 0); ARGV[4] the keys'
-- time to live in ms; ARGV[5] messages kept; ARGV[6] the lowest id the post
-- may get (the room's next: ids a Redis that lost its counter would hand out
-- again are skipped), the message id (delete) or the user (mute); ARGV[7] '1'
-- to mute.
-- The id counter exists once the room has any chat (a delete or mute creates
-- it at 0), so a room whose chat Redis lost is told from one without chat.
-- A room's first post (the counter missing or 0: a new room's chat, or one
-- Redis lost) is numbered from this server's clock in microseconds, above
-- every id handed out before (ids then grow by one a post, far slower than
-- the clock): so even a node that starts serving the room before the others
-- wrote its chat back gives no id twice.
-- Ids reach 2^50 and more: always formatted with '%d' (Lua's own number to
-- string conversion would write them in exponent notation).
-- Publishes "<id>\n<operation>" (id 0 but for posts). Returns the id.
local id = 0
if ARGV[2] == 'post' then
  local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  -- Never below the stream's newest entry: a counter an older version of
  -- this script wrote in exponent notation (rounded) is not trusted.
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  if top then
    local newest = tonumber(string.match(top[1], '^0%-(%d+)$'))
    if newest and newest > last then last = newest end
  end
  if last == 0 then
    local t = redis.call('TIME')
    last = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  id = math.max(last + 1, tonumber(ARGV[6]))
  redis.call('SET', KEYS[2], string.format('%d', id))
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '0-' .. string.format('%d', id), 'r', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
elseif ARGV[2] == 'delete' then
  redis.call('XDEL', KEYS[1], '0-' .. ARGV[6])
  redis.call('SET', KEYS[2], 0, 'NX')
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
elseif ARGV[2] == 'mute' then
  redis.call('SET', KEYS[2], 0, 'NX')
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  if ARGV[7] == '1' then
    redis.call('SADD', KEYS[3], ARGV[6])
  else
    redis.call('SREM', KEYS[3], ARGV[6])
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
redis.call(ARGV[1], KEYS[4], string.format('%d', id) .. '\n' .. ARGV[3])
return id
