"""Memory per idle stateful session and per open legacy SSE stream (bench/idle-memory.sh).

    python idle_memory.py --host 127.0.0.1 --port P --pid PID --counts 1000,10000

For each count N: opens N stateful Streamable HTTP sessions (initialize 2025-11-25 +
notifications/initialized, then left idle) and reads the server's RSS; then opens N legacy SSE
streams (GET /sse, kept open until the endpoint event arrives, then idle) and reads it again.
Sessions are deleted and streams closed between counts. Prints one JSON line per measurement:
{"kind", "n", "rss_before_kib", "rss_after_kib", "kib_each"}. Raw asyncio sockets, so 10,000
open streams cost the client little.
"""

import argparse
import asyncio
import json
import time

STATEFUL = "2025-11-25"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


async def request(host, port, method, path, body=b"", headers=()) -> tuple[int, dict, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
            f"Content-Length: {len(body)}", *headers]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    raw_headers, _, payload = rest.partition(b"\r\n\r\n")
    hs = {}
    for line in raw_headers.split(b"\r\n"):
        k, _, v = line.partition(b":")
        hs[k.strip().lower().decode()] = v.strip().decode()
    return int(status_line.split()[1]), hs, payload


async def open_session(host, port, sem) -> str | None:
    async with sem:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": STATEFUL, "capabilities": {},
            "clientInfo": {"name": "idle", "version": "0"}}}).encode()
        hdrs = ("Content-Type: application/json", "Accept: application/json, text/event-stream")
        status, hs, _ = await request(host, port, "POST", "/mcp", body, hdrs)
        sid = hs.get("mcp-session-id")
        if status != 200 or not sid:
            return None
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        await request(host, port, "POST", "/mcp", note,
                      (*hdrs, f"Mcp-Session-Id: {sid}", f"MCP-Protocol-Version: {STATEFUL}"))
        return sid


async def delete_session(host, port, sid, sem):
    async with sem:
        await request(host, port, "DELETE", "/mcp", b"",
                      (f"Mcp-Session-Id: {sid}", f"MCP-Protocol-Version: {STATEFUL}"))


async def open_stream(host, port, sem):
    async with sem:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /sse HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        buf = b""
        while b"event: endpoint" not in buf and b"event:endpoint" not in buf:
            chunk = await asyncio.wait_for(reader.read(4096), 30)
            if not chunk:
                return None
            buf += chunk
        return writer


async def settle(pid: int) -> int:
    await asyncio.sleep(2)
    return rss_kib(pid)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--counts", default="1000,10000")
    a = ap.parse_args()
    sem = asyncio.Semaphore(64)
    for n in [int(x) for x in a.counts.split(",")]:
        before = await settle(a.pid)
        t = time.monotonic()
        sids = [s for s in await asyncio.gather(*(open_session(a.host, a.port, sem) for _ in range(n))) if s]
        after = await settle(a.pid)
        print(json.dumps({"kind": "idle stateful session", "n": len(sids), "requested": n,
                          "rss_before_kib": before, "rss_after_kib": after,
                          "kib_each": round((after - before) / max(len(sids), 1), 2),
                          "open_seconds": round(time.monotonic() - t, 1)}), flush=True)
        await asyncio.gather(*(delete_session(a.host, a.port, s, sem) for s in sids))

        before = await settle(a.pid)
        t = time.monotonic()
        writers = [w for w in await asyncio.gather(*(open_stream(a.host, a.port, sem) for _ in range(n)),
                                                   return_exceptions=True) if w and not isinstance(w, Exception)]
        after = await settle(a.pid)
        print(json.dumps({"kind": "open legacy SSE stream", "n": len(writers), "requested": n,
                          "rss_before_kib": before, "rss_after_kib": after,
                          "kib_each": round((after - before) / max(len(writers), 1), 2),
                          "open_seconds": round(time.monotonic() - t, 1)}), flush=True)
        for w in writers:
            w.close()
        await asyncio.sleep(2)


if __name__ == "__main__":
    asyncio.run(main())
