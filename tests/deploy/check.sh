#!/usr/bin/env bash
# Checks the deployment files without a container engine:
#
#   - Dockerfile: parsed (stages, base images, COPY sources present and not dockerignored,
#     the cargo bin name, bench stubs for the cached dependency layer, a non-root USER,
#     EXPOSE 8080, ENV names the binary knows);
#   - deploy/service.yaml: parsed as YAML, Cloud Run annotations, port, probes, secrets, and
#     every env var name exists in crates/mcpgate/src/config;
#   - every MCP_* name mentioned in deploy/README.md and docs/clients.md exists;
#   - `mcpgate config check` accepts each env block of deploy/README.md marked
#     `<!-- deploy-check: config -->`, and the env of service.yaml;
#   - with a local PostgreSQL socket: the admin commands of the guide (users add/list, keys
#     rotate/list) against a throwaway database through a Cloud SQL-style socket URL
#     (postgres://USER@localhost/DB?host=/socket/dir);
#   - `mcpgate serve` with the Cloud Run configuration: /health, /ready, Host allow-list,
#     401 challenge naming the public URL, metadata documents naming the public URL.
#
#   tests/deploy/check.sh [path/to/mcpgate]      (default: target/debug/mcpgate, built if missing)
#
# Prints `deploy: N passed, M failed` and exits 1 if anything failed. `docker build --check`
# needs BuildKit with a running daemon; it is tried, and skipped when unavailable.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'ok    %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$*"; }
skip() { printf 'skip  %s\n' "$*"; }

WORK="$(mktemp -d)"
SERVER_PID=""
PGDB=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; fi
  if [[ -n "$PGDB" ]]; then dropdb -h "$PGSOCK" -U postgres --if-exists "$PGDB" >/dev/null 2>&1; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the binary ------------------------------------------------------------------------------
MCPGATE="${1:-$ROOT/target/debug/mcpgate}"
if [[ ! -x "$MCPGATE" ]]; then
  echo "building mcpgate (debug)…"
  cargo build --locked -p mcpgate >/dev/null 2>&1 || { fail "cargo build -p mcpgate"; }
fi
[[ "$MCPGATE" = /* ]] || MCPGATE="$ROOT/$MCPGATE"

# --- Python (PyYAML comes from the pinned peers venv, or the system) --------------------------
PY=python3
[[ -x "$ROOT/tools/peers/.venv/bin/python" ]] && PY="$ROOT/tools/peers/.venv/bin/python"

# Env var names the binary knows (clap `env = "…"` attributes and any other literal).
KNOWN="$WORK/known-env.txt"
grep -rhoE '"MCP_[A-Z0-9_]+"' crates/mcpgate/src/config | tr -d '"' | sort -u >"$KNOWN"
if [[ $(wc -l <"$KNOWN") -gt 20 ]]; then pass "found $(wc -l <"$KNOWN") MCP_* names in crates/mcpgate/src/config"
else fail "too few MCP_* names found in crates/mcpgate/src/config"; fi

# --- Dockerfile --------------------------------------------------------------------------------
if command -v docker >/dev/null 2>&1 && timeout 60 docker build --check . >"$WORK/docker-check.log" 2>&1; then
  pass "docker build --check"
else
  skip "docker build --check (no BuildKit daemon here: $(head -n 1 "$WORK/docker-check.log" 2>/dev/null))"
fi

"$PY" - "$KNOWN" >"$WORK/dockerfile.out" 2>&1 <<'PYEOF'
import fnmatch, json, os, re, shlex, sys

known = set(open(sys.argv[1]).read().split())
out = []
def check(ok, what):
    out.append(("ok" if ok else "FAIL", what))

text = open("Dockerfile").read()
# Join continuation lines, drop comments and blank lines.
lines, cur = [], ""
for raw in text.splitlines():
    s = raw.strip()
    if not cur and (not s or s.startswith("#")):
        continue
    if cur and s.startswith("#"):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    lines.append(cur + s)
    cur = ""
check(cur == "", "Dockerfile: no dangling line continuation")

INSTR = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
         "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
bad = [l for l in lines if l.split(None, 1)[0].upper() not in INSTR]
check(not bad, f"Dockerfile: every instruction is known {bad[:2] if bad else ''}")

args, stages = {}, []
def subst(s):
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), s)
for l in lines:
    ins, _, rest = l.partition(" ")
    ins = ins.upper()
    if ins == "ARG":
        k, _, v = rest.strip().partition("=")
        args.setdefault(k, v)
    elif ins == "FROM":
        parts = rest.split()
        parts = [p for p in parts if not p.startswith("--")]
        image = subst(parts[0])
        name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
        stages.append({"image": image, "name": name, "lines": []})
    else:
        check(bool(stages), f"Dockerfile: {ins} after a FROM") if not stages else None
        if stages:
            stages[-1]["lines"].append((ins, rest.strip()))

check(len(stages) >= 2, f"Dockerfile: multi-stage ({len(stages)} stages)")
builder, final = stages[0], stages[-1]
m = re.fullmatch(r"rust:(\d+)\.(\d+)(?:\.\d+)?-bookworm", builder["image"])
ws = open("Cargo.toml").read()
rv = re.search(r'rust-version\s*=\s*"(\d+)\.(\d+)', ws)
check(bool(m), f"Dockerfile: builder is rust:X.Y-bookworm ({builder['image']})")
if m and rv:
    check((int(m.group(1)), int(m.group(2))) >= (int(rv.group(1)), int(rv.group(2))),
          f"Dockerfile: builder Rust {m.group(1)}.{m.group(2)} >= workspace rust-version {rv.group(1)}.{rv.group(2)}")
check(final["image"] in ("debian:bookworm-slim",) or final["image"].startswith("gcr.io/distroless/cc"),
      f"Dockerfile: runtime is debian:bookworm-slim or distroless cc ({final['image']})")
names = {s["name"] for s in stages if s["name"]}

# .dockerignore (no negations used; '**/' matches at any depth)
ignore = []
if os.path.exists(".dockerignore"):
    for l in open(".dockerignore"):
        l = l.strip()
        if l and not l.startswith("#"):
            ignore.append(l.rstrip("/"))
check(not any(p.startswith("!") for p in ignore), ".dockerignore: no negation patterns (this check does not model them)")
def ignored(path):
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for p in ignore:
            if fnmatch.fnmatchcase(prefix, p):
                return p
            if p.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], p[3:]):
                return p
    return None

