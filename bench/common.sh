# Shell helpers shared by the bench scripts (sourced, not run).

# Waits up to 10 s for something to listen on 127.0.0.1:PORT.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on port $1" >&2
  return 1
}
