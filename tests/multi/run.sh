#!/usr/bin/env bash
# Two mcpgate instances on one PostgreSQL database behave as one server (issue 5).
#
#   tests/multi/run.sh [path/to/mcpgate]      (default: target/debug/mcpgate)
#   ONLY="name1 name2" tests/multi/run.sh      run a subset (later checks use earlier checks' state)
#   PGURL=postgres://postgres@127.0.0.1:5432   the server (default); a fresh database is created
#                                              per run and dropped at the end (KEEP_DB=1 keeps it)
#
# Instances A and B (built-in AS, Streamable HTTP) run on two loopback ports with the SAME public
# URL (A's), as two replicas behind one load balancer would: one issuer, one resource, one token
# audience. Requests meant for B go to B's port. The admin CLI (`keys rotate`, `tokens revoke`,
# `users add`) runs against the shared store, as an operator's would.
#
# Prints one PASS/FAIL line per check, then `multi-instance: N passed, M failed`; exits non-zero
# on any failure. Artifacts: test-artifacts/multi/ (per-check output.log, A/ and B/ mcpgate logs).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/multi"
MCPGATE="$(realpath "${1:-$ROOT/target/debug/mcpgate}")"
[[ -x "$MCPGATE" ]] || { echo "multi-instance: no mcpgate binary at $MCPGATE" >&2; exit 2; }
for tool in psql curl jq python3; do
  command -v "$tool" >/dev/null || { echo "multi-instance: $tool not found" >&2; exit 2; }
done
source "$ROOT/tests/interop/lib.sh"   # free_port

ART="$ROOT/test-artifacts/multi"
rm -rf "$ART" && mkdir -p "$ART/A" "$ART/B" "$ART/state"
TOKENS="$ART/tokens.list"   # every token handed out: none may reach mcpgate's logs
: >"$TOKENS"

PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
DB="mcpgate_multi_$(date +%s)_$RANDOM"
STORE="$PGURL/$DB"
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$PGURL/test" "$@"; }
sql() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$STORE" -c "$1"; }
psql_admin -c "CREATE DATABASE $DB" || { echo "multi-instance: cannot create database $DB" >&2; exit 2; }
echo "database $DB" >"$ART/database.txt"

PA=$(free_port)
PB=$(free_port)
while [[ "$PB" == "$PA" ]]; do PB=$(free_port); done
A="http://127.0.0.1:$PA"
B="http://127.0.0.1:$PB"
PUB="$A"            # the one public URL (issuer) of both instances
RES="$PUB/mcp"      # the canonical resource, the tokens' audience
REDIRECT="http://127.0.0.1:9/callback"   # never contacted: codes are read from Location
PW_ALICE="alice-pw-$RANDOM$RANDOM"
PW_BOB="bob-pw-$RANDOM$RANDOM"
GRACE=5             # MCP_OAUTH_REFRESH_GRACE_SECS default, left unset on purpose

# --- instances -----------------------------------------------------------------

oauth_env() {
  printf '%s\n' MCP_OAUTH_ENABLED=true MCP_OAUTH_MODE=builtin MCP_OAUTH_PUBLIC_URL="$PUB" \
    MCP_OAUTH_STORE="$STORE"
}
# admin ARGS...: the admin CLI on the shared store.
admin() { env $(oauth_env) "$MCPGATE" "$@"; }
port_of() { [[ "$1" == A ]] && echo "$PA" || echo "$PB"; }
base_of() { [[ "$1" == A ]] && echo "$A" || echo "$B"; }
# start_instance A|B: mcpgate on its port with the shared store; waits for /health.
start_instance() {
  local name="$1" port url pid
  port=$(port_of "$name") url=$(base_of "$name")
  echo "--- start $name on $port ($(date +%T)) ---" >>"$ART/$name/mcpgate.log"
  env MCP_TRANSPORT=streamable-http MCP_HOST=127.0.0.1 MCP_PORT="$port" \
    MCP_NOTES_DB="$ART/$name/notes.db" MCP_RATE_LIMIT_RPM=0 MCP_LOG_LEVEL="${MCP_LOG_LEVEL:-debug}" \
    $(oauth_env) "$MCPGATE" >>"$ART/$name/mcpgate.log" 2>&1 &
  pid=$!
  echo "$pid" >"$ART/$name/pid"
  local deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null --max-time 2 "$url/health" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "instance $name exited during start-up; log tail:" >&2
      tail -n 20 "$ART/$name/mcpgate.log" >&2
      return 1
    fi
    ((SECONDS < deadline)) || { echo "instance $name: /health not 200 after 30 s" >&2; return 1; }
    sleep 0.1
  done
}
# stop_instance A|B: SIGTERM by PID (graceful shutdown), SIGKILL after 10 s.
stop_instance() {
  local pid; pid=$(cat "$ART/$1/pid" 2>/dev/null) || return 0
  [[ -n "$pid" ]] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  : >"$ART/$1/pid"
}
cleanup() {
  stop_instance A; stop_instance B
  if [[ -z "${KEEP_DB:-}" ]]; then
    psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || echo "could not drop $DB" >&2
  fi
}
trap cleanup EXIT

