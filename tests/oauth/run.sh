#!/usr/bin/env bash
# OAuth resource-server checks (issue 3): mcpgate in external mode against a real external IdP
# (npm oidc-provider, tools/peers/idp/oidc.mjs), real SDK clients and forged tokens.
#
#   tests/oauth/run.sh [path/to/mcpgate]      (default: target/debug/mcpgate)
#   ONLY="name1 name2" tests/oauth/run.sh      run a subset
#
# One IdP serves the whole run (its private JWKS in test-artifacts/oauth/idp-keys.json, so the
# tests can sign tokens with its keys); checks that stop or rotate an IdP start their own. Every
# check starts its own mcpgate on the run's fixed MCP port (the public URL, hence the resource
# and the token audience, must be known before it starts) and stops it when done.
# Prints one PASS/FAIL line per check, then `oauth: N passed, M failed`; exits non-zero on any
# failure. Logs of every check: test-artifacts/oauth/<check>/.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/oauth"
MCPGATE="$(realpath "${1:-$ROOT/target/debug/mcpgate}")"
[[ -x "$MCPGATE" ]] || { echo "oauth: no mcpgate binary at $MCPGATE" >&2; exit 2; }
"$ROOT/scripts/setup-peers.sh" || exit 2
source "$ROOT/tests/interop/lib.sh"

ART="$ROOT/test-artifacts/oauth"
rm -rf "$ART" && mkdir -p "$ART"
TOKENS="$ART/tokens.list"   # every token handed to mcpgate: none may reach its logs
: >"$TOKENS"
IDP_JS="$ROOT/tools/peers/idp/oidc.mjs"
KEYS="$ART/idp-keys.json"

IDP_PORT=$(free_port)
ISS="http://127.0.0.1:$IDP_PORT"
MCP_PORT=$(free_port)
URL="http://127.0.0.1:$MCP_PORT"
RES="$URL/mcp"
PRM_MCP="$URL/.well-known/oauth-protected-resource/mcp"
PRM_SSE="$URL/.well-known/oauth-protected-resource/sse"

# start_idp PORT LOG [VAR=value...]: an oidc-provider on PORT (tracked in PIDS), ready when it
# answers its discovery document.
start_idp() {
  local port="$1" log="$2"; shift 2
  env PORT="$port" RESOURCE="$RES" LOG_REQUESTS=1 "$@" node "$IDP_JS" >>"$log" 2>&1 &
  PIDS+=("$!")
  IDP_PID=$!
  local deadline=$((SECONDS + 20))
  until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/.well-known/openid-configuration" 2>/dev/null; do
    kill -0 "$IDP_PID" 2>/dev/null || { echo "oidc-provider exited:" >&2; tail -n 20 "$log" >&2; return 1; }
    ((SECONDS < deadline)) || { echo "oidc-provider not ready after 20 s" >&2; return 1; }
    sleep 0.1
  done
}

# The run's shared IdP: not in PIDS (each check's stop_all must leave it alone).
env PORT="$IDP_PORT" RESOURCE="$RES" JWKS_FILE="$KEYS" LOG_REQUESTS=1 node "$IDP_JS" >"$ART/idp.log" 2>&1 &
SHARED_IDP=$!
trap 'kill $SHARED_IDP 2>/dev/null; wait $SHARED_IDP 2>/dev/null' EXIT
for _ in $(seq 200); do
  curl -fsS -o /dev/null --max-time 2 "$ISS/.well-known/openid-configuration" 2>/dev/null && break
  kill -0 $SHARED_IDP 2>/dev/null || break
  sleep 0.1
done
curl -fsS -o /dev/null "$ISS/.well-known/openid-configuration" || { echo "oauth: oidc-provider did not start:" >&2; cat "$ART/idp.log" >&2; exit 2; }

