#!/usr/bin/env bash
# The cost of durability: fan-out capacity of the service on the embedded
# SQLite store against the same binary with DATABASE_URL=memory:, round by
# round on fresh processes (which of the two goes first alternates).
#
#   bench/durability-cost.sh              # 3 rounds
#   RUNS=5 bench/durability-cost.sh
#   SERVICE_BIN=/path/to/other/chat-service bench/durability-cost.sh
#
# Results: capacity JSON and the SQLite service's commit-time histogram per
# round in $OUT, then a table of capacities, ratios and their medians.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

RUNS="${RUNS:-3}"
OUT="${OUT:-bench/results/durability-$(date -u +%Y%m%dT%H%M%SZ)}"
KEY=bench-internal-key
cargo build --release -p chat --bin chat-bench --bin chat-service
SERVICE_BIN="${SERVICE_BIN:-target/release/chat-service}"
BENCH=target/release/chat-bench
DB_DIR=$(mktemp -d)
mkdir -p "$OUT"

pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=""
}
trap 'cleanup; rm -rf "$DB_DIR"' EXIT INT TERM


measure() { # store round
  local store=$1 round=$2 url
  case "$store" in
    memory) url=memory: ;;
    sqlite) url="sqlite://$DB_DIR/round-$round.db" ;;
  esac
  echo "== round $round: $store" >&2
  PORT=3012 HOST=127.0.0.1 INTERNAL_API_KEY=$KEY DATABASE_URL=$url \
    "$SERVICE_BIN" >"$OUT/$store-$round.log" 2>&1 &
  pid=$!
  wait_port 3012
  "$BENCH" --target service --url ws://127.0.0.1:3012/ws --internal-key "$KEY" --json --quiet \
    capacity --rooms 10 --members 100 --payload 64 --from 100000 --to 3200000 --factor 1.3 \
    --refine 2 --step-duration 3 --drain 1 --cooldown 1 >"$OUT/$store-$round.json"
  curl -sf -H "x-internal-api-key: $KEY" http://127.0.0.1:3012/metrics \
    | grep '^chat_store_commit_seconds' >"$OUT/$store-$round.commit.txt" || true
  cleanup
}

for round in $(seq "$RUNS"); do
  if [ $((round % 2)) = 1 ]; then order="memory sqlite"; else order="sqlite memory"; fi
  for store in $order; do measure "$store" "$round"; done
done

node - "$OUT" "$RUNS" <<'JS'
const fs = require("fs");
const [dir, runs] = process.argv.slice(2);
const cap = (f) => JSON.parse(fs.readFileSync(`${dir}/${f}.json`)).capacity_deliveries_per_sec || 0;
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[(s.length - 1) >> 1]; };
const rows = [];
for (let r = 1; r <= Number(runs); r++) {
  const memory = cap(`memory-${r}`), sqlite = cap(`sqlite-${r}`);
  rows.push({ round: r, memory, sqlite, ratio: sqlite / memory });
}
console.log("| round | memory | SQLite | ratio |\n| --- | ---: | ---: | ---: |");
const fmt = (n) => Math.round(n).toLocaleString("en-US");
for (const x of rows) console.log(`| ${x.round} | ${fmt(x.memory)} | ${fmt(x.sqlite)} | ${x.ratio.toFixed(2)} |`);
console.log(`| median | ${fmt(median(rows.map((x) => x.memory)))} | ${fmt(median(rows.map((x) => x.sqlite)))} | **${median(rows.map((x) => x.ratio)).toFixed(2)}** |`);
JS