# COPY sources
for st in stages:
    for ins, rest in st["lines"]:
        if ins not in ("COPY", "ADD"):
            continue
        toks = shlex.split(rest)
        flags = [t for t in toks if t.startswith("--")]
        toks = [t for t in toks if not t.startswith("--")]
        srcs = toks[:-1]
        frm = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
        if frm:
            check(frm[0] in names, f"Dockerfile: COPY --from={frm[0]} names an earlier stage")
            continue
        for s in srcs:
            check(os.path.exists(s), f"Dockerfile: COPY source {s} exists in the repository")
            ig = ignored(s)
            check(ig is None, f"Dockerfile: COPY source {s} is not excluded by .dockerignore" + (f" (pattern {ig})" if ig else ""))

# The cargo bin and the build command
cargo = open("crates/mcpgate/Cargo.toml").read()
bins = re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', cargo)
check(bins == ["mcpgate"], f"crates/mcpgate declares the bin mcpgate ({bins})")
runs = " ".join(rest for ins, rest in builder["lines"] if ins == "RUN")
# --release, or a custom profile the workspace declares (dist: release + fat LTO).
build = re.search(r"cargo build --(?:release|profile ([\w-]+)) --locked -p mcpgate", runs)
profile = (build.group(1) if build else None) or "release"
check(build is not None, "Dockerfile: cargo build --release|--profile P --locked -p mcpgate")
if profile != "release":
    workspace = open("Cargo.toml").read()
    check(f"[profile.{profile}]" in workspace, f"Dockerfile: the profile {profile} is declared in Cargo.toml")
check(runs.count("cargo build") >= 2, "Dockerfile: a separate dependency build before the sources are copied")
check(f"target/{profile}/mcpgate" in runs or any(f"target/{profile}/mcpgate" in r for _, r in final["lines"]),
      f"Dockerfile: the binary taken from target/{profile}/mcpgate")
# Cached dependency layer: each member's manifest and build script copied, each declared bench stubbed.
copied = " ".join(rest for ins, rest in builder["lines"] if ins == "COPY")
for member in re.findall(r'"(crates/[^"]+)"', re.search(r"members\s*=\s*\[([^\]]*)\]", ws).group(1)):
    check(f"{member}/Cargo.toml" in copied, f"Dockerfile: {member}/Cargo.toml copied for the dependency layer")
    if os.path.exists(f"{member}/build.rs"):
        check(f"{member}/build.rs" in copied, f"Dockerfile: {member}/build.rs copied for the dependency layer")
    manifest = open(f"{member}/Cargo.toml").read()
    for bench in re.findall(r'\[\[bench\]\]\s*name\s*=\s*"([^"]+)"', manifest):
        check(f"{member}/benches/{bench}.rs" in runs, f"Dockerfile: stub for the declared bench {member}/benches/{bench}.rs")