# serve_oauth [VAR=value...]: mcpgate on MCP_PORT in external mode against the shared IdP (the
# arguments override), waits for /health; sets MCPGATE_PID.
serve_oauth() {
  env MCP_TRANSPORT=streamable-http MCP_HOST=127.0.0.1 MCP_PORT="$MCP_PORT" \
    MCP_NOTES_DB="$CHECK_DIR/notes.db" MCP_LOG_LEVEL="${MCP_LOG_LEVEL:-debug}" \
    MCP_OAUTH_ENABLED=true MCP_OAUTH_MODE=external MCP_OAUTH_ISSUER="$ISS" MCP_OAUTH_PUBLIC_URL="$URL" \
    "$@" "$MCPGATE" >>"$CHECK_DIR/mcpgate.log" 2>&1 &
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
serve_introspecting() {
  serve_oauth MCP_OAUTH_INTROSPECTION_URL="$ISS/token/introspection" \
    MCP_OAUTH_INTROSPECTION_CLIENT_ID=mcp-rs MCP_OAUTH_INTROSPECTION_CLIENT_SECRET=mcp-rs-secret "$@"
}

# --- tokens ------------------------------------------------------------------

# cc_token CLIENT SCOPE [RESOURCE] [ISSUER]: a client-credentials access token from the IdP.
cc_token() {
  local out
  out=$(curl -sS -u "$1:$1-secret" -d grant_type=client_credentials --data-urlencode "scope=$2" \
    --data-urlencode "resource=${3:-$RES}" "${4:-$ISS}/token")
  local tok; tok=$(jq -r '.access_token // empty' <<<"$out")
  [[ -n "$tok" ]] || { echo "no token from ${4:-$ISS} for $1: $out" >&2; return 1; }
  echo "$tok" >>"$TOKENS"
  printf '%s' "$tok"
}
# forge KIND [forge.mjs options]: a token signed with the IdP's keys (or broken on purpose).
forge() {
  local kind="$1"; shift
  local tok; tok=$(node "$HERE/forge.mjs" --keys "$KEYS" --iss "$ISS" --aud "$RES" "$@" "$kind") || return 1
  echo "$tok" >>"$TOKENS"
  printf '%s' "$tok"
}
jws_part() { python3 -c 'import sys, base64; p = sys.argv[1].split(".")[int(sys.argv[2])]; print(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode())' "$1" "$2"; }
claims_of() { jws_part "$1" 1; }
header_of() { jws_part "$1" 0; }

# --- HTTP --------------------------------------------------------------------

INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"oauth-run","version":"1"}}}'
INITIALIZED='{"jsonrpc":"2.0","method":"notifications/initialized"}'
call_body() {
  local args="${2:-}"; [[ -n "$args" ]] || args='{}'
  printf '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"%s","arguments":%s}}' "$RANDOM" "$1" "$args"
}

# req METHOD URL [curl args...]: one request; status in $STATUS, headers in $CHECK_DIR/h, body in
# $CHECK_DIR/b. Logged to the check's output.
req() {
  local method="$1" url="$2"; shift 2
  STATUS=$(curl -sS -o "$CHECK_DIR/b" -D "$CHECK_DIR/h" -w '%{http_code}' --max-time 10 -X "$method" "$url" "$@") || STATUS=000
  echo ">> $method ${url#$URL} -> $STATUS  $(www_of | head -c 400)"
}
# mcp_post TOKEN BODY [SESSION] [extra curl args]: a JSON-RPC POST to /mcp.
mcp_post() {
  local token="$1" body="$2" session="$3"; shift 3
  local args=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream' --data "$body")
  [[ -n "$token" ]] && args+=(-H "Authorization: Bearer $token")
  [[ -n "$session" ]] && args+=(-H "mcp-session-id: $session" -H 'mcp-protocol-version: 2025-11-25')
  req POST "$RES" "${args[@]}" "$@"
}
header() { grep -i "^$1:" "$CHECK_DIR/h" | sed -e 's/^[^:]*: *//' -e 's/\r$//'; }
www_of() { header www-authenticate; }
# open_session TOKEN: initialize + initialized; prints the session id.
open_session() {
  mcp_post "$1" "$INIT" "" >&2
  [[ "$STATUS" == 200 ]] || { echo "initialize answered $STATUS: $(cat "$CHECK_DIR/b")" >&2; return 1; }
  local sid; sid=$(header mcp-session-id)
  [[ -n "$sid" ]] || { echo "no mcp-session-id" >&2; return 1; }
  mcp_post "$1" "$INITIALIZED" "$sid" >&2
  [[ "$STATUS" == 202 ]] || { echo "notifications/initialized answered $STATUS" >&2; return 1; }
  printf '%s' "$sid"
}
# result_text: the text of the JSON-RPC result in the last (SSE or JSON) body.
result_json() {
  if grep -q '^data: ' "$CHECK_DIR/b"; then sed -n 's/^data: //p' "$CHECK_DIR/b" | grep -F '"jsonrpc"' | tail -n 1
  else cat "$CHECK_DIR/b"; fi
}

# --- assertions --------------------------------------------------------------

