#!/usr/bin/env bash
# Built-in authorization server checks (issue 4): mcpgate in builtin OAuth mode against real
# clients (TypeScript SDK, Python SDK, mcp-remote, the conformance suite's authorization mode) and
# attacks over HTTP. No human: the harness plays the user on the login and consent pages.
#
#   tests/as/run.sh [path/to/mcpgate]      (default: target/debug/mcpgate)
#   ONLY="name1 name2" tests/as/run.sh      run a subset
#
# Every check starts its own mcpgate (own SQLite store under its artifact directory) on the run's
# fixed port (the public URL, hence the resource and the token audience, is known up front) and
# stops it when done. Prints one PASS/FAIL line per check, then `builtin-as: N passed, M failed`;
# exits non-zero on any failure. Logs of every check: test-artifacts/as/<check>/.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/as"
MCPGATE="$(realpath "${1:-$ROOT/target/debug/mcpgate}")"
[[ -x "$MCPGATE" ]] || { echo "builtin-as: no mcpgate binary at $MCPGATE" >&2; exit 2; }
"$ROOT/scripts/setup-peers.sh" || exit 2
source "$ROOT/tests/interop/lib.sh"

ART="$ROOT/test-artifacts/as"
rm -rf "$ART" && mkdir -p "$ART"
TOKENS="$ART/tokens.list"   # every token handed out: none may reach mcpgate's logs
: >"$TOKENS"

MCP_PORT=$(free_port)
URL="http://127.0.0.1:$MCP_PORT"
RES="$URL/mcp"
SSE_RES="$URL/sse"
REDIRECT="http://127.0.0.1:9/callback"   # never contacted: codes are read from Location
PW_ALICE="alice-pw-$RANDOM$RANDOM"
PW_BOB="bob-pw-$RANDOM$RANDOM"

# --- mcpgate -----------------------------------------------------------------

