#!/usr/bin/env bash
# Builds every fuzz target and runs each in turn, then minimises its corpus.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 600 s, every target)
#
# Environment: FUZZ_SANITIZER (default `none`; `address` if the toolchain ships the ASan
# runtime). Needs cargo-fuzz (`cargo install cargo-fuzz --locked`);
# a stable toolchain works through RUSTC_BOOTSTRAP=1. Runs under `nice -n 19`.
# Output: fuzz/logs/<target>.log (libFuzzer's final stats at the end), crashes in
# fuzz/artifacts/<target>/, the corpus in fuzz/corpus/<target>/ (minimised to edge coverage).
set -uo pipefail

cd "$(dirname "$0")"
secs="${1:-600}"
shift || true
all=(bearer_jwt token_endpoint authorize register cimd mcp_post config)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi
sanitizer="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1

python3 seeds/make_seeds.py >/dev/null
nice -n 19 cargo fuzz build --sanitizer "$sanitizer" || exit 1
mkdir -p logs
status=0
for t in "${targets[@]}"; do
  echo "== $t: ${secs}s"
  nice -n 19 cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=30 -rss_limit_mb=3072 -max_len=8192 \
    -print_final_stats=1 >"logs/$t.log" 2>&1
  rc=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)' "logs/$t.log" | tail -3
  if [ "$rc" -ne 0 ]; then
    echo "!! $t exited with $rc; crash inputs in artifacts/$t/"
    status=1
  fi
  # Keep the corpus modest: the smallest inputs that cover every edge (hit counts ignored,
  # which is what `cargo fuzz cmin` would keep them for).
  bin="target/x86_64-unknown-linux-gnu/release/$t"
  min="$(mktemp -d)"
  if nice -n 19 "$bin" -merge=1 -use_counters=0 "$min" "corpus/$t" >"logs/$t.cmin.log" 2>&1; then
    rm -rf "corpus/$t" && mv "$min" "corpus/$t"
  else
    echo "!! minimising the corpus of $t failed (see logs/$t.cmin.log)"
    rm -rf "$min"
  fi
  echo "   corpus: $(ls "corpus/$t" | wc -l) files"
done
exit "$status"
