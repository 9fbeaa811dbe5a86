// Proxy-mode scenarios that need a scripted browser: each subcommand plays the user (and the
// attacker) over HTTP against mcpgate in proxy mode and npm oidc-provider upstream, asserts what
// must happen, prints the trace, exits 0 when it held and 1 with the reason otherwise.
//
//   node attack.mjs refused          --url URL --user eve@evil.test [--expect TEXT]  not allowed: a 403 page
//   node attack.mjs confused-deputy  --url URL --user alice --idp IDP  another client never rides a consent
//   node attack.mjs forged-state     --url URL                         callback with a state never issued
//   node attack.mjs replayed-state   --url URL --user alice            callback URL used twice
//   node attack.mjs other-browser    --url URL --user alice            callback in another browser
//   node attack.mjs mixed-up-issuer  --url URL --user alice            callback naming another IdP (RFC 9207)
//   node attack.mjs tampered         --url URL --user alice --idp IDP --mode nonce|aud|iss|signature|expired
//   node attack.mjs cross            --url URL --other URL_B --user alice
//        sign-in started on instance A completes on B; code exchanged on B; tools on A; refresh on A
//        and B; the same refresh token raced on both is redeemed once (plus the grace sibling).
import { parseArgs } from "node:util";
import { createHash, randomBytes } from "node:crypto";
import { Agent } from "./agent.mjs";

const { positionals, values: opt } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: "string" },
    other: { type: "string" },
    user: { type: "string", default: "alice" },
    idp: { type: "string" },
    mode: { type: "string" },
    expect: { type: "string" },
  },
});
const scenario = positionals[0];
const REDIRECT = "http://127.0.0.1:9/callback"; // never contacted: the code is read from Location
const MCP = new URL(opt.url).origin;
const RES = `${MCP}/mcp`;

function fail(msg) {
  console.error(`attack ${scenario}: ${msg}`);
  process.exit(1);
}
function assert(cond, msg) {
  if (!cond) fail(msg);
}
const b64url = (buf) => Buffer.from(buf).toString("base64url");

async function register(name, origin = MCP) {
  const res = await fetch(`${origin}/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      client_name: name,
      redirect_uris: [REDIRECT],
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code", "refresh_token"],
    }),
  });
  assert(res.status === 201, `registration answered ${res.status}`);
  return (await res.json()).client_id;
}

function authorization(clientId, origin = MCP) {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash("sha256").update(verifier).digest());
  const url = new URL(`${origin}/authorize`);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: clientId,
    redirect_uri: REDIRECT,
    code_challenge: challenge,
    code_challenge_method: "S256",
    state: "client-state-1",
    resource: RES,
    scope: "mcp:tools:read",
  });
  return { url, verifier };
}

async function token(form, origin = MCP) {
  const res = await fetch(`${origin}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form),
  });
  return { status: res.status, body: await res.json() };
}

