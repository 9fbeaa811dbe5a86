#!/usr/bin/env bash
# Side-by-side benchmark of mcpgate against the peers a user would pick instead (issue 6).
#
#   bench/run.sh                 everything: install, build, measure, print ratios, write bench/RESULTS.md
#
# One command, everything on loopback, every system measured in the same run with the same load:
#   mcpgate-off         mcpgate, no auth                                  (tool: echo)
#   mcpgate-static      mcpgate, static bearer token (MCP_AUTH_TOKEN)     (tool: echo)
#   mcpgate-jwt         mcpgate, external IdP, ES256 JWT verified on JWKS (tool: echo)
#   mcpgate-introspect  mcpgate, external IdP, opaque token, introspection result cached (tool: echo)
#   ts-peer             TypeScript SDK 1.32.2 + Express 5 + jose, ES256 JWT (bench/peers/ts-peer.mjs, tool: echo)
#   fastmcp             FastMCP 4.2.3 JWTVerifier, ES256 JWT          (bench/peers/fastmcp-peer.py, tool: echo)
# All JWTs come from one real IdP (npm oidc-provider, tools/peers/idp/oidc.mjs, client svc-es256).
# Every request is an authenticated stateless `tools/call`: protocol 2026-07-28 for mcpgate (which
# answers plain JSON when the client accepts it, as the peers do), 2025-11-25 without a session
# for the peers (TS SDK v1 has no 2026 era).
#
# Load: wrk 4.1.0 (Debian, installed when missing) with bench/lib/post.lua, at each concurrency in
# BENCH_CONCURRENCY for BENCH_DURATION seconds after a warm-up. Per system and concurrency:
# throughput, p50/p99, CPU seconds per 1,000 requests (utime+stime of the server from
# /proc/PID/stat) and the background CPU the rest of the machine used meanwhile; per system: peak
# RSS (VmHWM) and start-to-first-authenticated-response (bench/lib/startup.py, median of trials).
# Then, for the mcpgate systems, instructions per request counted by callgrind: the server runs
# under valgrind twice, answering N1 and N2 requests one at a time (bench/lib/fixed_requests.py),
# counted from the first request on, and (instructions(N2) - instructions(N1)) / (N2 - N1) is what
# one request costs. Unlike the
# figures under load, that count does not depend on what else the machine is doing, so the cost of
# authentication can be read off a busy machine too. (valgrind hides SHA-NI from the program, so
# SHA-256 — static-token and token-cache digests — is counted in its portable form.)
#
# Environment:
#   BENCH_DURATION=5            seconds per measurement
#   BENCH_ROUNDS=2              interleaved rounds per concurrency (medians are reported)
#   BENCH_WAIT_IDLE=0           wait up to this many seconds for the 1-min load average to drop below 1
#   BENCH_WARMUP=2              seconds of warm-up per system (not measured)
#   BENCH_CONCURRENCY="1 8 32 128"
#   BENCH_SYSTEMS="mcpgate-off mcpgate-static mcpgate-jwt mcpgate-introspect ts-peer fastmcp"
#   BENCH_STARTUP_TRIALS=5      start-up trials per system (0 skips)
#   BENCH_PROFILE=1             perf profile (flat, top symbols) of BENCH_PROFILE_SYSTEMS afterwards, with
#                               context switches, CPU migrations and server CPU per request (perf stat)
#   BENCH_PROFILE_SYSTEMS="mcpgate-off mcpgate-jwt"
#   BENCH_PROFILE_C=32          the concurrency of that profiling load
#   BENCH_PIN=0                 1: server on CPU 1, wrk on CPU 0 (taskset), less noise, 1 core each
#   BENCH_INSTRUCTIONS=1        0 skips the callgrind count
#   BENCH_INSTR_N="200 1200"    N1 and N2 of that count
#   BENCH_RESULTS=bench/RESULTS.md   where the report goes ("" = don't write it)
#   BENCH_OUT=test-artifacts/bench   raw data and logs (wiped at start)
#   MCPGATE=path                use this binary instead of `cargo build --profile dist -p mcpgate`
#                               (dist: release + fat LTO, one codegen unit, as the Dockerfile ships)
#   BENCH_EXTRAS=0              1: afterwards also bench/token-endpoint.sh (code exchanges and refresh
#                               rotations per second: SQLite, PostgreSQL, oidc-provider) and
#                               bench/idle-memory.sh (RSS per idle session / open SSE stream at 1,000
#                               and 10,000), reported with their targets in the generated block;
#                               raw output in $OUT/token-endpoint and $OUT/idle-memory
# Raw data and logs: test-artifacts/bench/ (results.tsv, systems.tsv, startup.tsv, env.txt,
# profile-*.txt, *.log).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
OUT="${BENCH_OUT:-$ROOT/test-artifacts/bench}"
DURATION="${BENCH_DURATION:-5}"
ROUNDS="${BENCH_ROUNDS:-2}"
WAIT_IDLE="${BENCH_WAIT_IDLE:-0}"
WARMUP="${BENCH_WARMUP:-2}"
CONCURRENCY="${BENCH_CONCURRENCY:-1 8 32 128}"
SYSTEMS="${BENCH_SYSTEMS:-mcpgate-off mcpgate-static mcpgate-jwt mcpgate-introspect ts-peer fastmcp}"
STARTUP_TRIALS="${BENCH_STARTUP_TRIALS:-5}"
PIN="${BENCH_PIN:-0}"
PROFILE="${BENCH_PROFILE:-1}"
PROFILE_SYSTEMS="${BENCH_PROFILE_SYSTEMS:-mcpgate-off mcpgate-jwt}"
PROFILE_C="${BENCH_PROFILE_C:-32}"
INSTRUCTIONS="${BENCH_INSTRUCTIONS:-1}"
read -r INSTR_N1 INSTR_N2 <<<"${BENCH_INSTR_N:-200 1200}"
RESULTS="${BENCH_RESULTS-$BENCH/RESULTS.md}"

say() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- install -------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  say "installing wrk (apt)"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
say "peers (scripts/setup-peers.sh)"
"$ROOT/scripts/setup-peers.sh"
if [[ -z "${MCPGATE:-}" ]]; then
  say "cargo build --profile dist -p mcpgate"
  (cd "$ROOT" && cargo build --profile dist -q -p mcpgate)
  MCPGATE="$ROOT/target/dist/mcpgate"
fi
MCPGATE="$(realpath "$MCPGATE")"
[[ -x "$MCPGATE" ]] || die "no mcpgate binary at $MCPGATE"
PY="$ROOT/tools/peers/.venv/bin/python"
command -v jq >/dev/null || die "jq is required (scripts/setup-peers.sh installs it)"

rm -rf "$OUT" && mkdir -p "$OUT"
CLK_TCK=$(getconf CLK_TCK)
WRK_CPU="" SRV_CPU=""
if [[ "$PIN" == 1 ]]; then WRK_CPU="taskset -c 0" SRV_CPU="taskset -c 1"; fi

# --- processes -----------------------------------------------------------------------------------
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# cpu_ticks PID: utime + stime of PID (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# busy_ticks: CPU time the whole machine spent not idle (all cores).
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
hwm_kb() { awk '/^VmHWM/{print $2}' "/proc/$1/status"; }

# --- the IdP and its tokens ----------------------------------------------------------------------
IDP_PORT=$(free_port)
ISS="http://127.0.0.1:$IDP_PORT"
JWKS="$ISS/jwks"
declare -A PORT
for sys in mcpgate-off mcpgate-static mcpgate-jwt mcpgate-introspect ts-peer fastmcp; do PORT[$sys]=$(free_port); done
url_of() { echo "http://127.0.0.1:${PORT[$1]}"; }
say "IdP (oidc-provider) on $ISS"
env PORT="$IDP_PORT" JWKS_FILE="$OUT/idp-keys.json" AT_TTL=7200 LOG_REQUESTS=1 \
  node "$ROOT/tools/peers/idp/oidc.mjs" >"$OUT/idp.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 300); do
  curl -fsS -o /dev/null --max-time 2 "$ISS/.well-known/openid-configuration" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null "$ISS/.well-known/openid-configuration" || die "IdP did not start: $(tail -5 "$OUT/idp.log")"
