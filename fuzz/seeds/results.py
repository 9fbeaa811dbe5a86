#!/usr/bin/env python3
"""Prints the results of the last run.sh run (from logs/ and artifacts/) as a Markdown table."""
import os, re, sys

FUZZ = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
targets = sys.argv[1:] or ["bearer_jwt", "token_endpoint", "authorize", "register", "cimd", "mcp_post", "config"]
print("| target | time | execs | execs/s | edges (cov) | features | crashes | corpus kept |")
print("|---|---|---|---|---|---|---|---|")
for t in targets:
    log = os.path.join(FUZZ, "logs", t + ".log")
    if not os.path.exists(log):
        print(f"| `{t}` | not run | | | | | | |")
        continue
    text = open(log, errors="replace").read()
    def grab(pattern, default="?"):
        m = re.findall(pattern, text)
        return m[-1] if m else default
    secs = grab(r"Done \d+ runs in (\d+) second")
    execs = grab(r"stat::number_of_executed_units: *(\d+)")
    rate = grab(r"stat::average_exec_per_sec: *(\d+)")
    cov = grab(r"cov: (\d+)")
    ft = grab(r"ft: (\d+)")
    art = os.path.join(FUZZ, "artifacts", t)
    crashes = len(os.listdir(art)) if os.path.isdir(art) else 0
    corpus = os.path.join(FUZZ, "corpus", t)
    kept = len(os.listdir(corpus)) if os.path.isdir(corpus) else 0
    execs_fmt = f"{int(execs):,}" if execs.isdigit() else execs
    print(f"| `{t}` | {secs} s | {execs_fmt} | {rate} | {cov} | {ft} | {crashes} | {kept} files |")