as_env() {
  printf '%s\n' MCP_OAUTH_ENABLED=true MCP_OAUTH_MODE=builtin MCP_OAUTH_PUBLIC_URL="$URL" \
    MCP_OAUTH_STORE="sqlite://$CHECK_DIR/oauth.db"
}
# admin ARGS...: the admin CLI on the check's store.
admin() { env $(as_env) "$MCPGATE" "$@"; }
add_user() { printf '%s' "$2" | admin users add "$1" --password-stdin; }
# serve_as [VAR=value...]: mcpgate in builtin mode on MCP_PORT with the check's store; users
# alice and bob exist. Waits for /health; sets MCPGATE_PID.
serve_as() {
  if [[ ! -e "$CHECK_DIR/oauth.db" ]]; then
    add_user alice "$PW_ALICE" >/dev/null || return 1
    add_user bob "$PW_BOB" >/dev/null || return 1
  fi
  env MCP_TRANSPORT=streamable-http MCP_HOST=127.0.0.1 MCP_PORT="$MCP_PORT" \
    MCP_NOTES_DB="$CHECK_DIR/notes.db" MCP_LOG_LEVEL="${MCP_LOG_LEVEL:-debug}" \
    $(as_env) "$@" "$MCPGATE" >>"$CHECK_DIR/mcpgate.log" 2>&1 &
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
stop_mcpgate() {
  kill "$MCPGATE_PID" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$MCPGATE_PID" 2>/dev/null || break; sleep 0.1; done
  wait "$MCPGATE_PID" 2>/dev/null || true
}

# --- HTTP --------------------------------------------------------------------

# req METHOD URL [curl args...]: one request; status in $STATUS, headers in $CHECK_DIR/h, body in
# $CHECK_DIR/b.
req() {
  local method="$1" url="$2"; shift 2
  STATUS=$(curl -sS -o "$CHECK_DIR/b" -D "$CHECK_DIR/h" -w '%{http_code}' --max-time 15 -X "$method" "$url" "$@") || STATUS=000
  local loc; loc=$(header location)
  echo ">> $method ${url#$URL} -> $STATUS${loc:+  Location: $loc}"
}
header() { { grep -i "^$1:" "$CHECK_DIR/h" || true; } | sed -e 's/^[^:]*: *//' -e 's/\r$//'; }
body() { cat "$CHECK_DIR/b"; }
json() { jq -r "$1" "$CHECK_DIR/b" 2>/dev/null; }
# field NAME: the value of the hidden form field NAME in the last page.
field() { { grep -o "name=\"$1\" value=\"[^\"]*\"" "$CHECK_DIR/b" || true; } | head -n 1 | sed -e 's/.*value="//' -e 's/"$//'; }
form_action() { { grep -o '<form method="post" action="[^"]*"' "$CHECK_DIR/b" || true; } | head -n 1 | sed -e 's/.*action="//' -e 's/"$//'; }
qparam() { python3 -c 'import sys, urllib.parse as u; print(u.parse_qs(u.urlparse(sys.argv[1]).query).get(sys.argv[2], [""])[0])' "$1" "$2"; }
urlenc() { python3 -c 'import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe=""))' "$1"; }

fail() { echo "ASSERTION FAILED: $*" >&2; return 1; }
expect_status() { [[ "$STATUS" == "$1" ]] || fail "status $STATUS, want $1 (body: $(head -c 300 "$CHECK_DIR/b"))"; }
expect_no_location() { [[ -z "$(header location)" ]] || fail "redirected to $(header location)"; }
# expect_page STATUS: an HTML page (never a redirect) with the anti-framing headers.
expect_page() {
  expect_status "$1" || return 1
  expect_no_location || return 1
  [[ "$(header content-type)" == text/html* ]] || fail "not an HTML page: $(header content-type)" || return 1
  expect_framing
}
expect_framing() {
  [[ "$(header content-security-policy)" == *"frame-ancestors 'none'"* ]] || fail "no CSP frame-ancestors 'none': $(header content-security-policy)" || return 1
  [[ "$(header x-frame-options)" == DENY ]] || fail "X-Frame-Options: $(header x-frame-options)"
}
# expect_oauth_error STATUS CODE: a JSON OAuth error with Cache-Control: no-store, no token.
expect_oauth_error() {
  expect_status "$1" || return 1
  [[ "$(json .error)" == "$2" ]] || fail "error $(json .error), want $2: $(body)" || return 1
  [[ "$(header cache-control)" == *no-store* ]] || fail "error without Cache-Control: no-store" || return 1
  [[ "$(json '.access_token // empty')" == "" ]] || fail "a token was issued"
}
# expect_redirect_error CODE: a 303 back to the client's redirect URI with error=CODE, state and
# iss, and no code.
expect_redirect_error() {
  local loc; loc=$(header location)
  [[ "$STATUS" == 303 && "$loc" == "$REDIRECT?"* ]] || fail "want 303 to $REDIRECT, got $STATUS ${loc:-no Location}: $(head -c 300 "$CHECK_DIR/b")" || return 1
  [[ "$(qparam "$loc" error)" == "$1" ]] || fail "error=$(qparam "$loc" error), want $1" || return 1
  [[ "$(qparam "$loc" iss)" == "$URL" ]] || fail "no iss=$URL on the error redirect" || return 1
  [[ "$(qparam "$loc" state)" == st-1 ]] || fail "state not echoed" || return 1
  [[ -z "$(qparam "$loc" code)" ]] || fail "a code came with the error"
}

# --- OAuth as a client and as the user ------------------------------------------

# pkce: a fresh VERIFIER and its S256 CHALLENGE.
pkce() {
  VERIFIER=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
  CHALLENGE=$(python3 -c 'import sys, hashlib, base64; print(base64.urlsafe_b64encode(hashlib.sha256(sys.argv[1].encode()).digest()).decode().rstrip("="))' "$VERIFIER")
}
# register [JSON]: DCR of a public client with REDIRECT; CLIENT_ID.
register() {
  local meta="${1:-{\"client_name\":\"as-run\",\"redirect_uris\":[\"$REDIRECT\"],\"token_endpoint_auth_method\":\"none\",\"grant_types\":[\"authorization_code\",\"refresh_token\"]\}}"
  req POST "$URL/register" -H 'content-type: application/json' --data "$meta" >&2
  [[ "$STATUS" == 201 ]] || { fail "registration answered $STATUS: $(body)"; return 1; }
  CLIENT_ID=$(json .client_id)
}
# authz_url [extra query]: an authorization request for CLIENT_ID, REDIRECT, CHALLENGE, state st-1.
authz_url() {
  printf '%s/authorize?response_type=code&client_id=%s&redirect_uri=%s&code_challenge=%s&code_challenge_method=S256&state=st-1%s' \
    "$URL" "$(urlenc "$CLIENT_ID")" "$(urlenc "$REDIRECT")" "$CHALLENGE" "${1:-}"
}
# The browser's session cookie, kept across requests of a check (the cookie is `__Host-`,
# Secure: sent back by hand over plain http on loopback).
COOKIE=""
cookie_args() { [[ -n "$COOKIE" ]] && printf '%s\n' -H "Cookie: $COOKIE"; }
take_cookie() {
  local c; c=$(header set-cookie | { grep '^__Host-mcpgate-session=' || true; } | head -n 1 | sed 's/;.*//')
  [[ -n "$c" ]] && COOKIE="$c"
  return 0
}
# browse URL USER PASSWORD [approve|deny]: plays the user from an authorization URL to the
# redirect back to the client. LOCATION: where it ended; PAGES: the forms submitted.
browse() {
  local url="$1" user="$2" pass="$3" decision="${4:-approve}" step action pending csrf
  LOCATION="" PAGES=""
  mapfile -t cargs < <(cookie_args)
  req GET "$url" "${cargs[@]}"
  for step in 1 2 3 4; do
    take_cookie
    if [[ "$STATUS" == 303 ]]; then LOCATION=$(header location); return 0; fi
    [[ "$STATUS" == 200 ]] || { fail "authorization page answered $STATUS: $(head -c 300 "$CHECK_DIR/b")"; return 1; }
    action=$(form_action) pending=$(field pending) csrf=$(field csrf)
    PAGES="$PAGES $action"
    mapfile -t cargs < <(cookie_args)
    case "$action" in
      /authorize/login)
        req POST "$URL$action" "${cargs[@]}" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" \
          --data-urlencode "username=$user" --data-urlencode "password=$pass" ;;
      /authorize/consent)
        req POST "$URL$action" "${cargs[@]}" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" \
          --data-urlencode "decision=$decision" ;;
      *) fail "unexpected page: $(head -c 300 "$CHECK_DIR/b")"; return 1 ;;
    esac
  done
  fail "no redirect after $PAGES"
}
# code_for [extra query] [user] [password]: a fresh PKCE pair and an authorization code (CODE).
code_for() {
  pkce
  browse "$(authz_url "${1:-}")" "${2:-alice}" "${3:-$PW_ALICE}" || return 1
  CODE=$(qparam "$LOCATION" code)
  [[ -n "$CODE" ]] || fail "no code in $LOCATION"
}
# exchange [curl args]: the code for tokens (public client).
exchange() {
  req POST "$URL/token" -d grant_type=authorization_code --data-urlencode "code=$CODE" \
    --data-urlencode "code_verifier=$VERIFIER" --data-urlencode "redirect_uri=$REDIRECT" \
    --data-urlencode "client_id=$CLIENT_ID" "$@"
}
# tokens_from_last: AT and RT from the last token response.
tokens_from_last() {
  AT=$(json '.access_token // empty') RT=$(json '.refresh_token // empty')
  [[ -n "$AT" ]] && echo "$AT" >>"$TOKENS"
  [[ -n "$RT" ]] && echo "$RT" >>"$TOKENS"
  [[ -n "$AT" ]] || fail "no access token: $(body)"
}
# login_tokens [extra query] [user] [password]: register (once) + code + exchange → AT, RT.
login_tokens() {
  [[ -n "${CLIENT_ID:-}" ]] || register || return 1
  code_for "$@" || return 1
  exchange; expect_status 200 || return 1
  tokens_from_last
}
refresh() {
  req POST "$URL/token" -d grant_type=refresh_token --data-urlencode "refresh_token=$1" \
    --data-urlencode "client_id=$CLIENT_ID" "${@:2}"
}
jws_part() { python3 -c 'import sys, base64; p = sys.argv[1].split(".")[int(sys.argv[2])]; print(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode())' "$1" "$2"; }
kid_of() { jws_part "$1" 0 | jq -r .kid; }

INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"as-run","version":"1"}}}'
INITIALIZED='{"jsonrpc":"2.0","method":"notifications/initialized"}'
WHOAMI='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}'
mcp_post() {
  local token="$1" body="$2" session="${3:-}"
  local args=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream' --data "$body")
  [[ -n "$token" ]] && args+=(-H "Authorization: Bearer $token")
  [[ -n "$session" ]] && args+=(-H "mcp-session-id: $session" -H 'mcp-protocol-version: 2025-11-25')
  req POST "$RES" "${args[@]}"
}
open_session() {
  mcp_post "$1" "$INIT" >&2
  [[ "$STATUS" == 200 ]] || { fail "initialize answered $STATUS: $(body)"; return 1; }
  local sid; sid=$(header mcp-session-id)
  mcp_post "$1" "$INITIALIZED" "$sid" >&2
  printf '%s' "$sid"
}
accepted() { mcp_post "$1" "$INIT"; [[ "$STATUS" == 200 ]]; }
# refused_within SECS TOKEN: initialize with TOKEN answers 401 within SECS seconds.
refused_within() {
  local deadline=$((SECONDS + $1))
  while true; do
    mcp_post "$2" "$INIT"
    [[ "$STATUS" == 401 ]] && return 0
    ((SECONDS < deadline)) || { fail "token still accepted after $1 s (status $STATUS)"; return 1; }
    sleep 0.5
  done
}

# --- checks: SDK clients and mcp-remote ---------------------------------------------

