#!/usr/bin/env bash
# The MCP conformance suite's `authorization` mode (both scenarios: authorization-server-metadata-
# endpoint and authorization-code-grant) against mcpgate's built-in authorization server, with a
# scripted login (tests/as/browser.py plays the user; the suite's callback gets the redirect).
#
#   tests/conformance/authorization.sh [path/to/mcpgate]
#
# The pinned peer @modelcontextprotocol/conformance 0.1.16 has no `authorization` command; until
# tools/peers pins a version that has one, the suite comes from npm at CONFORMANCE_AS_VERSION.
# Expected failures, if any, are listed in tests/conformance/authorization-baseline.yml.
# Artifacts: $MCPGATE_AS_ART (default test-artifacts/conformance-authorization/).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MCPGATE="$(realpath "${1:-$ROOT/target/debug/mcpgate}")"
[[ -x "$MCPGATE" ]] || { echo "conformance-authorization: no mcpgate binary at $MCPGATE" >&2; exit 2; }
source "$ROOT/tests/interop/lib.sh"   # Node 22 on PATH, free_port, stop_all
CONFORMANCE_AS_VERSION="${CONFORMANCE_AS_VERSION:-0.2.0-alpha.12}"
ART="${MCPGATE_AS_ART:-$ROOT/test-artifacts/conformance-authorization}"
mkdir -p "$ART"
CHECK_DIR="$ART"
BASELINE="$ROOT/tests/conformance/authorization-baseline.yml"

# Pinned in tools/peers/package.json as the alias `conformance-as` (0.1.16 has no authorization mode).
PINNED="$PEERS/node_modules/conformance-as/dist/index.js"
if [[ -f "$PINNED" ]] && "$NODE22" "$PINNED" --help 2>/dev/null | grep -q '^ *authorization'; then
  SUITE=("$NODE22" "$PINNED")
else
  SUITE=(npx -y "@modelcontextprotocol/conformance@$CONFORMANCE_AS_VERSION")
fi
echo "suite: ${SUITE[*]}"

PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
CB=$(free_port)
STORE="sqlite://$ART/oauth.db"
rm -f "$ART/oauth.db"*
PASSWORD="conf-pw-$RANDOM$RANDOM"
trap stop_all EXIT
admin() { env MCP_OAUTH_ENABLED=true MCP_OAUTH_PUBLIC_URL="$URL" MCP_OAUTH_STORE="$STORE" "$MCPGATE" "$@"; }
printf '%s' "$PASSWORD" | admin users add conformance --password-stdin || exit 1
# The suite's callback: http://127.0.0.1:<port>/callback (any port is accepted on loopback).
admin clients add conf-client --name "MCP conformance suite" --redirect-uri "http://127.0.0.1:3000/callback" || exit 1
env MCP_TRANSPORT=streamable-http MCP_HOST=127.0.0.1 MCP_PORT="$PORT" MCP_NOTES_DB="$ART/notes.db" MCP_LOG_LEVEL=debug \
  MCP_OAUTH_ENABLED=true MCP_OAUTH_MODE=builtin MCP_OAUTH_PUBLIC_URL="$URL" MCP_OAUTH_STORE="$STORE" \
  "$MCPGATE" >>"$ART/mcpgate.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 300); do curl -fsS -o /dev/null --max-time 2 "$URL/health" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "$URL/health" || { echo "mcpgate did not start:" >&2; tail -n 20 "$ART/mcpgate.log" >&2; exit 1; }

expected=()
[[ -f "$BASELINE" ]] && expected=(--expected-failures "$BASELINE")
"${SUITE[@]}" authorization --url "$URL" --client-id conf-client -p "$CB" -o "$ART/results" "${expected[@]}" \
  >"$ART/suite.out" 2>&1 &
SUITE_PID=$!
PIDS+=("$SUITE_PID")

# The suite prints the authorization URL and waits for the browser: play the user, then hand
# the redirect to the suite's callback.
auth_url="" deadline=$((SECONDS + 120))
until [[ -n "$auth_url" ]]; do
  auth_url=$(grep -o "^$URL/authorize?.*" "$ART/suite.out" | head -n 1 || true)
  kill -0 $SUITE_PID 2>/dev/null || break
  ((SECONDS < deadline)) || { echo "no authorization URL from the suite" >&2; break; }
  sleep 0.2
done
if [[ -n "$auth_url" ]]; then
  echo "authorize: $auth_url"
  back=$(python3 "$ROOT/tests/as/browser.py" "$auth_url" conformance "$PASSWORD") || echo "the scripted login failed" >&2
  echo "redirect: ${back:-none}"
  [[ -n "$back" ]] && curl -sS --max-time 10 "$back" >/dev/null
fi
wait $SUITE_PID
rc=$?
cat "$ART/suite.out"
grep -q 'authorization-server-metadata-endpoint' "$ART/suite.out" && grep -q 'authorization-code-grant' "$ART/suite.out" \
  || { echo "conformance-authorization: a scenario did not run" >&2; rc=1; }
echo "conformance-authorization: suite exit $rc"
exit $rc