fail() { echo "ASSERTION FAILED: $*" >&2; return 1; }
expect_status() { [[ "$STATUS" == "$1" ]] || fail "status $STATUS, want $1 (body: $(head -c 300 "$CHECK_DIR/b"))"; }
# expect_challenge STATUS ERROR|- mcp|sse: exactly one `WWW-Authenticate: Bearer …` challenge with
# quoted resource_metadata pointing at the /mcp or /sse metadata, and error="ERROR" (or no error).
expect_challenge() {
  local status="$1" error="$2" which="$3" www
  expect_status "$status" || return 1
  [[ $(grep -ci '^www-authenticate:' "$CHECK_DIR/h") == 1 ]] || fail "want exactly one WWW-Authenticate header" || return 1
  www=$(www_of)
  [[ "$www" == "Bearer "* ]] || fail "challenge does not start with 'Bearer ': $www" || return 1
  local meta="$PRM_MCP"; [[ "$which" == sse ]] && meta="$PRM_SSE"
  [[ "$www" == *"resource_metadata=\"$meta\""* ]] || fail "challenge lacks resource_metadata=\"$meta\": $www" || return 1
  if [[ "$error" == - ]]; then
    [[ "$www" != *"error="* ]] || fail "challenge for a request without a token carries an error: $www" || return 1
  else
    [[ "$www" == *"error=\"$error\""* ]] || fail "challenge lacks error=\"$error\": $www" || return 1
  fi
  [[ "$(header cache-control)" == *no-store* ]] || fail "refusal without Cache-Control: no-store"
}
# expect_refused TOKEN: initialize with TOKEN answers 401 invalid_token.
expect_refused() {
  mcp_post "$1" "$INIT" ""
  expect_challenge 401 invalid_token mcp
}
expect_accepted() {
  mcp_post "$1" "$INIT" ""
  expect_status 200
}

# --- checks: discovery -------------------------------------------------------

prm_documents() {
  serve_oauth
  local issuer; issuer=$(curl -fsS "$ISS/.well-known/openid-configuration" | jq -r .issuer)
  local path resource
  for path in mcp sse root; do
    case $path in
      mcp) req GET "$PRM_MCP"; resource="$RES" ;;
      sse) req GET "$PRM_SSE"; resource="$URL/sse" ;;
      root) req GET "$URL/.well-known/oauth-protected-resource"; resource="$RES" ;;
    esac
    expect_status 200
    [[ "$(header content-type)" == application/json* ]] || fail "$path: content-type $(header content-type)"
    [[ "$(header access-control-allow-origin)" == "*" ]] || fail "$path: no access-control-allow-origin: *"
    cat "$CHECK_DIR/b"; echo
    jq -e --arg r "$resource" --arg i "$issuer" '
      .resource == $r and .authorization_servers == [$i] and .bearer_methods_supported == ["header"]
      and (.scopes_supported | index("offline_access") | not) and .scopes_supported == ["mcp:tools:read"]
      and (.resource_name | type == "string" and length > 0)' "$CHECK_DIR/b" >/dev/null \
      || fail "$path: metadata document is not as required"
  done
}
prm_never_offline_access() {
  serve_oauth MCP_OAUTH_SCOPES_SUPPORTED="mcp:tools:read,offline_access,mcp:tools:write" \
    MCP_OAUTH_RESOURCE_DOCUMENTATION="https://docs.example/mcpgate"
  req GET "$PRM_MCP"; expect_status 200
  cat "$CHECK_DIR/b"; echo
  jq -e '.scopes_supported == ["mcp:tools:read","mcp:tools:write"] and .resource_documentation == "https://docs.example/mcpgate"' \
    "$CHECK_DIR/b" >/dev/null || fail "offline_access advertised or documentation missing"
}
prm_cors_preflight() {
  serve_oauth
  req OPTIONS "$PRM_MCP" -H 'Origin: https://app.example' -H 'Access-Control-Request-Method: GET' \
    -H 'Access-Control-Request-Headers: mcp-protocol-version'
  [[ "$STATUS" == 200 || "$STATUS" == 204 ]] || fail "preflight status $STATUS"
  [[ "$(header access-control-allow-origin)" == "*" ]] || fail "preflight: no access-control-allow-origin: *"
  local allowed; allowed=$(header access-control-allow-headers | tr 'A-Z' 'a-z')
  [[ "$allowed" == "*" || "$allowed" == *mcp-protocol-version* ]] || fail "preflight does not allow mcp-protocol-version: $allowed"
  req GET "$PRM_MCP" -H 'Origin: https://app.example' -H 'MCP-Protocol-Version: 2025-11-25'
  expect_status 200
}
well_known_unknown_404() {
  serve_oauth
  local p
  for p in oauth-protected-resource/other oauth-protected-resource/mcp/extra oauth-authorization-server \
    openid-configuration oauth-authorization-server/mcp nothing; do
    req GET "$URL/.well-known/$p"
    expect_status 404 || return 1
    jq -e . "$CHECK_DIR/b" >/dev/null || fail "/.well-known/$p: 404 body is not JSON" || return 1
  done
}
challenge_401_every_method() {
  serve_oauth
  mcp_post "" "$INIT" ""; expect_challenge 401 - mcp
  req GET "$RES" -H 'accept: text/event-stream'; expect_challenge 401 - mcp
  req DELETE "$RES" -H 'mcp-session-id: 0123456789abcdef'; expect_challenge 401 - mcp
  req GET "$URL/sse" -H 'accept: text/event-stream'; expect_challenge 401 - sse
  req POST "$URL/messages?sessionId=0123456789abcdef" -H 'content-type: application/json' --data "$INITIALIZED"
  expect_challenge 401 - sse
}
challenge_401_has_scope() {
  serve_oauth
  mcp_post "" "$INIT" ""; expect_status 401
  [[ "$(www_of)" == *'scope="mcp:tools:read"'* ]] || fail "401 challenge names no scope: $(www_of)"
  req GET "$URL/sse"; expect_status 401
  [[ "$(www_of)" == *'scope="'* ]] || fail "401 challenge on /sse names no scope: $(www_of)"
  # a presented-but-bad token: same, plus error="invalid_token"
  mcp_post "not-a-valid-token" "$INIT" ""
  expect_challenge 401 invalid_token mcp
  [[ "$(www_of)" == *'scope="'* ]] || fail "invalid_token challenge names no scope: $(www_of)"
}

