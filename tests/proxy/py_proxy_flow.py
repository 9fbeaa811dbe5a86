"""Proxy mode end to end with the official Python SDK client (PyPI `mcp` 2.3.0): mcpgate is the
authorization server the client sees; the user signs in at npm oidc-provider (the upstream IdP).

    python py_proxy_flow.py --url http://127.0.0.1:P/mcp --user bob --ttl SECS [--transport http|sse]

401 -> metadata -> DCR at mcpgate -> authorize: mcpgate's consent page for this client, then the
upstream login and consent, the callback at mcpgate, the code (Browser plays the user) -> token
-> whoami names the upstream user's email -> notes_put with mcp:tools:read only -> 403 -> step-up
(signed in at mcpgate: only mcpgate's consent page) -> refresh after the short access-token TTL.
Exit 0 when every assertion holds, 1 with a reason on stderr otherwise. Prints the HTTP trace.
"""

import argparse
import asyncio
import json
import re
import sys
import uuid
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlunparse

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


trace: list[tuple[str, str, int, str | None, str]] = []


async def _record(response) -> None:
    www = response.headers.get("www-authenticate")
    req = response.request
    body = ""
    if str(req.url).endswith("/token"):
        body = req.content.decode(errors="replace")
    trace.append((req.method, str(req.url), response.status_code, www, body))
    print(f"{req.method} {req.url} -> {response.status_code}" + (f"  [{www}]" if www else ""))


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


def field(html: str, name: str) -> str | None:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    return m.group(1) if m else None


