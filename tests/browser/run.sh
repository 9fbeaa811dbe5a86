#!/usr/bin/env bash
# The built-in authorization server's login, consent, error and /consents pages driven in real
# headless Chromium (Debian's /usr/bin/chromium, driven by the pinned playwright-core of
# tools/peers/browser). Screenshots of every page go to test-artifacts/browser/*.png, and the
# reference set (login, error, consent, consents) is copied to docs/screenshots/.
#
#   tests/browser/run.sh [path/to/mcpgate]      (default: target/debug/mcpgate)
#   ONLY="name1 name2" tests/browser/run.sh      run a subset of the checks in pages.mjs
#
# Prints one PASS/FAIL line per check, then `browser: N passed, M failed`; exits non-zero on any
# failure. mcpgate's log and state: test-artifacts/browser/.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/browser"
MCPGATE="$(realpath "${1:-$ROOT/target/debug/mcpgate}")"
ART="$ROOT/test-artifacts/browser"
fail_setup() { echo "browser: setup failed: $*" >&2; echo "browser: 0 passed, 1 failed"; exit 1; }

[[ -x "$MCPGATE" ]] || fail_setup "no mcpgate binary at $MCPGATE"
"$HERE/setup.sh" || fail_setup "tests/browser/setup.sh"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rm -rf "$ART" && mkdir -p "$ART/state"
PORT=$(free_port)
CB_PORT=$(free_port)
FRAMER_PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
ENV=(MCP_TRANSPORT=streamable-http MCP_HOST=127.0.0.1 MCP_PORT="$PORT" MCP_LOG_LEVEL=debug
  MCP_OAUTH_ENABLED=true MCP_OAUTH_PUBLIC_URL="$BASE"
  MCP_OAUTH_STORE="sqlite://$ART/state/oauth.db" MCP_NOTES_DB="$ART/state/notes.db")
PASSWORD="correct horse battery"
CLIENT_NAME="Acme Notes Desktop"

# A user and a pre-registered public client with a loopback redirect URI, before the first start.
printf '%s' "$PASSWORD" | env "${ENV[@]}" "$MCPGATE" users add alice --password-stdin \
  >>"$ART/cli.log" 2>&1 || fail_setup "users add (see $ART/cli.log)"
env "${ENV[@]}" "$MCPGATE" clients add desktop-app --name "$CLIENT_NAME" \
  --redirect-uri "http://127.0.0.1:$CB_PORT/callback" >>"$ART/cli.log" 2>&1 \
  || fail_setup "clients add (see $ART/cli.log)"

env "${ENV[@]}" "$MCPGATE" >"$ART/mcpgate.log" 2>&1 &
MCPGATE_PID=$!
trap 'kill $MCPGATE_PID 2>/dev/null; wait $MCPGATE_PID 2>/dev/null' EXIT
deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null --max-time 2 "$BASE/health" 2>/dev/null; do
  kill -0 "$MCPGATE_PID" 2>/dev/null || { tail -n 20 "$ART/mcpgate.log" >&2; fail_setup "mcpgate exited"; }
  ((SECONDS < deadline)) || fail_setup "mcpgate /health not 200 after 30 s"
  sleep 0.1
done

BASE="$BASE" CB_PORT="$CB_PORT" FRAMER_PORT="$FRAMER_PORT" CLIENT_ID=desktop-app \
  CLIENT_NAME="$CLIENT_NAME" USERNAME=alice PASSWORD="$PASSWORD" ART="$ART" \
  MCPGATE_LOG="$ART/mcpgate.log" ONLY="${ONLY:-}" \
  node "$HERE/pages.mjs" >"$ART/pages.out" 2>"$ART/pages.stderr"
status=$?
# Details first, so that the summary line stays the last line of the output.
[[ -s "$ART/pages.stderr" ]] && { echo "--- pages.mjs stderr:"; cat "$ART/pages.stderr"; } >&2
cat "$ART/pages.out"
grep -Eq '^browser: [0-9]+ passed, [0-9]+ failed$' "$ART/pages.out" || { echo "browser: 0 passed, 1 failed"; status=1; }

# The reference screenshots shown in the docs (only when every check passed).
if ((status == 0)) && [[ -z "${ONLY:-}" ]]; then
  mkdir -p "$ROOT/docs/screenshots"
  for shot in login login-error consent error consents; do
    cp "$ART/$shot.png" "$ROOT/docs/screenshots/$shot.png"
  done
fi
exit $status
