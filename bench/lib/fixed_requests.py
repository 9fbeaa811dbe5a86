#!/usr/bin/env python3
"""Sends exactly N identical POSTs over one keep-alive connection, one at a time.

    fixed_requests.py --url http://127.0.0.1:PORT/mcp --body JSON -n 1000 [--token T] [--header 'N: v']...

Used by bench/run.sh to count the server's instructions per request under callgrind: the same
server is driven twice with different N and the difference in instructions is divided by the
difference in N, so start-up and shutdown cancel out. Exits 1 on the first answer that is not 200
with a JSON-RPC `result` that is no tool error, so a count never includes refused requests.
"""

import argparse
import http.client
import sys
import urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--body", required=True)
ap.add_argument("-n", type=int, required=True)
ap.add_argument("--token", default="")
ap.add_argument("--header", action="append", default=[])
args = ap.parse_args()

url = urllib.parse.urlsplit(args.url)
headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
if args.token:
    headers["Authorization"] = f"Bearer {args.token}"
for h in args.header:
    name, _, value = h.partition(":")
    headers[name.strip()] = value.strip()
body = args.body.encode()

# Under valgrind the server is ~50x slower: a generous timeout.
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
for i in range(args.n):
    conn.request("POST", url.path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200 or b'"result"' not in data or b'"isError":true' in data:
        print(f"request {i + 1}: HTTP {resp.status}: {data[:300]!r}", file=sys.stderr)
        sys.exit(1)
conn.close()
