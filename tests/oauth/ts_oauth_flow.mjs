// The whole OAuth flow with the official TypeScript SDK client (@modelcontextprotocol/sdk 1.32.2)
// against mcpgate (external mode) + oidc-provider, without a human:
//   401 → protected-resource metadata → AS metadata → DCR → authorize (this file drives
//   oidc-provider's devInteractions login and consent over HTTP) → token → tools/list, whoami →
//   notes_put with only mcp:tools:read → 403 insufficient_scope → the SDK re-authorizes with the
//   challenged scope → notes_put succeeds in the same session.
//
//   node ts_oauth_flow.mjs --url http://127.0.0.1:P/mcp --issuer http://127.0.0.1:I [--user alice]
//        [--transport http|sse]
// Exit 0 when every assertion holds; 1 with a reason on stderr otherwise. Prints the HTTP trace.
import { parseArgs } from "node:util";
import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";

const require = createRequire(new URL("../../tools/peers/package.json", import.meta.url));
const sdk = (p) => import(require.resolve(`@modelcontextprotocol/sdk/${p}`));
const { Client } = await sdk("client/index.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");
const { SSEClientTransport } = await sdk("client/sse.js");
const { UnauthorizedError } = await sdk("client/auth.js");

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    issuer: { type: "string" },
    user: { type: "string", default: "alice" },
    transport: { type: "string", default: "http" },
  },
});

function fail(msg) {
  console.error(`ts_oauth_flow: ${msg}`);
  process.exit(1);
}
function assert(cond, msg) {
  if (!cond) fail(msg);
}
const REDIRECT = "http://127.0.0.1:9/callback"; // never contacted: the code is read from Location

// Every request the SDK makes (to mcpgate and to the IdP), for the trace and the assertions.
const trace = [];
async function tracingFetch(input, init) {
  const url = typeof input === "string" ? input : input.url ?? String(input);
  const method = init?.method ?? input?.method ?? "GET";
  const res = await fetch(input, init);
  trace.push({ method, url: String(url), status: res.status, www: res.headers.get("www-authenticate") });
  console.log(`${method} ${url} -> ${res.status}${res.headers.get("www-authenticate") ? `  [${res.headers.get("www-authenticate")}]` : ""}`);
  return res;
}