# Checks run in subshells; what a later check needs from an earlier one goes through files.
save() { printf '%s' "$2" >"$ART/state/$1"; }
load() { cat "$ART/state/$1" 2>/dev/null || fail "no saved $1 (did the check that makes it run?)"; }

# --- HTTP ----------------------------------------------------------------------

# req METHOD URL [curl args...]: one request; status in $STATUS, headers in $CHECK_DIR/h, body in
# $CHECK_DIR/b.
req() {
  local method="$1" url="$2"; shift 2
  STATUS=$(curl -sS -o "$CHECK_DIR/b" -D "$CHECK_DIR/h" -w '%{http_code}' --max-time 15 -X "$method" "$url" "$@") || STATUS=000
  local loc; loc=$(header location)
  echo ">> $method $(who "$url") -> $STATUS${loc:+  Location: ${loc:0:120}}"
}
# who URL: the URL with the instance's base replaced by [A] or [B].
who() { local u="${1/#$A/[A]}"; printf '%s' "${u/#$B/[B]}"; }
header() { { grep -i "^$1:" "$CHECK_DIR/h" || true; } | sed -e 's/^[^:]*: *//' -e 's/\r$//'; }
body() { cat "$CHECK_DIR/b"; }
json() { jq -r "$1" "$CHECK_DIR/b" 2>/dev/null; }
field() { { grep -o "name=\"$1\" value=\"[^\"]*\"" "$CHECK_DIR/b" || true; } | head -n 1 | sed -e 's/.*value="//' -e 's/"$//'; }
form_action() { { grep -o '<form method="post" action="[^"]*"' "$CHECK_DIR/b" || true; } | head -n 1 | sed -e 's/.*action="//' -e 's/"$//'; }
qparam() { python3 -c 'import sys, urllib.parse as u; print(u.parse_qs(u.urlparse(sys.argv[1]).query).get(sys.argv[2], [""])[0])' "$1" "$2"; }
urlenc() { python3 -c 'import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe=""))' "$1"; }
sha256() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }   # the store's hash of a secret

fail() { echo "ASSERTION FAILED: $*" >&2; return 1; }
expect_status() { [[ "$STATUS" == "$1" ]] || fail "status $STATUS, want $1 (body: $(head -c 300 "$CHECK_DIR/b"))"; }
expect_oauth_error() {
  expect_status "$1" || return 1
  [[ "$(json .error)" == "$2" ]] || fail "error $(json .error), want $2: $(body)" || return 1
  [[ "$(json '.access_token // empty')" == "" ]] || fail "a token was issued"
}

# --- OAuth as a client and as the user -------------------------------------------

pkce() {
  VERIFIER=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
  CHALLENGE=$(python3 -c 'import sys, hashlib, base64; print(base64.urlsafe_b64encode(hashlib.sha256(sys.argv[1].encode()).digest()).decode().rstrip("="))' "$VERIFIER")
}
# register BASE: DCR of a public client with REDIRECT at BASE; CLIENT_ID.
register() {
  req POST "$1/register" -H 'content-type: application/json' \
    --data "{\"client_name\":\"multi-run\",\"redirect_uris\":[\"$REDIRECT\"],\"token_endpoint_auth_method\":\"none\",\"grant_types\":[\"authorization_code\",\"refresh_token\"]}" >&2
  [[ "$STATUS" == 201 ]] || { fail "registration answered $STATUS: $(body)"; return 1; }
  CLIENT_ID=$(json .client_id)
}
# authz_url BASE: an authorization request for CLIENT_ID, REDIRECT, CHALLENGE at BASE.
authz_url() {
  printf '%s/authorize?response_type=code&client_id=%s&redirect_uri=%s&code_challenge=%s&code_challenge_method=S256&state=st-1&resource=%s' \
    "$1" "$(urlenc "$CLIENT_ID")" "$(urlenc "$REDIRECT")" "$CHALLENGE" "$(urlenc "$RES")"
}
# browse BASE USER PASSWORD: tests/as/browser.py plays the user at BASE (fresh browser, no
# cookie); CODE from the redirect; PAGES: the forms it submitted.
browse() {
  pkce
  local out
  out=$(python3 "$ROOT/tests/as/browser.py" "$(authz_url "$1")" "$2" "$3" 2>"$CHECK_DIR/browser.err") \
    || { cat "$CHECK_DIR/browser.err" >&2; fail "browser.py failed at $(who "$1")"; return 1; }
  PAGES=$(sed -n 's/^browser.py: //p' "$CHECK_DIR/browser.err" | tr '\n' ' ')
  echo ">> browser.py at $(who "$1") as $2: $PAGES-> ${out:0:80}…"
  CODE=$(qparam "$out" code)
  [[ -n "$CODE" ]] || fail "no code in $out"
}
# exchange BASE: the code for tokens (public client) at BASE.
exchange() {
  req POST "$1/token" -d grant_type=authorization_code --data-urlencode "code=$CODE" \
    --data-urlencode "code_verifier=$VERIFIER" --data-urlencode "redirect_uri=$REDIRECT" \
    --data-urlencode "client_id=$CLIENT_ID" --data-urlencode "resource=$RES"
}
refresh() {
  req POST "$1/token" -d grant_type=refresh_token --data-urlencode "refresh_token=$2" \
    --data-urlencode "client_id=$CLIENT_ID"
}
tokens_from_last() {
  AT=$(json '.access_token // empty') RT=$(json '.refresh_token // empty')
  [[ -n "$AT" ]] && echo "$AT" >>"$TOKENS"
  [[ -n "$RT" ]] && echo "$RT" >>"$TOKENS"
  [[ -n "$AT" ]] || fail "no access token: $(body)"
}
# login BASE USER PASSWORD: code at BASE, exchanged at BASE → AT, RT.
login() {
  browse "$@" || return 1
  exchange "$1"; expect_status 200 || return 1
  tokens_from_last
}
jws_part() { python3 -c 'import sys, base64; p = sys.argv[1].split(".")[int(sys.argv[2])]; print(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode())' "$1" "$2"; }
kid_of() { jws_part "$1" 0 | jq -r .kid; }

