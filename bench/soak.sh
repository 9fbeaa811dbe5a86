#!/usr/bin/env bash
# Soak test (issue 6): one mcpgate, everything on loopback, mixed load for SOAK_DURATION seconds.
#
#   bench/soak.sh                       10 minutes; writes bench/soak-memory.csv and the SOAK block
#                                       of bench/RESULTS.md
#   SOAK_DURATION=60 bench/soak.sh      shorter
#
# mcpgate runs as its own authorization server (SQLite store by default, SOAK_STORE=postgres://…
# for PostgreSQL), fronts the stdio example upstream `echo_upstream` (gateway mode) and serves both
# Streamable HTTP and legacy SSE. bench/lib/soak.py drives (see its header): logins + code
# exchanges, refreshes (some concurrent on one token), deliberate revocations, stateless and
# stateful tool calls, legacy SSE streams opened and closed, and SIGKILLs of the upstream child
# every SOAK_KILL_EVERY seconds (the gateway supervisor restarts it). Every SOAK_SAMPLE seconds the
# server's RSS goes to bench/soak-memory.csv.
#
# Fails (exit 1) on: any 5xx, a panic in the server log, a lost refresh family (one not revoked on
# purpose that no longer refreshes), a revoked family that still refreshes, or the server dying.
#
# Environment:
#   SOAK_DURATION=600   seconds of load
#   SOAK_SAMPLE=5       seconds between RSS samples
#   SOAK_KILL_EVERY=30  seconds between upstream kills
#   SOAK_STORE=         OAuth store URL (default: SQLite in the run directory)
#   SOAK_CSV=bench/soak-memory.csv
#   SOAK_RESULTS=bench/RESULTS.md   ("" = don't write the summary there)
#   SOAK_OUT=test-artifacts/soak    logs and the JSON summary (wiped at start)
#   MCPGATE=path        use this binary (and ECHO_UPSTREAM=path) instead of cargo build --release
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${SOAK_DURATION:-600}"
SAMPLE="${SOAK_SAMPLE:-5}"
KILL_EVERY="${SOAK_KILL_EVERY:-30}"
CSV="${SOAK_CSV:-$ROOT/bench/soak-memory.csv}"
RESULTS="${SOAK_RESULTS-$ROOT/bench/RESULTS.md}"
OUT="${SOAK_OUT:-$ROOT/test-artifacts/soak}"