// Drive oidc-provider's devInteractions pages: follow redirects by hand with a cookie jar, log in,
// consent, and return the code from the final redirect to REDIRECT.
const jar = new Map();
async function hop(url, init = {}) {
  const headers = new Headers(init.headers);
  if (jar.size) headers.set("cookie", [...jar].map(([k, v]) => `${k}=${v}`).join("; "));
  const res = await fetch(url, { ...init, headers, redirect: "manual" });
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(";");
    const i = pair.indexOf("=");
    jar.set(pair.slice(0, i), pair.slice(i + 1));
  }
  return res;
}
async function login(authorizationUrl, user) {
  let url = new URL(authorizationUrl);
  for (let step = 0; step < 12; step++) {
    if (url.href.startsWith(REDIRECT)) return url;
    let res = await hop(url);
    if (url.pathname.startsWith("/interaction/") && res.status === 200) {
      const html = await res.text();
      const prompt = /name="prompt" value="(\w+)"/.exec(html)?.[1];
      assert(prompt === "login" || prompt === "consent", `unexpected interaction page: ${html.slice(0, 300)}`);
      const form = new URLSearchParams({ prompt });
      if (prompt === "login") form.set("login", user), form.set("password", "any");
      console.log(`  (devInteractions: ${prompt})`);
      res = await hop(url, { method: "POST", body: form, headers: { "content-type": "application/x-www-form-urlencoded" } });
    }
    const next = res.headers.get("location");
    assert(next, `authorization stopped at ${url} with HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
    url = new URL(next, url);
  }
  fail("too many redirects during authorization");
}

class HeadlessProvider {
  authorizations = []; // { url, code }
  _tokens;
  _client;
  _verifier;
  get redirectUrl() {
    return REDIRECT;
  }
  get clientMetadata() {
    return {
      client_name: "mcpgate-oauth-test-ts",
      redirect_uris: [REDIRECT],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  state() {
    return (this._state = randomUUID());
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(t) {
    this._tokens = t;
  }
  saveCodeVerifier(v) {
    this._verifier = v;
  }
  codeVerifier() {
    return this._verifier;
  }
  async redirectToAuthorization(url) {
    console.log(`authorize: ${url}`);
    const back = await login(url, opt.user);
    assert(back.searchParams.get("state") === this._state, `state mismatch in ${back}`);
    const code = back.searchParams.get("code");
    assert(code, `no code in ${back}`);
    this.authorizations.push({ url: new URL(url), code });
  }
  get lastCode() {
    return this.authorizations.at(-1)?.code;
  }
}

const provider = new HeadlessProvider();
const url = new URL(opt.url);
const makeTransport = () =>
  opt.transport === "sse"
    ? new SSEClientTransport(url, { authProvider: provider, fetch: tracingFetch })
    : new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: tracingFetch });
const text = (r) => (r.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("\n");

// 1. First connection: 401 → discovery → DCR → authorization, then the SDK asks us to finish.
let transport = makeTransport();
let client = new Client({ name: "mcpgate-oauth-test-ts", version: "1.0.0" });
try {
  await client.connect(transport);
  fail("connected without authorization");
} catch (e) {
  assert(e instanceof UnauthorizedError, `first connect failed with ${e}`);
}
const first401 = trace.find((t) => t.status === 401);
assert(first401, "mcpgate never answered 401");
assert(/^Bearer /.test(first401.www ?? "") && first401.www.includes('resource_metadata="'), `401 challenge: ${first401.www}`);
assert(trace.some((t) => t.url.includes("/.well-known/oauth-protected-resource") && t.status === 200), "no PRM fetch");
assert(trace.some((t) => t.url.startsWith(opt.issuer) && t.url.includes("/.well-known/") && t.status === 200), "no AS metadata fetch");
assert(trace.some((t) => t.method === "POST" && t.url === `${opt.issuer}/reg` && t.status === 201), "no dynamic registration");
assert(provider.authorizations.length === 1, "no authorization");
const a1 = provider.authorizations[0].url;
const expectedResource = opt.url;
assert(a1.searchParams.get("resource") === expectedResource, `authorize resource=${a1.searchParams.get("resource")}, want ${expectedResource}`);
assert(a1.searchParams.get("code_challenge_method") === "S256", "no PKCE S256");
console.log(`first authorization scope: ${a1.searchParams.get("scope")}`);
await transport.finishAuth(provider.lastCode);
assert(trace.some((t) => t.method === "POST" && t.url === `${opt.issuer}/token` && t.status === 200), "no token exchange");
const at = provider.tokens().access_token;
assert(at.split(".").length === 3, "access token is not a JWT");
const atHeader = JSON.parse(Buffer.from(at.split(".")[0], "base64url"));
const atClaims = JSON.parse(Buffer.from(at.split(".")[1], "base64url"));
console.log(`access token header ${JSON.stringify(atHeader)} aud ${JSON.stringify(atClaims.aud)} scope "${atClaims.scope}"`);
assert(atHeader.typ === "at+jwt", `typ ${atHeader.typ}`);
assert(atClaims.aud === expectedResource, `aud ${atClaims.aud}`);

// 2. Connected with the token: tools and whoami.
transport = makeTransport();
client = new Client({ name: "mcpgate-oauth-test-ts", version: "1.0.0" });
await client.connect(transport);
const names = (await client.listTools()).tools.map((t) => t.name);
console.log(`tools/list: ${names.join(" ")}`);
assert(names.includes("whoami"), `tools/list lacks whoami: ${names}`);
let who = JSON.parse(text(await client.callTool({ name: "whoami", arguments: {} })));
console.log(`whoami: ${JSON.stringify(who)}`);
assert(who.principal === opt.user, `whoami principal ${who.principal}, want ${opt.user}`);
assert(who.issuer === opt.issuer, `whoami issuer ${who.issuer}`);
assert(who.scopes.includes("mcp:tools:read") && !who.scopes.includes("mcp:tools:write"), `first token scopes ${who.scopes}`);
const readOnlyList = !names.includes("notes_put");
if (opt.transport === "sse") {
  // The legacy SSE client has no step-up (trap T14): a write with a read-only token must fail with
  // 403 insufficient_scope and nothing else.
  const before = trace.length;
  let refused = false;
  try {
    await client.callTool({ name: "notes_put", arguments: { id: "sse-note", content: "x" } });
  } catch (e) {
    refused = true;
    console.log(`notes_put refused: ${e.message}`);
  }
  const forbidden = trace.slice(before).find((t) => t.status === 403);
  assert(refused && forbidden, "a write with mcp:tools:read was not refused with 403 on /messages");
  console.log(`403 challenge: ${forbidden.www}`);
  assert(forbidden.www?.includes('error="insufficient_scope"') && forbidden.www.includes("oauth-protected-resource/sse"),
    `403 on /messages: ${forbidden.www}`);
  await client.close();
  assert(readOnlyList, "tools/list showed notes_put to a token holding only mcp:tools:read");
  console.log("OK (legacy SSE: no step-up in the SDK, 403 as expected)");
  process.exit(0);
}

// 3. A write with a read-only token: 403 insufficient_scope, the SDK re-authorizes (step-up).
const note = { id: `ts-${randomUUID().slice(0, 8)}`, content: "written after step-up" };
let stepped = false;
try {
  await client.callTool({ name: "notes_put", arguments: note });
} catch (e) {
  assert(e instanceof UnauthorizedError, `notes_put with a read-only token failed with ${e}`);
  stepped = true;
}
const forbidden = trace.find((t) => t.status === 403);
assert(stepped && forbidden, "no 403 step-up happened");
console.log(`403 challenge: ${forbidden.www}`);
assert(forbidden.www.includes('error="insufficient_scope"'), "403 without insufficient_scope");
assert(provider.authorizations.length === 2, "the SDK did not re-authorize after 403");
const scope2 = provider.authorizations[1].url.searchParams.get("scope").split(" ");
console.log(`step-up authorization scope: ${scope2.join(" ")}`);
assert(scope2.includes("mcp:tools:write") && scope2.includes("mcp:tools:read"), `step-up scope ${scope2}`);
await transport.finishAuth(provider.lastCode);
const put = await client.callTool({ name: "notes_put", arguments: note });
assert(!put.isError, `notes_put after step-up: ${text(put)}`);
const got = await client.callTool({ name: "notes_get", arguments: { id: note.id } });
assert(text(got) === note.content, `notes_get: ${text(got)}`);
who = JSON.parse(text(await client.callTool({ name: "whoami", arguments: {} })));
assert(who.principal === opt.user && who.scopes.includes("mcp:tools:write"), `whoami after step-up: ${JSON.stringify(who)}`);
if (transport.sessionId) await transport.terminateSession();
await client.close();
console.log(`OK (tools/list ${readOnlyList ? "was" : "was NOT"} filtered for the read-only token)`);
if (!readOnlyList) fail("tools/list showed notes_put to a token holding only mcp:tools:read");
