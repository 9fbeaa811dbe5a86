"""Connection reuse after a refusal: real clients (httpx in the Python SDK) send the next request
(the resource-metadata GET after a 401) on the same keep-alive connection. If the server closes
that connection without saying `Connection: close`, the client fails with "Server disconnected
without sending a response".

    python keepalive.py BASE_URL [ROUNDS]

Each round: a fresh client POSTs an initialize to /mcp without a token (401), then GETs the
protected-resource metadata on the same connection. Exit 1 if any GET failed.
"""

import asyncio
import sys

import httpx2

INIT = (
    '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    '"capabilities":{},"clientInfo":{"name":"keepalive","version":"1"}}}'
)


async def main(base: str, rounds: int) -> int:
    failures = 0
    statuses = set()
    for _ in range(rounds):
        async with httpx2.AsyncClient() as c:
            r = await c.post(
                f"{base}/mcp",
                content=INIT,
                headers={"content-type": "application/json", "accept": "application/json, text/event-stream"},
            )
            statuses.add((r.status_code, r.headers.get("connection")))
            try:
                await c.get(f"{base}/.well-known/oauth-protected-resource/mcp")
            except httpx2.HTTPError as e:
                failures += 1
                last = f"{type(e).__name__}: {e}"
    print(f"{rounds} rounds; first responses (status, connection header): {sorted(statuses, key=str)}; {failures} reused connections failed")
    if failures:
        print(f"last failure: {last}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100)))
