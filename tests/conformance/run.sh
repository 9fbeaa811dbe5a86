#!/usr/bin/env bash
# MCP conformance suite (@modelcontextprotocol/conformance, pinned in tools/peers) through mcpgate
# (auth off: the suite cannot send a token) in gateway mode, for two stdio backends:
#   fixture     tools/peers/conformance_fixture_server.mjs: implements every fixture the suite's
#               server scenarios call, so it shows what the gateway forwards (sampling,
#               elicitation, progress, logging, prompts, resources, completion, subscriptions)
#   everything  npm @modelcontextprotocol/server-everything; expected failures in baseline.yml
#
#   tests/conformance/run.sh [path/to/mcpgate]      (default: target/debug/mcpgate)
#
# The suite first runs DIRECTLY against each backend (over its own Streamable HTTP) to learn
# which scenarios the backend itself passes. Fails if a scenario passing directly fails through
# mcpgate, if dns-rebinding-protection fails through mcpgate, or if results contradict the
# baseline. Prints `conformance: N passed, M failed, K skipped` last (K: baseline expected failures) (scenarios through mcpgate, both
# backends). Results: test-artifacts/conformance/<backend>/{direct,gateway}/.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/conformance"
MCPGATE="$(realpath "${1:-$ROOT/target/debug/mcpgate}")"
[[ -x "$MCPGATE" ]] || { echo "conformance: no mcpgate binary at $MCPGATE" >&2; exit 2; }
"$ROOT/scripts/setup-peers.sh" || exit 2
source "$ROOT/tests/interop/lib.sh"

ART="$ROOT/test-artifacts/conformance"
rm -rf "$ART"
FIXTURE="$PEERS/conformance_fixture_server.mjs"
trap stop_all EXIT
suite() {
  timeout 600 "$NODE22" "$PEERS/node_modules/@modelcontextprotocol/conformance/dist/index.js" server "$@"
}

# run_backend NAME BASELINE DIRECT_CMD UPSTREAM_COMMAND
#   DIRECT_CMD: shell command serving the backend over Streamable HTTP on port $P (also in $PORT);
#   UPSTREAM_COMMAND: the same backend over stdio, for MCP_UPSTREAM_COMMAND. BASELINE may be "".
run_backend() {
  local name="$1" baseline="$2" direct_cmd="$3" upstream="$4" rc=0
  CHECK_DIR="$ART/$name"; mkdir -p "$CHECK_DIR"
  local P; P=$(free_port)
  PORT=$P start_bg "$CHECK_DIR/direct-server.log" bash -c "${direct_cmd//\$P/$P}"
  wait_port "$P" || return 1
  suite --url "http://127.0.0.1:$P/mcp" -o "$CHECK_DIR/direct" >"$CHECK_DIR/direct.log" 2>&1
  stop_all

  # The suite sends a few hundred requests from one address within a minute: the default rate
  # limit (120/min) would answer 429 to its last scenarios. Rate limits are tested elsewhere.
  serve MCP_RATE_LIMIT_RPM=0 MCP_UPSTREAM_COMMAND="$upstream" || return 1
  suite --url "$URL/mcp" -o "$CHECK_DIR/gateway" ${baseline:+--expected-failures "$baseline"} \
    >"$CHECK_DIR/gateway.log" 2>&1 || rc=1
  stop_all
  [[ -n "$baseline" ]] || rc=0   # without a baseline, compare.mjs alone judges
  if ((rc)); then   # the suite's own baseline verdict (unexpected failure or stale entry)
    sed -n '/Expected failures (in baseline)/,$p' "$CHECK_DIR/gateway.log" | sed 's/\x1b\[[0-9;]*m//g'
  fi
  node "$HERE/compare.mjs" "$name" "$CHECK_DIR/direct" "$CHECK_DIR/gateway" $baseline || rc=1
  return $rc
}

mkdir -p "$ART"
status=0
run_backend fixture "" "exec '$NODE22' '$FIXTURE' http \$P" "$NODE22 $FIXTURE" >"$ART/fixture.txt" || status=1
run_backend everything "$HERE/baseline.yml" "exec '$NODE22' '$EVERYTHING' streamableHttp" "$NODE22 $EVERYTHING stdio" \
  >"$ART/everything.txt" || status=1
cat "$ART/fixture.txt" "$ART/everything.txt"

read -r p f k < <(sed -nE 's/^(fixture|everything): ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$/\2 \3 \4/p' "$ART"/*.txt |
  awk '{p += $1; f += $2; k += $3} END {print p + 0, f + 0, k + 0}')
echo "conformance: $p passed, $f failed, $k skipped"
exit $status
