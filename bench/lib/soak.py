"""Mixed load against one mcpgate (built-in AS + gateway upstream + legacy SSE) for bench/soak.sh.

    python soak.py --base http://127.0.0.1:P --password PW --pid MCPGATE_PID --duration SECS
                   [--kill-every SECS] [--out summary.json]

Workers, all at once for --duration seconds:
  login      DCR once, then authorize -> login form -> consent (first time) -> code -> token:
             every round is a new refresh family
  refresh    rotate a random family's refresh token; every 10th round fires 3 refreshes of one
             token at once (the grace window lets them all through; one successor is kept)
  revoke     now and then revokes a family on purpose (RFC 7009), which must then stay dead
  streamable stateless 2026-07-28 tools/call (echo, upstream) and a stateful session
             (initialize, tools/call, DELETE) with a family's access token
  sse        legacy HTTP+SSE: open /sse, initialize + tools/call over /messages, read the
             answers on the stream, close it
  killer     SIGKILLs mcpgate's stdio upstream child every --kill-every seconds (the gateway
             supervisor restarts it)
At the end every family not revoked on purpose must still refresh. Prints (and writes --out) a
JSON summary: counts per operation and status, 5xx responses, lost families, errors.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from urllib.parse import parse_qs, urlencode, urlparse

import httpx2 as httpx

REDIRECT = "http://127.0.0.1:9/callback"
SCOPE = "mcp:tools:read mcp:tools:write"
STATELESS = "2026-07-28"
STATEFUL = "2025-11-25"
LEGACY = "2024-11-05"

stats: Counter = Counter()
errors: list[str] = []
five_xx: list[str] = []


def note(op: str, status: int, detail: str = "") -> None:
    stats[f"{op} {status}"] += 1
    if status >= 500:
        five_xx.append(f"{op} {status} {detail[:200]}")


def err(msg: str) -> None:
    if len(errors) < 200:
        errors.append(msg)
    stats["errors"] += 1


class Family:
    def __init__(self, client_id: str, access: str, refresh: str):
        self.client_id = client_id
        self.access = access
        self.refresh = refresh
        self.lock = asyncio.Lock()
        self.revoked = False


families: list[Family] = []


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    if not m:
        raise RuntimeError(f"no {name} field")
    return m.group(1)


async def register(c: httpx.AsyncClient, base: str) -> str:
    r = await c.post(f"{base}/register", json={
        "client_name": "soak", "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "token_endpoint_auth_method": "none", "scope": SCOPE,
    })
    note("register", r.status_code, r.text)
    r.raise_for_status()
    return r.json()["client_id"]


async def login_once(c: httpx.AsyncClient, base: str, client_id: str, password: str) -> Family:
    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "st",
        "scope": SCOPE, "resource": f"{base}/mcp",
    })
    browser = httpx.AsyncClient(timeout=30)
    try:
        r = await browser.get(f"{base}/authorize?{query}")
        note("authorize", r.status_code, r.text)
        r.raise_for_status()
        html = r.text
        r = await browser.post(f"{base}/authorize/login", data={
            "pending": hidden(html, "pending"), "csrf": hidden(html, "csrf"),
            "username": "admin", "password": password,
        })
        note("login", r.status_code, r.text)
        if r.status_code == 200:
            cookie = next((v.split(";")[0] for k, v in r.headers.multi_items()
                           if k.lower() == "set-cookie" and v.startswith("__Host-mcpgate-session=")), None)
            html = r.text
            r = await browser.post(f"{base}/authorize/consent", headers={"cookie": cookie or ""}, data={
                "pending": hidden(html, "pending"), "csrf": hidden(html, "csrf"), "decision": "approve",
            })
            note("consent", r.status_code, r.text)
        if r.status_code != 303:
            raise RuntimeError(f"no redirect after sign-in: {r.status_code}")
        code = parse_qs(urlparse(r.headers["location"]).query)["code"][0]
    finally:
        await browser.aclose()
    r = await c.post(f"{base}/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": client_id, "code_verifier": verifier, "resource": f"{base}/mcp",
    })
    note("token code", r.status_code, r.text)
    r.raise_for_status()
    t = r.json()
    return Family(client_id, t["access_token"], t["refresh_token"])


async def refresh_call(c: httpx.AsyncClient, base: str, fam: Family, token: str):
    r = await c.post(f"{base}/token", data={
        "grant_type": "refresh_token", "refresh_token": token, "client_id": fam.client_id,
    })
    return r


async def login_worker(c, base, password, stop):
    client_id = await register(c, base)
    while not stop.is_set():
        try:
            families.append(await login_once(c, base, client_id, password))
        except Exception as e:  # noqa: BLE001
            err(f"login: {e!r}")
        await asyncio.sleep(0.2)


async def refresh_worker(c, base, stop):
    n = 0
    while not stop.is_set():
        n += 1
        live = [f for f in families if not f.revoked]
        if not live:
            await asyncio.sleep(0.2)
            continue
        fam = random.choice(live)
        async with fam.lock:
            if fam.revoked:
                continue
            try:
                if n % 10 == 0:
                    # Concurrent refreshes of one token (a client racing itself).
                    rs = await asyncio.gather(*(refresh_call(c, base, fam, fam.refresh) for _ in range(3)))
                    ok = [r for r in rs if r.status_code == 200]
                    for r in rs:
                        note("token refresh (concurrent)", r.status_code, r.text)
                    if not ok:
                        err(f"concurrent refresh: none succeeded: {[r.status_code for r in rs]} {rs[0].text[:200]}")
                        continue
                    t = ok[0].json()
                else:
                    r = await refresh_call(c, base, fam, fam.refresh)
                    note("token refresh", r.status_code, r.text)
                    if r.status_code != 200:
                        err(f"refresh: {r.status_code} {r.text[:200]}")
                        continue
                    t = r.json()
                fam.refresh, fam.access = t["refresh_token"], t["access_token"]
            except Exception as e:  # noqa: BLE001
                err(f"refresh: {e!r}")
        await asyncio.sleep(0.05)


async def revoke_worker(c, base, stop):
    while not stop.is_set():
        await asyncio.sleep(15)
        live = [f for f in families if not f.revoked]
        if len(live) < 5:
            continue
        fam = random.choice(live)
        async with fam.lock:
            r = await c.post(f"{base}/revoke", data={
                "token": fam.refresh, "token_type_hint": "refresh_token", "client_id": fam.client_id,
            })
            note("revoke", r.status_code, r.text)
            if r.status_code == 200:
                fam.revoked = True


def mcp_headers(token: str, **extra) -> dict:
    h = {"authorization": f"Bearer {token}", "content-type": "application/json",
         "accept": "application/json, text/event-stream"}
    h.update(extra)
    return h


def parse_body(r) -> dict:
    ct = r.headers.get("content-type", "")
    if ct.startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data:"):
                data = line[5:].strip()
                if data:
                    msg = json.loads(data)
                    if "id" in msg and ("result" in msg or "error" in msg):
                        return msg
        return {}
    return r.json() if r.text else {}


def tool_outcome(op: str, msg: dict) -> None:
    if "error" in msg:
        # The upstream being restarted answers with a JSON-RPC error: counted, not a failure.
        stats[f"{op} jsonrpc-error"] += 1
    elif msg.get("result", {}).get("isError"):
        stats[f"{op} tool-error"] += 1
    elif "result" in msg:
        stats[f"{op} ok"] += 1
    else:
        err(f"{op}: no answer: {msg}")


def stateless_call(i: int, tool: str, args: dict) -> dict:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
        "name": tool, "arguments": args, "_meta": {
            "io.modelcontextprotocol/protocolVersion": STATELESS,
            "io.modelcontextprotocol/clientInfo": {"name": "soak", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}}}}


async def streamable_worker(c, base, stop):
    i = 0
    while not stop.is_set():
        live = [f for f in families if not f.revoked]
        if not live:
            await asyncio.sleep(0.2)
            continue
        fam = random.choice(live)
        i += 1
        try:
            if i % 20 == 0:
                # A stateful session: initialize, call, end.
                r = await c.post(f"{base}/mcp", headers=mcp_headers(fam.access), json={
                    "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                        "protocolVersion": STATEFUL, "capabilities": {},
                        "clientInfo": {"name": "soak", "version": "0"}}})
                note("mcp initialize", r.status_code, r.text)
                sid = r.headers.get("mcp-session-id")
                if r.status_code != 200 or not sid:
                    continue
                h = mcp_headers(fam.access, **{"mcp-session-id": sid, "mcp-protocol-version": STATEFUL})
                r = await c.post(f"{base}/mcp", headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
                note("mcp initialized", r.status_code, r.text)
                r = await c.post(f"{base}/mcp", headers=h, json={
                    "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "s"}}})
                note("mcp session call", r.status_code, r.text)
                if r.status_code == 200:
                    tool_outcome("mcp session call", parse_body(r))
                r = await c.delete(f"{base}/mcp", headers=h)
                note("mcp delete", r.status_code, r.text)
            else:
                r = await c.post(f"{base}/mcp", headers=mcp_headers(
                    fam.access, **{"mcp-protocol-version": STATELESS, "mcp-method": "tools/call", "mcp-name": "echo"}),
                    json=stateless_call(i, "echo", {"text": f"hi {i}"}))
                note("mcp call", r.status_code, r.text)
                if r.status_code == 200:
                    tool_outcome("mcp call", parse_body(r))
        except Exception as e:  # noqa: BLE001
            err(f"streamable: {e!r}")


async def sse_worker(base, stop):
    while not stop.is_set():
        live = [f for f in families if not f.revoked]
        if not live:
            await asyncio.sleep(0.2)
            continue
        fam = random.choice(live)
        try:
            async with httpx.AsyncClient(timeout=30) as c:
                async with c.stream("GET", f"{base}/sse", headers={
                        "authorization": f"Bearer {fam.access}", "accept": "text/event-stream"}) as stream:
                    note("sse open", stream.status_code)
                    if stream.status_code != 200:
                        continue
                    lines = stream.aiter_lines()
                    event, endpoint = None, None
                    async for line in lines:
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "endpoint":
                            endpoint = line[5:].strip()
                            break
                    if not endpoint:
                        err("sse: no endpoint event")
                        continue
                    url = endpoint if endpoint.startswith("http") else f"{base}{endpoint}"
                    h = {"authorization": f"Bearer {fam.access}", "content-type": "application/json"}
                    posts = [
                        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                            "protocolVersion": LEGACY, "capabilities": {},
                            "clientInfo": {"name": "soak", "version": "0"}}},
                        {"jsonrpc": "2.0", "method": "notifications/initialized"},
                        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                         "params": {"name": "echo", "arguments": {"text": "sse"}}},
                    ]
                    for body in posts:
                        r = await c.post(url, headers=h, json=body)
                        note("sse post", r.status_code, r.text)
                    # Read until the tools/call answer (id 2) arrives.
                    async def answer():
                        async for line in lines:
                            if line.startswith("data:"):
                                try:
                                    msg = json.loads(line[5:].strip())
                                except ValueError:
                                    continue
                                if msg.get("id") == 2:
                                    return msg
                        return {}
                    msg = await asyncio.wait_for(answer(), 30)
                    tool_outcome("sse call", msg)
        except Exception as e:  # noqa: BLE001
            err(f"sse: {e!r}")
        await asyncio.sleep(0.1)


def children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


async def killer(pid: int, every: float, stop):
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
            return
        except asyncio.TimeoutError:
            pass
        kids = children(pid)
        for kid in kids:
            try:
                os.kill(kid, signal.SIGKILL)
                stats["upstream kills"] += 1
            except OSError:
                pass
        if not kids:
            err("killer: no upstream child to kill")


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--kill-every", type=float, default=30)
    ap.add_argument("--out")
    a = ap.parse_args()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        tasks = [
            asyncio.create_task(login_worker(c, a.base, a.password, stop)),
            asyncio.create_task(login_worker(c, a.base, a.password, stop)),
            asyncio.create_task(refresh_worker(c, a.base, stop)),
            asyncio.create_task(refresh_worker(c, a.base, stop)),
            asyncio.create_task(revoke_worker(c, a.base, stop)),
            *(asyncio.create_task(streamable_worker(c, a.base, stop)) for _ in range(4)),
            *(asyncio.create_task(sse_worker(a.base, stop)) for _ in range(2)),
            asyncio.create_task(killer(a.pid, a.kill_every, stop)),
        ]
        await asyncio.sleep(a.duration)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Every family not revoked on purpose must still refresh; revoked ones must not.
        lost, resurrected = [], 0
        for fam in families:
            r = await refresh_call(c, a.base, fam, fam.refresh)
            note("final refresh", r.status_code, r.text)
            if fam.revoked:
                resurrected += r.status_code == 200
            elif r.status_code != 200:
                lost.append(f"{r.status_code} {r.text[:160]}")
    summary = {
        "seconds": round(time.monotonic() - started, 1),
        "families": len(families),
        "revoked_on_purpose": sum(f.revoked for f in families),
        "lost_families": len(lost),
        "lost_examples": lost[:5],
        "revoked_but_refreshable": resurrected,
        "responses_5xx": len(five_xx),
        "five_xx_examples": five_xx[:10],
        "errors": len(errors),
        "error_examples": errors[:20],
        "counts": dict(sorted(stats.items())),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