NODE="$NODE22"
ts_sdk_http() {
  serve_as MCP_OAUTH_ACCESS_TOKEN_TTL_SECS=3 MCP_OAUTH_LEEWAY_SECS=0
  timeout 120 "$NODE" "$HERE/ts_as_flow.mjs" --url "$RES" --user alice --password "$PW_ALICE" --ttl 3
}
ts_sdk_sse() {
  serve_as
  timeout 120 "$NODE" "$HERE/ts_as_flow.mjs" --transport sse --url "$SSE_RES" --user bob --password "$PW_BOB" \
    --scope "mcp:tools:read mcp:tools:write"
}
py_sdk_http() {
  serve_as MCP_OAUTH_ACCESS_TOKEN_TTL_SECS=3 MCP_OAUTH_LEEWAY_SECS=0
  timeout 120 "$PYTHON" "$HERE/py_as_flow.py" --url "$RES" --user bob --password "$PW_BOB" --ttl 3
}
py_sdk_sse() {
  serve_as MCP_OAUTH_ACCESS_TOKEN_TTL_SECS=3 MCP_OAUTH_LEEWAY_SECS=0
  timeout 120 "$PYTHON" "$HERE/py_as_flow.py" --transport sse --url "$SSE_RES" --user alice --password "$PW_ALICE" \
    --ttl 3 --scope "mcp:tools:read mcp:tools:write"
}
mcp_remote() {
  local transport="$1" url="$2" want="$3"
  serve_as
  local cb; cb=$(free_port)
  mkdir -p "$CHECK_DIR/mcp-remote-config"
  mkfifo "$CHECK_DIR/stdin"
  MCP_REMOTE_CONFIG_DIR="$CHECK_DIR/mcp-remote-config" BROWSER=true \
    "$NODE" "$PEERS/node_modules/mcp-remote/dist/proxy.js" "$url" "$cb" --transport "$transport" --allow-http \
    <"$CHECK_DIR/stdin" >"$CHECK_DIR/remote.out" 2>"$CHECK_DIR/remote.err" &
  PIDS+=("$!")
  local remote=$!
  exec 7>"$CHECK_DIR/stdin"
  local auth_url="" deadline=$((SECONDS + 30))
  until [[ -n "$auth_url" ]]; do
    auth_url=$(grep -A2 'Please authorize this client by visiting:' "$CHECK_DIR/remote.err" | grep -o 'http://127.0.0.1:[0-9]*/authorize?[^ ]*' | head -n 1 || true)
    kill -0 $remote 2>/dev/null || { cat "$CHECK_DIR/remote.err"; fail "mcp-remote exited"; return 1; }
    ((SECONDS < deadline)) || { cat "$CHECK_DIR/remote.err"; fail "no authorization URL from mcp-remote"; return 1; }
    sleep 0.2
  done
  echo "mcp-remote asks: $auth_url"
  [[ "$(qparam "$auth_url" resource)" == "$url" ]] || fail "mcp-remote sent resource=$(qparam "$auth_url" resource)"
  local redirect; redirect=$(qparam "$auth_url" redirect_uri)
  REDIRECT="$redirect"
  browse "$auth_url" alice "$PW_ALICE" || return 1
  [[ "$LOCATION" == "$redirect?"* ]] || fail "ended at $LOCATION, not at mcp-remote's callback $redirect"
  curl -sS --max-time 10 "$LOCATION" >/dev/null || fail "mcp-remote's callback refused the redirect"
  local msg
  for msg in "$INIT" "$INITIALIZED" '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' "$WHOAMI"; do
    printf '%s\n' "$msg" >&7
    sleep 0.3
  done
  deadline=$((SECONDS + 30))
  until grep -q '"id":2' "$CHECK_DIR/remote.out" 2>/dev/null && [[ $(grep -c '"id":2' "$CHECK_DIR/remote.out") -ge 2 ]]; do
    ((SECONDS < deadline)) || { tail -n 30 "$CHECK_DIR/remote.err"; fail "no answers through mcp-remote: $(cat "$CHECK_DIR/remote.out")"; return 1; }
    kill -0 $remote 2>/dev/null || { tail -n 30 "$CHECK_DIR/remote.err"; fail "mcp-remote exited"; return 1; }
    sleep 0.2
  done
  exec 7>&-
  cat "$CHECK_DIR/remote.out"
  jq -se 'map(select(.result.tools)) | .[0].result.tools | map(.name) | index("whoami") != null' "$CHECK_DIR/remote.out" >/dev/null \
    || fail "tools/list through mcp-remote lacks whoami"
  jq -se 'map(select(.result.content)) | .[0].result.content[0].text | fromjson | .claims.preferred_username == "alice"' \
    "$CHECK_DIR/remote.out" >/dev/null || fail "whoami through mcp-remote does not name alice"
  jq -se --arg t "$want" 'map(select(.result.content)) | .[0].result.content[0].text | fromjson | .transport == $t' \
    "$CHECK_DIR/remote.out" >/dev/null || fail "mcp-remote did not use the $want transport"
}
mcp_remote_http() { mcp_remote http-only "$RES" streamable-http; }
mcp_remote_sse() { mcp_remote sse-only "$SSE_RES" sse; }

# --- checks: client ID metadata documents -------------------------------------------------

# The SSRF guard refuses loopback and private addresses, so no metadata document can be served
# from this machine: only the advertisement and the refusals are checked here.
cimd_advertised_and_guarded() {
  serve_as
  req GET "$URL/.well-known/oauth-authorization-server"; expect_status 200
  [[ "$(json .client_id_metadata_document_supported)" == true ]] || fail "client_id_metadata_document_supported is not true"
  pkce
  local id
  for id in "https://127.0.0.1:1/x.json" "https://169.254.169.254/latest/meta-data.json" "https://localhost/client.json" \
    "https://10.0.0.1/client.json" "https://[::1]/client.json"; do
    CLIENT_ID="$id"
    req GET "$(authz_url)"
    expect_page 400 || return 1
    grep -qi 'could not be verified\|not known' "$CHECK_DIR/b" || fail "error page does not explain: $(head -c 300 "$CHECK_DIR/b")" || return 1
  done
}

# --- checks: conformance authorization mode ----------------------------------------------

conformance_authorization() {
  MCPGATE_AS_ART="$CHECK_DIR" "$ROOT/tests/conformance/authorization.sh" "$MCPGATE"
}

# --- checks: attacks ----------------------------------------------------------------------