# After a 401 the Python SDK reuses the connection for the metadata GET: it must survive.
keepalive_after_401() { serve_oauth MCP_RATE_LIMIT_RPM=100000; "$PYTHON" "$HERE/keepalive.py" "$URL" 100; }

# --- checks: full flows with the SDK clients ------------------------------------

ts_sdk_oauth_flow() { serve_oauth; timeout 90 node "$HERE/ts_oauth_flow.mjs" --url "$RES" --issuer "$ISS" --user alice; }
py_sdk_oauth_flow() { serve_oauth; timeout 90 "$PYTHON" "$HERE/py_oauth_flow.py" --url "$RES" --issuer "$ISS" --user bob; }
ts_sdk_oauth_sse() { serve_oauth; timeout 90 node "$HERE/ts_oauth_flow.mjs" --transport sse --url "$URL/sse" --issuer "$ISS" --user erin; }
py_sdk_oauth_sse() { serve_oauth; timeout 90 "$PYTHON" "$HERE/py_oauth_flow.py" --transport sse --url "$URL/sse" --issuer "$ISS" --user frank; }
py_sdk_oauth_flow_legacy() {
  serve_oauth
  timeout 90 "$PYTHON" "$HERE/py_oauth_flow.py" --mode legacy --url "$RES" --issuer "$ISS" --user carol
}

# --- checks: tokens ------------------------------------------------------------

