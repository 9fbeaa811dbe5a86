#!/usr/bin/env bash
# Memory per idle stateful Streamable HTTP session and per open legacy SSE stream (issue 6).
#
#   bench/idle-memory.sh                        counts 1000 and 10000, auth off, release build
#   IDLE_COUNTS=1000 MCPGATE=path bench/idle-memory.sh
#   IDLE_HIBERNATE_WAIT=0 bench/idle-memory.sh  skip the hibernated-session waves (~2 min a count)
#
# Starts one mcpgate (Streamable HTTP + legacy SSE, no auth, no rate limit) on loopback and runs
# bench/lib/idle_memory.py against it: per count, N sessions opened and left idle, RSS read; then
# N SSE streams opened and kept open, RSS read; RSS is also read after sessions are deleted and
# streams closed. Then, on a fresh mcpgate (so that memory freed by the first part does not blur
# it), per count: sessions opened in 10 waves, each left idle IDLE_HIBERNATE_WAIT s (default 13:
# quiet sessions hibernate after 10 s) -- the cost of a hibernated session. Prints one JSON line
# per measurement (also in test-artifacts/idle-memory/results.jsonl).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${IDLE_OUT:-$ROOT/test-artifacts/idle-memory}"
COUNTS="${IDLE_COUNTS:-1000,10000}"
if [[ -z "${MCPGATE:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q -p mcpgate --bin mcpgate)
  MCPGATE="$ROOT/target/release/mcpgate"
fi
rm -rf "$OUT" && mkdir -p "$OUT"
# 10,000 streams need as many descriptors on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Starts mcpgate on a free port: sets PORT and PID.
start() {
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  env MCP_TRANSPORT=streamable-http MCP_LEGACY_SSE=true MCP_HOST=127.0.0.1 MCP_PORT="$PORT" \
    MCP_RATE_LIMIT_RPM=0 MCP_LOG_LEVEL=warn MCP_NOTES_DB="$OUT/notes.db" "$MCPGATE" >>"$OUT/mcpgate.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null && break; sleep 0.1; done
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
trap stop EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
start
python3 "$ROOT/bench/lib/idle_memory.py" --port "$PORT" --pid "$PID" --counts "$COUNTS" \
  --hibernate-wait 0 | tee "$OUT/results.jsonl"
stop
if [[ "${IDLE_HIBERNATE_WAIT:-13}" != 0 ]]; then
  IFS=, read -ra counts <<<"$COUNTS"
  for n in "${counts[@]}"; do
    start
    python3 "$ROOT/bench/lib/idle_memory.py" --port "$PORT" --pid "$PID" --counts "$n" \
      --hibernate-wait "${IDLE_HIBERNATE_WAIT:-13}" --only-hibernated | tee -a "$OUT/results.jsonl"
    stop
  done
fi