# Runtime stage
fl = final["lines"]
users = [rest for ins, rest in fl if ins == "USER"]
check(bool(users), "Dockerfile: USER set in the runtime stage")
if users:
    u = users[-1].split(":")[0]
    check(u not in ("root", "0"), f"Dockerfile: USER is not root ({users[-1]})")
check(any(ins == "EXPOSE" and "8080" in rest.split() for ins, rest in fl), "Dockerfile: EXPOSE 8080")
ep = [rest for ins, rest in fl if ins == "ENTRYPOINT"]
cmd = [rest for ins, rest in fl if ins == "CMD"]
try:
    check(ep and json.loads(ep[-1]) == ["mcpgate"], f"Dockerfile: ENTRYPOINT [\"mcpgate\"] ({ep[-1] if ep else None})")
    check(cmd and json.loads(cmd[-1]) == ["serve"], f"Dockerfile: CMD [\"serve\"] ({cmd[-1] if cmd else None})")
except ValueError as e:
    check(False, f"Dockerfile: ENTRYPOINT/CMD in exec (JSON) form: {e}")
envs = {}
for ins, rest in fl:
    if ins == "ENV":
        for tok in shlex.split(rest):
            k, _, v = tok.partition("=")
            envs[k] = v
check(envs.get("MCP_TRANSPORT") == "streamable-http", "Dockerfile: ENV MCP_TRANSPORT=streamable-http")
check(envs.get("MCP_HOST") == "0.0.0.0", "Dockerfile: ENV MCP_HOST=0.0.0.0")
unknown = [k for k in envs if k.startswith("MCP_") and k not in known]
check(not unknown, f"Dockerfile: every ENV MCP_* name is known to the binary {unknown if unknown else ''}")
apt = " ".join(rest for ins, rest in fl if ins == "RUN")
if "apt-get install" in apt:
    pkgs = re.search(r"apt-get install ([^&]*)", apt).group(1).split()
    pkgs = [p for p in pkgs if not p.startswith("-")]
    check(pkgs == ["ca-certificates"], f"Dockerfile: runtime installs only ca-certificates ({pkgs})")

for status, what in out:
    print(f"{status}\t{what}")
PYEOF
while IFS=$'\t' read -r status what; do
  case "$status" in
    ok) pass "$what" ;;
    FAIL) fail "$what" ;;
    *) fail "Dockerfile check: $status $what" ;;
  esac
done <"$WORK/dockerfile.out"

# --- deploy/service.yaml -----------------------------------------------------------------------
if ! "$PY" -c 'import yaml' 2>/dev/null; then
  fail "PyYAML is not available (run scripts/setup-peers.sh): deploy/service.yaml not parsed"
else
  "$PY" - "$KNOWN" "$WORK/service.env" >"$WORK/service.out" 2>&1 <<'PYEOF'
import sys, yaml
known = set(open(sys.argv[1]).read().split())
out = []
def check(ok, what):
    out.append(("ok" if ok else "FAIL", what))
try:
    docs = list(yaml.safe_load_all(open("deploy/service.yaml")))
    check(len(docs) == 1, "service.yaml: parses as one YAML document")
except yaml.YAMLError as e:
    print(f"FAIL\tservice.yaml does not parse: {e}".replace("\n", " "))
    sys.exit(0)
svc = docs[0]
check(svc.get("apiVersion") == "serving.knative.dev/v1" and svc.get("kind") == "Service",
      "service.yaml: a Cloud Run (serving.knative.dev/v1) Service")