pkce_missing() {
  serve_as; register; pkce
  req GET "$URL/authorize?response_type=code&client_id=$CLIENT_ID&redirect_uri=$(urlenc "$REDIRECT")&state=st-1"
  expect_redirect_error invalid_request
  req GET "$URL/authorize?response_type=code&client_id=$CLIENT_ID&redirect_uri=$(urlenc "$REDIRECT")&state=st-1&code_challenge=$CHALLENGE"
  expect_redirect_error invalid_request   # no method means plain
  # a code obtained with PKCE cannot be redeemed without the verifier
  code_for
  req POST "$URL/token" -d grant_type=authorization_code --data-urlencode "code=$CODE" \
    --data-urlencode "redirect_uri=$REDIRECT" --data-urlencode "client_id=$CLIENT_ID"
  expect_oauth_error 400 invalid_request
}
pkce_plain() {
  serve_as; register; pkce
  req GET "$URL/authorize?response_type=code&client_id=$CLIENT_ID&redirect_uri=$(urlenc "$REDIRECT")&state=st-1&code_challenge=$VERIFIER&code_challenge_method=plain"
  expect_redirect_error invalid_request
}
pkce_wrong_verifier() {
  serve_as; register; code_for
  local right="$VERIFIER"
  pkce   # another verifier
  exchange; expect_oauth_error 400 invalid_grant
  VERIFIER="$right"
  exchange
  echo "the right verifier after a wrong one: $STATUS $(json .error)"
  [[ "$(json '.access_token // empty')" == "" ]] || echo "note: the code survived a wrong verifier"
}
code_replay() {
  serve_as; register; code_for
  exchange; expect_status 200; tokens_from_last
  accepted "$AT" || fail "fresh access token refused"
  exchange; expect_oauth_error 400 invalid_grant
  refresh "$RT"; expect_oauth_error 400 invalid_grant
  refused_within 5 "$AT"
}
refresh_replay() {
  serve_as MCP_OAUTH_REFRESH_GRACE_SECS=1
  login_tokens
  local rt1="$RT"
  refresh "$rt1"; expect_status 200; tokens_from_last
  [[ "$RT" != "$rt1" ]] || fail "refresh token not rotated"
  local rt2="$RT"
  refresh "$rt2"; expect_status 200; tokens_from_last
  local rt3="$RT" at3="$AT"
  accepted "$at3" || fail "fresh access token refused"
  sleep 2   # past the grace window
  refresh "$rt1"; expect_oauth_error 400 invalid_grant
  refresh "$rt3"; expect_oauth_error 400 invalid_grant   # the live sibling died with its family
  refused_within 5 "$at3"
}
refresh_grace() {
  serve_as MCP_OAUTH_REFRESH_GRACE_SECS=5
  login_tokens
  local rt1="$RT"
  refresh "$rt1"; expect_status 200; tokens_from_last
  local rt2="$RT"
  refresh "$rt1"   # a concurrent refresh with the same token, inside the grace window
  echo "replay inside the grace window: $STATUS $(json '.error // "tokens"')"
  [[ "$STATUS" == 200 ]] && tokens_from_last
  refresh "$rt2"; expect_status 200   # the user is not logged out
}
redirect_mismatch() {
  serve_as; register; pkce
  local r
  for r in "https://evil.example/callback" "http://127.0.0.1:9/other" "http://127.0.0.1:9/callback/../evil" \
    "http://127.0.0.1:9/callback?next=https://evil.example" "http://127.0.0.1:9@evil.example/callback" \
    "http://127.0.0.1.evil.example:9/callback" "http://127.0.0.1:9/callback#x" "javascript:alert(1)//" \
    "//evil.example/callback" "HTTP://127.0.0.1:9/CALLBACK"; do
    req GET "$URL/authorize?response_type=code&client_id=$CLIENT_ID&redirect_uri=$(urlenc "$r")&code_challenge=$CHALLENGE&code_challenge_method=S256&state=st-1"
    expect_page 400 || return 1
  done
  # loopback: any port of the registered URI
  req GET "$URL/authorize?response_type=code&client_id=$CLIENT_ID&redirect_uri=$(urlenc http://127.0.0.1:4567/callback)&code_challenge=$CHALLENGE&code_challenge_method=S256&state=st-1"
  expect_page 200
  # the token endpoint: a code is bound to its redirect URI
  code_for
  req POST "$URL/token" -d grant_type=authorization_code --data-urlencode "code=$CODE" --data-urlencode "code_verifier=$VERIFIER" \
    --data-urlencode "redirect_uri=http://127.0.0.1:9/other" --data-urlencode "client_id=$CLIENT_ID"
  expect_oauth_error 400 invalid_grant
}
open_redirect() {
  serve_as; pkce
  local q="response_type=code&code_challenge=$CHALLENGE&code_challenge_method=S256&state=st-1&redirect_uri=$(urlenc https://evil.example/cb)"
  req GET "$URL/authorize?$q&client_id=no-such-client"; expect_page 400
  req GET "$URL/authorize?$q"; expect_page 400                       # no client_id
  req GET "$URL/authorize?$q&client_id=a&client_id=b"; expect_page 400
  register "{\"client_name\":\"web\",\"redirect_uris\":[\"https://app.example/cb\",\"https://app.example/cb2\"],\"token_endpoint_auth_method\":\"none\"}"
  req GET "$URL/authorize?response_type=code&client_id=$CLIENT_ID&code_challenge=$CHALLENGE&code_challenge_method=S256"
  expect_page 400   # several registered URIs and none named
  for r in "https://app.example/cb/../../evil" "https://app.example/cbx" "https://app.example.evil.example/cb" \
    "https://app.example:8443/cb" "http://app.example/cb"; do
    req GET "$URL/authorize?response_type=code&client_id=$CLIENT_ID&redirect_uri=$(urlenc "$r")&code_challenge=$CHALLENGE&code_challenge_method=S256"
    expect_page 400 || return 1
  done
  # after the client and redirect URI are validated, errors do go back, with iss
  register
  req GET "$(authz_url)&response_type=token"; expect_redirect_error invalid_request
  req GET "$URL/authorize?response_type=token&client_id=$CLIENT_ID&redirect_uri=$(urlenc "$REDIRECT")&code_challenge=$CHALLENGE&code_challenge_method=S256&state=st-1"
  expect_redirect_error unsupported_response_type
}
scope_widening() {
  serve_as
  login_tokens "&scope=mcp:tools:read"
  refresh "$RT" -d "scope=mcp:tools:read mcp:tools:write"; expect_oauth_error 400 invalid_scope
  refresh "$RT" -d "scope=mcp:admin"; expect_oauth_error 400 invalid_scope
  refresh "$RT"; expect_status 200; tokens_from_last   # the failed attempts did not burn the token
  # narrowing is allowed
  COOKIE="" login_tokens "&scope=$(urlenc 'mcp:tools:read mcp:tools:write')"
  refresh "$RT" -d "scope=mcp:tools:read"; expect_status 200
  [[ "$(json .scope)" == "mcp:tools:read" ]] || fail "narrowed refresh has scope $(json .scope)"
  # a scope nobody can grant
  pkce; req GET "$(authz_url "&scope=nothing:known")"; expect_redirect_error invalid_scope
}
unknown_resource() {
  serve_as; register; pkce
  req GET "$(authz_url "&resource=$(urlenc "$URL/other")")"; expect_redirect_error invalid_target
  req GET "$(authz_url "&resource=$(urlenc "https://evil.example/mcp")")"; expect_redirect_error invalid_target
  code_for "&resource=$(urlenc "$RES")"
  exchange --data-urlencode "resource=$URL/other"; expect_oauth_error 400 invalid_target
  code_for "&resource=$(urlenc "$RES")"
  exchange --data-urlencode "resource=$RES"; expect_status 200; tokens_from_last
  refresh "$RT" --data-urlencode "resource=https://evil.example/mcp"; expect_oauth_error 400 invalid_target
  # the default audience when absent (conformance and old clients send none)
  code_for; exchange; expect_status 200; tokens_from_last
  [[ "$(jws_part "$AT" 1 | jq -r .aud)" == "$RES" ]] || fail "default audience $(jws_part "$AT" 1 | jq -r .aud)"
}
csrf_login() {
  serve_as; register; pkce
  req GET "$(authz_url)"; expect_page 200
  local pending csrf; pending=$(field pending) csrf=$(field csrf)
  req POST "$URL/authorize/login" --data-urlencode "pending=$pending" -d username=alice --data-urlencode "password=$PW_ALICE"
  expect_page 400; [[ -z "$(header set-cookie)" ]] || fail "signed in without a CSRF token"
  req POST "$URL/authorize/login" --data-urlencode "pending=$pending" -d csrf=forged -d username=alice --data-urlencode "password=$PW_ALICE"
  expect_page 400; [[ -z "$(header set-cookie)" ]] || fail "signed in with a wrong CSRF token"
  # a form marked cross-site by the browser
  req POST "$URL/authorize/login" -H 'Sec-Fetch-Site: cross-site' --data-urlencode "pending=$pending" \
    --data-urlencode "csrf=$csrf" -d username=alice --data-urlencode "password=$PW_ALICE"
  expect_page 403; [[ -z "$(header set-cookie)" ]] || fail "signed in cross-site"
  # control: the right token signs in
  req POST "$URL/authorize/login" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d username=alice --data-urlencode "password=$PW_ALICE"
  expect_page 200; [[ "$(form_action)" == /authorize/consent ]] || fail "no consent page after a good login"
}
csrf_consent() {
  serve_as; register; pkce
  req GET "$(authz_url)"
  req POST "$URL/authorize/login" --data-urlencode "pending=$(field pending)" --data-urlencode "csrf=$(field csrf)" -d username=alice --data-urlencode "password=$PW_ALICE"
  take_cookie
  local pending csrf; pending=$(field pending) csrf=$(field csrf)
  req POST "$URL/authorize/consent" -H "Cookie: $COOKIE" --data-urlencode "pending=$pending" -d decision=approve
  expect_page 400
  req POST "$URL/authorize/consent" -H "Cookie: $COOKIE" --data-urlencode "pending=$pending" -d csrf=forged -d decision=approve
  expect_page 400
  # the token is bound to the session: bob's browser cannot use alice's form
  local alice="$COOKIE"
  pkce; COOKIE=""; req GET "$(authz_url)"
  req POST "$URL/authorize/login" --data-urlencode "pending=$(field pending)" --data-urlencode "csrf=$(field csrf)" -d username=bob --data-urlencode "password=$PW_BOB"
  take_cookie
  req POST "$URL/authorize/consent" -H "Cookie: $COOKIE" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d decision=approve
  expect_page 400
  # without the session cookie: sign in again, nothing issued
  req POST "$URL/authorize/consent" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d decision=approve
  expect_no_location
  # control: the right token and cookie
  req POST "$URL/authorize/consent" -H "Cookie: $alice" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d decision=approve
  [[ "$STATUS" == 303 && -n "$(qparam "$(header location)" code)" ]] || fail "the genuine consent did not issue a code"
  expect_framing
  # and only once
  req POST "$URL/authorize/consent" -H "Cookie: $alice" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d decision=approve
  expect_page 400
}
framing_headers() {
  serve_as; register; pkce
  req GET "$(authz_url)"; expect_page 200                                      # login
  local pending csrf; pending=$(field pending) csrf=$(field csrf)
  req POST "$URL/authorize/login" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d username=alice -d password=wrong
  expect_page 400                                                              # login error
  req POST "$URL/authorize/login" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d username=alice --data-urlencode "password=$PW_ALICE"
  expect_page 200; take_cookie                                                 # consent
  req POST "$URL/authorize/consent" -H "Cookie: $COOKIE" --data-urlencode "pending=$pending" --data-urlencode "csrf=$(field csrf)" -d decision=deny
  [[ "$STATUS" == 303 && "$(qparam "$(header location)" error)" == access_denied ]] || fail "deny: $STATUS $(header location)"
  expect_framing                                                               # redirect
  req GET "$URL/authorize?client_id=nobody"; expect_page 400                   # error page
  req GET "$URL/consents" -H "Cookie: $COOKIE"; expect_page 200                # authorized applications
  req GET "$URL/consents"; expect_page 200                                     # its sign-in
  # the pages carry no CORS (never on the authorization endpoint)
  req GET "$(authz_url)" -H 'Origin: https://evil.example'
  [[ -z "$(header access-control-allow-origin)" ]] || fail "CORS on /authorize"
}
register_bad_redirects() {
  serve_as
  local r
  for r in 'javascript:alert(1)' 'data:text/html,hi' 'http://127.0.0.1:9/cb#frag' 'https://app.example/cb#' \
    'http://app.example/cb' 'file:///etc/passwd' 'vbscript:x' 'not a uri'; do
    req POST "$URL/register" -H 'content-type: application/json' \
      --data "$(jq -nc --arg r "$r" '{client_name:"x", redirect_uris:[$r], token_endpoint_auth_method:"none"}')"
    expect_oauth_error 400 invalid_redirect_uri || return 1
    [[ "$(json '.client_id // empty')" == "" ]] || fail "registered anyway" || return 1
  done
  # one bad URI among good ones spoils the registration
  req POST "$URL/register" -H 'content-type: application/json' \
    --data '{"client_name":"x","redirect_uris":["http://127.0.0.1:9/cb","javascript:alert(1)"],"token_endpoint_auth_method":"none"}'
  expect_oauth_error 400 invalid_redirect_uri
  # controls: loopback, https, private-use scheme
  req POST "$URL/register" -H 'content-type: application/json' \
    --data '{"client_name":"x","redirect_uris":["http://127.0.0.1:9/cb","https://app.example/cb","com.example.app:/cb"],"token_endpoint_auth_method":"none"}'
  expect_status 201
  jq -e '.redirect_uris | length == 3' "$CHECK_DIR/b" >/dev/null || fail "registered redirect_uris not echoed"
}
login_throttle() {
  serve_as; register; pkce
  req GET "$(authz_url)"
  local pending csrf i; pending=$(field pending) csrf=$(field csrf)
  for i in $(seq 5); do
    req POST "$URL/authorize/login" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d username=alice -d "password=guess-$i"
    expect_page 400 || return 1
  done
  req POST "$URL/authorize/login" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d username=alice -d "password=guess-6"
  expect_page 429; [[ -n "$(header retry-after)" ]] || fail "429 without Retry-After"
  # throttled means throttled: the right password is refused too, and nothing is issued
  req POST "$URL/authorize/login" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d username=alice --data-urlencode "password=$PW_ALICE"
  expect_page 429; [[ -z "$(header set-cookie)" ]] || fail "signed in while throttled"
  # another user from the same address is not locked out by alice's throttle
  req POST "$URL/authorize/login" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d username=bob --data-urlencode "password=$PW_BOB"
  expect_status 200
  # unknown users and wrong passwords look alike
  pkce; req GET "$(authz_url)"; pending=$(field pending) csrf=$(field csrf)
  req POST "$URL/authorize/login" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d username=nobody-here -d password=x
  local unknown; unknown=$(sed -n '/<main/,/<\/main>/p' "$CHECK_DIR/b" | sed 's/nobody-here/USER/g' | md5sum)
  req POST "$URL/authorize/login" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" -d username=bob -d password=x
  local wrong; wrong=$(sed -n '/<main/,/<\/main>/p' "$CHECK_DIR/b" | sed 's/bob/USER/g' | md5sum)
  [[ "$unknown" == "$wrong" ]] || fail "unknown user and wrong password answer differently"
}
revoke_user() {
  serve_as
  login_tokens "" alice "$PW_ALICE"
  local alice_at="$AT" alice_rt="$RT"
  COOKIE=""; login_tokens "" bob "$PW_BOB"
  local bob_at="$AT"
  local sid; sid=$(open_session "$alice_at")
  mcp_post "$alice_at" "$WHOAMI" "$sid"; expect_status 200
  # alice's live stream on her session
  curl -sN --max-time 30 -H "Authorization: Bearer $alice_at" -H 'accept: text/event-stream' \
    -H "mcp-session-id: $sid" -H 'mcp-protocol-version: 2025-11-25' "$RES" >"$CHECK_DIR/stream.txt" 2>&1 &
  local stream=$!
  PIDS+=("$stream")
  sleep 0.5
  kill -0 $stream 2>/dev/null || fail "the GET stream did not stay open: $(cat "$CHECK_DIR/stream.txt")"
  admin tokens revoke --user alice || fail "tokens revoke failed"
  refused_within 3 "$alice_at"
  mcp_post "$alice_at" "$WHOAMI" "$sid"; expect_status 401
  refresh "$alice_rt"; expect_oauth_error 400 invalid_grant
  local deadline=$((SECONDS + 5))
  while kill -0 $stream 2>/dev/null; do
    ((SECONDS < deadline)) || { fail "alice's live stream still open 5 s after revocation"; break; }
    sleep 0.2
  done
  # a new login of alice does not resurrect the closed session
  COOKIE=""; CLIENT_ID=""; login_tokens "" alice "$PW_ALICE"
  mcp_post "$AT" "$WHOAMI" "$sid"; expect_status 404
  accepted "$bob_at" || fail "bob's token died with alice's"
}
keys_rotate() {
  serve_as
  login_tokens
  local old="$AT" old_kid; old_kid=$(kid_of "$AT")
  req GET "$URL/jwks"; expect_status 200
  [[ "$(json '.keys | length')" == 1 ]] || echo "note: $(json '.keys | length') keys before rotation"
  admin keys rotate || fail "keys rotate failed"
  admin keys list
  local deadline=$((SECONDS + 10))
  until req GET "$URL/jwks" >/dev/null && [[ "$(json '.keys | length')" -ge 2 ]]; do
    ((SECONDS < deadline)) || { fail "JWKS does not list the new key after 10 s: $(body)"; return 1; }
    sleep 0.5
  done
  body | jq -c '[.keys[] | {kid, alg, use}]'
  local new_kid="" new
  deadline=$((SECONDS + 10))
  while true; do
    refresh "$RT"; expect_status 200 || return 1; tokens_from_last
    new_kid=$(kid_of "$AT")
    [[ "$new_kid" != "$old_kid" ]] && break
    ((SECONDS < deadline)) || { fail "new tokens still signed with $old_kid 10 s after rotation"; return 1; }
    sleep 1
  done
  new="$AT"
  echo "old kid $old_kid, new kid $new_kid"
  jq -e --arg a "$old_kid" --arg b "$new_kid" '[.keys[].kid] | index($a) != null and index($b) != null' "$CHECK_DIR/b" >/dev/null \
    || { req GET "$URL/jwks"; jq -e --arg a "$old_kid" --arg b "$new_kid" '[.keys[].kid] | index($a) != null and index($b) != null' "$CHECK_DIR/b" >/dev/null; } \
    || fail "JWKS does not list both kids: $(body)"
  accepted "$new" || fail "token signed with the new key refused"
  accepted "$old" || fail "token signed with the old key refused after rotation"
}
restart_persistence() {
  serve_as
  login_tokens
  local at="$AT" rt="$RT" client="$CLIENT_ID" cookie="$COOKIE"
  accepted "$at" || fail "fresh token refused"
  stop_mcpgate
  serve_as
  ! grep -q 'First start' "$CHECK_DIR/mcpgate.log" || fail "a first start on an existing store"
  accepted "$at" || fail "access token refused after a restart (keys lost?)"
  refresh "$rt"; expect_status 200 || return 1; tokens_from_last
  accepted "$AT" || fail "refreshed token refused"
  # the client is still registered, the browser session and the consent are remembered
  pkce; req GET "$(authz_url)" -H "Cookie: $cookie"
  [[ "$STATUS" == 303 && -n "$(qparam "$(header location)" code)" ]] || echo "note: browser session not kept across restarts ($STATUS)"
  COOKIE=""; pkce
  browse "$(authz_url)" alice "$PW_ALICE" || return 1
  [[ "$PAGES" == " /authorize/login" ]] || fail "after a restart the user saw: $PAGES (consent not remembered?)"
  CODE=$(qparam "$LOCATION" code); exchange; expect_status 200
}