no_token() { serve_oauth; mcp_post "" "$INIT" ""; expect_challenge 401 - mcp; }
malformed_header() {
  serve_oauth
  local h
  for h in 'Basic dXNlcjpwYXNz' 'Bearer' 'Bearer a b' 'Bearer a"b' 'Token abc'; do
    req POST "$RES" -H "Authorization: $h" -H 'content-type: application/json' \
      -H 'accept: application/json, text/event-stream' --data "$INIT"
    expect_challenge 401 invalid_request mcp || return 1
  done
  local t; t=$(cc_token svc-a mcp:tools:read)
  req POST "$RES" -H "Authorization: Bearer $t" -H "Authorization: Bearer $t" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' --data "$INIT"
  expect_challenge 401 invalid_request mcp
}
# Control for the forged tokens: a well-formed token signed with the IdP's key is accepted, so each
# negative case below fails only because of its one defect.
forged_valid_accepted() {
  serve_oauth
  local sid; sid=$(open_session "$(forge valid --sub mallory-control)")
  mcp_post "$(forge valid --sub mallory-control)" "$(call_body whoami)" "$sid"
  expect_status 200
  result_json | jq -e '.result.structuredContent.principal == "mallory-control"' >/dev/null || fail "whoami: $(result_json)"
}
idp_token_accepted() {
  serve_oauth
  local t; t=$(cc_token svc-a "mcp:tools:read")
  header_of "$t"; echo; claims_of "$t"; echo
  local sid; sid=$(open_session "$t")
  mcp_post "$t" "$(call_body whoami)" "$sid"; expect_status 200
  result_json | jq -e --arg i "$ISS" '.result.structuredContent | .principal == "svc-a" and .issuer == $i
    and .client_id == "svc-a" and .scopes == ["mcp:tools:read"]' >/dev/null || fail "whoami: $(result_json)"
}
expired() { serve_oauth; expect_refused "$(forge valid --exp-in=-600 --iat-in=-1200)"; }
expired_idp_token() {
  serve_oauth MCP_OAUTH_LEEWAY_SECS=0
  local t; t=$(cc_token svc-short mcp:tools:read)
  sleep 2.5
  expect_refused "$t"
}
not_yet_valid() { serve_oauth; expect_refused "$(forge valid --nbf-in 600)"; }
issued_in_the_future() { serve_oauth; expect_refused "$(forge valid --iat-in 600)"; }
wrong_issuer() {
  serve_oauth
  expect_refused "$(forge valid --iss "http://127.0.0.1:1")"
  expect_refused "$(forge valid --iss "$ISS/")"   # byte-for-byte: a trailing slash is another issuer
}
wrong_audience() {
  serve_oauth
  expect_refused "$(forge valid --aud https://elsewhere.example/mcp)"
  expect_refused "$(forge valid --aud "http://127.0.0.1:$IDP_PORT/mcp")"
  expect_refused "$(forge valid --aud "$URL")"
}
audience_normalised() {
  serve_oauth
  expect_accepted "$(forge valid --aud "HTTP://127.0.0.1:$MCP_PORT/mcp/")"
  expect_accepted "$(forge valid --aud "$URL/sse")"   # the legacy transport's resource is ours too
}
other_resource_same_issuer() {
  serve_oauth
  local t; t=$(cc_token svc-a mcp:tools:read "$URL/other")
  claims_of "$t" | jq -c '{iss, aud}'
  expect_refused "$t"
  t=$(cc_token svc-a mcp:tools:read "https://api.example/mcp")
  expect_refused "$t"
}
alg_none() {
  serve_oauth
  expect_refused "$(forge alg-none)"
  expect_refused "$(forge alg-none-sig)"
}
hs256_with_public_key() {
  serve_oauth
  expect_refused "$(forge hs256-pubkey)"
  expect_refused "$(forge hs256-pubkey --secret-form jwk)"
}
unknown_kid() {
  serve_oauth
  expect_refused "$(forge unknown-kid)"
  expect_refused "$(forge unknown-key --kid rs-1)"   # a known kid, signed by another key
  expect_accepted "$(forge valid)"                    # and the server still verifies good tokens
}
tampered_signature() { serve_oauth; expect_refused "$(forge tamper-sig --token "$(cc_token svc-a mcp:tools:read)")"; }
tampered_payload() { serve_oauth; expect_refused "$(forge tamper-payload --token "$(cc_token svc-a mcp:tools:read)")"; }
plain_jwt_typ() {
  serve_oauth
  expect_refused "$(forge valid --typ JWT)"
  expect_refused "$(forge valid --typ none)"
}
plain_jwt_allowed_when_configured() {
  serve_oauth MCP_OAUTH_ALLOW_PLAIN_JWT=true
  expect_accepted "$(forge valid --typ JWT)"
  expect_refused "$(forge valid --typ JWT --aud https://elsewhere.example/mcp)"
}
token_in_query() {
  serve_oauth
  local t; t=$(cc_token svc-a mcp:tools:read)
  req POST "$RES?access_token=$t" -H "Authorization: Bearer $t" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' --data "$INIT"
  expect_challenge 400 invalid_request mcp
  req POST "$RES?access_token=$t" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' --data "$INIT"
  expect_challenge 400 invalid_request mcp
  req GET "$URL/sse?access_token=$t"
  expect_challenge 400 invalid_request sse
}
# A token sent in the query string is refused (above), and must not be written to the logs either.
query_token_not_logged() {
  serve_oauth
  local t; t=$(cc_token svc-a mcp:tools:read)
  req POST "$RES?access_token=$t" -H 'content-type: application/json' --data "$INIT"
  expect_status 400
  stop_all
  ! grep -n -F -- "$t" "$CHECK_DIR/mcpgate.log" | cut -c1-200 || fail "the query-string token is in mcpgate's log (lines above)"
}
es256_second_key() {
  serve_oauth
  local t; t=$(cc_token svc-es256 mcp:tools:read)
  header_of "$t"; echo
  [[ "$(header_of "$t" | jq -r '.alg + " " + .kid')" == "ES256 es-1" ]] || fail "IdP did not sign with es-1"
  expect_accepted "$t"
  expect_accepted "$(forge valid --kid es-1)"
}

# --- checks: scopes ------------------------------------------------------------

insufficient_scope() {
  serve_oauth
  local t sid; t=$(cc_token svc-a mcp:tools:read)
  sid=$(open_session "$t")
  mcp_post "$t" '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' "$sid"; expect_status 200
  result_json | jq -e '[.result.tools[].name] | (index("whoami") != null) and (index("notes_put") == null)' >/dev/null \
    || fail "tools/list not filtered for mcp:tools:read: $(result_json)"
  mcp_post "$t" "$(call_body whoami)" "$sid"; expect_status 200
  mcp_post "$t" "$(call_body notes_put '{"id":"n1","content":"x"}')" "$sid"
  expect_challenge 403 insufficient_scope mcp
  local scope; scope=$(www_of | sed -n 's/.*[ ,]scope="\([^"]*\)".*/\1/p')
  echo "challenge scope: $scope"
  [[ " $scope " == *" mcp:tools:write "* ]] || fail "403 scope lacks the needed mcp:tools:write: $scope"
  [[ " $scope " == *" mcp:tools:read "* ]] || fail "403 scope lacks the held mcp:tools:read (TS v1 replaces scopes): $scope"
  [[ " $scope " != *" offline_access "* ]] || fail "403 scope names offline_access"
  # resources need mcp:resources:read
  mcp_post "$t" '{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"notes://n1"}}' "$sid"
  expect_challenge 403 insufficient_scope mcp
  [[ "$(www_of)" == *mcp:resources:read* ]] || fail "resources/read challenge lacks mcp:resources:read"
  # the wider token of the same principal continues the session and may write
  local t2; t2=$(cc_token svc-a "mcp:tools:read mcp:tools:write")
  mcp_post "$t2" "$(call_body notes_put '{"id":"n1","content":"x"}')" "$sid"; expect_status 200
  result_json | jq -e '.result.isError != true' >/dev/null || fail "notes_put after step-up: $(result_json)"
}
admin_implies_all() {
  serve_oauth
  local t sid; t=$(cc_token svc-a mcp:admin)
  sid=$(open_session "$t")
  mcp_post "$t" "$(call_body notes_put '{"id":"n1","content":"x"}')" "$sid"; expect_status 200
  mcp_post "$t" '{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"notes://n1"}}' "$sid"; expect_status 200
}
write_implies_read() {
  serve_oauth
  local t sid; t=$(cc_token svc-a mcp:tools:write)
  sid=$(open_session "$t")
  mcp_post "$t" "$(call_body whoami)" "$sid"; expect_status 200
}
required_scopes_baseline() {
  serve_oauth MCP_OAUTH_REQUIRED_SCOPES=mcp:tools:write
  mcp_post "$(cc_token svc-a mcp:tools:read)" "$INIT" ""
  expect_challenge 403 insufficient_scope mcp
  [[ "$(www_of)" == *mcp:tools:write* ]] || fail "baseline challenge lacks mcp:tools:write"
  expect_accepted "$(cc_token svc-a mcp:tools:write)"
}