# token CLIENT RESOURCE: a client-credentials access token (scope mcp:tools:read) for RESOURCE.
token() {
  curl -fsS -u "$1:$1-secret" -d grant_type=client_credentials -d scope=mcp:tools:read \
    --data-urlencode "resource=$2" "$ISS/token" | jq -er .access_token
}
TOK_MG_JWT=$(token svc-es256 "$(url_of mcpgate-jwt)/mcp")
TOK_MG_OPAQUE=$(token svc-opaque "$(url_of mcpgate-introspect)/mcp")
TOK_TS=$(token svc-es256 "$(url_of ts-peer)/mcp")
TOK_PY=$(token svc-es256 "$(url_of fastmcp)/mcp")
TOK_STATIC="bench-static-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# --- systems -------------------------------------------------------------------------------------
MG_META='{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}'
MG_BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"},"_meta":'"$MG_META"'}}'
MG_HEADERS='MCP-Protocol-Version: 2026-07-28|Mcp-Method: tools/call|Mcp-Name: echo'
PEER_BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'
PEER_HEADERS='MCP-Protocol-Version: 2025-11-25'

# define SYSTEM: sets CMD (env assignments + command), URL, TOKEN, BODY, HEADERS, TOOL.
define() {
  local base; base=$(url_of "$1")
  local mg=(env MCP_TRANSPORT=streamable-http MCP_HOST=127.0.0.1 MCP_PORT="${PORT[$1]}" MCP_RATE_LIMIT_RPM=0
    MCP_LOG_LEVEL=warn MCP_NOTES_DB="$OUT/run/notes-$1-$RANDOM.db")
  local ext=(MCP_OAUTH_ENABLED=true MCP_OAUTH_MODE=external MCP_OAUTH_ISSUER="$ISS" MCP_OAUTH_PUBLIC_URL="$base")
  URL="$base/mcp" BODY="$MG_BODY" HEADERS="$MG_HEADERS" TOOL=echo
  case "$1" in
    mcpgate-off) CMD=("${mg[@]}" "$MCPGATE"); TOKEN="" ;;
    mcpgate-static) CMD=("${mg[@]}" MCP_AUTH_TOKEN="$TOK_STATIC" "$MCPGATE"); TOKEN="$TOK_STATIC" ;;
    mcpgate-jwt) CMD=("${mg[@]}" "${ext[@]}" MCP_OAUTH_JWKS_URI="$JWKS" "$MCPGATE"); TOKEN="$TOK_MG_JWT" ;;
    mcpgate-introspect)
      CMD=("${mg[@]}" "${ext[@]}" MCP_OAUTH_JWKS_URI="$JWKS" MCP_OAUTH_INTROSPECTION_URL="$ISS/token/introspection"
        MCP_OAUTH_INTROSPECTION_CLIENT_ID=mcp-rs MCP_OAUTH_INTROSPECTION_CLIENT_SECRET=mcp-rs-secret
        MCP_OAUTH_INTROSPECTION_CACHE_SECS=300 "$MCPGATE")
      TOKEN="$TOK_MG_OPAQUE" ;;
    ts-peer)
      CMD=(env PORT="${PORT[$1]}" ISSUER="$ISS" JWKS_URI="$JWKS" node "$BENCH/peers/ts-peer.mjs")
      URL="$base/mcp" TOKEN="$TOK_TS" BODY="$PEER_BODY" HEADERS="$PEER_HEADERS" TOOL=echo ;;
    fastmcp)
      CMD=(env PORT="${PORT[$1]}" ISSUER="$ISS" JWKS_URI="$JWKS" "$PY" "$BENCH/peers/fastmcp-peer.py")
      URL="$base/mcp" TOKEN="$TOK_PY" BODY="$PEER_BODY" HEADERS="$PEER_HEADERS" TOOL=echo ;;
    *) die "unknown system $1" ;;
  esac
}
mkdir -p "$OUT/run"

