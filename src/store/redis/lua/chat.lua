-- Applies one chat operation of a room and publishes it, so every node
-- delivers a room's chat in the order of this script's runs.
-- KEYS[1] the room's chat stream, KEYS[2] its id counter, KEYS[3] its muted
-- users (a set), KEYS[4] the room's chat channel.
-- ARGV[1] 'post', 'delete' or 'mute'; ARGV[2] the operation (JSON, a post's
-- id 0); ARGV[3] the keys' time to live in ms; ARGV[4] messages kept;
-- ARGV[5] the message id (delete) or the user (mute); ARGV[6] '1' to mute.
-- Publishes "<id>\n<operation>" (id 0 but for posts). Returns the id.
local id = 0
if ARGV[1] == 'post' then
  id = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '0-' .. id, 'r', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
elseif ARGV[1] == 'delete' then
  redis.call('XDEL', KEYS[1], '0-' .. ARGV[5])
elseif ARGV[1] == 'mute' then
  if ARGV[6] == '1' then
    redis.call('SADD', KEYS[3], ARGV[5])
  else
    redis.call('SREM', KEYS[3], ARGV[5])
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
redis.call('PUBLISH', KEYS[4], id .. '\n' .. ARGV[2])
return id