# --- checks: sessions ------------------------------------------------------------

session_other_subject_404() {
  serve_oauth
  local a b sid; a=$(cc_token svc-a mcp:tools:read); b=$(cc_token svc-b mcp:tools:read)
  sid=$(open_session "$a")
  mcp_post "$b" "$(call_body whoami)" "$sid"; expect_status 404
  req GET "$RES" -H "Authorization: Bearer $b" -H "mcp-session-id: $sid" -H 'accept: text/event-stream'; expect_status 404
  req DELETE "$RES" -H "Authorization: Bearer $b" -H "mcp-session-id: $sid"; expect_status 404
  # a forged-but-valid token with the same subject and another client is another principal too
  mcp_post "$(forge valid --sub svc-a --client-id other-client)" "$(call_body whoami)" "$sid"; expect_status 404
  # a new token of the same principal continues the session
  mcp_post "$(cc_token svc-a mcp:tools:read)" "$(call_body whoami)" "$sid"; expect_status 200
  result_json | jq -e '.result.structuredContent.principal == "svc-a"' >/dev/null || fail "whoami: $(result_json)"
}
expired_token_in_live_session() {
  serve_oauth
  local sid; sid=$(open_session "$(forge valid --sub dave --client-id dave-cli)")
  mcp_post "$(forge valid --sub dave --client-id dave-cli --exp-in=-600 --iat-in=-1200)" "$(call_body whoami)" "$sid"
  expect_challenge 401 invalid_token mcp
}
sse_session_other_subject() {
  serve_oauth
  local a b; a=$(cc_token svc-a mcp:tools:read); b=$(cc_token svc-b mcp:tools:read)
  curl -sN --max-time 8 -H "Authorization: Bearer $a" -H 'accept: text/event-stream' "$URL/sse" >"$CHECK_DIR/sse.txt" 2>&1 &
  local curl_pid=$!
  local endpoint=""
  for _ in $(seq 50); do
    endpoint=$(sed -n 's/^data: *\(\/messages?sessionId=[^ ]*\)\r\{0,1\}$/\1/p' "$CHECK_DIR/sse.txt" | head -n 1)
    [[ -n "$endpoint" ]] && break
    sleep 0.1
  done
  [[ -n "$endpoint" ]] || { kill $curl_pid; fail "no endpoint event: $(cat "$CHECK_DIR/sse.txt")"; return 1; }
  echo "endpoint: $endpoint"
  req POST "$URL$endpoint" -H "Authorization: Bearer $b" -H 'content-type: application/json' --data "$INIT"
  expect_status 404 || { kill $curl_pid; return 1; }
  req POST "$URL$endpoint" -H "Authorization: Bearer $a" -H 'content-type: application/json' --data "$INIT"
  expect_status 202 || { kill $curl_pid; return 1; }
  kill $curl_pid 2>/dev/null; wait $curl_pid 2>/dev/null || true
}

# --- checks: introspection ----------------------------------------------------------

