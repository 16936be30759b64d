-- Delete sessions not seen since ARGV[3].
return delete_sessions(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3]))
