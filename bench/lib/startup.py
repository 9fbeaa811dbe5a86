#!/usr/bin/env python3
"""Time from process start to the first successful authenticated MCP response.

    startup.py --url http://127.0.0.1:PORT/mcp --body JSON [--token T] [--header 'N: v']... -- CMD...

Starts CMD (environment inherited), then POSTs BODY to URL as fast as it can (a new connection per
attempt, 1 ms apart) until one answers 200 with a JSON-RPC `result`. Prints the elapsed
milliseconds (spawn to that response) and stops CMD. Exits 1 after --timeout seconds.
"""

import argparse
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--body", required=True)
ap.add_argument("--token", default="")
ap.add_argument("--header", action="append", default=[])
ap.add_argument("--timeout", type=float, default=60)
ap.add_argument("--log", default=os.devnull)
ap.add_argument("cmd", nargs=argparse.REMAINDER)
args = ap.parse_args()
cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd

url = urllib.parse.urlsplit(args.url)
headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
if args.token:
    headers["Authorization"] = f"Bearer {args.token}"
for h in args.header:
    name, _, value = h.partition(":")
    headers[name.strip()] = value.strip()
body = args.body.encode()

log = open(args.log, "ab")
t0 = time.monotonic()
proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
elapsed = None
last = "no answer"
try:
    while time.monotonic() - t0 < args.timeout:
        if proc.poll() is not None:
            last = f"process exited with {proc.returncode}"
            break
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
            conn.request("POST", url.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if resp.status == 200 and b'"result"' in data and b'"isError":true' not in data:
                elapsed = (time.monotonic() - t0) * 1000
                break
            last = f"HTTP {resp.status}: {data[:200]!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.001)
finally:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
if elapsed is None:
    print(f"startup.py: no successful response: {last}", file=sys.stderr)
    sys.exit(1)
print(f"{elapsed:.1f}")
