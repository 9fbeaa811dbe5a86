"""A minimal MCP server on the official Python SDK (PyPI `mcp` 2.x `MCPServer`, formerly FastMCP),
used as an upstream behind mcpgate's gateway mode in tests/interop.

    tools/peers/.venv/bin/python tools/peers/py_upstream_server.py            # stdio (default)
    tools/peers/.venv/bin/python tools/peers/py_upstream_server.py http PORT  # Streamable HTTP on 127.0.0.1:PORT/mcp
"""

import sys

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("py-upstream")


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "http":
        mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        mcp.run()
