"""Interop client on the official Python SDK (PyPI `mcp`, pinned in tools/peers/requirements.txt).

    python py_client.py --url URL [--token T] [--mode auto|legacy] [--transport http|sse] SCENARIO

Scenarios (exit 0 when every assertion holds, 1 with a reason on stderr otherwise):
  builtin       tools/list has whoami; whoami names principal "default"; notes_put then notes_get
  unauthorized  connecting must fail with HTTP 401
  add           Python upstream behind the gateway: add(2, 40) = 42
  echo          server-everything behind the gateway: tool `echo` is listed and echoes

`--mode auto` (the SDK default) probes 2026-07-28 `server/discover` and falls back to
`initialize`; `--mode legacy` forces the `initialize` handshake.
"""

import argparse
import asyncio
import json
import re
import sys
import uuid

from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


class Failed(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Failed(msg)


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


# HTTP statuses the server answered. The SDK reports a non-JSON-RPC 401 on Streamable HTTP as a
# generic "Server returned an error response", so the `unauthorized` scenario checks the wire.
statuses: list[int] = []


async def _record(response) -> None:
    statuses.append(response.status_code)


def http_client(headers=None, timeout=None, auth=None):
    c = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
    c.event_hooks["response"].append(_record)
    return c


def client(args) -> Client:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    if args.transport == "sse":
        transport = sse_client(args.url, headers=headers, httpx_client_factory=http_client)
    else:
        transport = streamable_http_client(args.url, http_client=http_client(headers=headers))
    return Client(transport, mode=args.mode, cache=None)


def principal_of(who: str) -> str:
    """whoami answers JSON ({"principal": ...}); accept plain text naming the principal too."""
    try:
        return json.loads(who)["principal"]
    except (ValueError, KeyError, TypeError):
        return "default" if "default" in who else who


async def call(c: Client, name: str, arguments: dict) -> str:
    result = await c.call_tool(name, arguments)
    check(not result.is_error, f"{name} returned isError: {text(result)}")
    return text(result)


async def builtin(args) -> None:
    async with client(args) as c:
        print(f"negotiated protocol version {c.protocol_version}")
        names = [t.name for t in (await c.list_tools()).tools]
        check("whoami" in names, f"tools/list lacks whoami: {names}")
        who = await call(c, "whoami", {})
        check(principal_of(who) == "default", f'whoami does not name principal "default": {who}')
        note_id, content = f"py-{uuid.uuid4()}", f"hello from python {uuid.uuid4()}"
        await call(c, "notes_put", {"id": note_id, "content": content})
        got = await call(c, "notes_get", {"id": note_id})
        check(content in got, f"notes_get({note_id}) = {got!r}, want {content!r}")


def _leaves(exc: BaseException):
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from _leaves(e)
    else:
        yield exc


async def unauthorized(args) -> None:
    try:
        async with client(args) as c:
            await c.list_tools()
    except Exception as exc:  # the SDK wraps transport errors in exception groups
        why = " | ".join(f"{type(e).__name__}: {e}" for e in _leaves(exc))
        check(bool(statuses) and set(statuses) == {401}, f"refused, but not only with 401 (statuses {statuses}): {why}")
        return
    raise Failed("connected without a token")


async def add(args) -> None:
    async with client(args) as c:
        names = [t.name for t in (await c.list_tools()).tools]
        check("add" in names, f"tools/list lacks add: {names}")
        out = await call(c, "add", {"a": 2, "b": 40})
        check(re.search(r"\b42\b", out) is not None, f"add(2, 40) returned {out!r}")


async def echo(args) -> None:
    async with client(args) as c:
        names = [t.name for t in (await c.list_tools()).tools]
        check("echo" in names, f"tools/list lacks echo: {names}")
        word = str(uuid.uuid4())
        out = await call(c, "echo", {"message": word})
        check(f"Echo: {word}" in out, f"echo returned {out!r}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token")
    p.add_argument("--mode", default="auto", choices=["auto", "legacy"])
    p.add_argument("--transport", default="http", choices=["http", "sse"])
    p.add_argument("scenario", choices=["builtin", "unauthorized", "add", "echo"])
    args = p.parse_args()
    try:
        asyncio.run(asyncio.wait_for(globals()[args.scenario](args), timeout=60))
    except Exception as exc:
        why = " | ".join(f"{type(e).__name__}: {e}" for e in _leaves(exc))
        print(f"py_client {args.scenario}: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