# call: one request with curl (the current system's URL/TOKEN/BODY/HEADERS); prints the body,
# fails unless 200 with a JSON-RPC result that is not a tool error.
call() {
  local args=(-sS --max-time 5 -o "$OUT/run/body" -w '%{http_code}' -H 'Content-Type: application/json'
    -H 'Accept: application/json, text/event-stream' --data "$BODY")
  [[ -n "$TOKEN" ]] && args+=(-H "Authorization: Bearer $TOKEN")
  local h; IFS='|' read -ra hs <<<"$HEADERS"
  for h in "${hs[@]}"; do args+=(-H "$h"); done
  local status; status=$(curl "${args[@]}" "$URL" 2>/dev/null) || return 1
  [[ "$status" == 200 ]] || return 1
  # A JSON body, or an SSE stream whose last `data:` line is the JSON-RPC answer.
  { grep -q '^data: ' "$OUT/run/body" && sed -n 's/^data: //p' "$OUT/run/body" | tail -n 1 || cat "$OUT/run/body"; } |
    jq -e '.result and (.result.isError != true)' >/dev/null 2>&1
}

# wrk_run C SECONDS: wrk against the current system; prints its RESULT line + " wrk_cpu=S".
wrk_run() {
  local c="$1" d="$2" t=$(( $1 < 2 ? $1 : 2 ))
  local tf="$OUT/run/wrk-time"
  BENCH_BODY="$BODY" BENCH_TOKEN="$TOKEN" BENCH_HEADERS="$HEADERS" \
    /usr/bin/time -f '%U %S' -o "$tf" $WRK_CPU wrk -t"$t" -c"$c" -d"${d}s" --timeout 10s \
    -s "$BENCH/lib/post.lua" "$URL" >"$OUT/run/wrk-out" 2>&1 || { cat "$OUT/run/wrk-out" >&2; return 1; }
  local line; line=$(grep '^RESULT ' "$OUT/run/wrk-out") || { cat "$OUT/run/wrk-out" >&2; return 1; }
  echo "$line wrk_cpu=$(awk '{print $1 + $2}' "$tf")"
}

# --- a quiet machine, if asked ---------------------------------------------------------------------
if ((WAIT_IDLE > 0)); then
  deadline=$((SECONDS + WAIT_IDLE))
  while awk '{exit !($1 >= 1)}' /proc/loadavg && ((SECONDS < deadline)); do sleep 5; done
  say "load average now $(cut -d' ' -f1 /proc/loadavg)"
fi

# --- environment record --------------------------------------------------------------------------
{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host=$(uname -srm)"
  echo "cpus=$(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
  echo "mem=$(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "git=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "mcpgate=$("$MCPGATE" --version 2>/dev/null | head -1)"
  echo "node=$(node -v)"
  echo "python=$("$PY" -c 'import sys, fastmcp, mcp; from importlib.metadata import version as v; print(sys.version.split()[0], "fastmcp", fastmcp.__version__, "mcp", v("mcp"), "uvicorn", v("uvicorn"))')"
  echo "ts_sdk=$(jq -r .version "$ROOT/tools/peers/node_modules/@modelcontextprotocol/sdk/package.json") express=$(jq -r .version "$ROOT/tools/peers/node_modules/express/package.json") jose=$(jq -r .version "$ROOT/tools/peers/node_modules/jose/package.json")"
  echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "duration=${DURATION}s rounds=$ROUNDS warmup=${WARMUP}s concurrency=$CONCURRENCY pin=$PIN startup_trials=$STARTUP_TRIALS"
  echo "top_before=$(ps -eo pcpu=,comm= --sort=-pcpu | head -6 | awk '{printf "%s %s%%; ", $2, $1}')"
} >"$OUT/env.txt"

