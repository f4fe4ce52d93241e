#!/usr/bin/env bash
# This build's service against another build's on the embedded SQLite store,
# round by round on fresh processes and fresh databases, which build goes
# first alternating: fan-out capacity, then commit latency at a fixed load,
# then the memory an idle connection costs.
#
#   BASE_BIN=/path/to/other/target/release bench/store-cost.sh
#   RUNS=5 FIXED=500000 IDLE=5000 BASE_BIN=... bench/store-cost.sh
#
# Results in $OUT: per build and round the capacity JSON, the fixed-load
# JSON with the commit-time histogram, and the idle JSON; then a table.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

: "${BASE_BIN:?set BASE_BIN to the directory holding the other build of chat-service}"
RUNS="${RUNS:-3}"
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

measure() { # build round
  local build=$1 round=$2
  echo "== round $round: $build" >&2
  start "$build" "$round" capacity
  bench capacity --rooms 10 --members 100 --payload 64 --from 100000 --to 3200000 --factor 1.3 \
    --refine 2 --step-duration 3 --drain 1 --cooldown 1 >"$OUT/$build-$round.capacity.json"
  cleanup
  start "$build" "$round" fixed
  bench fanout --rooms 10 --members 100 --payload 64 --deliveries "$FIXED" --duration 8 --drain 1 \
    >"$OUT/$build-$round.fixed.json"
  curl -sf -H "x-internal-api-key: $KEY" http://127.0.0.1:3012/metrics \
    | grep '^chat_store_commit_seconds' >"$OUT/$build-$round.commit.txt" || true
  cleanup
  start "$build" "$round" idle
  bench idle --connections "$IDLE" --room-size 10 --hold 3 --pid "$pid" >"$OUT/$build-$round.idle.json"
  cleanup
}

for round in $(seq "$RUNS"); do
  if [ $((round % 2)) = 1 ]; then order="base current"; else order="current base"; fi
  for build in $order; do measure "$build" "$round"; done
done

node - "$OUT" "$RUNS" <<'JS'
const fs = require("fs");
const [dir, runs] = process.argv.slice(2);
const json = (f) => JSON.parse(fs.readFileSync(`${dir}/${f}`));
const cap = (b, r) => json(`${b}-${r}.capacity.json`).capacity_deliveries_per_sec || 0;
const commitMs = (b, r) => {
  const text = fs.readFileSync(`${dir}/${b}-${r}.commit.txt`, "utf8");
  const sum = Number((text.match(/^chat_store_commit_seconds_sum (\S+)/m) || [])[1]);
  const count = Number((text.match(/^chat_store_commit_seconds_count (\S+)/m) || [])[1]);
  return count ? (sum / count) * 1000 : NaN;
};
const fixed = (b, r) => json(`${b}-${r}.fixed.json`);
const idleKb = (b, r) => {
  const report = json(`${b}-${r}.idle.json`);
  return report.bytes_per_connection == null ? NaN : report.bytes_per_connection / 1000;
};
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[(s.length - 1) >> 1]; };
const fmt = (n) => Math.round(n).toLocaleString("en-US");
const rows = [];
for (let r = 1; r <= Number(runs); r++) {
  rows.push({
    round: r,
    capBase: cap("base", r), capCur: cap("current", r),
    commitBase: commitMs("base", r), commitCur: commitMs("current", r),
    p99Base: fixed("base", r).latency.p99_ms, p99Cur: fixed("current", r).latency.p99_ms,
    idleBase: idleKb("base", r), idleCur: idleKb("current", r),
  });
}
console.log("| round | capacity base | this build | ratio | mean commit base (ms) | this build | p99 at fixed load base (ms) | this build | KB per idle connection base | this build |");
console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const x of rows) {
  console.log(`| ${x.round} | ${fmt(x.capBase)} | ${fmt(x.capCur)} | ${(x.capCur / x.capBase).toFixed(2)} | ${x.commitBase.toFixed(2)} | ${x.commitCur.toFixed(2)} | ${x.p99Base.toFixed(1)} | ${x.p99Cur.toFixed(1)} | ${x.idleBase.toFixed(1)} | ${x.idleCur.toFixed(1)} |`);
}
const m = (k) => median(rows.map((x) => x[k]));
console.log(`| median | ${fmt(m("capBase"))} | ${fmt(m("capCur"))} | **${median(rows.map((x) => x.capCur / x.capBase)).toFixed(2)}** | ${m("commitBase").toFixed(2)} | ${m("commitCur").toFixed(2)} | ${m("p99Base").toFixed(1)} | ${m("p99Cur").toFixed(1)} | ${m("idleBase").toFixed(1)} | ${m("idleCur").toFixed(1)} |`);
JS
