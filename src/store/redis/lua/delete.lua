-- Delete one session (ARGV[3]: its id).
return delete_sessions({ARGV[3]})
