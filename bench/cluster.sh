#!/usr/bin/env bash
# Cluster mode, measured on loopback: service nodes on the machine's
# PostgreSQL, joined through a redis-server of this script's own, behind
# gateways.
#
#   bench/cluster.sh                 # every part, 3 rounds where there are rounds
#   PARTS="price latency" RUNS=5 bench/cluster.sh
#
# Parts:
#   price     one node with REDIS_URL against without (both on PostgreSQL),
#             rounds alternating: fan-out capacity (p99 under 200 ms: commits
#             on PostgreSQL alone take tens of ms under load), and the
#             service's CPU time per delivery at a fixed 100k deliveries/s
#   latency   delivery latency at a fixed 50k deliveries/s: members on the
#             publishers' node against members on another node, alternating
#   routing   bytes each of 3 nodes receives from Redis with rooms spread over
#             the nodes (each room's members on one node), against what was
#             published in all
#   held      connections held: one node under a 5,000 open-files limit,
#             against three such nodes behind two gateways
#
# Results in $OUT; tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

RUNS="${RUNS:-3}"
# Resume an interrupted run: OUT=<its directory> FIRST_ROUND=<n> redoes rounds n..RUNS.
FIRST_ROUND="${FIRST_ROUND:-1}"
PARTS="${PARTS:-price latency routing held}"
OUT="${OUT:-bench/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
REDIS_PORT="${REDIS_PORT:-6391}"
export INTERNAL_API_KEY=bench-internal-key
export JWT_SECRET=bench-jwt-secret-0123456789abcdef
cargo build --release -p chat --bin chat-bench --bin chat-service --bin chat-gateway
BIN=target/release
BENCH=$BIN/chat-bench
mkdir -p "$OUT"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT INT TERM

fresh_db() { # name -> url
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $1" >/dev/null
  psql "$PG/postgres" -qc "CREATE DATABASE $1" >/dev/null
  echo "$PG/$1"
}

redis_up() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
  pids+=($!)
  wait_port "$REDIS_PORT"
}

start_node() { # port database redis_url [nofile]
  local port=$1 db=$2 redis=$3 nofile=${4:-}
  local run=("$BIN/chat-service")
  if [ -n "$nofile" ]; then run=(prlimit --nofile="$nofile:$nofile" "$BIN/chat-service"); fi
  PORT=$port HOST=127.0.0.1 DATABASE_URL=$db REDIS_URL=$redis METRICS_ADDR= \
    "${run[@]}" >"$OUT/node-$port.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
}

gateway() { # port service_urls
  PORT=$1 HOST=127.0.0.1 CHAT_SERVICE_URL=$2 METRICS_ADDR= \
    RATE_LIMIT_PER_SEC=10000000 RATE_LIMIT_BURST=10000000 \
    CONNECT_RATE_PER_MIN=100000000 CONNECT_RATE_BURST=10000000 \
    "$BIN/chat-gateway" >"$OUT/gateway-$1.log" 2>&1 &
  pids+=($!)
  wait_port "$1"
}

bench() {
  "$BENCH" --target service --internal-key "$INTERNAL_API_KEY" --json --quiet "$@"
}