say() { printf '[soak %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

PY="$ROOT/tools/peers/.venv/bin/python"
[[ -x "$PY" ]] || "$ROOT/scripts/setup-peers.sh"
if [[ -z "${MCPGATE:-}" ]]; then
  say "cargo build --release -p mcpgate --bin mcpgate --example echo_upstream"
  (cd "$ROOT" && cargo build --release -q -p mcpgate --bin mcpgate --example echo_upstream)
  MCPGATE="$ROOT/target/release/mcpgate"
  ECHO_UPSTREAM="${ECHO_UPSTREAM:-$ROOT/target/release/examples/echo_upstream}"
fi
ECHO_UPSTREAM="${ECHO_UPSTREAM:-$(dirname "$MCPGATE")/examples/echo_upstream}"
[[ -x "$MCPGATE" && -x "$ECHO_UPSTREAM" ]] || die "need $MCPGATE and $ECHO_UPSTREAM"

rm -rf "$OUT" && mkdir -p "$OUT"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
STORE="${SOAK_STORE:-sqlite://$OUT/oauth.db}"

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

say "mcpgate on $BASE (store ${STORE%%:*}, upstream echo_upstream)"
env MCP_TRANSPORT=streamable-http MCP_LEGACY_SSE=true MCP_HOST=127.0.0.1 MCP_PORT="$PORT" \
  MCP_RATE_LIMIT_RPM=0 MCP_LOG_LEVEL=warn MCP_TOOL_TIMEOUT_SECS=10 \
  MCP_UPSTREAM_COMMAND="$ECHO_UPSTREAM" \
  MCP_OAUTH_ENABLED=true MCP_OAUTH_PUBLIC_URL="$BASE" MCP_OAUTH_STORE="$STORE" \
  "$MCPGATE" >"$OUT/mcpgate.log" 2>&1 &
MG=$!
PIDS+=("$MG")
for _ in $(seq 300); do
  grep -q "First start: created user" "$OUT/mcpgate.log" 2>/dev/null &&
    curl -fsS -o /dev/null --max-time 2 "$BASE/health" 2>/dev/null && break
  kill -0 "$MG" 2>/dev/null || die "mcpgate exited: $(tail -5 "$OUT/mcpgate.log")"
  sleep 0.1
done
PASSWORD=$(sed -n 's/.*First start: created user `admin` with password //p' "$OUT/mcpgate.log" | head -1 | tr -d '`[:space:]')
[[ -n "$PASSWORD" ]] || die "no admin password in the log"

# RSS sampler: seconds since start, VmRSS, VmHWM (KiB), threads, open fds.
echo "t_s,rss_kib,hwm_kib,threads,fds" >"$CSV"
(
  start=$(date +%s%N)
  while kill -0 "$MG" 2>/dev/null; do
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    awk -v t="$(( ms / 1000 )).$(( ms % 1000 / 100 ))" -v fds="$(ls "/proc/$MG/fd" 2>/dev/null | wc -l)" '
      /^VmRSS/{r=$2} /^VmHWM/{h=$2} /^Threads/{th=$2}
      END{printf "%.1f,%d,%d,%d,%d\n", t, r, h, th, fds}' "/proc/$MG/status" >>"$CSV" 2>/dev/null || true
    sleep "$SAMPLE"
  done
) &
SAMPLER=$!
PIDS+=("$SAMPLER")

say "load for ${DURATION}s (upstream killed every ${KILL_EVERY}s)"
"$PY" "$ROOT/bench/lib/soak.py" --base "$BASE" --password "$PASSWORD" --pid "$MG" \
  --duration "$DURATION" --kill-every "$KILL_EVERY" --out "$OUT/summary.json" >"$OUT/driver.log" 2>&1 ||
  die "the driver failed: $(tail -20 "$OUT/driver.log")"
alive=yes; kill -0 "$MG" 2>/dev/null || alive=no
kill "$SAMPLER" 2>/dev/null || true

# --- verdict -------------------------------------------------------------------------------------
panics=$(grep -c -i "panicked" "$OUT/mcpgate.log" || true)
read -r fivexx lost resurrected families revoked errors < <(jq -r \
  '"\(.responses_5xx) \(.lost_families) \(.revoked_but_refreshable) \(.families) \(.revoked_on_purpose) \(.errors)"' "$OUT/summary.json")
# RSS: start (first sample after 10 s of load), end, max, and the least-squares slope.
rss=$(awk -F, 'NR>1 && $2>0 {n++; t[n]=$1; r[n]=$2} END {
  s=1; while (s<n && t[s]<10) s++
  max=0; for (i=s;i<=n;i++) if (r[i]>max) max=r[i]
  sx=sy=sxx=sxy=0; m=0
  for (i=s;i<=n;i++) {m++; sx+=t[i]; sy+=r[i]; sxx+=t[i]*t[i]; sxy+=t[i]*r[i]}
  slope = (m>1 && (m*sxx-sx*sx)!=0) ? (m*sxy-sx*sy)/(m*sxx-sx*sx)*60 : 0
  printf "%.1f %.1f %.1f %.1f %d", r[s]/1024, r[n]/1024, max/1024, slope, m}' "$CSV")
read -r rss_start rss_end rss_max slope samples <<<"$rss"
counts=$(jq -r '.counts | to_entries | map("\(.key): \(.value)") | join("; ")' "$OUT/summary.json")
load=$(cut -d' ' -f1-3 /proc/loadavg)
verdict=pass
[[ "$fivexx" == 0 && "$panics" == 0 && "$lost" == 0 && "$resurrected" == 0 && "$alive" == yes ]] || verdict=FAIL

report=$(cat <<EOF
Run: **$(date -u +%FT%TZ)**, ${DURATION} s, mcpgate \`$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- crates || echo ' (dirty tree)')\`, store ${STORE%%:*}, load average at the end $load (shared 2-core machine).

| check | result |
|---|---|
| verdict | **$verdict** |
| 5xx responses | $fivexx |
| panics in the server log | $panics |
| server alive at the end | $alive |
| refresh families created / revoked on purpose | $families / $revoked |
| families lost (not revoked, no longer refreshable) | $lost |
| revoked families that still refreshed | $resurrected |
| driver-side errors (timeouts, streams cut by a revocation or an upstream kill) | $errors |
| RSS after 10 s / at the end / max | $rss_start / $rss_end / $rss_max MiB |
| RSS slope (least squares over $samples samples, every ${SAMPLE} s) | $slope KiB/min |

Operations (\`operation status: count\`): $counts

Curve: \`bench/soak-memory.csv\` (t_s, rss_kib, hwm_kib, threads, fds). Raw: \`test-artifacts/soak/\`.
EOF
)
echo "$report"
if [[ -n "$RESULTS" && -f "$RESULTS" ]]; then
  python3 - "$RESULTS" "$report" <<'PY'
import sys
path, block = sys.argv[1], sys.argv[2]
text = open(path).read()
begin, end = "<!-- BEGIN SOAK by bench/soak.sh -->", "<!-- END SOAK -->"
new = f"{begin}\n\n{block}\n\n{end}"
if begin in text and end in text:
    text = text[: text.index(begin)] + new + text[text.index(end) + len(end):]
else:
    text = text.rstrip() + "\n\n## Soak (bench/soak.sh)\n\n" + new + "\n"
open(path, "w").write(text)
PY
fi
[[ "$verdict" == pass ]] || { say "FAILED"; jq '.five_xx_examples, .lost_examples, .error_examples' "$OUT/summary.json" >&2; exit 1; }
say "passed"