# --- MCP -------------------------------------------------------------------------

STATEFUL=2025-11-25
STATELESS=2026-07-28
INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"multi-run","version":"1"}}}'
INITIALIZED='{"jsonrpc":"2.0","method":"notifications/initialized"}'
WHOAMI='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}'
STATELESS_WHOAMI='{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"whoami","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"multi-run","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}'
# mcp_post BASE TOKEN BODY [SESSION]: one POST /mcp (2025-11-25 headers when SESSION is given).
mcp_post() {
  local base="$1" token="$2" body="$3" session="${4:-}"
  local args=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream' --data "$body")
  [[ -n "$token" ]] && args+=(-H "Authorization: Bearer $token")
  [[ -n "$session" ]] && args+=(-H "mcp-session-id: $session" -H "mcp-protocol-version: $STATEFUL")
  req POST "$base/mcp" "${args[@]}"
}
# stateless_whoami BASE TOKEN: a 2026-07-28 tools/call whoami, no session.
stateless_whoami() {
  req POST "$1/mcp" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -H "Authorization: Bearer $2" -H "MCP-Protocol-Version: $STATELESS" -H 'Mcp-Method: tools/call' \
    -H 'Mcp-Name: whoami' --data "$STATELESS_WHOAMI"
}
# rpc: the JSON-RPC response with an id in the last body (plain JSON or an SSE stream).
rpc() {
  python3 - "$CHECK_DIR/b" <<'EOF'
import json, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
candidates = [text] if text.lstrip().startswith("{") else [
    line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
for c in candidates:
    try:
        msg = json.loads(c)
    except ValueError:
        continue
    if isinstance(msg, dict) and "id" in msg:
        print(json.dumps(msg))
        break
EOF
}
# expect_whoami USER [VERSION]: the last body is a successful whoami for USER.
expect_whoami() {
  expect_status 200 || return 1
  local msg; msg=$(rpc)
  [[ -n "$msg" ]] || fail "no JSON-RPC response in: $(head -c 300 "$CHECK_DIR/b")" || return 1
  jq -e '.result and (.result.isError | not)' <<<"$msg" >/dev/null || fail "whoami failed: $msg" || return 1
  local me; me=$(jq -c '.result.structuredContent // (.result.content[0].text | fromjson? ) // {}' <<<"$msg")
  echo "   whoami: $me"
  grep -q "\"$1\"" <<<"$me" || fail "whoami does not name $1: $me" || return 1
  [[ -z "${2:-}" ]] || jq -e --arg v "$2" '.protocol_version == $v' <<<"$me" >/dev/null || fail "protocol_version is not $2: $me"
}
# open_session BASE TOKEN: initialize + initialized; prints the session id.
open_session() {
  mcp_post "$1" "$2" "$INIT" >&2
  [[ "$STATUS" == 200 ]] || { fail "initialize answered $STATUS: $(body)"; return 1; }
  local sid; sid=$(header mcp-session-id)
  [[ -n "$sid" ]] || { fail "no Mcp-Session-Id from initialize"; return 1; }
  mcp_post "$1" "$2" "$INITIALIZED" "$sid" >&2
  [[ "$STATUS" == 202 || "$STATUS" == 200 ]] || { fail "notifications/initialized answered $STATUS"; return 1; }
  printf '%s' "$sid"
}
# session_whoami BASE TOKEN USER: a fresh stateful session at BASE and whoami in it.
session_whoami() {
  local sid; sid=$(open_session "$1" "$2") || return 1
  mcp_post "$1" "$2" "$WHOAMI" "$sid"
  expect_whoami "$3" "$STATEFUL"
}
accepted() { mcp_post "$1" "$2" "$INIT"; [[ "$STATUS" == 200 ]]; }
# refused_within SECS BASE TOKEN: initialize with TOKEN at BASE answers 401 within SECS seconds.
refused_within() {
  local deadline=$((SECONDS + $1)) start=$SECONDS
  while true; do
    mcp_post "$2" "$3" "$INIT"
    if [[ "$STATUS" == 401 ]]; then
      [[ "$(header www-authenticate)" == Bearer* ]] || fail "401 without a Bearer challenge" || return 1
      echo "   refused by $(who "$2") after ~$((SECONDS - start)) s"
      return 0
    fi
    ((SECONDS < deadline)) || { fail "token still accepted by $(who "$2") after $1 s (status $STATUS)"; return 1; }
    sleep 0.25
  done
}

# --- checks --------------------------------------------------------------------------

# 1. DCR on A; GET /authorize on A; login and consent POSTed to B with A's pending id and CSRF
#    token; the code exchanged on A.
authorize_across() {
  register "$A"
  save client_id "$CLIENT_ID"
  pkce
  req GET "$(authz_url "$A")"; expect_status 200
  [[ "$(form_action)" == /authorize/login ]] || fail "A did not show the login form"
  local pending csrf; pending=$(field pending) csrf=$(field csrf)
  [[ -n "$pending" && -n "$csrf" ]] || fail "no pending id / CSRF token on A's page"
  req POST "$B/authorize/login" --data-urlencode "pending=$pending" --data-urlencode "csrf=$csrf" \
    -d username=alice --data-urlencode "password=$PW_ALICE"
  expect_status 200
  [[ "$(form_action)" == /authorize/consent ]] || fail "B did not continue A's authorization to consent: $(head -c 300 "$CHECK_DIR/b")"
  local cookie; cookie=$(header set-cookie | { grep '^__Host-mcpgate-session=' || true; } | head -n 1 | sed 's/;.*//')
  [[ -n "$cookie" ]] || fail "B set no session cookie"
  save cookie "$cookie"
  req POST "$B/authorize/consent" -H "Cookie: $cookie" --data-urlencode "pending=$(field pending)" \
    --data-urlencode "csrf=$(field csrf)" -d decision=approve
  expect_status 303
  local loc; loc=$(header location)
  [[ "$loc" == "$REDIRECT?"* ]] || fail "B redirected to $loc"
  [[ "$(qparam "$loc" state)" == st-1 ]] || fail "state not echoed"
  [[ "$(qparam "$loc" iss)" == "$PUB" ]] || fail "iss=$(qparam "$loc" iss), want the shared issuer $PUB"
  CODE=$(qparam "$loc" code); [[ -n "$CODE" ]] || fail "no code from B"
  exchange "$A"; expect_status 200; tokens_from_last
  [[ -n "$RT" ]] || fail "no refresh token"
  [[ "$(jws_part "$AT" 1 | jq -r .iss)" == "$PUB" ]] || fail "token iss $(jws_part "$AT" 1 | jq -r .iss)"
  [[ "$(jws_part "$AT" 1 | jq -r .aud)" == "$RES" ]] || fail "token aud $(jws_part "$AT" 1 | jq -r .aud)"
  accepted "$A" "$AT" || fail "A refused its own token"
  # the code is single-use across instances, and its replay at B revokes what it gave at A
  exchange "$B"; expect_oauth_error 400 invalid_grant
  refused_within 5 "$A" "$AT"
  refresh "$A" "$RT"; expect_oauth_error 400 invalid_grant
  # the pending authorization was consumed: replaying A's page on either instance issues nothing
  req POST "$A/authorize/consent" -H "Cookie: $cookie" --data-urlencode "pending=$pending" \
    --data-urlencode "csrf=$csrf" -d decision=approve
  [[ -z "$(qparam "$(header location)" code)" ]] || fail "a consumed pending authorization issued a second code"
  # the other way round: started on B, finished on A (the browser session of B is valid on A)
  pkce
  req GET "$(authz_url "$B")" -H "Cookie: $cookie"
  local step
  for step in 1 2 3; do
    [[ "$STATUS" == 200 ]] || break
    echo "   B shows $(form_action); submitted to A"
    req POST "$A$(form_action)" -H "Cookie: $cookie" --data-urlencode "pending=$(field pending)" \
      --data-urlencode "csrf=$(field csrf)" -d decision=approve -d username=alice --data-urlencode "password=$PW_ALICE"
  done
  [[ $step != 1 ]] || echo "   B skipped login and consent (A's browser session and the consent are shared)"
  loc=$(header location)
  CODE=$(qparam "$loc" code); [[ -n "$CODE" ]] || fail "B→A authorization gave no code ($STATUS $loc)"
  exchange "$A"; expect_status 200; tokens_from_last
  save at "$AT"; save rt "$RT"   # issued by A: check 2 takes it to B
}

# 2. A's token works on B at once; after `keys rotate` on the shared store, A's first token
#    signed by the new key works on B at once, and the old key's tokens keep working.
token_across() {
  CLIENT_ID=$(load client_id); AT=$(load at); RT=$(load rt)
  session_whoami "$B" "$AT" alice
  stateless_whoami "$B" "$AT"; expect_whoami alice "$STATELESS"
  local old="$AT" old_kid; old_kid=$(kid_of "$AT")
  req GET "$B/jwks"; expect_status 200
  echo "   JWKS of B before: $(jq -c '[.keys[].kid]' "$CHECK_DIR/b")"
  # Each instance reloads the key ring every 5 s on its own schedule. The case that matters: A
  # already signs with the new key while B has not reloaded yet — B must reload on the unknown kid
  # at once. Rotate until that case happens (B's JWKS lacks the kid when the token reaches it).
  local new_kid="" try deadline t0 b_knew
  for try in 1 2 3 4 5; do
    admin keys rotate || fail "keys rotate failed"
    t0=$SECONDS deadline=$((SECONDS + 30))
    while true; do
      refresh "$A" "$RT" >/dev/null; expect_status 200; tokens_from_last
      new_kid=$(kid_of "$AT")
      [[ "$new_kid" != "$old_kid" ]] && break
      ((SECONDS < deadline)) || fail "A still signs with $old_kid 30 s after the rotation"
      sleep 0.2
    done
    req GET "$B/jwks" >/dev/null
    b_knew=$(jq --arg k "$new_kid" '[.keys[].kid] | index($k) != null' "$CHECK_DIR/b")
    # the first request to B with the new-key token: no retry
    mcp_post "$B" "$AT" "$INIT"
    expect_status 200 || fail "B refused A's first token signed by the new key $new_kid (B's JWKS had it: $b_knew)"
    echo "   rotation $try: A signs with $new_kid after ~$((SECONDS - t0)) s; B had it already: $b_knew; B accepted at once"
    [[ "$b_knew" == false ]] && break
    old_kid="$new_kid"
  done
  [[ "$b_knew" == false ]] || echo "   note: B always reloaded before A signed; the unknown-kid path was not exercised"
  admin keys list
  old_kid=$(kid_of "$old")
  save rt "$RT"; save at "$AT"
  session_whoami "$B" "$AT" alice
  stateless_whoami "$B" "$AT"; expect_whoami alice "$STATELESS"
  accepted "$A" "$AT" || fail "A refused its own new-key token"
  accepted "$B" "$old" || fail "B refused the old key's token after the rotation"
  accepted "$A" "$old" || fail "A refused the old key's token after the rotation"
  local inst
  for inst in "$A" "$B"; do
    req GET "$inst/jwks"; expect_status 200
    jq -e --arg a "$old_kid" --arg b "$new_kid" '[.keys[].kid] | index($a) != null and index($b) != null' "$CHECK_DIR/b" >/dev/null \
      || fail "JWKS of $(who "$inst") does not list both kids: $(body)"
  done
  # a token refreshed on B is signed by the new key too (B signs with the shared current key)
  refresh "$B" "$RT"; expect_status 200; tokens_from_last
  [[ "$(kid_of "$AT")" == "$new_kid" ]] || fail "B signs with $(kid_of "$AT"), A with $new_kid"
  save rt "$RT"; save at "$AT"
  accepted "$A" "$AT" || fail "A refused B's token"
}

# 3. 20 concurrent refreshes of one refresh token (10 at A, 10 at B): one rotation, every other
#    presentation within the grace window gets tokens, no 5xx, the family lives; a replay after
#    the grace window revokes the family on both.
refresh_race() {
  CLIENT_ID=$(load client_id)
  login "$A" bob "$PW_BOB"
  local rt0="$RT" family
  family=$(sql "SELECT family_id FROM refresh_tokens WHERE token_hash = '$(sha256 "$rt0")'")
  [[ -n "$family" ]] || fail "the refresh token is not in the shared store"
  python3 "$HERE/race.py" "$CLIENT_ID" "$rt0" "$A/token:10" "$B/token:10" >"$CHECK_DIR/race.jsonl"
  jq -r '.access_token // empty, .refresh_token // empty' "$CHECK_DIR/race.jsonl" >>"$TOKENS"
  jq -c '{instance: (.instance | sub("http://127.0.0.1:'"$PA"'"; "A") | sub("http://127.0.0.1:'"$PB"'"; "B")), status, elapsed_ms, error, error_description}' \
    "$CHECK_DIR/race.jsonl" | sort | uniq -c | sed 's/^/   /'
  local n ok fivexx fromA fromB
  n=$(grep -c . "$CHECK_DIR/race.jsonl")
  ok=$(jq -s '[.[] | select(.status == 200 and .access_token and .refresh_token)] | length' "$CHECK_DIR/race.jsonl")
  fivexx=$(jq -s '[.[] | select(.status >= 500 or .status == 0)] | length' "$CHECK_DIR/race.jsonl")
  fromA=$(jq -s --arg u "$A/token" '[.[] | select(.instance == $u and .status == 200)] | length' "$CHECK_DIR/race.jsonl")
  fromB=$(jq -s --arg u "$B/token" '[.[] | select(.instance == $u and .status == 200)] | length' "$CHECK_DIR/race.jsonl")
  echo "   $n requests: $ok with tokens (A $fromA, B $fromB), $fivexx 5xx/failed connections"
  ((n == 20)) || fail "$n answers, want 20"
  ((fivexx == 0)) || fail "$fivexx requests failed with 5xx or no answer"
  ((ok == 20)) || fail "only $ok of 20 concurrent refreshes inside the grace window got tokens"
  local distinct; distinct=$(jq -r '.refresh_token // empty' "$CHECK_DIR/race.jsonl" | sort -u | grep -c .)
  ((distinct == ok)) || fail "$distinct distinct refresh tokens for $ok successes"
  # exactly one rotation in the store: rt0 rotated once, its recorded successor is one of the 20;
  # the other 19 are grace-window siblings; nothing revoked
  local rotated successor revoked rows
  rotated=$(sql "SELECT count(*) FROM refresh_tokens WHERE family_id = '$family' AND rotated_at IS NOT NULL")
  successor=$(sql "SELECT successor FROM refresh_tokens WHERE token_hash = '$(sha256 "$rt0")'")
  revoked=$(sql "SELECT coalesce(revoked_at::text, 'live') FROM token_families WHERE family_id = '$family'")
  rows=$(sql "SELECT count(*) FROM refresh_tokens WHERE family_id = '$family'")
  echo "   store: family $revoked, $rows refresh tokens, $rotated rotated"
  [[ "$revoked" == live ]] || fail "the race revoked the family (revoked_at $revoked)"
  ((rotated == 1)) || fail "$rotated tokens of the family rotated, want exactly 1 (rt0)"
  ((rows == 21)) || fail "$rows refresh tokens in the family, want 21 (rt0 + 20 successors)"
  local hashes="" t
  for t in $(jq -r '.refresh_token // empty' "$CHECK_DIR/race.jsonl"); do hashes+="$(sha256 "$t")"$'\n'; done
  grep -qx "$successor" <<<"$hashes" || fail "rt0's recorded successor is none of the tokens handed out"
  # the family is alive on both: a winner's tokens work on B and A, a sibling refreshes on B
  local at1 rt1 rt2
  at1=$(jq -s -r '[.[] | select(.status == 200)][0].access_token' "$CHECK_DIR/race.jsonl")
  rt1=$(jq -s -r '[.[] | select(.status == 200)][0].refresh_token' "$CHECK_DIR/race.jsonl")
  rt2=$(jq -s -r '[.[] | select(.status == 200)][1].refresh_token' "$CHECK_DIR/race.jsonl")
  accepted "$B" "$at1" || fail "a race winner's access token refused by B"
  accepted "$A" "$at1" || fail "a race winner's access token refused by A"
  refresh "$B" "$rt1"; expect_status 200; tokens_from_last
  local live_rt="$RT" live_at="$AT"
  # past the grace window, rt0 again: theft; the whole family dies on both instances
  local rotated_at now; rotated_at=$(sql "SELECT rotated_at FROM refresh_tokens WHERE token_hash = '$(sha256 "$rt0")'")
  now=$(date +%s)
  sleep $((rotated_at + GRACE + 1 - now > 0 ? rotated_at + GRACE + 1 - now : 0))
  refresh "$A" "$rt0"; expect_oauth_error 400 invalid_grant
  revoked=$(sql "SELECT coalesce(revoked_at::text, 'live') FROM token_families WHERE family_id = '$family'")
  [[ "$revoked" != live ]] || fail "the replay after the grace window did not revoke the family"
  refresh "$B" "$live_rt"; expect_oauth_error 400 invalid_grant
  refresh "$A" "$rt2"; expect_oauth_error 400 invalid_grant
  refused_within 5 "$B" "$live_at"
  refused_within 5 "$A" "$live_at"
  refused_within 5 "$B" "$at1"
  refused_within 5 "$A" "$at1"
}

# 4. `tokens revoke --user alice` on the shared store: alice's tokens refused by A and B within
#    ~3 s; bob's unaffected.
revoke_user() {
  CLIENT_ID=$(load client_id)
  login "$A" bob "$PW_BOB"
  local bob_at="$AT"
  login "$B" alice "$PW_ALICE"
  local alice_at="$AT" alice_rt="$RT" alice_old; alice_old=$(load at)
  local sid; sid=$(open_session "$B" "$alice_at")
  accepted "$A" "$alice_at" || fail "alice's token refused by A before the revocation"
  accepted "$B" "$alice_at" || fail "alice's token refused by B before the revocation"
  admin tokens revoke --user alice || fail "tokens revoke failed"
  local t0=$SECONDS
  refused_within 3 "$A" "$alice_at"
  refused_within 3 "$B" "$alice_at"
  refused_within 3 "$A" "$alice_old"
  refused_within 3 "$B" "$alice_old"
  echo "   all of alice's tokens refused by both within $((SECONDS - t0)) s"
  mcp_post "$B" "$alice_at" "$WHOAMI" "$sid"; expect_status 401
  stateless_whoami "$A" "$alice_at"; expect_status 401
  refresh "$A" "$alice_rt"; expect_oauth_error 400 invalid_grant
  refresh "$B" "$alice_rt"; expect_oauth_error 400 invalid_grant
  accepted "$A" "$bob_at" || fail "bob's token died with alice's (A)"
  accepted "$B" "$bob_at" || fail "bob's token died with alice's (B)"
}

# 5. Restart both: the registered client, the consent, a refresh token, the users, the keys and
#    the browser session survive.
restart_both() {
  CLIENT_ID=$(load client_id)
  login "$A" bob "$PW_BOB"   # consent given (again) before the restart
  local at="$AT" rt="$RT" kids_before; kids_before=$(sql "SELECT string_agg(kid, ',' ORDER BY seq) FROM signing_keys")
  local cookie; cookie=$(load cookie)
  stop_instance A; stop_instance B
  start_instance A; start_instance B
  echo "   both restarted"
  ! grep -qi 'first start' "$ART/A/mcpgate.log" "$ART/B/mcpgate.log" || echo "   note: a 'first start' line is in the logs (see A/B mcpgate.log)"
  [[ "$(sql "SELECT string_agg(kid, ',' ORDER BY seq) FROM signing_keys")" == "$kids_before" ]] || fail "the signing keys changed across the restart"
  # the access token issued before: keys survived on both
  accepted "$A" "$at" || fail "A refused a pre-restart token"
  accepted "$B" "$at" || fail "B refused a pre-restart token"
  # the refresh token survived (used at B, successor at A)
  refresh "$B" "$rt"; expect_status 200; tokens_from_last
  refresh "$A" "$RT"; expect_status 200; tokens_from_last
  session_whoami "$B" "$AT" bob
  # the client is still registered and bob's consent remembered: a fresh browser sees only login
  browse "$B" bob "$PW_BOB"
  [[ "$PAGES" == "/authorize/login " ]] || fail "after the restart bob saw: $PAGES(consent forgotten?)"
  exchange "$A"; expect_status 200; tokens_from_last
  # alice (revoked in check 4, still a user) can sign in again, at A
  browse "$A" alice "$PW_ALICE"
  echo "   alice after her revocation and the restart: $PAGES"
  exchange "$B"; expect_status 200; tokens_from_last
  stateless_whoami "$A" "$AT"; expect_whoami alice "$STATELESS"
  # the browser session cookie from check 1 (set by B before the restart)
  pkce
  req GET "$(authz_url "$A")" -H "Cookie: $cookie"
  echo "   check 1's browser session after the restart: $STATUS ($( [[ "$STATUS" == 303 ]] && echo 'signed in' || echo "$(form_action)"))"
}

# 6. A stateful (2025-11-25) session is in the shared store: created on A, continued on B, refused
#    (404) to another principal on both, and a DELETE on B ends it on A. The stateless 2026-07-28
#    protocol needs no session: the same token works on both.
session_across() {
  CLIENT_ID=$(load client_id)
  login "$A" alice "$PW_ALICE"
  local alice_at="$AT"
  login "$A" bob "$PW_BOB"
  local sid; sid=$(open_session "$A" "$AT")
  echo "   session from A: ${sid:0:8}…"
  mcp_post "$A" "$AT" "$WHOAMI" "$sid"; expect_whoami bob "$STATEFUL"
  mcp_post "$B" "$AT" "$WHOAMI" "$sid"; expect_whoami bob "$STATEFUL"
  echo "   B continued A's session"
  mcp_post "$B" "$alice_at" "$WHOAMI" "$sid"; expect_status 404
  mcp_post "$A" "$alice_at" "$WHOAMI" "$sid"; expect_status 404
  [[ "$(sql "SELECT count(*) FROM mcp_sessions WHERE id_hash = '$(sha256 "$sid")'")" == 1 ]] || fail "the session is not in the store under its hash"
  [[ "$(sql "SELECT count(*) FROM mcp_sessions WHERE id_hash = '$sid'")" == 0 ]] || fail "a session id is stored in clear"
  # the session still works at A after B refused alice
  mcp_post "$A" "$AT" "$WHOAMI" "$sid"; expect_whoami bob "$STATEFUL"
  # DELETE at B ends it at A, which holds it in memory
  req DELETE "$B/mcp" -H "Authorization: Bearer $AT" -H "mcp-session-id: $sid" -H "mcp-protocol-version: $STATEFUL"
  [[ "$STATUS" == 200 || "$STATUS" == 204 ]] || fail "DELETE at B answered $STATUS"
  mcp_post "$A" "$AT" "$WHOAMI" "$sid"; expect_status 404
  # stateless: one token, both instances, no session id minted
  stateless_whoami "$A" "$AT"; expect_whoami bob "$STATELESS"
  [[ -z "$(header mcp-session-id)" ]] || fail "a stateless call minted a session at A"
  stateless_whoami "$B" "$AT"; expect_whoami bob "$STATELESS"
  [[ -z "$(header mcp-session-id)" ]] || fail "a stateless call minted a session at B"
}

# The tokens must never reach the logs (debug level), and nothing may have panicked.
logs_clean() {
  local n; n=$(sort -u "$TOKENS" | grep -c . || true)
  echo "$n distinct tokens handed out"
  ((n == 0)) || ! grep -lF -f <(sort -u "$TOKENS" | grep .) "$ART/A/mcpgate.log" "$ART/B/mcpgate.log" || fail "a token is in the logs above"
  ! grep -n -- "panicked at" "$ART/A/mcpgate.log" "$ART/B/mcpgate.log" || fail "mcpgate panicked"
  # every response the instances logged (tower-http, debug level): none may be a 5xx
  local plain="$CHECK_DIR/responses.txt"
  sed 's/\x1b\[[0-9;]*m//g' "$ART/A/mcpgate.log" "$ART/B/mcpgate.log" | grep -oE 'path=[^ }]*.*finished processing request .*status=[0-9]+' \
    | sed -E 's/^path=([^ }]*).*status=([0-9]+)$/\2 \1/' | sort | uniq -c | sort -rn >"$plain" || true
  echo "responses logged by A and B (count, status, path):"; sed 's/^/   /' "$plain"
  grep -qE '^ *[0-9]+ 200 /mcp$' "$plain" || fail "no response lines found in the logs (log format changed?)"
  ! grep -E '^ *[0-9]+ 5[0-9][0-9] ' "$plain" || fail "an instance answered 5xx"
}

# --- runner --------------------------------------------------------------------

printf '%s' "$PW_ALICE" | admin users add alice --password-stdin >"$ART/users.log" 2>&1 \
  && printf '%s' "$PW_BOB" | admin users add bob --password-stdin >>"$ART/users.log" 2>&1 \
  || { cat "$ART/users.log" >&2; echo "multi-instance: could not add users to $DB" >&2; exit 2; }
start_instance A || exit 2
start_instance B || exit 2
echo "instances A on $PA, B on $PB; public URL $PUB; store $DB"

passed=0 failed=0
mask() { sed -e 's/\(eyJ[A-Za-z0-9_-]\{6\}\)[A-Za-z0-9._-]*/\1…/g' -e 's/\x1b\[[0-9;]*m//g' -e 's/^/    /'; }
run_check() {
  local name="$1"
  CHECK_DIR="$ART/$name"
  mkdir -p "$CHECK_DIR"
  (set -e; "${name//-/_}") >"$CHECK_DIR/output.log" 2>&1
  if [[ $? -eq 0 ]]; then
    echo "PASS $name"; passed=$((passed + 1))
  else
    echo "FAIL $name"; failed=$((failed + 1))
    tail -n 15 "$CHECK_DIR/output.log" | mask
  fi
}

CHECKS=(authorize-across token-across refresh-race revoke-user restart-both session-across logs-clean)
for check in ${ONLY:-${CHECKS[@]}}; do
  run_check "$check"
done
echo "multi-instance: $passed passed, $failed failed"
((failed == 0))
