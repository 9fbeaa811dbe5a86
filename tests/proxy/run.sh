#!/usr/bin/env bash
# Proxy mode (issue 5): mcpgate is the authorization server MCP clients see, and users sign in at
# an upstream IdP — here a real OpenID Connect provider, npm oidc-provider
# (tools/peers/idp/oidc.mjs, client `mcpgate-proxy`, devInteractions login and consent driven over
# HTTP). Real SDK clients (TypeScript, Python) complete the flow and call tools; scripted browsers
# (attack.mjs) play the attacks; two instances share one PostgreSQL database.
#
#   tests/proxy/run.sh [path/to/mcpgate]      (default: target/debug/mcpgate)
#   ONLY="name1 name2" tests/proxy/run.sh      run a subset
#
# One IdP serves the whole run (with its test-only tamper hook: TAMPER_HOOKS=1). Every check
# starts its own mcpgate on the run's fixed port (the public URL, hence the callback registered at
# the IdP, is known up front) and stops it when done. Prints one PASS/FAIL line per check, then
# `proxy: N passed, M failed`; exits non-zero on any failure. Logs: test-artifacts/proxy/<check>/.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/proxy"
MCPGATE="$(realpath "${1:-$ROOT/target/debug/mcpgate}")"
[[ -x "$MCPGATE" ]] || { echo "proxy: no mcpgate binary at $MCPGATE" >&2; exit 2; }
"$ROOT/scripts/setup-peers.sh" || exit 2
source "$ROOT/tests/interop/lib.sh"
for tool in psql curl jq; do
  command -v "$tool" >/dev/null || { echo "proxy: $tool is required" >&2; exit 2; }
done

ART="$ROOT/test-artifacts/proxy"
rm -rf "$ART" && mkdir -p "$ART"
NODE="$NODE22"

IDP_PORT=$(free_port)
IDP="http://127.0.0.1:$IDP_PORT"
MCP_PORT=$(free_port)
URL="http://127.0.0.1:$MCP_PORT"
RES="$URL/mcp"
PORT_B=$(free_port)
URL_B="http://127.0.0.1:$PORT_B"

# The IdP for the whole run.
env PORT="$IDP_PORT" RESOURCE="$RES" JWKS_FILE="$ART/idp-keys.json" PROXY_REDIRECTS="$URL/oauth/callback" \
  TAMPER_HOOKS=1 LOG_REQUESTS=1 node "$ROOT/tools/peers/idp/oidc.mjs" >"$ART/idp.log" 2>&1 &
IDP_PID=$!
trap 'kill $IDP_PID 2>/dev/null' EXIT
deadline=$((SECONDS + 20))
until curl -fsS -o /dev/null --max-time 2 "$IDP/.well-known/openid-configuration" 2>/dev/null; do
  kill -0 "$IDP_PID" 2>/dev/null || { echo "proxy: oidc-provider exited" >&2; tail -n 20 "$ART/idp.log" >&2; exit 2; }
  ((SECONDS < deadline)) || { echo "proxy: oidc-provider not ready" >&2; exit 2; }
  sleep 0.1
done

proxy_env() {
  printf '%s\n' MCP_OAUTH_ENABLED=true MCP_OAUTH_MODE=proxy MCP_OAUTH_PUBLIC_URL="$URL" \
    MCP_OAUTH_UPSTREAM_PROVIDER=oidc MCP_OAUTH_UPSTREAM_ISSUER="$IDP" \
    MCP_OAUTH_UPSTREAM_CLIENT_ID=mcpgate-proxy MCP_OAUTH_UPSTREAM_CLIENT_SECRET=mcpgate-proxy-secret \
    MCP_OAUTH_UPSTREAM_TOKEN_KEY="$(printf 'k%.0s' $(seq 32) | base64)" MCP_RATE_LIMIT_RPM=0
}
# serve_proxy PORT [VAR=value...]: mcpgate in proxy mode on PORT (public URL: $URL whatever the
# port, as behind a load balancer), store $STORE (default: the check's SQLite file).
serve_proxy() {
  local port="$1"; shift
  env MCP_TRANSPORT=streamable-http MCP_HOST=127.0.0.1 MCP_PORT="$port" \
    MCP_NOTES_DB="$CHECK_DIR/notes.db" MCP_LOG_LEVEL=debug \
    MCP_OAUTH_STORE="${STORE:-sqlite://$CHECK_DIR/oauth.db}" $(proxy_env) "$@" \
    "$MCPGATE" >>"$CHECK_DIR/mcpgate-$port.log" 2>&1 &
  PIDS+=("$!")
  local pid=$! deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "mcpgate exited during start-up:" >&2; tail -n 20 "$CHECK_DIR/mcpgate-$port.log" >&2; return 1; }
    ((SECONDS < deadline)) || { echo "mcpgate not healthy after 30 s" >&2; return 1; }
    sleep 0.1
  done
}
fail() { echo "ASSERTION FAILED: $*" >&2; return 1; }
attack() { timeout 120 "$NODE" "$HERE/attack.mjs" "$@" --url "$RES" --idp "$IDP"; }