# user_token CLIENT SCOPE [USER]: an access token from a headless authorization-code login.
user_token() {
  local tok; tok=$(node "$HERE/authcode.mjs" --issuer "$ISS" --client "$1" --scope "$2" --user "${3:-alice}" --resource "$RES") || return 1
  echo "$tok" >>"$TOKENS"
  printf '%s' "$tok"
}
# A user's opaque token (introspection answers with `sub`), accepted; revocation takes effect.
introspection_user_token() {
  serve_introspecting MCP_OAUTH_INTROSPECTION_CACHE_SECS=0
  local t; t=$(user_token web-opaque "mcp:tools:read mcp:tools:write" grace)
  [[ "$t" != *.*.* ]] || fail "web-opaque got a JWT"
  curl -fsS -u mcp-rs:mcp-rs-secret -d "token=$t" "$ISS/token/introspection" | jq -c 'del(.jti)'
  local sid; sid=$(open_session "$t")
  mcp_post "$t" "$(call_body whoami)" "$sid"; expect_status 200
  result_json | jq -e '.result.structuredContent | .principal == "grace" and .client_id == "web-opaque"
    and (.scopes | index("mcp:tools:write") != null)' >/dev/null || fail "whoami: $(result_json)"
  mcp_post "$t" "$(call_body notes_put '{"id":"o1","content":"x"}')" "$sid"; expect_status 200
  curl -fsS -u web-opaque:web-opaque-secret -d "token=$t" "$ISS/token/revocation" -o /dev/null
  mcp_post "$t" "$(call_body whoami)" "$sid"; expect_challenge 401 invalid_token mcp
}
# A machine (client-credentials) opaque token: oidc-provider's introspection has no `sub`
# (RFC 7662 makes it optional); the principal is the client.
introspection_opaque_accepted() {
  serve_introspecting MCP_OAUTH_INTROSPECTION_CACHE_SECS=0
  local t; t=$(cc_token svc-opaque "mcp:tools:read mcp:tools:write")
  [[ "$t" != *.*.* ]] || fail "svc-opaque got a JWT"
  local sid; sid=$(open_session "$t")
  mcp_post "$t" "$(call_body whoami)" "$sid"; expect_status 200
  result_json | jq -e '.result.structuredContent | .principal == "svc-opaque" and (.scopes | index("mcp:tools:write") != null)' \
    >/dev/null || fail "whoami: $(result_json)"
  mcp_post "$t" "$(call_body notes_put '{"id":"o1","content":"x"}')" "$sid"; expect_status 200
  # the same IdP's JWTs still verify locally beside introspection
  expect_accepted "$(cc_token svc-a mcp:tools:read)"
  # revoked at the IdP: inactive at once (no caching configured)
  curl -fsS -u svc-opaque:svc-opaque-secret -d "token=$t" "$ISS/token/revocation" -o /dev/null
  mcp_post "$t" "$(call_body whoami)" "$sid"; expect_challenge 401 invalid_token mcp
}
introspection_opaque_refused() {
  serve_introspecting
  expect_refused "$(cc_token svc-opaque mcp:tools:read "$URL/other")"   # active, but another audience
  expect_refused "opaque-token-the-idp-never-issued"                    # inactive
}
introspection_down_503() {
  local dead; dead=$(free_port)
  serve_oauth MCP_OAUTH_INTROSPECTION_URL="http://127.0.0.1:$dead/token/introspection" \
    MCP_OAUTH_INTROSPECTION_CLIENT_ID=mcp-rs MCP_OAUTH_INTROSPECTION_CLIENT_SECRET=mcp-rs-secret
  mcp_post "$(user_token web-opaque mcp:tools:read)" "$INIT" ""
  expect_status 503
  [[ -n "$(header retry-after)" ]] || fail "503 without Retry-After"
  expect_accepted "$(cc_token svc-a mcp:tools:read)"   # JWTs need no introspection
}
idp_stopped_503() {
  local port; port=$(free_port)
  local iss="http://127.0.0.1:$port"
  start_idp "$port" "$CHECK_DIR/idp.log" JWKS_FILE="$KEYS"
  local idp=$IDP_PID
  serve_oauth MCP_OAUTH_ISSUER="$iss" MCP_OAUTH_INTROSPECTION_URL="$iss/token/introspection" \
    MCP_OAUTH_INTROSPECTION_CLIENT_ID=mcp-rs MCP_OAUTH_INTROSPECTION_CLIENT_SECRET=mcp-rs-secret
  local used fresh jwt
  used=$(ISS="$iss" user_token web-opaque mcp:tools:read heidi)
  fresh=$(ISS="$iss" user_token web-opaque mcp:tools:read heidi)
  jwt=$(cc_token svc-a mcp:tools:read "$RES" "$iss")
  expect_accepted "$used"
  expect_accepted "$jwt"
  kill "$idp"; wait "$idp" 2>/dev/null || true
  mcp_post "$fresh" "$INIT" ""
  expect_status 503
  [[ "$(header www-authenticate)" == "" ]] || echo "note: 503 carries a challenge: $(www_of)"
  expect_accepted "$jwt"   # cached keys: a valid JWT costs no I/O
}

# --- checks: keys ----------------------------------------------------------------