# --- throughput, latency, CPU, memory ------------------------------------------------------------
# All systems run side by side (idle ones cost nothing) and the measurements are interleaved: for
# each concurrency, BENCH_ROUNDS rounds, each round visiting every system once (in a rotated
# order), so background load on a shared machine hits every system alike. Reported figures are
# per-(system, concurrency) medians over the rounds.
printf 'system\tc\tround\trequests\tduration_s\trps\tp50_ms\tp99_ms\terrors\tcpu_s\tcpu_s_per_1k\tbg_cores\twrk_cpu_s\n' >"$OUT/results.tsv"
printf 'system\ttool\tpeak_rss_kb\n' >"$OUT/systems.tsv"
declare -A SPID
start_system() {
  local sys="$1" pid ok=0
  define "$sys"
  $SRV_CPU "${CMD[@]}" >"$OUT/$sys.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do
    if call; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  ((ok)) || die "$sys never answered an authenticated tools/call: $(head -c 300 "$OUT/run/body" 2>/dev/null); log: $(tail -5 "$OUT/$sys.log")"
  # `env` execs the server, so $pid is the server itself.
  wrk_run 8 "$WARMUP" >/dev/null || die "$sys: warm-up failed"
  SPID[$sys]=$pid
  say "$sys: up (pid $pid, $URL), warmed up"
}
# measure SYSTEM C ROUND: one wrk run, one row of results.tsv.
measure() {
  local sys="$1" c="$2" round="$3" pid="${SPID[$1]}" cpu0 cpu1 busy0 busy1 line
  define "$sys"
  cpu0=$(cpu_ticks "$pid") busy0=$(busy_ticks)
  line=$(wrk_run "$c" "$DURATION") || die "$sys c=$c: wrk failed"
  cpu1=$(cpu_ticks "$pid") busy1=$(busy_ticks)
  call || die "$sys: a tools/call after the c=$c run failed: $(head -c 300 "$OUT/run/body")"
  local requests duration_us p50_us p99_us mean_us max_us non2xx connect read write timeout wrk_cpu
  eval "$(sed -e 's/^RESULT //' -e 's/ /;/g' <<<"$line")"
  python3 - "$sys" "$c" "$round" "$requests" "$duration_us" "$p50_us" "$p99_us" \
    "$((non2xx + connect + read + write + timeout))" "$((cpu1 - cpu0))" "$((busy1 - busy0))" "$CLK_TCK" "$wrk_cpu" \
    >>"$OUT/results.tsv" <<'PYEOF'
import sys
sysname, c, rnd, n, dur_us, p50, p99, errs, cpu, busy, tck, wrk_cpu = sys.argv[1:]
n, dur, tck = int(n), int(dur_us) / 1e6, int(tck)
cpu_s, busy_s, wrk_cpu = int(cpu) / tck, int(busy) / tck, float(wrk_cpu)
bg = max(0.0, busy_s - cpu_s - wrk_cpu) / dur
print("\t".join(str(x) for x in [sysname, c, rnd, n, f"{dur:.2f}", f"{n / dur:.0f}", f"{int(p50) / 1000:.3f}",
      f"{int(p99) / 1000:.3f}", errs, f"{cpu_s:.2f}", f"{1000 * cpu_s / max(n, 1):.4f}", f"{bg:.2f}", f"{wrk_cpu:.2f}"]))
PYEOF
  say "$sys c=$c round $round: $(tail -1 "$OUT/results.tsv" | cut -f6-9,12 | awk -F'\t' '{printf "%s req/s, p50 %s ms, p99 %s ms, %s errors, bg %s cores", $1, $2, $3, $4, $5}')"
}

