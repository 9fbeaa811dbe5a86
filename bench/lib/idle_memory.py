"""Memory per idle stateful session and per open legacy SSE stream (bench/idle-memory.sh).

    python idle_memory.py --host 127.0.0.1 --port P --pid PID --counts 1000,10000

For each count N:
- opens N stateful Streamable HTTP sessions at once (initialize 2025-11-25 +
  notifications/initialized, then left idle) and reads the server's RSS 2 s later, while they
  are all awake; deletes them and reads it again;
- unless --hibernate-wait is 0 (with --only-hibernated, only this, which idle-memory.sh runs on
  a fresh server): opens N sessions again in 10 waves, each wave left idle
  --hibernate-wait seconds (quiet sessions hibernate after 10 s) before the next, and reads the
  RSS at N/2 and N sessions. An allocator keeps memory it has freed for reuse rather than giving
  it back, so RSS right after sessions hibernate barely moves; opened in waves, each wave reuses
  what the previous one freed, and the growth from N/2 to N sessions is the marginal cost of a
  hibernated session. A sample of the sessions must still answer tools/list (waking up);
  then all are deleted and the RSS read again;
- opens N legacy SSE streams (GET /sse, kept open until the endpoint event arrives, then idle),
  reads the RSS, closes them and reads it again.
Prints one JSON line per measurement: {"kind", "n", "rss_before_kib", "rss_after_kib",
"kib_each"}; for "... deleted/closed" lines kib_each is what stays per closed session or stream,
relative to the RSS before they were opened. Raw asyncio sockets, so 10,000 open streams cost the
client little.
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


async def delete_session(host, port, sid, sem) -> int:
    async with sem:
        status, _, _ = await request(host, port, "DELETE", "/mcp", b"",
                                     (f"Mcp-Session-Id: {sid}", f"MCP-Protocol-Version: {STATEFUL}"))
        return status


async def still_answers(host, port, sid, sem) -> bool:
    """tools/list in the session: a hibernated session must wake up and answer."""
    async with sem:
        body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}).encode()
        status, _, payload = await request(host, port, "POST", "/mcp", body, (
            "Content-Type: application/json", "Accept: application/json, text/event-stream",
            f"Mcp-Session-Id: {sid}", f"MCP-Protocol-Version: {STATEFUL}"))
        return status == 200 and b'"tools"' in payload


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


def line(kind, n, requested, before, after, started=None, **extra):
    out = {"kind": kind, "n": n, "requested": requested, "rss_before_kib": before,
           "rss_after_kib": after, "kib_each": round((after - before) / max(n, 1), 2)}
    if started is not None:
        out["open_seconds"] = round(time.monotonic() - started, 1)
    out.update(extra)
    print(json.dumps(out), flush=True)


async def open_sessions(a, sem, n) -> list[str]:
    return [s for s in await asyncio.gather(*(open_session(a.host, a.port, sem) for _ in range(n))) if s]


async def delete_all(a, sem, sids) -> int:
    statuses = await asyncio.gather(*(delete_session(a.host, a.port, s, sem) for s in sids))
    return sum(1 for st in statuses if 200 <= st < 300)


async def hibernated(a, sem, n) -> None:
    before = await settle(a.pid)
    sids, half, waves = [], None, 10
    for wave in range(waves):
        sids += await open_sessions(a, sem, n // waves)
        await asyncio.sleep(a.hibernate_wait)
        if wave == waves // 2 - 1:
            half = (len(sids), rss_kib(a.pid))
    after = rss_kib(a.pid)
    sample = sids[:: max(1, len(sids) // 50)]
    answered = sum(await asyncio.gather(*(still_answers(a.host, a.port, s, sem) for s in sample)))
    line("idle stateful session (hibernated, average)", len(sids), n, before, after,
         waves=waves, wave_idle_seconds=a.hibernate_wait,
         sample_answering=f"{answered}/{len(sample)}")
    line("idle stateful session (hibernated, marginal)", len(sids) - half[0], n - n // 2,
         half[1], after, from_sessions=half[0], to_sessions=len(sids))
    deleted = await delete_all(a, sem, sids)
    line("hibernated sessions deleted", len(sids), n, before, await settle(a.pid), deleted=deleted)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--counts", default="1000,10000")
    ap.add_argument("--hibernate-wait", type=float, default=13,
                    help="seconds each wave of sessions is left idle (0: skip the waves)")
    ap.add_argument("--only-hibernated", action="store_true",
                    help="only the waves of hibernated sessions (on a fresh server)")
    a = ap.parse_args()
    sem = asyncio.Semaphore(64)
    for n in [int(x) for x in a.counts.split(",")]:
        if a.only_hibernated:
            await hibernated(a, sem, n)
            continue
        before = await settle(a.pid)
        t = time.monotonic()
        sids = await open_sessions(a, sem, n)
        after = await settle(a.pid)
        line("idle stateful session (awake)", len(sids), n, before, after, t)
        deleted = await delete_all(a, sem, sids)
        line("stateful sessions deleted", len(sids), n, before, await settle(a.pid), deleted=deleted)

        if a.hibernate_wait > 0:
            await hibernated(a, sem, n)

        before = await settle(a.pid)
        t = time.monotonic()
        writers = [w for w in await asyncio.gather(*(open_stream(a.host, a.port, sem) for _ in range(n)),
                                                   return_exceptions=True) if w and not isinstance(w, Exception)]
        after = await settle(a.pid)
        line("open legacy SSE stream", len(writers), n, before, after, t)
        for w in writers:
            w.close()
        line("legacy SSE streams closed", len(writers), n, before, await settle(a.pid))


if __name__ == "__main__":
    asyncio.run(main())