metric() { # port name
  curl -sf -H "x-internal-api-key: $INTERNAL_API_KEY" "http://127.0.0.1:$1/metrics" \
    | awk -v name="$2" '$1 == name { sum += $2 } END { printf "%.0f\n", sum }'
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

price() {
  for round in $(seq "$FIRST_ROUND" "$RUNS"); do
    if [ $((round % 2)) = 1 ]; then order="alone cluster"; else order="cluster alone"; fi
    for mode in $order; do
      echo "== price, round $round: $mode" >&2
      local db redis="" before
      db=$(fresh_db chat_bench_price)
      if [ "$mode" = cluster ]; then redis_up; redis="redis://127.0.0.1:$REDIS_PORT"; fi
      start_node 3021 "$db" "$redis"
      bench --url ws://127.0.0.1:3021/ws capacity --rooms 10 --members 100 --payload 64 \
        --from 50000 --to 3200000 --factor 1.3 --refine 2 --step-duration 3 --drain 1 --cooldown 1 \
        --max-p99-ms 200 >"$OUT/price-$mode-$round.json"
      cleanup
      db=$(fresh_db chat_bench_price)
      if [ "$mode" = cluster ]; then redis_up; fi
      start_node 3021 "$db" "$redis"
      before=$(cpu_ticks "${pids[-1]}")
      bench --url ws://127.0.0.1:3021/ws fanout --rooms 10 --members 100 --payload 64 \
        --deliveries 100000 --duration 8 --drain 2 >"$OUT/price-fixed-$mode-$round.json"
      echo $(( $(cpu_ticks "${pids[-1]}") - before )) >"$OUT/price-cpu-$mode-$round.txt"
      cleanup
    done
  done
}

latency() {
  for round in $(seq "$FIRST_ROUND" "$RUNS"); do
    if [ $((round % 2)) = 1 ]; then order="same cross"; else order="cross same"; fi
    for placement in $order; do
      echo "== latency, round $round: $placement node" >&2
      local db
      db=$(fresh_db chat_bench_latency)
      redis_up
      start_node 3021 "$db" "redis://127.0.0.1:$REDIS_PORT"
      start_node 3022 "$db" "redis://127.0.0.1:$REDIS_PORT"
      if [ "$placement" = same ]; then
        bench --url ws://127.0.0.1:3021/ws fanout --rooms 10 --members 100 --payload 64 \
          --deliveries 50000 --duration 8 --drain 2 >"$OUT/latency-$placement-$round.json"
      else
        bench --url ws://127.0.0.1:3021/ws,ws://127.0.0.1:3022/ws fanout --placement apart \
          --rooms 10 --members 100 --payload 64 --deliveries 50000 --duration 8 --drain 2 \
          >"$OUT/latency-$placement-$round.json"
      fi
      cleanup
    done
  done
}

routing() {
  echo "== routing: 30 rooms over 3 nodes" >&2
  local db
  db=$(fresh_db chat_bench_routing)
  redis_up
  for port in 3021 3022 3023; do start_node "$port" "$db" "redis://127.0.0.1:$REDIS_PORT"; done
  bench --url ws://127.0.0.1:3021/ws,ws://127.0.0.1:3022/ws,ws://127.0.0.1:3023/ws fanout \
    --placement by-room --rooms 30 --members 30 --payload 64 --deliveries 90000 --duration 8 --drain 2 \
    >"$OUT/routing.json"
  for port in 3021 3022 3023; do
    echo "$port $(metric "$port" chat_cluster_received_bytes_total) $(metric "$port" chat_cluster_published_bytes_total)"
  done >"$OUT/routing.txt"
  cleanup
}

held() {
  echo "== held: one node under 5,000 open files" >&2
  local db
  db=$(fresh_db chat_bench_held)
  redis_up
  start_node 3021 "$db" "redis://127.0.0.1:$REDIS_PORT" 5000
  sed 's/\x1b\[[0-9;]*m//g' "$OUT/node-3021.log" | grep -o 'allowed=[0-9]*' | head -1 >"$OUT/held-cap.txt" || true
  bench --url ws://127.0.0.1:3021/ws idle --connections 4800 --room-size 10 --hold 2 \
    >"$OUT/held-one.json" || echo '{"failed": true}' >"$OUT/held-one.json"
  bench --url ws://127.0.0.1:3021/ws idle --connections 5200 --room-size 10 --hold 2 \
    >"$OUT/held-one-over.json" 2>"$OUT/held-one-over.err" || echo '{"failed": true}' >"$OUT/held-one-over.json"
  cleanup
  echo "== held: three such nodes behind two gateways" >&2
  db=$(fresh_db chat_bench_held)
  redis_up
  for port in 3021 3022 3023; do start_node "$port" "$db" "redis://127.0.0.1:$REDIS_PORT" 5000; done
  local nodes=http://127.0.0.1:3021,http://127.0.0.1:3022,http://127.0.0.1:3023
  gateway 3031 "$nodes"
  gateway 3032 "$nodes"
  "$BENCH" --target gateway --jwt-secret "$JWT_SECRET" --json --quiet \
    --url ws://127.0.0.1:3031/chat/ws,ws://127.0.0.1:3032/chat/ws \
    idle --connections 14400 --room-size 10 --hold 2 >"$OUT/held-three.json" \
    || echo '{"failed": true}' >"$OUT/held-three.json"
  for port in 3021 3022 3023; do
    curl -sf -H "x-internal-api-key: $INTERNAL_API_KEY" "http://127.0.0.1:$port/stats"; echo
  done >"$OUT/held-three-stats.txt" || true
  cleanup
}

for part in $PARTS; do "$part"; done

node - "$OUT" "$RUNS" "$PARTS" <<'JS'
const fs = require("fs");
const [dir, runs, parts] = process.argv.slice(2);
const read = (f) => { try { return JSON.parse(fs.readFileSync(`${dir}/${f}`)); } catch { return null; } };
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[(s.length - 1) >> 1]; };
const fmt = (n) => Math.round(n).toLocaleString("en-US");
const rounds = [...Array(Number(runs)).keys()].map((i) => i + 1);
if (parts.includes("price")) {
  console.log("\nprice of cluster mode (capacity, deliveries/s, one node on PostgreSQL)");
  console.log("| round | without REDIS_URL | with | ratio |\n| --- | ---: | ---: | ---: |");
  const rows = rounds.map((r) => {
    const alone = read(`price-alone-${r}.json`).capacity_deliveries_per_sec;
    const cluster = read(`price-cluster-${r}.json`).capacity_deliveries_per_sec;
    return { r, alone, cluster, ratio: cluster / alone };
  });
  for (const x of rows) console.log(`| ${x.r} | ${fmt(x.alone)} | ${fmt(x.cluster)} | ${x.ratio.toFixed(2)} |`);
  console.log(`| median | ${fmt(median(rows.map((x) => x.alone)))} | ${fmt(median(rows.map((x) => x.cluster)))} | **${median(rows.map((x) => x.ratio)).toFixed(2)}** |`);
  console.log("\nat a fixed 100k deliveries/s: service CPU per million deliveries (s), p50/p99 (ms)");
  console.log("| round | without | with | ratio | p50/p99 without | with |\n| --- | ---: | ---: | ---: | ---: | ---: |");
  const fixed = rounds.map((r) => {
    const cpu = (m) => {
      const ticks = Number(fs.readFileSync(`${dir}/price-cpu-${m}-${r}.txt`, "utf8"));
      const run = read(`price-fixed-${m}-${r}.json`);
      return { cpu: ticks / 100 / (run.delivered / 1e6), run };
    };
    return { r, alone: cpu("alone"), cluster: cpu("cluster") };
  });
  for (const x of fixed) {
    const lat = (run) => `${run.latency.p50_ms.toFixed(1)}/${run.latency.p99_ms.toFixed(1)}`;
    console.log(`| ${x.r} | ${x.alone.cpu.toFixed(2)} | ${x.cluster.cpu.toFixed(2)} | ${(x.cluster.cpu / x.alone.cpu).toFixed(2)} | ${lat(x.alone.run)} | ${lat(x.cluster.run)} |`);
  }
  console.log(`| median | ${median(fixed.map((x) => x.alone.cpu)).toFixed(2)} | ${median(fixed.map((x) => x.cluster.cpu)).toFixed(2)} | **${median(fixed.map((x) => x.cluster.cpu / x.alone.cpu)).toFixed(2)}** | | |`);
}
if (parts.includes("latency")) {
  console.log("\ndelivery latency at 50k deliveries/s (ms)");
  console.log("| round | same node p50 | p99 | cross node p50 | p99 | lost (same/cross) |\n| --- | ---: | ---: | ---: | ---: | ---: |");
  const rows = rounds.map((r) => ({ r, same: read(`latency-same-${r}.json`), cross: read(`latency-cross-${r}.json`) }));
  for (const x of rows) {
    console.log(`| ${x.r} | ${x.same.latency.p50_ms.toFixed(2)} | ${x.same.latency.p99_ms.toFixed(2)} | ${x.cross.latency.p50_ms.toFixed(2)} | ${x.cross.latency.p99_ms.toFixed(2)} | ${x.same.lost}/${x.cross.lost} |`);
  }
  const m = (f) => median(rows.map(f)).toFixed(2);
  console.log(`| median | ${m((x) => x.same.latency.p50_ms)} | ${m((x) => x.same.latency.p99_ms)} | ${m((x) => x.cross.latency.p50_ms)} | ${m((x) => x.cross.latency.p99_ms)} | |`);
}
if (parts.includes("routing")) {
  console.log("\nbytes from Redis per node, 30 rooms each wholly on one of 3 nodes");
  const lines = fs.readFileSync(`${dir}/routing.txt`, "utf8").trim().split("\n").map((l) => l.split(" ").map(Number));
  const published = lines.reduce((a, l) => a + l[2], 0);
  console.log("| node | received | published by it | received / all published |\n| --- | ---: | ---: | ---: |");
  for (const [port, received, own] of lines) console.log(`| ${port} | ${fmt(received)} | ${fmt(own)} | ${(received / published).toFixed(2)} |`);
  console.log(`| all | | ${fmt(published)} | (every node receiving everything: 1.00 each) |`);
}
if (parts.includes("held")) {
  console.log("\nconnections held (5,000 open files per service node)");
  const cap = fs.existsSync(`${dir}/held-cap.txt`) ? fs.readFileSync(`${dir}/held-cap.txt`, "utf8").trim() : "";
  const show = (f) => { const r = read(f); return !r || r.failed ? "refused" : `${fmt(r.connections)} held`; };
  console.log(`| setup | 4,800 | 5,200 | 14,400 |\n| --- | --- | --- | --- |`);
  console.log(`| one node (${cap}) | ${show("held-one.json")} | ${show("held-one-over.json")} | |`);
  console.log(`| three nodes, two gateways | | | ${show("held-three.json")} |`);
}
JS
