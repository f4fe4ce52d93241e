#!/usr/bin/env bash
# Starts the Node.js peer: service on SERVICE_PORT (3102) and gateway on
# GATEWAY_PORT (3100). Installs its npm dependencies first if missing.
# Stops both on SIGINT/SIGTERM.
set -euo pipefail
cd "$(dirname "$0")"

: "${INTERNAL_API_KEY:?set INTERNAL_API_KEY}"
: "${JWT_SECRET:?set JWT_SECRET}"
SERVICE_PORT="${SERVICE_PORT:-3102}"
GATEWAY_PORT="${GATEWAY_PORT:-3100}"

if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund >&2
fi

PORT="$SERVICE_PORT" node service.js &
service=$!
PORT="$GATEWAY_PORT" CHAT_SERVICE_URL="http://127.0.0.1:$SERVICE_PORT" node gateway.js &
gateway=$!

stop() {
  kill "$gateway" "$service" 2>/dev/null || true
  wait "$gateway" "$service" 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
# Either process exiting takes the other one down too.
wait -n "$service" "$gateway" || true
stop
