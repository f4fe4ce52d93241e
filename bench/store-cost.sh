#!/usr/bin/env bash
# This build's service against another build's on the embedded SQLite store,
# round by round on fresh processes and fresh databases, which build goes
# first alternating: fan-out capacity, then commit latency at a fixed load,
# then the memory an idle connection costs.
#
#   BASE_BIN=/path/to/other/target/release bench/store-cost.sh
#   RUNS=5 FIXED=500000 IDLE=5000 BASE_BIN=... bench/store-cost.sh
#   PHASES=fixed RUNS=5 BASE_BIN=... bench/store-cost.sh   # the fixed load only
#
# At the fixed load the service's CPU time (user + system, /proc/PID/stat
# fields 14 and 15) is read before and after: what a delivery costs, which
# is steadier than where a capacity search happens to stop.
#
# Results in $OUT: per build and round the capacity JSON, the fixed-load
# JSON with the commit-time histogram, and the idle JSON; then a table.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

: "${BASE_BIN:?set BASE_BIN to the directory holding the other build of chat-service}"
RUNS="${RUNS:-3}"
PHASES="${PHASES:-capacity fixed idle}"
FIXED="${FIXED:-500000}"
IDLE="${IDLE:-5000}"
OUT="${OUT:-bench/results/store-cost-$(date -u +%Y%m%dT%H%M%SZ)}"
KEY=bench-internal-key
cargo build --release -p chat --bin chat-bench --bin chat-service
CURRENT_BIN=target/release
BENCH=target/release/chat-bench
DB_DIR=$(mktemp -d)
mkdir -p "$OUT"

pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=""
}
trap 'cleanup; rm -rf "$DB_DIR"' EXIT INT TERM

start() { # build round phase
  local bin
  case "$1" in current) bin=$CURRENT_BIN ;; base) bin=$BASE_BIN ;; esac
  PORT=3012 HOST=127.0.0.1 INTERNAL_API_KEY=$KEY METRICS_ADDR= \
    DATABASE_URL="sqlite://$DB_DIR/$1-$2-$3.db" \
    "$bin/chat-service" >"$OUT/$1-$2-$3.log" 2>&1 &
  pid=$!
  wait_port 3012
}

bench() {
  "$BENCH" --target service --url ws://127.0.0.1:3012/ws --internal-key "$KEY" --json --quiet "$@"
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

measure() { # build round
  local build=$1 round=$2 before
  echo "== round $round: $build" >&2
  if [[ " $PHASES " == *" capacity "* ]]; then
    start "$build" "$round" capacity
    bench capacity --rooms 10 --members 100 --payload 64 --from 100000 --to 3200000 --factor 1.3 \
      --refine 2 --step-duration 3 --drain 1 --cooldown 1 >"$OUT/$build-$round.capacity.json"
    cleanup
  fi
  if [[ " $PHASES " == *" fixed "* ]]; then
    start "$build" "$round" fixed
    before=$(cpu_ticks "$pid")
    bench fanout --rooms 10 --members 100 --payload 64 --deliveries "$FIXED" --duration 8 --drain 1 \
      >"$OUT/$build-$round.fixed.json"
    echo $(( $(cpu_ticks "$pid") - before )) >"$OUT/$build-$round.cpu-ticks.txt"
    curl -sf -H "x-internal-api-key: $KEY" http://127.0.0.1:3012/metrics \
      | grep '^chat_store_commit_seconds' >"$OUT/$build-$round.commit.txt" || true
    cleanup
  fi
  if [[ " $PHASES " == *" idle "* ]]; then
    start "$build" "$round" idle
    bench idle --connections "$IDLE" --room-size 10 --hold 3 --pid "$pid" >"$OUT/$build-$round.idle.json"
    cleanup
  fi
}

for round in $(seq "$RUNS"); do
  if [ $((round % 2)) = 1 ]; then order="base current"; else order="current base"; fi
  for build in $order; do measure "$build" "$round"; done
done

node - "$OUT" "$RUNS" "$PHASES" <<'JS'
const fs = require("fs");
const [dir, runs, phases] = process.argv.slice(2);
const read = (f) => { try { return fs.readFileSync(`${dir}/${f}`, "utf8"); } catch { return null; } };
const json = (f) => { const t = read(f); return t === null ? null : JSON.parse(t); };
const median = (xs) => { const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b); return s.length ? s[(s.length - 1) >> 1] : NaN; };
const fmt = (n) => Number.isNaN(n) ? "" : Math.round(n).toLocaleString("en-US");
const f2 = (n) => Number.isNaN(n) ? "" : n.toFixed(2);
const builds = ["base", "current"];
const value = {
  capacity: (b, r) => { const j = json(`${b}-${r}.capacity.json`); return j ? j.capacity_deliveries_per_sec : NaN; },
  commit: (b, r) => {
    const text = read(`${b}-${r}.commit.txt`) || "";
    const sum = Number((text.match(/^chat_store_commit_seconds_sum (\S+)/m) || [])[1]);
    const count = Number((text.match(/^chat_store_commit_seconds_count (\S+)/m) || [])[1]);
    return count ? (sum / count) * 1000 : NaN;
  },
  p99: (b, r) => { const j = json(`${b}-${r}.fixed.json`); return j ? j.latency.p99_ms : NaN; },
  // CPU ticks are 1/100 s; per million deliveries.
  cpu: (b, r) => {
    const t = read(`${b}-${r}.cpu-ticks.txt`); const j = json(`${b}-${r}.fixed.json`);
    return t && j && j.delivered ? (Number(t) / 100) / (j.delivered / 1e6) : NaN;
  },
  idle: (b, r) => { const j = json(`${b}-${r}.idle.json`); return j && j.bytes_per_connection != null ? j.bytes_per_connection / 1000 : NaN; },
};
const columns = [
  ["capacity", "capacity (deliveries/s)", fmt],
  ["commit", "mean commit at the fixed load (ms)", f2],
  ["p99", "p99 at the fixed load (ms)", f2],
  ["cpu", "service CPU per million deliveries (s)", f2],
  ["idle", "KB per idle connection", f2],
];
const rounds = [...Array(Number(runs)).keys()].map((i) => i + 1);
for (const [key, title, show] of columns) {
  const rows = rounds.map((r) => ({ r, base: value[key]("base", r), cur: value[key]("current", r) }));
  if (rows.every((x) => Number.isNaN(x.base))) continue;
  console.log(`\n${title}\n| round | base | this build | ratio |\n| --- | ---: | ---: | ---: |`);
  for (const x of rows) console.log(`| ${x.r} | ${show(x.base)} | ${show(x.cur)} | ${(x.cur / x.base).toFixed(2)} |`);
  console.log(`| median | ${show(median(rows.map((x) => x.base)))} | ${show(median(rows.map((x) => x.cur)))} | **${median(rows.map((x) => x.cur / x.base)).toFixed(2)}** |`);
}
JS