# The tokens must never reach mcpgate's logs (debug level), and nothing may have panicked.
logs_clean() {
  local n; n=$(sort -u "$TOKENS" | grep -c . || true)
  echo "$n distinct tokens used"
  ((n == 0)) || ! grep -rlF -f <(sort -u "$TOKENS" | grep .) "$ART" --include=mcpgate.log || fail "a token is in the logs above"
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
    [[ -s "$CHECK_DIR/mcpgate.log" ]] && { echo "    -- mcpgate.log (tail) --"; tail -n 5 "$CHECK_DIR/mcpgate.log" | mask; }
  fi
}

CHECKS=(
  ts-sdk-http ts-sdk-sse py-sdk-http py-sdk-sse mcp-remote-http mcp-remote-sse
  cimd-advertised-and-guarded conformance-authorization
  pkce-missing pkce-plain pkce-wrong-verifier code-replay refresh-replay refresh-grace
  redirect-mismatch open-redirect scope-widening unknown-resource csrf-login csrf-consent
  framing-headers register-bad-redirects login-throttle revoke-user keys-rotate restart-persistence
  logs-clean
)
for check in ${ONLY:-${CHECKS[@]}}; do
  run_check "$check"
done
echo "builtin-as: $passed passed, $failed failed"
((failed == 0))
