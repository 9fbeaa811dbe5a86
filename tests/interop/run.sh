#!/usr/bin/env bash
# Interoperability checks: real third-party MCP clients against a real mcpgate.
#
#   tests/interop/run.sh [path/to/mcpgate]      (default: target/debug/mcpgate)
#
# Every check starts its own mcpgate on a free loopback port and stops it when done.
# Prints one PASS/FAIL line per check, then `interop: N passed, M failed`; exits non-zero
# on any failure. Logs of every check: test-artifacts/interop/<check>/.
# Peers (pinned) come from scripts/setup-peers.sh, run first.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/interop"
MCPGATE="$(realpath "${1:-$ROOT/target/debug/mcpgate}")"
[[ -x "$MCPGATE" ]] || { echo "interop: no mcpgate binary at $MCPGATE" >&2; exit 2; }
"$ROOT/scripts/setup-peers.sh" || exit 2
source "$HERE/lib.sh"

ART="$ROOT/test-artifacts/interop"
rm -rf "$ART" && mkdir -p "$ART"
TOKEN="itest-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
AUTH="Authorization: Bearer $TOKEN"

ts() { timeout 60 node "$HERE/ts_client.mjs" "$@"; }
py() { timeout 60 "$PYTHON" "$HERE/py_client.py" "$@"; }
inspector() {   # HOME and catalog per check: the inspector stores auth state under ~/.mcp-inspector
  HOME="$CHECK_DIR" MCP_CATALOG_PATH="$CHECK_DIR/catalog.json" \
    timeout 60 "$PEERS/node_modules/.bin/mcp-inspector" --cli "$@" </dev/null
}
serve_auth() { serve MCP_AUTH_TOKEN="$TOKEN" "$@"; }

# --- checks (each runs in its own subshell with `set -e`; any failing command fails it) ---

ts_http_token()      { serve_auth; ts --url "$URL/mcp" --token "$TOKEN" builtin; }
ts_http_no_token()   { serve_auth; ts --url "$URL/mcp" unauthorized; }
ts_http_bad_token()  { serve_auth; ts --url "$URL/mcp" --token "wrong-$TOKEN" unauthorized; }
ts_sse_token()       { serve_auth; ts --transport sse --url "$URL/sse" --token "$TOKEN" builtin; }
ts_sse_no_token()    { serve_auth; ts --transport sse --url "$URL/sse" unauthorized; }
# stdio transport: the TS client spawns mcpgate itself; no HTTP auth, principal "anonymous".
ts_stdio() {
  MCP_TRANSPORT=stdio MCP_NOTES_DB="$CHECK_DIR/notes.db" MCP_LOG_LEVEL=debug \
    ts --transport stdio --principal anonymous builtin -- "$MCPGATE" 2>>"$CHECK_DIR/mcpgate.log"
}
py_http_token()      { serve_auth; py --url "$URL/mcp" --token "$TOKEN" builtin; }
py_http_token_legacy() { serve_auth; py --mode legacy --url "$URL/mcp" --token "$TOKEN" builtin; }
py_http_no_token()   { serve_auth; py --url "$URL/mcp" unauthorized; }
py_sse_token()       { serve_auth; py --transport sse --url "$URL/sse" --token "$TOKEN" builtin; }

inspector_tools_list() {
  serve_auth
  inspector "$URL/mcp" --header "$AUTH" --method tools/list >"$CHECK_DIR/out.json"
  jq -e '[.tools[].name] | index("whoami") != null' "$CHECK_DIR/out.json"
}
inspector_call_whoami() {
  serve_auth
  inspector "$URL/mcp" --header "$AUTH" --method tools/call --tool-name whoami >"$CHECK_DIR/out.json"
  # whoami answers JSON text {"principal": …}; plain text naming the principal is accepted too
  jq -e '(.isError | not) and ([.content[].text | (fromjson? | .principal) // (select(contains("default")) | "default")]
    | index("default") != null)' "$CHECK_DIR/out.json"
}
inspector_no_token() {
  serve_auth
  local rc=0
  inspector "$URL/mcp" --method tools/list --stored-auth-only >"$CHECK_DIR/out.json" || rc=$?
  cat "$CHECK_DIR/out.json"
  [[ $rc -ne 0 ]] && jq -e '.error.code == "auth_required"' "$CHECK_DIR/out.json"
}

