"""The whole OAuth flow with the official Python SDK client (PyPI `mcp` 2.3.0) against mcpgate
(external mode) + oidc-provider, without a human.

    python py_oauth_flow.py --url http://127.0.0.1:P/mcp --issuer http://127.0.0.1:I [--user bob]
                            [--mode auto|legacy] [--transport http|sse]

401 -> protected-resource metadata -> AS metadata -> DCR -> authorize (redirect_handler drives
oidc-provider's devInteractions login and consent with httpx; callback_handler returns the code)
-> token -> tools/list, whoami -> notes_put with only mcp:tools:read -> 403 insufficient_scope ->
the SDK re-authorizes with the wider scope -> notes_put succeeds. Exit 0 when every assertion
holds, 1 with a reason on stderr otherwise. Prints the HTTP trace.
"""

import argparse
import asyncio
import json
import re
import sys
import uuid
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the code is read from Location


class Failed(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Failed(msg)


trace: list[tuple[str, str, int, str | None]] = []


async def _record(response) -> None:
    www = response.headers.get("www-authenticate")
    trace.append((response.request.method, str(response.request.url), response.status_code, www))
    print(f"{response.request.method} {response.request.url} -> {response.status_code}" + (f"  [{www}]" if www else ""))


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info):
        self.client = info


class Browser:
    """Plays the user at oidc-provider's devInteractions pages."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.http = httpx2.AsyncClient(follow_redirects=False, timeout=15)
        self.authorizations: list[dict[str, list[str]]] = []
        self.result: AuthorizationCodeResult | None = None

    async def redirect_handler(self, url: str) -> None:
        print(f"authorize: {url}")
        self.authorizations.append(parse_qs(urlparse(url).query))
        for _ in range(12):
            if url.startswith(REDIRECT):
                q = parse_qs(urlparse(url).query)
                check("code" in q, f"no code in {url}")
                self.result = AuthorizationCodeResult(
                    code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0]
                )
                return
            r = await self.http.get(url)
            if urlparse(url).path.startswith("/interaction/") and r.status_code == 200:
                m = re.search(r'name="prompt" value="(\w+)"', r.text)
                check(m is not None, f"unexpected interaction page: {r.text[:300]}")
                form = {"prompt": m.group(1)}
                if form["prompt"] == "login":
                    form |= {"login": self.user, "password": "any"}
                print(f"  (devInteractions: {form['prompt']})")
                r = await self.http.post(url, data=form)
            location = r.headers.get("location")
            check(location is not None, f"authorization stopped at {url} with HTTP {r.status_code}: {r.text[:300]}")
            url = urljoin(url, location)
        raise Failed("too many redirects during authorization")

    async def callback_handler(self) -> AuthorizationCodeResult:
        check(self.result is not None, "callback before redirect")
        result, self.result = self.result, None
        return result


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def flow(args) -> None:
    browser = Browser(args.user)
    auth = OAuthClientProvider(
        server_url=args.url,
        client_metadata=OAuthClientMetadata(
            client_name="mcpgate-oauth-test-py",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=MemoryStorage(),
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )

    def http_client(headers=None, timeout=None, auth=None):
        c = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
        c.event_hooks["response"].append(_record)
        return c

    if args.transport == "sse":
        transport = sse_client(args.url, auth=auth, httpx_client_factory=http_client)
    else:
        transport = streamable_http_client(args.url, http_client=http_client(auth=auth))
    async with Client(transport, mode=args.mode, cache=None) as c:
        statuses = [t[2] for t in trace]
        check(401 in statuses, f"mcpgate never answered 401: {statuses}")
        check(any("/.well-known/oauth-protected-resource" in t[1] and t[2] == 200 for t in trace), "no PRM fetch")
        check(any(t[1].startswith(args.issuer + "/.well-known/") and t[2] == 200 for t in trace), "no AS metadata fetch")
        check(any(t[0] == "POST" and t[1] == args.issuer + "/reg" and t[2] == 201 for t in trace), "no DCR")
        check(any(t[0] == "POST" and t[1] == args.issuer + "/token" and t[2] == 200 for t in trace), "no token exchange")
        check(len(browser.authorizations) == 1, f"{len(browser.authorizations)} authorizations")
        a1 = browser.authorizations[0]
        check(a1.get("resource") == [args.url], f"authorize resource {a1.get('resource')}, want {args.url}")
        print(f"first authorization scope: {a1.get('scope')}")
        names = [t.name for t in (await c.list_tools()).tools]
        print(f"tools/list: {' '.join(names)}")
        check("whoami" in names, f"tools/list lacks whoami: {names}")
        who = json.loads(text(await c.call_tool("whoami", {})))
        print(f"whoami: {json.dumps(who)}")
        check(who["principal"] == args.user, f"whoami principal {who['principal']}")
        check(who["issuer"] == args.issuer, f"whoami issuer {who['issuer']}")
        check(
            "mcp:tools:read" in who["scopes"] and "mcp:tools:write" not in who["scopes"], f"first scopes {who['scopes']}"
        )
        filtered = "notes_put" not in names

        note_id = f"py-{uuid.uuid4().hex[:8]}"
        put = await c.call_tool("notes_put", {"id": note_id, "content": "written after step-up"})
        check(not put.is_error, f"notes_put after step-up: {text(put)}")
        forbidden = [t for t in trace if t[2] == 403]
        check(forbidden, "no 403 step-up happened")
        print(f"403 challenge: {forbidden[0][3]}")
        check('error="insufficient_scope"' in (forbidden[0][3] or ""), "403 without insufficient_scope")
        check(len(browser.authorizations) == 2, "the SDK did not re-authorize after 403")
        scope2 = browser.authorizations[1].get("scope", [""])[0].split()
        print(f"step-up authorization scope: {' '.join(scope2)}")
        check("mcp:tools:write" in scope2, f"step-up scope {scope2}")
        got = await c.call_tool("notes_get", {"id": note_id})
        check(text(got) == "written after step-up", f"notes_get: {text(got)}")
        who = json.loads(text(await c.call_tool("whoami", {})))
        check(who["principal"] == args.user and "mcp:tools:write" in who["scopes"], f"whoami after step-up: {who}")
        check(filtered, "tools/list showed notes_put to a token holding only mcp:tools:read")
    print("OK")


def _leaves(exc: BaseException):
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from _leaves(e)
    else:
        yield exc


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--user", default="bob")
    p.add_argument("--mode", default="auto", choices=["auto", "legacy"])
    p.add_argument("--transport", default="http", choices=["http", "sse"])
    args = p.parse_args()
    try:
        asyncio.run(asyncio.wait_for(flow(args), timeout=90))
    except Exception as exc:
        why = " | ".join(f"{type(e).__name__}: {e}" for e in _leaves(exc))
        print(f"py_oauth_flow: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