async function exchange(clientId, code, verifier, origin = MCP) {
  const r = await token({ grant_type: "authorization_code", code, code_verifier: verifier, redirect_uri: REDIRECT, client_id: clientId }, origin);
  assert(r.status === 200, `code exchange at ${origin}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function whoami(accessToken, origin = MCP) {
  const res = await fetch(`${origin}/mcp`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${accessToken}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2026-07-28",
      "mcp-method": "tools/call",
      "mcp-name": "whoami",
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "tools/call",
      params: {
        name: "whoami",
        arguments: {},
        _meta: {
          "io.modelcontextprotocol/protocolVersion": "2026-07-28",
          "io.modelcontextprotocol/clientCapabilities": {},
          "io.modelcontextprotocol/clientInfo": { name: "attack", version: "1" },
        },
      },
    }),
  });
  const text = await res.text();
  return { status: res.status, text };
}

const page = (r) => `HTTP ${r.status} at ${r.url}: ${r.html?.replace(/\s+/g, " ").slice(0, 300)}`;
const codeOf = (r) => r.back?.searchParams.get("code");

async function signedInVictim() {
  const agent = new Agent();
  const clientA = await register("Victim's editor");
  const { url, verifier } = authorization(clientA);
  const r = await agent.signIn(url, { user: opt.user, redirect: REDIRECT });
  assert(codeOf(r), `the victim's own sign-in failed: ${page(r)}`);
  await exchange(clientA, codeOf(r), verifier);
  console.log(`victim signed in through client A (pages ${r.pages.join(", ")})`);
  return agent;
}

const scenarios = {
  async refused() {
    const agent = new Agent();
    const client = await register("refused-test");
    const r = await agent.signIn(authorization(client).url, { user: opt.user, redirect: REDIRECT });
    console.log(`pages ${r.pages.join(", ")}; ended ${r.back ? r.back : page(r)}`);
    assert(!r.back, `a disallowed user got back to the client: ${r.back}`);
    assert(r.status === 403, `want a 403 page, got ${page(r)}`);
    assert(r.url.pathname === "/oauth/callback", `refused elsewhere: ${r.url}`);
    const why = opt.expect ?? `accounts of the domain ${opt.user.split("@")[1]} may not use this server`;
    assert(r.html.includes("You cannot use this server") && r.html.includes(why), `the page does not say "${why}": ${page(r)}`);
    assert(!agent.cookie(MCP, "__Host-mcpgate-session"), "a refused user got a session at mcpgate");
  },

  async "confused-deputy"() {
    // The victim is signed in at mcpgate (session cookie) and at the IdP, and approved client A.
    const victim = await signedInVictim();
    // The attacker registers client B and gets the victim to open its authorization URL.
    const clientB = await register("Totally Legit Assistant");
    const { url } = authorization(clientB);
    let res = await victim.hop(url);
    let html = await res.text();
    assert(res.status === 200 && !res.headers.get("location"), `client B got through on the victim's session: HTTP ${res.status} ${res.headers.get("location")}`);
    assert(html.includes("Totally Legit Assistant") && html.includes('action="/authorize/consent"'), `no consent page naming client B: ${html.slice(0, 300)}`);
    console.log("signed in at mcpgate: client B gets its own consent page");
    // A browser signed in at the IdP only (and having consented there to mcpgate's upstream
    // client): nothing is forwarded upstream before the user approves client B at mcpgate.
    const idpOnly = new Agent();
    for (const [origin, jar] of victim.jars) if (origin !== MCP) idpOnly.jars.set(origin, new Map(jar));
    res = await idpOnly.hop(authorization(clientB).url);
    html = await res.text();
    assert(res.status === 200 && !res.headers.get("location"), `forwarded upstream before consent: HTTP ${res.status} ${res.headers.get("location")}`);
    assert(html.includes("Totally Legit Assistant") && html.includes('action="/authorize/upstream"'), `no consent page before upstream: ${html.slice(0, 300)}`);
    console.log("signed in at the IdP only: client B's consent page comes before any upstream redirect");
    // Denying it sends access_denied to B and never goes upstream.
    const denied = await idpOnly.signIn(authorization(clientB).url, { user: opt.user, redirect: REDIRECT, decision: "deny" });
    assert(denied.back?.searchParams.get("error") === "access_denied" && !codeOf(denied), `deny: ${denied.back ?? page(denied)}`);
    const upstream = new URL(opt.idp).origin;
    assert(!idpOnly.trace.some((t) => t.includes(upstream)), `went upstream: ${idpOnly.trace.join(" | ")}`);
    console.log("denied: access_denied to client B, no upstream request");
  },

  async "forged-state"() {
    const agent = new Agent();
    const res = await agent.hop(`${MCP}/oauth/callback?code=attacker-code&state=${b64url(randomBytes(32))}`);
    const html = await res.text();
    assert(res.status === 400 && !res.headers.get("location"), `forged state: HTTP ${res.status} ${res.headers.get("location")}`);
    assert(html.includes("not started here"), `page: ${html.slice(0, 300)}`);
    const empty = await agent.hop(`${MCP}/oauth/callback?code=x`);
    assert(empty.status === 400, `no state: HTTP ${empty.status}`);
    const twice = await agent.hop(`${MCP}/oauth/callback?code=x&state=a&state=b`);
    assert(twice.status === 400, `repeated state: HTTP ${twice.status}`);
  },

  async "replayed-state"() {
    const agent = new Agent();
    const client = await register("replay-test");
    const { url, verifier } = authorization(client);
    const r = await agent.signIn(url, { user: opt.user, redirect: REDIRECT, stopAtCallback: true });
    assert(r.callback, `no callback reached: ${page(r)}`);
    const cookie = agent.cookie(MCP, "__Host-mcpgate-upstream");
    assert(cookie, "no browser-binding cookie was set");
    let res = await agent.hop(r.callback);
    const back = new URL(res.headers.get("location") ?? "http://none/");
    assert(res.status === 303 && back.href.startsWith(REDIRECT) && back.searchParams.get("code"), `first callback: HTTP ${res.status} ${back}`);
    await exchange(client, back.searchParams.get("code"), verifier);
    // The same callback again, with the same cookie: the state was single-use.
    agent.jars.get(MCP).set("__Host-mcpgate-upstream", cookie);
    res = await agent.hop(r.callback);
    const html = await res.text();
    assert(res.status === 400 && !res.headers.get("location"), `replayed callback: HTTP ${res.status} ${res.headers.get("location")}`);
    assert(html.includes("already completed"), `page: ${html.slice(0, 300)}`);
  },

  async "other-browser"() {
    const victim = new Agent();
    const client = await register("login-csrf-test");
    const r = await victim.signIn(authorization(client).url, { user: opt.user, redirect: REDIRECT, stopAtCallback: true });
    assert(r.callback, `no callback reached: ${page(r)}`);
    // Someone else's browser (login CSRF: the attacker's completed upstream sign-in pushed
    // into a victim's browser) gets nothing.
    const other = new Agent();
    const res = await other.hop(r.callback);
    const html = await res.text();
    assert(res.status === 400 && !res.headers.get("location"), `callback in another browser: HTTP ${res.status} ${res.headers.get("location")}`);
    assert(html.includes("another browser"), `page: ${html.slice(0, 300)}`);
    assert(!other.cookie(MCP, "__Host-mcpgate-session"), "another browser got a session");
  },

  async "mixed-up-issuer"() {
    // RFC 9207: a callback whose `iss` names another IdP is refused before the code is used.
    const agent = new Agent();
    const client = await register("mix-up-test");
    const r = await agent.signIn(authorization(client).url, { user: opt.user, redirect: REDIRECT, stopAtCallback: true });
    assert(r.callback?.searchParams.get("iss"), `no iss on the callback: ${r.callback ?? page(r)}`);
    r.callback.searchParams.set("iss", "https://evil.example");
    const res = await agent.hop(r.callback);
    const html = await res.text();
    assert(res.status === 400 && !res.headers.get("location"), `mixed-up iss: HTTP ${res.status} ${res.headers.get("location")}`);
    assert(html.includes("did not come from the configured identity provider"), `page: ${html.slice(0, 300)}`);
  },

  async tampered() {
    const client = await register(`tamper-${opt.mode}`);
    const set = await fetch(`${opt.idp}/__test/tamper`, { method: "POST", body: `mode=${opt.mode}` });
    assert(set.ok, `tamper hook: HTTP ${set.status}`);
    const agent = new Agent();
    const r = await agent.signIn(authorization(client).url, { user: opt.user, redirect: REDIRECT });
    console.log(`pages ${r.pages.join(", ")}; ended ${r.back ? r.back : page(r)}`);
    assert(!codeOf(r), `an ID token with a bad ${opt.mode} was accepted`);
    assert(r.status === 400 && r.url.pathname === "/oauth/callback", `want a 400 page at the callback: ${page(r)}`);
    assert(r.html.includes("could not be verified"), `page: ${page(r)}`);
    assert(!agent.cookie(MCP, "__Host-mcpgate-session"), "a session was created");
  },

  async cross() {
    const OTHER = new URL(opt.other).origin;
    const agent = new Agent();
    const client = await register("cross-instance");
    const { url, verifier } = authorization(client);
    // Started on A (consent, state stored) ...
    const r = await agent.signIn(url, { user: opt.user, redirect: REDIRECT, stopAtCallback: true });
    assert(r.callback, `no callback reached: ${page(r)}`);
    // ... the load balancer sends the IdP's redirect to B (cookies are per host, not per port).
    agent.jars.set(OTHER, new Map(agent.jars.get(MCP)));
    const onB = new URL(r.callback.pathname + r.callback.search, OTHER);
    const res = await agent.hop(onB);
    const back = new URL(res.headers.get("location") ?? "http://none/");
    assert(res.status === 303 && back.href.startsWith(REDIRECT), `callback on B: HTTP ${res.status} ${back}: ${(await res.text()).slice(0, 300)}`);
    const tokens = await exchange(client, back.searchParams.get("code"), verifier, OTHER);
    console.log("authorization started on A, completed on B, code exchanged on B");
    for (const origin of [MCP, OTHER]) {
      const w = await whoami(tokens.access_token, origin);
      assert(w.status === 200 && w.text.includes(`${opt.user}@example.test`), `whoami on ${origin}: ${w.status} ${w.text.slice(0, 200)}`);
    }
    console.log("the token works on both instances");
    let r1 = await token({ grant_type: "refresh_token", refresh_token: tokens.refresh_token, client_id: client }, MCP);
    assert(r1.status === 200, `refresh on A: ${r1.status} ${JSON.stringify(r1.body)}`);
    let r2 = await token({ grant_type: "refresh_token", refresh_token: r1.body.refresh_token, client_id: client }, OTHER);
    assert(r2.status === 200, `refresh on B: ${r2.status} ${JSON.stringify(r2.body)}`);
    console.log("refreshed on A, then on B");
  },
};

const run = scenarios[scenario];
if (!run) fail(`unknown scenario; one of ${Object.keys(scenarios).join(", ")}`);
await run();
console.log("OK");
