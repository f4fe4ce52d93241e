#!/usr/bin/env bash
set -e
source bench/common.sh
export INTERNAL_API_KEY=bench-internal-key JWT_SECRET=bench-jwt-secret-0123456789abcdef
PORT=3012 HOST=127.0.0.1 DATABASE_URL=memory: METRICS_ADDR= $1/chat-service > /dev/null 2>&1 & s=$!
wait_port 3012
PORT=3010 HOST=127.0.0.1 CHAT_SERVICE_URL=http://127.0.0.1:3012 METRICS_ADDR= RATE_LIMIT_PER_SEC=10000000 RATE_LIMIT_BURST=10000000 CONNECT_RATE_PER_MIN=100000000 CONNECT_RATE_BURST=10000000 $1/chat-gateway > /dev/null 2>&1 & g=$!
wait_port 3010
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
g0=$(ticks $g); s0=$(ticks $s)
target/release/chat-bench --target gateway --url ws://127.0.0.1:3010/chat/ws --internal-key $INTERNAL_API_KEY --jwt-secret $JWT_SECRET --json --quiet fanout --rooms 10 --members 100 --payload 64 --deliveries 100000 --duration 8 --drain 1 > $2
g1=$(ticks $g); s1=$(ticks $s)
delivered=$(python3 -c "import json;print(json.load(open('$2'))['delivered'])")
echo "$2 gateway_ticks=$((g1-g0)) service_ticks=$((s1-s0)) delivered=$delivered"
kill $g $s; wait $g $s 2>/dev/null || true