jwks_rotation() {
  local port; port=$(free_port)
  local iss="http://127.0.0.1:$port" keys="$CHECK_DIR/keys.json" rotated="$CHECK_DIR/keys-rotated.json"
  cp "$KEYS" "$keys"
  start_idp "$port" "$CHECK_DIR/idp.log" JWKS_FILE="$keys"
  serve_oauth MCP_OAUTH_ISSUER="$iss" MCP_OAUTH_JWKS_MIN_REFRESH_SECS=1
  local old new
  old=$(cc_token svc-a mcp:tools:read "$RES" "$iss")
  expect_accepted "$old"
  # rotate: a new RS256 key first (the one oidc-provider signs with), old keys kept for verification
  node -e '
    const fs = require("fs"); const { generateKeyPairSync } = require("crypto");
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: "jwk" }), kid: "rs-2", alg: "RS256", use: "sig" };
    const set = JSON.parse(fs.readFileSync(process.argv[1]));
    fs.writeFileSync(process.argv[2], JSON.stringify({ keys: [jwk, ...set.keys] }));' "$keys" "$rotated"
  kill "$IDP_PID"; wait "$IDP_PID" 2>/dev/null || true
  start_idp "$port" "$CHECK_DIR/idp.log" JWKS_FILE="$rotated"
  new=$(cc_token svc-a mcp:tools:read "$RES" "$iss")
  header_of "$new"; echo
  [[ "$(header_of "$new" | jq -r .kid)" == rs-2 ]] || fail "the rotated IdP did not sign with rs-2"
  sleep 1.5   # past MCP_OAUTH_JWKS_MIN_REFRESH_SECS since the first fetch
  expect_accepted "$new"
  expect_accepted "$old"
  grep -c '^GET /jwks' "$CHECK_DIR/idp.log"
}
jwks_no_fetch_storm() {
  local port; port=$(free_port)
  local iss="http://127.0.0.1:$port"
  start_idp "$port" "$CHECK_DIR/idp.log" JWKS_FILE="$KEYS"
  serve_oauth MCP_OAUTH_ISSUER="$iss"   # default minimum refresh interval (30 s)
  expect_accepted "$(cc_token svc-a mcp:tools:read "$RES" "$iss")"
  local before after i
  before=$(grep -c '^GET /jwks' "$CHECK_DIR/idp.log")
  for i in $(seq 15); do
    mcp_post "$(node "$HERE/forge.mjs" --keys "$KEYS" --iss "$iss" --aud "$RES" unknown-kid)" "$INIT" "" >/dev/null
    [[ "$STATUS" == 401 ]] || fail "forged kid #$i: status $STATUS" || return 1
  done
  after=$(grep -c '^GET /jwks' "$CHECK_DIR/idp.log")
  echo "JWKS fetches: $before before, $after after 15 unknown kids"
  ((after - before <= 1)) || fail "unknown kids caused $((after - before)) JWKS fetches"
}

# The tokens must never reach mcpgate's logs (all checks run with MCP_LOG_LEVEL=debug), and no
# check may have made mcpgate panic.
logs_clean() {
  local n; n=$(sort -u "$TOKENS" | grep -c . || true)
  echo "$n distinct tokens used"
  # (query-string tokens are query-token-not-logged's business)
  ! grep -rlF -f <(sort -u "$TOKENS" | grep .) "$ART" --include=mcpgate.log --exclude-dir=token-in-query \
    --exclude-dir=query-token-not-logged || fail "a token is in the logs above"
  ! grep -rn -- "panicked at" "$ART" --include=mcpgate.log || fail "mcpgate panicked"
}

# --- runner ------------------------------------------------------------------

passed=0 failed=0
mask() { sed -e 's/\(eyJ[A-Za-z0-9_-]\{6\}\)[A-Za-z0-9._-]*/\1…/g' -e 's/\x1b\[[0-9;]*m//g' -e 's/^/    /'; }
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

CHECKS=(
  prm-documents prm-never-offline-access prm-cors-preflight well-known-unknown-404
  challenge-401-every-method challenge-401-has-scope keepalive-after-401
  ts-sdk-oauth-flow py-sdk-oauth-flow py-sdk-oauth-flow-legacy ts-sdk-oauth-sse py-sdk-oauth-sse
  no-token malformed-header forged-valid-accepted idp-token-accepted expired expired-idp-token
  not-yet-valid issued-in-the-future wrong-issuer wrong-audience audience-normalised
  other-resource-same-issuer alg-none hs256-with-public-key unknown-kid tampered-signature
  tampered-payload plain-jwt-typ plain-jwt-allowed-when-configured token-in-query query-token-not-logged
  es256-second-key
  insufficient-scope admin-implies-all write-implies-read required-scopes-baseline
  session-other-subject-404 expired-token-in-live-session sse-session-other-subject
  introspection-user-token introspection-opaque-accepted introspection-opaque-refused introspection-down-503 idp-stopped-503
  jwks-rotation jwks-no-fetch-storm
  logs-clean
)
for check in ${ONLY:-${CHECKS[@]}}; do
  run_check "$check"
done
echo "oauth: $passed passed, $failed failed"
((failed == 0))