tmpl = svc["spec"]["template"]
ann = tmpl["metadata"]["annotations"]
check("run.googleapis.com/cloudsql-instances" in ann, "service.yaml: Cloud SQL annotation")
check(ann.get("run.googleapis.com/sessionAffinity") == "true", "service.yaml: session affinity")
check(int(ann.get("autoscaling.knative.dev/minScale", "0")) >= 1, "service.yaml: min instances >= 1")
check(all(isinstance(v, str) for v in ann.values()), "service.yaml: annotation values are strings")
spec = tmpl["spec"]
containers = spec["containers"]
check(len(containers) == 1, "service.yaml: one container")
c = containers[0]
ports = [p["containerPort"] for p in c.get("ports", [])]
check(ports == [8080], f"service.yaml: containerPort 8080 ({ports})")
env = c.get("env", [])
names = [e["name"] for e in env]
check(len(names) == len(set(names)), "service.yaml: no duplicate env names")
unknown = [n for n in names if n not in known]
check(not unknown, f"service.yaml: every env name exists in crates/mcpgate/src/config {unknown if unknown else ''}")
check("PORT" not in names, "service.yaml: does not set the reserved PORT")
val = {e["name"]: e.get("value") for e in env}
check(all(isinstance(v, str) for k, v in val.items() if "valueFrom" not in next(e for e in env if e["name"] == k)),
      "service.yaml: plain env values are strings")
check(val.get("MCP_PORT") == str(ports[0] if ports else None), "service.yaml: MCP_PORT equals the containerPort")
check(val.get("MCP_HOST") == "0.0.0.0", "service.yaml: MCP_HOST=0.0.0.0")
pub = val.get("MCP_OAUTH_PUBLIC_URL") or ""
check(pub.startswith("https://"), "service.yaml: MCP_OAUTH_PUBLIC_URL is https")
host = pub.split("://", 1)[-1].split("/", 1)[0]
check(host in (val.get("MCP_ALLOWED_HOSTS") or "").split(","), "service.yaml: the public host is in MCP_ALLOWED_HOSTS")
secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
check("MCP_OAUTH_STORE" in secrets, "service.yaml: MCP_OAUTH_STORE comes from Secret Manager (secretKeyRef)")
check(all(set(r) == {"name", "key"} for r in secrets.values()), "service.yaml: every secretKeyRef has name and key")
for probe, path in (("startupProbe", "/ready"), ("livenessProbe", "/health")):
    p = c.get(probe, {}).get("httpGet", {})
    check(p.get("path") == path and p.get("port") in (None, 8080), f"service.yaml: {probe} on {path}")
check(int(spec.get("timeoutSeconds", 300)) >= 900, "service.yaml: request timeout allows long-lived streams")
# The env for `config check`, secrets replaced by placeholders of the documented shape.
placeholder = {"MCP_OAUTH_STORE": "postgres://mcpgate:PASSWORD@localhost/mcpgate?host=/cloudsql/P:R:I",
               "MCP_AUTH_TOKEN": "placeholder-token-0123456789abcdef"}
with open(sys.argv[2], "w") as f:
    for e in env:
        v = e.get("value", placeholder.get(e["name"], "placeholder-secret"))
        f.write(f"{e['name']}={v}\n")
for status, what in out:
    print(f"{status}\t{what}")
PYEOF
  while IFS=$'\t' read -r status what; do
    case "$status" in
      ok) pass "$what" ;;
      FAIL) fail "$what" ;;
      *) fail "service.yaml check: $status $what" ;;
    esac
  done <"$WORK/service.out"
fi

