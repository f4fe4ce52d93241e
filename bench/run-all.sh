#!/usr/bin/env bash
# Builds release binaries, starts every server under test on loopback, runs
# the comparisons of BENCHMARKS.md round by round (servers restarted for each
# round so idle memory is measured on fresh processes) and stops everything.
#
#   bench/run-all.sh            # 3 rounds, full capacity searches
#   RUNS=1 QUICK=1 bench/run-all.sh   # one short round, a smoke test
#
# Results: one JSON file per measurement in $OUT, then a summary of medians
# (bench/summarize.js). Every run is bounded: capacity searches stop at the
# first failing step (at most 40 steps), fixed-rate runs last 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

RUNS="${RUNS:-3}"
QUICK="${QUICK:-0}"
OUT="${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
export INTERNAL_API_KEY="${INTERNAL_API_KEY:-bench-internal-key}"
export JWT_SECRET="${JWT_SECRET:-bench-jwt-secret-0123456789abcdef}"
BIN=target/release
mkdir -p "$OUT"

have_ours=1
cargo build --release -p minimal-broadcaster
cargo build --release -p chat --bin chat-bench --bin chat-service --bin chat-gateway \
  || { have_ours=0; cargo build --release -p chat --bin chat-bench; }
BENCH="$BIN/chat-bench"

if [ "$QUICK" = 1 ]; then
  STEP=(--step-duration 2 --drain 1 --cooldown 0.5 --refine 1)
  FIXED=(--duration 3 --drain 1)
  IDLE_CONNS=1000; CONNECT_COUNT=1000
else
  STEP=(--step-duration 5 --drain 1 --cooldown 1 --refine 3)
  FIXED=(--duration 10 --drain 2)
  IDLE_CONNS=5000; CONNECT_COUNT=5000
fi
SHAPE=(--rooms 10 --members 100 --publishers 1 --payload 64)

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT INT TERM


# Process id of whatever listens on a TCP port (the node peer runs under a script).
listener_pid() {
  ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}

start_all() {
  "$BIN/minimal-broadcaster" 3202 >"$OUT/minimal.log" 2>&1 &
  pids+=($!)
  SERVICE_PORT=3102 GATEWAY_PORT=3100 bench/peers/node-ws/start.sh >"$OUT/node.log" 2>&1 &
  pids+=($!)
  wait_port 3202; wait_port 3102; wait_port 3100
  if [ "$have_ours" = 1 ]; then
    PORT=3002 HOST=127.0.0.1 DATABASE_URL=memory: "$BIN/chat-service" >"$OUT/service.log" 2>&1 &
    pids+=($!)
    # Limits raised far above the load: their checks still run on every frame.
    PORT=3000 HOST=127.0.0.1 CHAT_SERVICE_URL=http://127.0.0.1:3002 \
      RATE_LIMIT_PER_SEC=10000000 RATE_LIMIT_BURST=10000000 \
      CONNECT_RATE_PER_MIN=100000000 CONNECT_RATE_BURST=10000000 \
      "$BIN/chat-gateway" >"$OUT/gateway.log" 2>&1 &
    pids+=($!)
    wait_port 3002; wait_port 3000
  fi
}

# name kind url
targets() {
  echo "minimal service ws://127.0.0.1:3202/ws"
  echo "node-service service ws://127.0.0.1:3102/ws"
  echo "node-gateway gateway ws://127.0.0.1:3100/chat/ws"
  if [ "$have_ours" = 1 ]; then
    echo "chat-service service ws://127.0.0.1:3002/ws"
    echo "chat-gateway gateway ws://127.0.0.1:3000/chat/ws"
  fi
}

# The server processes behind a target, as --pid arguments.
pid_args() {
  case "$1" in
    minimal) echo "--pid $(listener_pid 3202)" ;;
    node-*) echo "--pid $(listener_pid 3102) --pid $(listener_pid 3100)" ;;
    chat-*) echo "--pid $(listener_pid 3002) --pid $(listener_pid 3000)" ;;
  esac
}

bench() { # file kind url args...
  local file=$1 kind=$2 url=$3; shift 3
  echo "== $file" >&2
  "$BENCH" --target "$kind" --url "$url" --json --quiet "$@" >"$OUT/$file.json" \
    || { echo "   failed (see above)" >&2; rm -f "$OUT/$file.json"; }
}

for round in $(seq "$RUNS"); do
  start_all
  # Idle memory first, on fresh processes; only the gateway targets (and the
  # baseline) count both processes of a pair.
  while read -r name kind url; do
    case "$name" in node-service|chat-service) continue ;; esac
    # shellcheck disable=SC2046
    bench "idle-$name-$round" "$kind" "$url" idle --connections "$IDLE_CONNS" --hold 5 $(pid_args "$name")
  done < <(targets)
  while read -r name kind url; do
    bench "connect-$name-$round" "$kind" "$url" connect --count "$CONNECT_COUNT"
  done < <(targets)
  while read -r name kind url; do
    bench "capacity-$name-$round" "$kind" "$url" capacity "${SHAPE[@]}" "${STEP[@]}" \
      --from 20000 --to 3200000 --factor 1.4
  done < <(targets)
  while read -r name kind url; do
    case "$kind" in gateway) ;; *) continue ;; esac
    bench "fanout50k-$name-$round" "$kind" "$url" fanout "${SHAPE[@]}" "${FIXED[@]}" --deliveries 50000
  done < <(targets)
  cleanup
done

node bench/summarize.js "$OUT"