read -ra SYS_LIST <<<"$SYSTEMS"
for sys in "${SYS_LIST[@]}"; do start_system "$sys"; done
n=${#SYS_LIST[@]}
for c in $CONCURRENCY; do
  for round in $(seq "$ROUNDS"); do
    for i in $(seq 0 $((n - 1))); do
      measure "${SYS_LIST[$(( (i + round - 1) % n ))]}" "$c" "$round"
    done
  done
done
for sys in "${SYS_LIST[@]}"; do
  define "$sys"
  printf '%s\t%s\t%s\n' "$sys" "$TOOL" "$(hwm_kb "${SPID[$sys]}")" >>"$OUT/systems.tsv"
done
# Where the time goes (after the measurements, so perf does not disturb them): a flat CPU profile
# of the server under c=$PROFILE_C load, top symbols in test-artifacts/bench/profile-SYSTEM.txt,
# headed by what the scheduler did per request (software counters: they work where the machine
# has no hardware counters, and show what callgrind cannot, such as waking and switching threads).
if [[ "$PROFILE" == 1 ]] && command -v perf >/dev/null; then
  for sys in $PROFILE_SYSTEMS; do
    [[ -n "${SPID[$sys]:-}" ]] || continue
    define "$sys"
    # Counters and samples come from two load runs: sampling would add its own CPU to the counts.
    perf stat -x, -e task-clock,context-switches,cpu-migrations,page-faults -p "${SPID[$sys]}" \
      -o "$OUT/run/stat-$sys.csv" -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pid=$!
    line=$(wrk_run "$PROFILE_C" "$DURATION") || line=""
    wait "$perf_pid" || true
    requests=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$line")
    perf record -q -e cpu-clock -F 1999 -p "${SPID[$sys]}" -o "$OUT/run/perf-$sys.data" -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pid=$!
    wrk_run "$PROFILE_C" "$DURATION" >/dev/null || true
    wait "$perf_pid" || true
    {
      echo "c=$PROFILE_C, per request over ${requests:-?} requests (perf stat):"
      awk -F, -v n="${requests:-0}" 'n > 0 && $1 ~ /^[0-9.]+$/ {
        unit = ($3 == "task-clock") ? " us of server CPU" : " " $3
        printf "  %.3f%s\n", ($3 == "task-clock" ? 1000 : 1) * $1 / n, unit }' "$OUT/run/stat-$sys.csv"
      perf report -i "$OUT/run/perf-$sys.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed -e 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//' | head -n 60
    } >"$OUT/profile-$sys.txt" || true
    say "$sys: profile in ${OUT#$ROOT/}/profile-$sys.txt"
  done
fi
for sys in "${SYS_LIST[@]}"; do
  kill "${SPID[$sys]}" 2>/dev/null || true
  wait "${SPID[$sys]}" 2>/dev/null || true
done

# --- start to first authenticated response -------------------------------------------------------
printf 'system\ttrial\tms\n' >"$OUT/startup.tsv"
if ((STARTUP_TRIALS > 0)); then
  for sys in $SYSTEMS; do
    [[ "$sys" == mcpgate-off ]] && continue   # not an authenticated response
    for trial in $(seq "$STARTUP_TRIALS"); do
      define "$sys"
      hdr=(); IFS='|' read -ra hs <<<"$HEADERS"
      for h in "${hs[@]}"; do hdr+=(--header "$h"); done
      ms=$(python3 "$BENCH/lib/startup.py" --url "$URL" --body "$BODY" --token "$TOKEN" "${hdr[@]}" \
        --log "$OUT/startup-$sys.log" -- $SRV_CPU "${CMD[@]}") || die "$sys: start-up trial $trial failed"
      printf '%s\t%s\t%s\n' "$sys" "$trial" "$ms" >>"$OUT/startup.tsv"
    done
    say "$sys: start to first authenticated response (ms): $(awk -F'\t' -v s="$sys" '$1==s{printf "%s ", $3}' "$OUT/startup.tsv")"
  done