# --- checks --------------------------------------------------------------------

ts_sdk_http() {
  serve_proxy "$MCP_PORT" MCP_OAUTH_ACCESS_TOKEN_TTL_SECS=3 MCP_OAUTH_LEEWAY_SECS=0
  timeout 120 "$NODE" "$HERE/ts_proxy_flow.mjs" --url "$RES" --user alice --ttl 3
  # The upstream tokens are kept sealed, never in clear.
  [[ "$(sqlite3 "$CHECK_DIR/oauth.db" 'SELECT count(*) FROM upstream_tokens' 2>/dev/null || python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM upstream_tokens').fetchone()[0])" "$CHECK_DIR/oauth.db")" == 1 ]] || fail "no sealed upstream tokens stored"
}
py_sdk_http() {
  serve_proxy "$MCP_PORT" MCP_OAUTH_ACCESS_TOKEN_TTL_SECS=3 MCP_OAUTH_LEEWAY_SECS=0
  timeout 120 "$PYTHON" "$HERE/py_proxy_flow.py" --url "$RES" --user bob --ttl 3
}
disallowed_domain() {
  serve_proxy "$MCP_PORT" MCP_OAUTH_ALLOWED_DOMAINS=example.test
  attack refused --user eve@evil.test
  grep -q "upstream sign-in not allowed" "$CHECK_DIR"/mcpgate-*.log || fail "the refusal is not logged"
  # An unverified email of an allowed domain is refused too.
  attack refused --user unverified@example.test --expect "did not confirm an email address"
}
required_group() {
  serve_proxy "$MCP_PORT" MCP_OAUTH_REQUIRED_GROUPS=mcp-users
  attack refused --user nogroup@example.test --expect "not in a group allowed"
}
confused_deputy() {
  serve_proxy "$MCP_PORT"
  attack confused-deputy --user alice
}
forged_state() {
  serve_proxy "$MCP_PORT"
  attack forged-state
}
replayed_state() {
  serve_proxy "$MCP_PORT"
  attack replayed-state --user alice
}
mixed_up_issuer() {
  serve_proxy "$MCP_PORT"
  attack mixed-up-issuer --user alice
}
other_browser() {
  serve_proxy "$MCP_PORT"
  attack other-browser --user alice
}
id_token_checks() {
  serve_proxy "$MCP_PORT"
  local mode
  for mode in nonce aud iss signature expired; do
    echo "--- ID token with a bad $mode"
    attack tampered --user alice --mode "$mode" || return 1
    grep -q "tampered ID token: $mode" "$ART/idp.log" || fail "the IdP did not tamper ($mode)" || return 1
  done
  grep -q "nonce is not this sign-in's" "$CHECK_DIR"/mcpgate-*.log || fail "nonce refusal not logged"
  grep -q "not meant for this client" "$CHECK_DIR"/mcpgate-*.log || fail "aud refusal not logged"
  grep -q "signature is invalid" "$CHECK_DIR"/mcpgate-*.log || fail "signature refusal not logged"
  grep -q "ID token has expired" "$CHECK_DIR"/mcpgate-*.log || fail "exp refusal not logged"
}
two_instances() {
  local db="mcpgate_proxy_$$_$RANDOM"
  psql -X -q -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:5432/test" -c "CREATE DATABASE $db" || return 1
  # Both instances in this shell, so that the EXIT trap stops them before the database goes.
  trap "stop_all; psql -X -q postgres://postgres@127.0.0.1:5432/test -c 'DROP DATABASE IF EXISTS $db WITH (FORCE)' >/dev/null 2>&1" EXIT
  STORE="postgres://postgres@127.0.0.1:5432/$db"
  serve_proxy "$MCP_PORT" MCP_ALLOWED_HOSTS="127.0.0.1"
  serve_proxy "$PORT_B" MCP_ALLOWED_HOSTS="127.0.0.1"
  timeout 120 "$NODE" "$HERE/attack.mjs" cross --url "$RES" --other "$URL_B" --user carol
}
chromium() {
  # Real headless Chromium through the whole sign-in (tests/browser/setup.sh installs it).
  "$ROOT/tests/browser/setup.sh"
  serve_proxy "$MCP_PORT" MCP_OAUTH_ALLOWED_DOMAINS=example.test
  BASE="$URL" IDP="$IDP" CB_PORT="$(free_port)" ART="$CHECK_DIR" timeout 180 node "$HERE/chromium.mjs"
  mkdir -p "$ROOT/docs/screenshots"
  cp "$CHECK_DIR/proxy-consent.png" "$CHECK_DIR/proxy-refused.png" "$ROOT/docs/screenshots/"
}
gateway_token() {
  # pass_token_to_gateway: the HTTP gateway upstream (echo_upstream --http) sees each user's own
  # IdP access token (verified with the IdP's keys, naming that user), never mcpgate's token.
  local echo="${ECHO_UPSTREAM:-$(dirname "$MCPGATE")/examples/echo_upstream}" port out
  [[ -x "$echo" ]] || fail "no $echo: cargo build -p mcpgate --example echo_upstream" || return 1
  port=$(free_port)
  start_bg "$CHECK_DIR/upstream.log" "$echo" --http "127.0.0.1:$port"
  wait_port "$port" || return 1
  serve_proxy "$MCP_PORT" MCP_UPSTREAM_URL="http://127.0.0.1:$port/mcp" MCP_OAUTH_UPSTREAM_PASS_TOKEN=true
  timeout 120 "$NODE" "$HERE/gateway_token.mjs" --url "$RES" --idp "$IDP" --users alice,bob
  # A stdio upstream cannot carry the token: refused at start-up, in one line.
  out=$(env $(proxy_env) MCP_UPSTREAM_COMMAND="$echo" MCP_OAUTH_UPSTREAM_PASS_TOKEN=true "$MCPGATE" config check 2>&1) && fail "pass_token_to_gateway accepted a stdio upstream"
  grep -q "oauth.upstream.pass_token_to_gateway: a stdio upstream" <<<"$out" || fail "no stdio refusal: $out"
}
config_errors() {
  # Misconfigurations are explained at start-up, in one line each.
  local out
  out=$(env MCP_OAUTH_ENABLED=true MCP_OAUTH_MODE=proxy MCP_OAUTH_PUBLIC_URL="$URL" "$MCPGATE" config check 2>&1) && fail "config check accepted proxy mode without an upstream"
  grep -q "oauth.upstream.provider" <<<"$out" || fail "no provider error: $out"
  out=$(env $(proxy_env) MCP_OAUTH_UPSTREAM_TOKEN_KEY=short "$MCPGATE" config check 2>&1) && fail "a short token key was accepted"
  grep -q "oauth.upstream.token_key" <<<"$out" || fail "no token_key error: $out"
  out=$(env $(proxy_env) "$MCPGATE" config check 2>&1) || fail "a good proxy config was refused: $out"
  ! grep -q "mcpgate-proxy-secret" <<<"$out" || fail "config check printed the upstream client secret"
}
logs_clean() {
  # Nothing above may have panicked or logged a secret.
  ! grep -rn -- "panicked at" "$ART" --include='mcpgate-*.log' || fail "mcpgate panicked"
  ! grep -rn -- "mcpgate-proxy-secret" "$ART" --include='mcpgate-*.log' || fail "the upstream client secret was logged"
}

# --- runner --------------------------------------------------------------------

passed=0 failed=0
run_check() {
  local name="$1"
  CHECK_DIR="$ART/$name"
  mkdir -p "$CHECK_DIR"
  (set -e; trap stop_all EXIT; "${name//-/_}") >"$CHECK_DIR/output.log" 2>&1
  if [[ $? -eq 0 ]]; then
    echo "PASS $name"; passed=$((passed + 1))
  else
    echo "FAIL $name"; failed=$((failed + 1))
    tail -n 15 "$CHECK_DIR/output.log" | sed 's/^/    /'
    for log in "$CHECK_DIR"/mcpgate-*.log; do
      [[ -s "$log" ]] && { echo "    -- $(basename "$log") (tail) --"; tail -n 5 "$log" | sed 's/^/    /'; }
    done
  fi
}

CHECKS=(
  ts-sdk-http py-sdk-http disallowed-domain required-group confused-deputy forged-state
  replayed-state other-browser mixed-up-issuer id-token-checks two-instances chromium gateway-token
  config-errors logs-clean
)
for check in ${ONLY:-${CHECKS[@]}}; do
  run_check "$check"
done
echo "proxy: $passed passed, $failed failed"
((failed == 0))
