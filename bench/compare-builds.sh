#!/usr/bin/env bash
# Fan-out capacity of this build against another build of the same
# binaries, round by round on fresh processes, which build goes first
# alternating: straight to the service (memory store) and through the
# gateway.
#
#   BASE_BIN=/path/to/other/target/release bench/compare-builds.sh
#   RUNS=5 TARGETS=service BASE_BIN=... bench/compare-builds.sh
#
# Results: one capacity JSON per build, target and round in $OUT, then a
# table of capacities, ratios (this build / base) and their medians.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

: "${BASE_BIN:?set BASE_BIN to the directory holding the other build of chat-service and chat-gateway}"
RUNS="${RUNS:-3}"
TARGETS="${TARGETS:-service gateway}"
OUT="${OUT:-bench/results/compare-$(date -u +%Y%m%dT%H%M%SZ)}"
export INTERNAL_API_KEY=bench-internal-key
export JWT_SECRET=bench-jwt-secret-0123456789abcdef
cargo build --release -p chat --bin chat-bench --bin chat-service --bin chat-gateway
CURRENT_BIN=target/release
BENCH=target/release/chat-bench
mkdir -p "$OUT"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT INT TERM

measure() { # build target round
  local build=$1 target=$2 round=$3 bin url
  case "$build" in current) bin=$CURRENT_BIN ;; base) bin=$BASE_BIN ;; esac
  echo "== round $round: $build, $target" >&2
  PORT=3012 HOST=127.0.0.1 DATABASE_URL=memory: METRICS_ADDR= \
    "$bin/chat-service" >"$OUT/$build-$target-$round.service.log" 2>&1 &
  pids+=($!)
  wait_port 3012
  url=ws://127.0.0.1:3012/ws
  if [ "$target" = gateway ]; then
    # Limits far above the load: their checks still run on every frame.
    PORT=3010 HOST=127.0.0.1 CHAT_SERVICE_URL=http://127.0.0.1:3012 METRICS_ADDR= \
      RATE_LIMIT_PER_SEC=10000000 RATE_LIMIT_BURST=10000000 \
      CONNECT_RATE_PER_MIN=100000000 CONNECT_RATE_BURST=10000000 \
      "$bin/chat-gateway" >"$OUT/$build-$target-$round.gateway.log" 2>&1 &
    pids+=($!)
    wait_port 3010
    url=ws://127.0.0.1:3010/chat/ws
  fi
  "$BENCH" --target "$target" --url "$url" --internal-key "$INTERNAL_API_KEY" \
    --jwt-secret "$JWT_SECRET" --json --quiet \
    capacity --rooms 10 --members 100 --payload 64 --from 100000 --to 3200000 --factor 1.3 \
    --refine 2 --step-duration 3 --drain 1 --cooldown 1 >"$OUT/$build-$target-$round.json"
  cleanup
}

for target in $TARGETS; do
  for round in $(seq "$RUNS"); do
    if [ $((round % 2)) = 1 ]; then order="base current"; else order="current base"; fi
    for build in $order; do measure "$build" "$target" "$round"; done
  done
done

node - "$OUT" "$RUNS" "$TARGETS" <<'JS'
const fs = require("fs");
const [dir, runs, targets] = process.argv.slice(2);
const cap = (f) => JSON.parse(fs.readFileSync(`${dir}/${f}.json`)).capacity_deliveries_per_sec || 0;
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[(s.length - 1) >> 1]; };
const fmt = (n) => Math.round(n).toLocaleString("en-US");
for (const target of targets.split(/\s+/).filter(Boolean)) {
  const rows = [];
  for (let r = 1; r <= Number(runs); r++) {
    const base = cap(`base-${target}-${r}`), current = cap(`current-${target}-${r}`);
    rows.push({ round: r, base, current, ratio: current / base });
  }
  console.log(`\n${target}\n| round | base | this build | ratio |\n| --- | ---: | ---: | ---: |`);
  for (const x of rows) console.log(`| ${x.round} | ${fmt(x.base)} | ${fmt(x.current)} | ${x.ratio.toFixed(2)} |`);
  console.log(`| median | ${fmt(median(rows.map((x) => x.base)))} | ${fmt(median(rows.map((x) => x.current)))} | **${median(rows.map((x) => x.ratio)).toFixed(2)}** |`);
}
JS