fi
# --- instructions per request (callgrind) ----------------------------------------------------------
printf 'system\tn1\tn2\tir1\tir2\tir_per_request\tsha256_per_request\n' >"$OUT/instructions.tsv"
# callgrind_ir N: runs the current system under callgrind until it has answered N requests; prints
# the instructions the whole process executed.
callgrind_ir() {
  local n="$1" cg="$OUT/run/callgrind-$sys-$1.out" pid ok=0
  rm -f "$cg"
  "${CMD[0]}" "${CMD[@]:1:${#CMD[@]}-2}" valgrind --tool=callgrind --callgrind-out-file="$cg" "${CMD[-1]}" \
    >"$OUT/run/callgrind.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 600); do
    curl -fsS -o /dev/null --max-time 5 "${URL%/mcp}/health" 2>/dev/null && { ok=1; break; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  ((ok)) || die "$sys never came up under valgrind: $(tail -5 "$OUT/run/callgrind.log")"
  # Start-up is not counted: parts of it (the metrics clock's calibration) spin for a time, not for
  # a number of instructions, and would make the two runs differ by more than a request costs.
  callgrind_control --zero "$pid" >/dev/null 2>&1 || die "callgrind_control could not reach $sys"
  local hdr=() hs h; IFS='|' read -ra hs <<<"$HEADERS"
  for h in "${hs[@]}"; do hdr+=(--header "$h"); done
  python3 "$BENCH/lib/fixed_requests.py" --url "$URL" --body "$BODY" -n "$n" --token "$TOKEN" "${hdr[@]}" ||
    die "$sys: a request under valgrind failed"
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/{print $2; exit}' "$cg"
}
# sha256_ir FILE: instructions spent in SHA-256's compression function (portable form under valgrind).
sha256_ir() {
  callgrind_annotate --threshold=100 "$1" 2>/dev/null |
    awk '/sha2::sha256::(soft::)?compress/ {gsub(",", "", $1); n += $1} END {print n + 0}'
}
if [[ "$INSTRUCTIONS" == 1 ]]; then
  command -v valgrind >/dev/null || die "valgrind is required for the instruction count (BENCH_INSTRUCTIONS=0 skips it)"
  for sys in $SYSTEMS; do
    [[ "$sys" == mcpgate-* ]] || continue   # node and python JIT/interpret: not comparable this way
    define "$sys"
    [[ "${CMD[0]}" == env ]] || die "$sys: expected an env command"
    ir1=$(callgrind_ir "$INSTR_N1") ir2=$(callgrind_ir "$INSTR_N2")
    sha1=$(sha256_ir "$OUT/run/callgrind-$sys-$INSTR_N1.out") sha2=$(sha256_ir "$OUT/run/callgrind-$sys-$INSTR_N2.out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" "$INSTR_N1" "$INSTR_N2" "$ir1" "$ir2" \
      "$(( (ir2 - ir1) / (INSTR_N2 - INSTR_N1) ))" "$(( (sha2 - sha1) / (INSTR_N2 - INSTR_N1) ))" >>"$OUT/instructions.tsv"
    say "$sys: $(( (ir2 - ir1) / (INSTR_N2 - INSTR_N1) )) instructions per request"
  done
fi

{
  echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "idp_calls=JWKS fetches $(grep -c 'GET /jwks' "$OUT/idp.log" || true), introspection calls $(grep -c 'POST /token/introspection' "$OUT/idp.log" || true) (whole run, start-up trials included)"
} >>"$OUT/env.txt"

if [[ "${BENCH_EXTRAS:-0}" == 1 ]]; then
  cleanup  # the load-test systems and the IdP are no longer needed
  PIDS=()
  say "token endpoint (bench/token-endpoint.sh)"
  MCPGATE="$MCPGATE" TOKEN_OUT="$OUT/token-endpoint" "$BENCH/token-endpoint.sh"
  say "idle sessions and SSE streams (bench/idle-memory.sh)"
  MCPGATE="$MCPGATE" IDLE_OUT="$OUT/idle-memory" "$BENCH/idle-memory.sh"
fi

# --- report ----------------------------------------------------------------------------------------
python3 "$BENCH/lib/report.py" "$OUT" "$RESULTS"
