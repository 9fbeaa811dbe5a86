#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into corpus/<target>/seed-*.

Run once before the first fuzzing run (run.sh does); the fuzzer's own finds are added beside
them and the whole corpus is minimised with `cargo fuzz cmin`."""
import base64, json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(os.path.dirname(HERE), "corpus")
ISSUER = "https://as.fuzz.example"
MCP = ISSUER + "/mcp"

def b64url(obj):
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

def jwt(header, claims, sig="c2lnbmF0dXJl"):
    return f"{b64url(header)}.{b64url(claims)}.{sig}"

claims = {"iss": ISSUER, "sub": "alice", "aud": MCP, "exp": 4102444800, "iat": 1700000000,
          "nbf": 1700000000, "jti": "j1", "fam": "f1", "client_id": "public-app",
          "scope": "mcp:tools:read"}
seeds = {
    "bearer_jwt": [
        b"\x00Bearer " + jwt({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}, claims).encode(),
        b"\x00bearer  " + jwt({"alg": "RS256", "typ": "JWT"}, claims).encode(),
        b"\x00Bearer " + jwt({"alg": "none"}, claims, "").encode(),
        b"\x00Bearer " + jwt({"alg": "HS256", "typ": "at+jwt"}, claims).encode(),
        b"\x00Bearer opaque-token_value~+/=\n?sessionId=1",
        b"\x00Bearer a\nBearer b",
        b"\x00Basic dTpw\n?access_token=x",
        b"\x01" + json.dumps(claims).encode(),
        b"\x01" + json.dumps(dict(claims, aud=["x", MCP + "/"], scp=["a", "b c"], scope=None)).encode(),
        b"\x01" + json.dumps(dict(claims, iss="https://evil.example")).encode(),
        b"\x01" + json.dumps(dict(claims, exp=1)).encode(),
        b"\x01" + json.dumps(dict(claims, sub="", azp="x", aud="api://fuzz")).encode(),
        b"\x01" + json.dumps({"iss": ISSUER, "aud": MCP, "exp": 4102444800, "cid": "okta"}).encode(),
    ],
    "token_endpoint": [
        b"\x00\ngrant_type=client_credentials&client_id=post-app&client_secret=post-secret&scope=mcp%3Atools%3Aread",
        b"\x00Basic " + base64.b64encode(b"conf-app:conf-secret") + b"\ngrant_type=client_credentials&resource=https%3A%2F%2Fas.fuzz.example%2Fmcp",
        b"\x00Basic " + base64.b64encode(b"conf%2Dapp:conf+secret") + b"\ngrant_type=client_credentials",
        b"\x00\ngrant_type=authorization_code&client_id=public-app&code=abc&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        b"\x00\ngrant_type=refresh_token&client_id=public-app&refresh_token=rt&scope=mcp:tools:read",
        b"\x00\ngrant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=" + jwt({"alg": "ES256"}, {"sub": "public-app", "iss": "public-app", "exp": 4102444800}).encode(),
        b"\x00\ngrant_type=password&client_id=public-app&resource=a&resource=b",
        b"\x02\ntoken=abc&token_type_hint=refresh_token&client_id=public-app",
        b"\x03Basic " + base64.b64encode(b"conf-app:conf-secret") + b"\ntoken=" + jwt({"alg": "ES256", "typ": "at+jwt", "kid": "k"}, claims).encode(),
    ],
    "authorize": [],
    "register": [
        json.dumps({"redirect_uris": ["https://app.example/cb"], "client_name": "App"}).encode(),
        json.dumps({"redirect_uris": ["http://127.0.0.1/callback", "com.example.app:/cb"],
                    "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"], "application_type": "native", "scope": "mcp:tools:read mcp:admin x",
                    "client_uri": "https://app.example", "logo_uri": "https://app.example/l.png",
                    "contacts": ["a@example.com"], "software_id": "s", "software_version": "1"}).encode(),
        json.dumps({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_post",
                    "client_name": "Machine"}).encode(),
        json.dumps({"redirect_uris": ["javascript:alert(1)", "https://app.example/cb#f", "http://evil.example/cb"]}).encode(),
        json.dumps({"redirect_uris": ["https://app.example/cb"], "grant_types": ["implicit"], "response_types": ["token"]}).encode(),
        b"[]", b"{\"redirect_uris\": \"https://x.example/cb\"}",
    ],
    "cimd": [
        b"https://app.example/client.json\nmax-age=600\n" + json.dumps({
            "client_id": "https://app.example/client.json", "client_name": "App",
            "redirect_uris": ["https://app.example/cb", "http://localhost/cb"],
            "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"],
            "response_types": ["code"], "scope": "mcp:tools:read", "client_uri": "https://app.example"}).encode(),
        b"https://app.example/c\nno-store, max-age=5\n" + json.dumps({
            "client_id": "https://app.example/c", "client_name": "K",
            "redirect_uris": ["http://127.0.0.1:3000/cb"], "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": "https://app.example/jwks", "grant_types": ["client_credentials"]}).encode(),
        b"https://app.example/c\npublic, max-age=99999999999999999999\n" + json.dumps({
            "client_id": "https://app.example/c", "client_name": "S", "client_secret": "x",
            "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}).encode(),
        b"http://127.0.0.1:8080/meta/./x\nmax-age=0\n{}",
        b"https://user@app.example/c#f\n\n[]",
        b"https://evil.example/c\nmax-age=\"60\"\nnull",
    ],
    "mcp_post": [
        b"\x81" + json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}}).encode(),
        b"\x01" + json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "admin_reset", "arguments": {}}}).encode(),
        b"\x81" + json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "lookup"}}).encode(),
        b"\x82" + json.dumps({"jsonrpc": "2.0", "id": "r", "method": "resources/read", "params": {"uri": "secret://x"}}).encode(),
        b"\x02" + json.dumps({"jsonrpc": "2.0", "id": 3, "method": "prompts/get", "params": {"name": "p", "arguments": {"a": "b"}}}).encode(),
        b"\x80" + json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode(),
        b"\x80" + json.dumps({"jsonrpc": "2.0", "id": 4, "result": {}}).encode(),
        b"\x01" + json.dumps([{"jsonrpc": "2.0", "id": 5, "method": "ping"}]).encode(),
        b"\x81{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"",
        b"\x80{\"jsonrpc\":\"1.0\",\"id\":null}",
    ],
    "config": [],
}

query = ("response_type=code&client_id=public-app&redirect_uri=http%3A%2F%2F127.0.0.1%3A5000%2Fcallback"
         "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&state=xyz"
         "&scope=mcp%3Atools%3Aread&resource=https%3A%2F%2Fas.fuzz.example%2Fmcp")
seeds["authorize"] = [
    b"\x00" + query.encode(),
    b"\x01" + query.encode() + b"&prompt=none",
    b"\x00" + query.replace("public-app", "conf-app").replace("http%3A%2F%2F127.0.0.1%3A5000%2Fcallback", "https%3A%2F%2Fconf.example%2Fcb").encode() + b"&prompt=login+consent",
    b"\x00response_type=token&client_id=post-app&state=s",
    b"\x00response_type=code&client_id=public-app&redirect_uri=https://app.example/cb&code_challenge=short&code_challenge_method=plain&scope=nope",
    b"\x01client_id=public-app&client_id=public-app",
    b"\x00response_type=code&client_id=public-app&redirect_uri=https://app.example/cb&resource=https://other.example/mcp&resource=x&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
]

seeds["config"] = [
    b'transport = "streamable-http"\nhost = "127.0.0.1"\nport = 8080\nauth_token = "abcdefghijklmnopqrstuvwxyz012345"\nlog_level = "info"\nlog_format = "json"\nrate_limit_rpm = 120\nallowed_hosts = ["localhost"]\ncors_allowed_origins = ["https://app.example"]\n',
    b'[[tokens]]\nname = "ci"\ntoken = "ci-secret-token-77ab01-abcdef"\nscopes = ["mcp:tools:read"]\n\n[[tokens]]\nname = "env"\ntoken_env = "MCP_FUZZ_UNSET"\n',
    b'[policy.hierarchy]\n"notes:admin" = ["mcp:tools:write", "mcp:resources:read"]\n"ops:superuser" = ["*"]\n\n[[policy.tools]]\nmatch = "notes_delete"\nscopes = ["notes:admin"]\n\n[[policy.resources]]\nmatch = "notes://*"\nscopes = ["mcp:resources:read"]\n',
    b'transport = "sse"\n[oauth]\nenabled = true\nmode = "external"\nissuer = "https://idp.example"\npublic_url = "https://mcp.example"\njwks_uri = "https://idp.example/jwks"\n',
    b'[oauth]\nenabled = true\nmode = "builtin"\npublic_url = "http://127.0.0.1:8080"\n',
    b'upstream_command = "node server.js"\nupstream_url = "https://x.example/mcp"\nunknown = 1\n',
    b'port = 99999\nhost = "::1"\n[oauth\n',
]

for target, items in seeds.items():
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for i, data in enumerate(items):
        with open(os.path.join(d, f"seed-{i:02}"), "wb") as f:
            f.write(data)
print("seeds written to", CORPUS)
