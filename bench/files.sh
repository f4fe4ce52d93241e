#!/usr/bin/env bash
# Files through the gateway: upload and download throughput of a 10 MiB file
# (curl, one at a time), and the memory (RSS) of the gateway and the service
# while 20 uploads of 10 MiB run at once.
#
#   bench/files.sh              # RUNS=5 transfers of each kind, ROUNDS=3 of 20 at once
#
# Release binaries on loopback: chat-service (SQLite, files on disk in a
# temporary directory) and chat-gateway in front of it, each its own
# process; both stop at the end. Every run is bounded (curl --max-time).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

RUNS="${RUNS:-5}"
ROUNDS="${ROUNDS:-3}"
CONCURRENT="${CONCURRENT:-20}"
SIZE_MIB="${SIZE_MIB:-10}"
SERVICE_PORT="${SERVICE_PORT:-3032}"
GATEWAY_PORT="${GATEWAY_PORT:-3030}"
BIN=target/release
export INTERNAL_API_KEY="${INTERNAL_API_KEY:-bench-internal-key}"
export JWT_SECRET="${JWT_SECRET:-bench-jwt-secret-0123456789abcdef}"

cargo build --release -p chat --bin chat --bin chat-service --bin chat-gateway

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The limits are raised above the offered load (the checks still run).
PORT=$SERVICE_PORT HOST=127.0.0.1 METRICS_ADDR= RUST_LOG=warn \
  DATABASE_URL="sqlite://$work/chat.db" FILE_STORE_URL="$work/files" \
  MAX_UPLOAD_BYTES=$((SIZE_MIB * 1024 * 1024)) \
  "$BIN/chat-service" >"$work/service.log" 2>&1 &
service_pid=$!
pids+=("$service_pid")
wait_port "$SERVICE_PORT"
PORT=$GATEWAY_PORT HOST=127.0.0.1 METRICS_ADDR= RUST_LOG=warn \
  CHAT_SERVICE_URL="http://127.0.0.1:$SERVICE_PORT" MAX_UPLOAD_BYTES=$((SIZE_MIB * 1024 * 1024)) \
  API_RATE_LIMIT_BURST=1000 API_RATE_LIMIT_PER_SEC=1000 \
  "$BIN/chat-gateway" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")
wait_port "$GATEWAY_PORT"
token="$("$BIN/chat" token --user bench --ttl 3600)"
base="http://127.0.0.1:$GATEWAY_PORT"

# A file of SIZE_MIB MiB, a PDF by its signature, different bytes for each name
# (so that every upload is stored, none found already there).
make_file() {
  { printf '%%PDF-1.4\n%% %s\n' "$1"; head -c $((SIZE_MIB * 1024 * 1024 - 64)) /dev/urandom; } >"$work/$1.pdf"
}