class Browser:
    """Plays the user: mcpgate's consent page, then the upstream IdP's (npm oidc-provider
    devInteractions) login and consent, the callback at mcpgate, and the redirect back with the
    code. Cookies by hand, per origin: mcpgate's are `__Host-`/Secure and this is plain http."""

    def __init__(self, user: str, scope: str | None) -> None:
        self.user, self.scope = user, scope
        self.http = httpx2.AsyncClient(follow_redirects=False, timeout=15)
        self.jars: dict[str, dict[str, str]] = {}
        self.authorizations: list[dict] = []
        self.result: AuthorizationCodeResult | None = None

    async def _hop(self, method: str, url: str, data=None):
        u = urlparse(url)
        jar = self.jars.setdefault(f"{u.scheme}://{u.netloc}", {})
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
        r = await self.http.request(method, url, data=data, headers=headers)
        for c in r.headers.get_list("set-cookie"):
            k, _, v = c.split(";")[0].partition("=")
            if v and "max-age=0" not in c.lower():
                jar[k.strip()] = v
            else:
                jar.pop(k.strip(), None)
        return r

    async def redirect_handler(self, url: str) -> None:
        if self.scope:  # the application asks for more up front
            u = urlparse(url)
            q = {k: v[0] for k, v in parse_qs(u.query).items()}
            q["scope"] = self.scope
            url = urlunparse(u._replace(query=urlencode(q)))
        print(f"authorize: {url}")
        mcpgate = f"{urlparse(url).scheme}://{urlparse(url).netloc}"
        query = parse_qs(urlparse(url).query)
        pages: list[str] = []
        here = url
        r = await self._hop("GET", here)
        for _ in range(16):
            if r.status_code in (302, 303):
                here = urljoin(here, r.headers["location"])
                if here.startswith(REDIRECT):
                    q = parse_qs(urlparse(here).query)
                    check("code" in q, f"no code in {here}")
                    check(q.get("iss") == [mcpgate], f"iss in {here}")
                    check(q.get("state") == query.get("state"), f"state in {here}")
                    self.authorizations.append({"query": query, "pages": pages})
                    self.result = AuthorizationCodeResult(code=q["code"][0], state=q["state"][0], iss=q["iss"][0])
                    print(f"  pages: {', '.join(pages)}")
                    return
                r = await self._hop("GET", here)
                continue
            check(r.status_code == 200, f"{here} answered HTTP {r.status_code}: {r.text[:400]}")
            if here.startswith(mcpgate):
                m = re.search(r'<form method="post" action="([^"]+)"', r.text)
                action = m.group(1) if m else None
                check(action in ("/authorize/upstream", "/authorize/consent"), f"unexpected page: {r.text[:400]}")
                pages.append(f"mcpgate:{action}")
                form = {"pending": field(r.text, "pending"), "csrf": field(r.text, "csrf"), "decision": "approve"}
                here = urljoin(mcpgate, action)
                r = await self._hop("POST", here, data=form)
            elif "/interaction/" in here:
                m = re.search(r'name="prompt" value="(\w+)"', r.text)
                prompt = m.group(1) if m else None
                check(prompt in ("login", "consent"), f"unexpected IdP page: {r.text[:300]}")
                pages.append(f"idp:{prompt}")
                form = {"prompt": prompt}
                if prompt == "login":
                    form |= {"login": self.user, "password": "any"}
                r = await self._hop("POST", here, data=form)
            else:
                raise Failed(f"unexpected page at {here}: {r.text[:300]}")
        raise Failed("authorization did not end in a redirect")

    async def callback_handler(self) -> AuthorizationCodeResult:
        check(self.result is not None, "callback before redirect")
        result, self.result = self.result, None
        return result


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def flow(args) -> None:
    origin = f"{urlparse(args.url).scheme}://{urlparse(args.url).netloc}"
    browser = Browser(args.user, args.scope)
    storage = MemoryStorage()
    auth = OAuthClientProvider(
        server_url=args.url,
        client_metadata=OAuthClientMetadata(
            client_name="mcpgate-proxy-test-py",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
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
    sse = args.transport == "sse"
    async with Client(transport, cache=None) as c:
        statuses = [t[2] for t in trace]
        check(401 in statuses, f"mcpgate never answered 401: {statuses}")
        check(any("/.well-known/oauth-protected-resource" in t[1] and t[2] == 200 for t in trace), "no PRM fetch")
        check(any(t[1] == origin + "/.well-known/oauth-authorization-server" and t[2] == 200 for t in trace), "no AS metadata")
        check(any(t[0] == "POST" and t[1] == origin + "/register" and t[2] == 201 for t in trace), "no DCR")
        check(any(t[1] == origin + "/token" and t[2] == 200 and "authorization_code" in t[4] for t in trace), "no code exchange")
        check(len(browser.authorizations) == 1, f"{len(browser.authorizations)} authorizations")
        a1 = browser.authorizations[0]
        check(a1["query"].get("resource") == [args.url], f"authorize resource {a1['query'].get('resource')}, want {args.url}")
        check(a1["query"].get("code_challenge_method") == ["S256"], "no PKCE S256")
        # Consent to this client at mcpgate first, then the upstream IdP's login and consent.
        check(a1["pages"] == ["mcpgate:/authorize/upstream", "idp:login", "idp:consent"], f"pages {a1['pages']}")
        check(storage.tokens is not None and "id_token" not in storage.tokens.model_dump(exclude_none=True), "an upstream ID token reached the client")
        print(f"first authorization scope: {a1['query'].get('scope')}")
        check(storage.tokens is not None and storage.tokens.refresh_token, "no refresh token")
        names = [t.name for t in (await c.list_tools()).tools]
        print(f"tools/list: {' '.join(names)}")
        check("whoami" in names, f"tools/list lacks whoami: {names}")
        who = json.loads(text(await c.call_tool("whoami", {})))
        print(f"whoami: {json.dumps(who)}")
        check(who["issuer"] == origin, f"whoami issuer {who['issuer']}")
        email = f"{args.user}@example.test"
        check(who.get("claims", {}).get("preferred_username") == email, f"whoami user {who}")
        check("mcp:tools:read" in who["scopes"] and ("mcp:tools:write" in who["scopes"]) == sse, f"first scopes {who['scopes']}")

        note_id = f"py-{uuid.uuid4().hex[:8]}"
        put = await c.call_tool("notes_put", {"id": note_id, "content": "written by the python sdk"})
        check(not put.is_error, f"notes_put: {text(put)}")
        if not sse:
            forbidden = [t for t in trace if t[2] == 403]
            check(forbidden, "no 403 step-up happened")
            print(f"403 challenge: {forbidden[0][3]}")
            check('error="insufficient_scope"' in (forbidden[0][3] or ""), "403 without insufficient_scope")
            check(len(browser.authorizations) == 2, "the SDK did not re-authorize after 403")
            a2 = browser.authorizations[1]
            scope2 = a2["query"].get("scope", [""])[0].split()
            print(f"step-up authorization scope: {' '.join(scope2)}; pages {a2['pages']}")
            check("mcp:tools:write" in scope2, f"step-up scope {scope2}")
            check(a2["pages"] == ["mcpgate:/authorize/consent"], f"signed in at mcpgate, the step-up went upstream again: {a2['pages']}")
        first = storage.tokens
        # Refresh: the access token expires, the SDK refreshes before the next request.
        print(f"waiting {args.ttl + 1} s for the access token to expire")
        await asyncio.sleep(args.ttl + 1)
        who = json.loads(text(await c.call_tool("whoami", {})))
        refreshes = [t for t in trace if "grant_type=refresh_token" in t[4]]
        check(refreshes and all(t[2] == 200 for t in refreshes), f"refreshes: {[t[2] for t in refreshes]}")
        check(len(browser.authorizations) == (1 if sse else 2), "refresh fell back to a new authorization")
        check(storage.tokens.access_token != first.access_token, "same access token after refresh")
        check(storage.tokens.refresh_token != first.refresh_token, "refresh token not rotated")
        check(who.get("claims", {}).get("preferred_username") == email, f"whoami after refresh {who}")

        got = await c.call_tool("notes_get", {"id": note_id})
        check(text(got) == "written by the python sdk", f"notes_get: {text(got)}")
        who = json.loads(text(await c.call_tool("whoami", {})))
        check("mcp:tools:write" in who["scopes"], f"whoami after write: {who}")
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
    p.add_argument("--user", default="bob")
    p.add_argument("--ttl", type=int, required=True)
    p.add_argument("--transport", default="http", choices=["http", "sse"])
    p.add_argument("--scope")
    args = p.parse_args()
    try:
        asyncio.run(asyncio.wait_for(flow(args), timeout=90))
    except Exception as exc:
        why = " | ".join(f"{type(e).__name__}: {e}" for e in _leaves(exc))
        print(f"py_proxy_flow: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
