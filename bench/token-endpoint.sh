#!/usr/bin/env bash
# Token-endpoint throughput (issue 6): authorization-code exchanges and refresh rotations per
# second on mcpgate's built-in AS with SQLite and with PostgreSQL, against oidc-provider's token
# endpoint (tools/peers/idp/oidc.mjs, in-memory adapter, ES256 like mcpgate). bench/lib/token_bench.mjs
# does the work (see its header: same grant shape on both sides); rounds are interleaved so
# background load hits every system alike. Codes are collected and exchanged in chunks of 100
# (oidc-provider's in-memory adapter evicts older ones; see token_bench.mjs). Ends with a summary: per system the range over rounds,
# and per round the ratio to oidc-provider's result of the same round.
#
#   bench/token-endpoint.sh
#   TOKEN_ROUNDS=3 TOKEN_CODES=500 TOKEN_CONCURRENCY=8 TOKEN_SECONDS=5 MCPGATE=path
#   TOKEN_PG=postgres://postgres@127.0.0.1:5432/test   admin URL; a scratch database is created
#                                                       and dropped ("" skips PostgreSQL)
# Output: one JSON line per system and round (also test-artifacts/token-endpoint/results.jsonl).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${TOKEN_OUT:-$ROOT/test-artifacts/token-endpoint}"
ROUNDS="${TOKEN_ROUNDS:-3}" CODES="${TOKEN_CODES:-500}" K="${TOKEN_CONCURRENCY:-8}" SECS="${TOKEN_SECONDS:-5}"
PG_ADMIN="${TOKEN_PG-postgres://postgres@127.0.0.1:5432/test}"
if [[ -z "${MCPGATE:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q -p mcpgate --bin mcpgate)
  MCPGATE="$ROOT/target/release/mcpgate"
fi
rm -rf "$OUT" && mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PIDS=() DB=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -n "$DB" ]] && psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
declare -A BASE PW SERVER_PID
start_mcpgate() { # NAME STORE
  local port; port=$(free_port)
  env MCP_TRANSPORT=streamable-http MCP_HOST=127.0.0.1 MCP_PORT="$port" MCP_RATE_LIMIT_RPM=0 MCP_LOG_LEVEL=warn \
    MCP_NOTES_DB="$OUT/notes-$1.db" MCP_OAUTH_ENABLED=true MCP_OAUTH_PUBLIC_URL="http://127.0.0.1:$port" \
    MCP_OAUTH_STORE="$2" "$MCPGATE" >"$OUT/$1.log" 2>&1 &
  PIDS+=("$!") SERVER_PID[$1]=$!
  for _ in $(seq 100); do grep -q "First start: created user" "$OUT/$1.log" 2>/dev/null && break; sleep 0.1; done
  BASE[$1]="http://127.0.0.1:$port"
  PW[$1]=$(sed -n 's/.*First start: created user `admin` with password //p' "$OUT/$1.log" | tr -d '`[:space:]')
}
SYSTEMS=(mcpgate-sqlite)
start_mcpgate mcpgate-sqlite "sqlite://$OUT/oauth.db"
if [[ -n "$PG_ADMIN" ]] && psql "$PG_ADMIN" -qc "select 1" >/dev/null 2>&1; then
  DB="mcpgate_token_bench_$$_$RANDOM"
  psql "$PG_ADMIN" -qc "CREATE DATABASE $DB" >/dev/null
  start_mcpgate mcpgate-postgres "${PG_ADMIN%/*}/$DB"
  SYSTEMS+=(mcpgate-postgres)
fi
IDP_PORT=$(free_port)
(cd "$ROOT/tools/peers" && exec env PORT="$IDP_PORT" AT_ALG=ES256 JWKS_FILE="$OUT/idp-keys.json" RESOURCE="http://127.0.0.1:9/mcp" \
  node idp/oidc.mjs >"$OUT/oidc.log" 2>&1) &
PIDS+=("$!") SERVER_PID[oidc-provider]=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$IDP_PORT/.well-known/openid-configuration" 2>/dev/null && break; sleep 0.1; done
SYSTEMS+=(oidc-provider)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/env.txt" >&2
for round in $(seq "$ROUNDS"); do
  for sys in "${SYSTEMS[@]}"; do
    if [[ "$sys" == oidc-provider ]]; then
      args=(--as oidc --base "http://127.0.0.1:$IDP_PORT" --resource "http://127.0.0.1:9/mcp")
    else
      args=(--as mcpgate --base "${BASE[$sys]}" --password "${PW[$sys]}")
    fi
    line=$(cd "$ROOT/tools/peers" && node --expose-gc "$ROOT/bench/lib/token_bench.mjs" "${args[@]}" \
      --server-pid "${SERVER_PID[$sys]}" --codes "$CODES" --concurrency "$K" --seconds "$SECS")
    echo "{\"system\":\"$sys\",\"round\":$round,\"load1\":$(cut -d' ' -f1 /proc/loadavg),${line#\{}" | tee -a "$OUT/results.jsonl"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/env.txt" >&2
python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
systems = list(dict.fromkeys(r["system"] for r in rows))
peer = {r["round"]: r for r in rows if r["system"] == "oidc-provider"
        and r["exchanges_per_s"] > 0 and r["refreshes_per_s"] > 0}
rng = lambda xs: f"{min(xs):.0f}-{max(xs):.0f}" if xs else "-"
print("\nsystem             exchanges/s  rotations/s  ratio to oidc-provider (exchanges, rotations)")
for s in systems:
    mine = [r for r in rows if r["system"] == s]
    ex, rot = [r["exchanges_per_s"] for r in mine], [r["refreshes_per_s"] for r in mine]
    rx = [r["exchanges_per_s"] / peer[r["round"]]["exchanges_per_s"] for r in mine if r["round"] in peer]
    rr = [r["refreshes_per_s"] / peer[r["round"]]["refreshes_per_s"] for r in mine if r["round"] in peer]
    ratio = f"{min(rx):.1f}-{max(rx):.1f}x, {min(rr):.1f}-{max(rr):.1f}x" if rx and s != "oidc-provider" else ""
    print(f"{s:<18} {rng(ex):>11}  {rng(rot):>11}  {ratio}")
PY