# Uploads a file; prints "seconds bytes_per_second url".
upload() {
  curl -sS --max-time 120 -o "$work/$1.json" -w '%{time_total} %{speed_upload} %{http_code}\n' \
    -H "Authorization: Bearer $token" -H 'Expect:' \
    -F "file=@$work/$1.pdf;type=application/pdf" "$base/chat/api/rooms/bench/files" \
    | { read -r seconds speed code
        [ "$code" = 201 ] || { echo "upload answered $code: $(cat "$work/$1.json")" >&2; exit 1; }
        url="$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$work/$1.json")"
        echo "$seconds $speed $url"; }
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mib_s() { awk '{ printf "%.1f\n", $1 / 1048576 }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

echo "== $SIZE_MIB MiB, one at a time, $RUNS runs each (MiB/s)"
urls=()
up=()
for run in $(seq "$RUNS"); do
  make_file "single-$run"
  line="$(upload "single-$run")"
  read -r seconds speed url <<<"$line"
  up+=("$speed")
  urls+=("$url")
  echo "upload $run: ${seconds}s $(echo "$speed" | mib_s) MiB/s"
done
down=()
for run in $(seq "$RUNS"); do
  speed="$(curl -sS --max-time 120 -o "$work/download" -w '%{speed_download}' \
    -H "Authorization: Bearer $token" "$base${urls[$((run - 1))]}")"
  cmp -s "$work/download" "$work/single-$run.pdf" || { echo "download $run differs" >&2; exit 1; }
  down+=("$speed")
  echo "download $run: $(echo "$speed" | mib_s) MiB/s"
done
echo "median upload:   $(printf '%s\n' "${up[@]}" | median | mib_s) MiB/s"
echo "median download: $(printf '%s\n' "${down[@]}" | median | mib_s) MiB/s"

# The same, straight to the service (as the gateway calls it): what the gateway's hop costs.
direct_up=()
direct_down=()
for run in $(seq "$RUNS"); do
  make_file "direct-$run"
  speed="$(curl -sS --max-time 120 -o "$work/direct-$run.json" -w '%{speed_upload}' \
    -H "x-internal-api-key: $INTERNAL_API_KEY" -H 'x-user-id: bench' -H 'Expect:' \
    -F "file=@$work/direct-$run.pdf;type=application/pdf" \
    "http://127.0.0.1:$SERVICE_PORT/api/rooms/bench/files")"
  direct_up+=("$speed")
  path="$(sed -n 's/.*"url":"\/chat\([^"]*\)".*/\1/p' "$work/direct-$run.json")"
  direct_down+=("$(curl -sS --max-time 120 -o /dev/null -w '%{speed_download}' \
    -H "x-internal-api-key: $INTERNAL_API_KEY" -H 'x-user-id: bench' "http://127.0.0.1:$SERVICE_PORT$path")")
done
echo "median upload straight to the service:   $(printf '%s\n' "${direct_up[@]}" | median | mib_s) MiB/s"
echo "median download straight from the service: $(printf '%s\n' "${direct_down[@]}" | median | mib_s) MiB/s"

echo "== $CONCURRENT uploads of $SIZE_MIB MiB at once, $ROUNDS rounds (RSS in MiB)"
echo "at rest: gateway $(( $(rss_kib "$gateway_pid") / 1024 )) service $(( $(rss_kib "$service_pid") / 1024 ))"
peaks_gateway=()
peaks_service=()
walls=()
for round in $(seq "$ROUNDS"); do
  for n in $(seq "$CONCURRENT"); do make_file "r$round-$n"; done
  : >"$work/samples"
  ( while :; do echo "$(rss_kib "$gateway_pid") $(rss_kib "$service_pid")" >>"$work/samples"; sleep 0.02; done ) &
  sampler=$!
  started=$(date +%s.%N)
  upload_pids=()
  for n in $(seq "$CONCURRENT"); do
    upload "r$round-$n" >"$work/r$round-$n.out" &
    upload_pids+=($!)
  done
  failed=0
  for pid in "${upload_pids[@]}"; do wait "$pid" || failed=1; done
  ended=$(date +%s.%N)
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  [ "$failed" = 0 ] || { echo "an upload of round $round failed" >&2; exit 1; }
  gateway_peak=$(awk '$1 > m { m = $1 } END { print int(m / 1024) }' "$work/samples")
  service_peak=$(awk '$2 > m { m = $2 } END { print int(m / 1024) }' "$work/samples")
  wall=$(echo "$started $ended" | awk '{ printf "%.2f", $2 - $1 }')
  peaks_gateway+=("$gateway_peak")
  peaks_service+=("$service_peak")
  walls+=("$wall")
  echo "round $round: ${wall}s for $CONCURRENT uploads ($(echo "$CONCURRENT $SIZE_MIB $wall" | awk '{ printf "%.1f", $1 * $2 / $3 }') MiB/s together), peak RSS gateway $gateway_peak service $service_peak"
  rm -f "$work"/r"$round"-*.pdf
done
echo "median peak RSS: gateway $(printf '%s\n' "${peaks_gateway[@]}" | median) MiB, service $(printf '%s\n' "${peaks_service[@]}" | median) MiB"
echo "median wall time: $(printf '%s\n' "${walls[@]}" | median) s"