# mcp-remote (a stdio<->HTTP bridge used by many desktop hosts) with the token in a header file.
via_mcp_remote() {
  printf '%s\n' "$AUTH" >"$CHECK_DIR/headers.txt"
  MCP_REMOTE_CONFIG_DIR="$CHECK_DIR/mcp-remote" ts --transport stdio builtin -- \
    node "$PEERS/node_modules/mcp-remote/dist/proxy.js" "$@" --header-file "$CHECK_DIR/headers.txt"
}
mcp_remote_http() { serve_auth; via_mcp_remote "$URL/mcp" --transport http-only; }
mcp_remote_sse()  { serve_auth; via_mcp_remote "$URL/sse" --transport sse-only; }

# upstream_children_exit: the gateway's stdio child must not outlive mcpgate.
upstream_children_exit() {
  local kids; kids=$(pgrep -P "$MCPGATE_PID" || true)
  [[ -n "$kids" ]] || { echo "mcpgate has no upstream child process" >&2; return 1; }
  stop_all
  sleep 0.5
  local pid left=()
  for pid in $kids; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
  ((${#left[@]} == 0)) && return 0
  echo "upstream child(ren) ${left[*]} survived mcpgate's exit" >&2
  kill "${left[@]}" 2>/dev/null
  return 1
}
GW_EVERYTHING="$NODE22 $EVERYTHING stdio"
GW_PYTHON="$PYTHON $PEERS/py_upstream_server.py"
gateway_everything_ts() {
  serve_auth MCP_UPSTREAM_COMMAND="$GW_EVERYTHING"
  ts --url "$URL/mcp" --token "$TOKEN" echo
  ts --transport sse --url "$URL/sse" --token "$TOKEN" echo
}
gateway_everything_py() {
  serve_auth MCP_UPSTREAM_COMMAND="$GW_EVERYTHING"
  py --mode legacy --url "$URL/mcp" --token "$TOKEN" echo
  py --url "$URL/mcp" --token "$TOKEN" echo   # auto: 2026-07-28 when the server offers it
}
gateway_python_upstream_ts() { serve_auth MCP_UPSTREAM_COMMAND="$GW_PYTHON"; ts --url "$URL/mcp" --token "$TOKEN" add; }
gateway_python_upstream_py() {
  serve_auth MCP_UPSTREAM_COMMAND="$GW_PYTHON"
  py --mode legacy --url "$URL/mcp" --token "$TOKEN" add
  py --url "$URL/mcp" --token "$TOKEN" add
}
gateway_upstream_exits_with_mcpgate() {
  serve_auth MCP_UPSTREAM_COMMAND="$GW_EVERYTHING"
  ts --url "$URL/mcp" --token "$TOKEN" echo
  upstream_children_exit
}
gateway_no_token() { serve_auth MCP_UPSTREAM_COMMAND="$GW_PYTHON"; ts --url "$URL/mcp" unauthorized; }

# The token must never reach mcpgate's logs (all checks run with MCP_LOG_LEVEL=debug), and no
# check may have made mcpgate panic.
logs_clean() {
  ! grep -rlF -- "$TOKEN" "$ART" --include=mcpgate.log || { echo "token found in the logs above" >&2; return 1; }
  ! grep -rn -- "panicked at" "$ART" --include=mcpgate.log || { echo "mcpgate panicked" >&2; return 1; }
}

# --- runner ------------------------------------------------------------------

passed=0 failed=0
mask() { sed -e "s/$TOKEN/<token>/g" -e 's/\x1b\[[0-9;]*m//g' -e 's/^/    /'; }   # no token, no colours
run_check() {
  local name="$1"
  CHECK_DIR="$ART/$name"
  mkdir -p "$CHECK_DIR"
  (set -e; trap stop_all EXIT; "${name//-/_}") >"$CHECK_DIR/output.log" 2>&1
  if [[ $? -eq 0 ]]; then
    echo "PASS $name"; passed=$((passed + 1))
  else
    echo "FAIL $name"; failed=$((failed + 1))
    tail -n 15 "$CHECK_DIR/output.log" | mask
    [[ -s "$CHECK_DIR/mcpgate.log" ]] && { echo "    -- mcpgate.log (tail) --"; tail -n 8 "$CHECK_DIR/mcpgate.log" | mask; }
  fi
}

for check in \
  ts-http-token ts-http-no-token ts-http-bad-token ts-sse-token ts-sse-no-token ts-stdio \
  py-http-token py-http-token-legacy py-http-no-token py-sse-token \
  inspector-tools-list inspector-call-whoami inspector-no-token \
  mcp-remote-http mcp-remote-sse \
  gateway-everything-ts gateway-everything-py gateway-python-upstream-ts gateway-python-upstream-py \
  gateway-upstream-exits-with-mcpgate gateway-no-token \
  logs-clean; do
  run_check "$check"
done

echo "interop: $passed passed, $failed failed"
((failed == 0))
