// Proxy mode with `pass_token_to_gateway`: mcpgate fronts an HTTP MCP upstream (echo_upstream
// --http, whose `auth_header` tool answers the Authorization header it received). Each user signs
// in at the upstream IdP through mcpgate (scripted browser), gets mcpgate's tokens, calls
// `auth_header` through mcpgate, and this asserts what the upstream saw:
//   - `Bearer <token>` where <token> is not the client's mcpgate access token;
//   - <token> is an access token the IdP issued to mcpgate's client there (`mcpgate-proxy`) for
//     that user (`sub`): a JWT access token (what this IdP issues for the resource) is verified
//     with the IdP's JWKS (signature, `iss`, `exp`, `sub`, `client_id`); an opaque one is asked
//     at the IdP's introspection endpoint;
//   - two users' upstream tokens differ, and each user's tools/list is their own.
//
//   node gateway_token.mjs --url URL/mcp --idp IDP --users alice,bob
import { parseArgs } from "node:util";
import { createHash, createPublicKey, randomBytes, verify } from "node:crypto";
import { Agent } from "./agent.mjs";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    idp: { type: "string" },
    users: { type: "string", default: "alice,bob" },
  },
});
const REDIRECT = "http://127.0.0.1:9/callback"; // never contacted: the code is read from Location
const MCP = new URL(opt.url).origin;
const RES = `${MCP}/mcp`;
const VERSION = "2026-07-28";

function fail(msg) {
  console.error(`gateway-token: ${msg}`);
  process.exit(1);
}
function assert(cond, msg) {
  if (!cond) fail(msg);
}
const b64url = (buf) => Buffer.from(buf).toString("base64url");

async function signIn(user) {
  const reg = await fetch(`${MCP}/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      client_name: `gateway-token ${user}`,
      redirect_uris: [REDIRECT],
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code", "refresh_token"],
    }),
  });
  assert(reg.status === 201, `registration answered ${reg.status}`);
  const clientId = (await reg.json()).client_id;
  const verifier = b64url(randomBytes(32));
  const url = new URL(`${MCP}/authorize`);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: clientId,
    redirect_uri: REDIRECT,
    code_challenge: b64url(createHash("sha256").update(verifier).digest()),
    code_challenge_method: "S256",
    state: "s1",
    resource: RES,
    scope: "mcp:tools:read mcp:tools:write",
  });
  const { back, pages, status } = await new Agent().signIn(url, { user, redirect: REDIRECT });
  assert(back, `sign-in of ${user} did not come back (status ${status}, pages ${pages})`);
  const code = back.searchParams.get("code");
  assert(code, `no code for ${user}: ${back}`);
  const res = await fetch(`${MCP}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code,
      code_verifier: verifier,
      redirect_uri: REDIRECT,
      client_id: clientId,
    }),
  });
  const body = await res.json();
  assert(res.status === 200 && body.access_token, `code exchange for ${user}: ${res.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

// One stateless (2026-07-28) request to mcpgate; the JSON-RPC answer from JSON or SSE.
async function rpc(accessToken, method, params, name) {
  const headers = {
    authorization: `Bearer ${accessToken}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": VERSION,
    "mcp-method": method,
  };
  if (name) headers["mcp-name"] = name;
  const res = await fetch(RES, {
    method: "POST",
    headers,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method,
      params: {
        ...params,
        _meta: {
          "io.modelcontextprotocol/protocolVersion": VERSION,
          "io.modelcontextprotocol/clientCapabilities": {},
          "io.modelcontextprotocol/clientInfo": { name: "gateway-token", version: "1" },
        },
      },
    }),
  });
  const text = await res.text();
  assert(res.status === 200, `${method} answered ${res.status}: ${text.slice(0, 300)}`);
  const messages = (res.headers.get("content-type") ?? "").startsWith("text/event-stream")
    ? text
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trim())
        .filter(Boolean)
        .map((d) => JSON.parse(d))
    : [JSON.parse(text)];
  const answer = messages.find((m) => m.id === 1);
  assert(answer && !answer.error, `${method}: ${JSON.stringify(answer ?? messages)}`);
  return answer.result;
}

const discovery = await (await fetch(`${opt.idp}/.well-known/openid-configuration`)).json();
const IDP_CLIENT = `Basic ${Buffer.from("mcpgate-proxy:mcpgate-proxy-secret").toString("base64")}`;

// What the IdP says about `token`: the verified claims of a JWT, or the introspection answer.
async function idpClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) {
    const res = await fetch(discovery.introspection_endpoint, {
      method: "POST",
      headers: { authorization: IDP_CLIENT, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token }),
    });
    const claims = await res.json().catch(() => ({}));
    assert(res.status === 200 && claims.active === true, `not active at the IdP: ${res.status} ${JSON.stringify(claims)}`);
    return claims;
  }
  const header = JSON.parse(Buffer.from(parts[0], "base64url"));
  const { keys } = await (await fetch(discovery.jwks_uri)).json();
  const jwk = keys.find((k) => k.kid === header.kid);
  assert(jwk, `no IdP key ${header.kid}`);
  const algs = { RS256: ["sha256", {}], PS256: ["sha256", { padding: 6, saltLength: 32 }], ES256: ["sha256", { dsaEncoding: "ieee-p1363" }] };
  assert(algs[header.alg], `unexpected alg ${header.alg}`);
  const [hash, options] = algs[header.alg];
  const valid = verify(hash, Buffer.from(`${parts[0]}.${parts[1]}`), { key: createPublicKey({ key: jwk, format: "jwk" }), ...options }, Buffer.from(parts[2], "base64url"));
  assert(valid, "the JWT's signature is not the IdP's");
  const claims = JSON.parse(Buffer.from(parts[1], "base64url"));
  assert(claims.iss === discovery.issuer, `issued by ${claims.iss}`);
  assert(claims.exp > Date.now() / 1000, "expired");
  return claims;
}

const seen = new Map();
for (const user of opt.users.split(",")) {
  const accessToken = await signIn(user);
  const result = await rpc(accessToken, "tools/call", { name: "auth_header", arguments: {} }, "auth_header");
  const header = result.content?.[0]?.text ?? "";
  assert(header.startsWith("Bearer "), `the upstream saw no bearer token for ${user}: ${JSON.stringify(header)}`);
  const upstreamToken = header.slice("Bearer ".length);
  assert(upstreamToken !== accessToken, `the upstream saw ${user}'s mcpgate access token`);
  const claims = await idpClaims(upstreamToken);
  assert(claims.sub === user, `the token the upstream saw is ${claims.sub}'s, not ${user}'s`);
  assert(claims.client_id === "mcpgate-proxy", `the token the upstream saw was issued to ${claims.client_id}`);
  const tools = (await rpc(accessToken, "tools/list", {})).tools.map((t) => t.name);
  const mine = `bearer_${upstreamToken.replace(/[^A-Za-z0-9]/g, "").slice(0, 16)}`;
  assert(tools.includes(mine), `${user}'s tools/list was not listed with their token: ${tools}`);
  seen.set(user, upstreamToken);
  console.log(`${user}: the upstream saw an IdP access token (verified) of sub=${claims.sub}, client mcpgate-proxy, and listed tools for it`);
}
assert(new Set(seen.values()).size === seen.size, "two users reached the upstream with the same token");
console.log("gateway-token: OK");
