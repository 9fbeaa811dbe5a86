"""Benchmark peer: what a user would write with FastMCP (4.2.x) instead of mcpgate.

FastMCP with a `JWTVerifier` checking the IdP's ES256 JWT access tokens against its JWKS (iss,
aud, exp, signature), the stateless Streamable HTTP transport with JSON responses, and one tool,
`echo`. Run with the venv of scripts/setup-peers.sh:

    PORT=8793 ISSUER=http://127.0.0.1:4400 JWKS_URI=…/jwks tools/peers/.venv/bin/python bench/peers/fastmcp-peer.py

AUTH=off serves without auth; RESOURCE defaults to http://127.0.0.1:PORT/mcp; ALG to ES256.
"""

import os

from fastmcp import FastMCP
from fastmcp.server.auth.providers.jwt import JWTVerifier

PORT = int(os.environ.get("PORT", "8793"))
RESOURCE = os.environ.get("RESOURCE", f"http://127.0.0.1:{PORT}/mcp")
AUTH = os.environ.get("AUTH", "on") != "off"

auth = (
    JWTVerifier(
        jwks_uri=os.environ["JWKS_URI"],
        issuer=os.environ["ISSUER"],
        audience=RESOURCE,
        algorithm=os.environ.get("ALG", "ES256"),
        base_url=f"http://127.0.0.1:{PORT}",
    )
    if AUTH
    else None
)
mcp = FastMCP("fastmcp-peer", auth=auth)


@mcp.tool
def echo(text: str) -> str:
    """Echoes its input."""
    return text


if __name__ == "__main__":
    mcp.run(
        transport="http",
        host="127.0.0.1",
        port=PORT,
        path="/mcp",
        stateless_http=True,
        json_response=True,
        show_banner=False,
        log_level="warning",
    )