# --- MCP_* names in the guides -------------------------------------------------------------------
for doc in deploy/README.md docs/clients.md docs/proxy-mode.md docs/idp/*.md; do
  # MCP_REMOTE_CONFIG_DIR belongs to mcp-remote, not to mcpgate.
  unknown="$(grep -ohE '\bMCP_[A-Z0-9_]+' "$doc" | sort -u | grep -vxF -f "$KNOWN" | grep -vx 'MCP_REMOTE_CONFIG_DIR' || true)"
  if [[ -z "$unknown" ]]; then pass "$doc: every MCP_* name exists in crates/mcpgate/src/config"
  else fail "$doc: unknown names: $(echo $unknown)"; fi
done

# --- config check with the guide's env blocks -------------------------------------------------------
# Extract each fenced block that follows a `<!-- deploy-check: config -->` line; keep KEY=VALUE lines.
awk -v dir="$WORK" '
  /<!-- deploy-check: config -->/ { want = 1; next }
  want && /^```/ && !inblock { inblock = 1; n++; file = dir "/readme-block-" n ".env"; printf "" > file; next }
  inblock && /^```/ { inblock = 0; want = 0; close(file); next }
  inblock { print >> file }
' deploy/README.md
run_config_check() {   # run_config_check LABEL ENVFILE
  local label="$1" file="$2" vars=()
  while IFS= read -r line; do
    line="${line%%#*}"; line="${line#export }"
    line="$(sed -e 's/[[:space:]]*$//' <<<"$line")"
    [[ "$line" =~ ^MCP_[A-Z0-9_]+= ]] && vars+=("$line")
  done <"$file"
  if [[ ${#vars[@]} -eq 0 ]]; then fail "$label: no variables found"; return; fi
  if (cd "$WORK" && env -i PATH="$PATH" HOME="$WORK" "${vars[@]}" "$MCPGATE" config check) >"$WORK/cc.out" 2>&1; then
    pass "$label: mcpgate config check accepts it (${#vars[@]} variables)"
  else
    fail "$label: mcpgate config check: $(head -c 600 "$WORK/cc.out")"
  fi
}
blocks=("$WORK"/readme-block-*.env)
if [[ -e "${blocks[0]}" ]]; then
  for b in "${blocks[@]}"; do run_config_check "deploy/README.md block $(basename "$b" .env | sed 's/readme-block-//')" "$b"; done
else
  fail "deploy/README.md: no <!-- deploy-check: config --> blocks found"
fi
[[ -f "$WORK/service.env" ]] && run_config_check "deploy/service.yaml env" "$WORK/service.env"

# --- the IdP guides: every env block and every TOML block is a configuration mcpgate accepts ------
# Env blocks: fenced ```bash blocks made of MCP_* lines. TOML blocks: full files with an [oauth]
# table; the guides keep the client secret out of the file, so it comes from the environment.
for doc in docs/idp/*.md; do
  name="$(basename "$doc" .md)"
  rm -f "$WORK"/idp-"$name"-*
  awk -v dir="$WORK" -v name="$name" '
    /^```(bash|toml)$/ && !inblock { inblock = 1; kind = substr($0, 4); n++; file = dir "/idp-" name "-" n "." kind; printf "" > file; next }
    inblock && /^```/ { inblock = 0; close(file); next }
    inblock { print >> file }
  ' "$doc"
  checked=0
  for block in "$WORK"/idp-"$name"-*.bash; do
    [[ -e "$block" ]] && grep -q '^MCP_OAUTH_MODE=proxy' "$block" || continue
    run_config_check "$doc env block $(basename "$block" .bash | sed 's/.*-//')" "$block"; checked=$((checked + 1))
  done
  for block in "$WORK"/idp-"$name"-*.toml; do
    [[ -e "$block" ]] && grep -q '^\[oauth\]' "$block" || continue
    if (cd "$WORK" && env -i PATH="$PATH" HOME="$WORK" MCP_OAUTH_UPSTREAM_CLIENT_SECRET=placeholder-secret \
          "$MCPGATE" config check --config "$block") >"$WORK/cc.out" 2>&1; then
      pass "$doc TOML block $(basename "$block" .toml | sed 's/.*-//'): mcpgate config check accepts it"
    else
      fail "$doc TOML block $(basename "$block" .toml | sed 's/.*-//'): $(head -c 600 "$WORK/cc.out")"
    fi
    checked=$((checked + 1))
  done
  ((checked > 0)) || fail "$doc: no configuration block found"
done

# Proxy mode without its upstream IdP is refused with the setting to add, in one line.
if (cd "$WORK" && env -i PATH="$PATH" MCP_OAUTH_ENABLED=true MCP_OAUTH_MODE=proxy \
      MCP_OAUTH_PUBLIC_URL=https://mcp.example.com "$MCPGATE" config check) >"$WORK/proxy.out" 2>&1; then
  fail "proxy mode: config check accepted it without an upstream IdP"
elif grep -q 'oauth.upstream.provider' "$WORK/proxy.out"; then
  pass "proxy mode without MCP_OAUTH_UPSTREAM_PROVIDER is refused, naming the setting"
else
  fail "proxy mode: unexpected answer: $(head -c 300 "$WORK/proxy.out")"
fi

# --- admin commands through a Cloud SQL-style socket URL ---------------------------------------------
PGSOCK="${PGSOCK:-/var/run/postgresql}"
STORE=""
if [[ -S "$PGSOCK/.s.PGSQL.5432" ]] && command -v createdb >/dev/null 2>&1 \
   && PGDB="mcpgate_deploy_check_$$" && createdb -h "$PGSOCK" -U postgres "$PGDB" 2>"$WORK/createdb.err"; then
  STORE="postgres://postgres@localhost/$PGDB?host=$PGSOCK"
  admin() { env -i PATH="$PATH" HOME="$WORK" MCP_OAUTH_ENABLED=true MCP_OAUTH_PUBLIC_URL=https://mcp.example.com \
              MCP_OAUTH_STORE="$STORE" "$MCPGATE" "$@"; }
  if printf '%s' 'correct horse battery' | admin users add alice --password-stdin >"$WORK/a.out" 2>&1 \
     && admin users list 2>&1 | grep -q '^alice'; then
    pass "users add/list through postgres://…@localhost/DB?host=$PGSOCK (the Cloud SQL socket form)"
  else
    fail "users add/list through the socket URL: $(head -c 400 "$WORK/a.out")"
  fi
  if admin keys rotate --activate-after 10m >"$WORK/k.out" 2>&1 && [[ $(admin keys list 2>/dev/null | wc -l) -eq 2 ]]; then
    pass "keys rotate --activate-after 10m, keys list shows two keys"
  else
    fail "keys rotate/list: $(head -c 400 "$WORK/k.out")"
  fi
else
  PGDB=""
  skip "no PostgreSQL socket at $PGSOCK (or createdb failed): admin commands through the socket URL not run"
fi

# --- serve with the Cloud Run configuration ------------------------------------------------------------
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
[[ -n "$STORE" ]] || STORE="sqlite://$WORK/oauth.db"
if [[ -f "$WORK/service.env" ]]; then
  mapfile -t SVC < <(grep -vE '^(MCP_HOST|MCP_PORT|MCP_OAUTH_STORE|MCP_AUTH_TOKEN)=' "$WORK/service.env")
  (cd "$WORK" && exec env -i PATH="$PATH" HOME="$WORK" "${SVC[@]}" MCP_HOST=127.0.0.1 MCP_PORT="$PORT" \
      MCP_OAUTH_STORE="$STORE" MCP_AUTH_TOKEN=deploy-check-token-0123456789 MCP_NOTES_DB="$WORK/notes.db" \
      "$MCPGATE" serve) >"$WORK/serve.out" 2>"$WORK/serve.err" &
  SERVER_PID=$!
  up=""
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null && { up=1; break; }
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.2
  done
  if [[ -z "$up" ]]; then
    fail "serve with the service.yaml env did not come up: $(tail -c 600 "$WORK/serve.err")"
  else
    pass "serve with the service.yaml env: GET /health 200"
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/ready")"
    [[ "$code" == 200 ]] && pass "GET /ready 200 (startup probe)" || fail "GET /ready answered $code"
    INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"deploy-check","version":"0"}}}'
    mcp() { curl -s -D "$WORK/h.txt" -o "$WORK/b.txt" -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/mcp" \
              -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
              -d "$INIT" "$@"; }
    code="$(mcp -H 'Host: evil.example')"
    [[ "$code" == 403 ]] && pass "POST /mcp with a Host outside MCP_ALLOWED_HOSTS: 403" || fail "foreign Host answered $code"
    code="$(mcp -H 'Host: mcp.example.com')"
    if [[ "$code" == 401 ]] && grep -qi 'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"' "$WORK/h.txt"; then
      pass "POST /mcp without a token: 401 naming https://mcp.example.com's resource metadata"
    else
      fail "POST /mcp without a token answered $code: $(grep -i www-authenticate "$WORK/h.txt")"
    fi
    code="$(mcp -H 'Host: mcp.example.com' -H 'Authorization: Bearer deploy-check-token-0123456789')"
    if [[ "$code" == 200 ]] && grep -q '"serverInfo"' "$WORK/b.txt"; then pass "initialize with the static token (Host mcp.example.com): 200"
    else fail "initialize with the static token answered $code: $(head -c 300 "$WORK/b.txt")"; fi
    prm="$(curl -s "http://127.0.0.1:$PORT/.well-known/oauth-protected-resource/mcp")"
    asm="$(curl -s "http://127.0.0.1:$PORT/.well-known/oauth-authorization-server")"
    if python3 -c 'import json,sys; p=json.loads(sys.argv[1]); a=json.loads(sys.argv[2]);
assert p["resource"]=="https://mcp.example.com/mcp", p
assert p["authorization_servers"]==["https://mcp.example.com"], p
assert a["issuer"]=="https://mcp.example.com", a' "$prm" "$asm" 2>"$WORK/meta.err"; then
      pass "metadata: resource https://mcp.example.com/mcp, issuer https://mcp.example.com"
    else
      fail "metadata does not name the public URL: $(tail -c 400 "$WORK/meta.err")"
    fi
    if [[ "$STORE" == postgres* ]]; then
      grep -q 'First start' "$WORK/serve.out" && fail "serve printed a first-start admin password although users exist" \
        || pass "users created before the first start: no generated admin password"
    fi
  fi
  kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""
fi

echo
echo "deploy: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
