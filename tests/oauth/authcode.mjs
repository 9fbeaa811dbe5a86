// Headless authorization-code + PKCE login at oidc-provider (devInteractions), as a static
// confidential client; prints the access token. For tests that need a user's token without an
// MCP client (e.g. opaque tokens with a `sub`, for introspection).
//
//   node authcode.mjs --issuer ISS --client web-opaque --resource RES [--scope S] [--user alice]
// The client secret is `<client>-secret`, the redirect URI http://127.0.0.1:9/callback.
import { parseArgs } from "node:util";
import { createHash, randomBytes } from "node:crypto";

const { values: o } = parseArgs({
  options: {
    issuer: { type: "string" },
    client: { type: "string", default: "web" },
    resource: { type: "string" },
    scope: { type: "string", default: "mcp:tools:read" },
    user: { type: "string", default: "alice" },
  },
});
const REDIRECT = "http://127.0.0.1:9/callback";
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
const verifier = randomBytes(32).toString("base64url");
const state = randomBytes(8).toString("hex");
let url = new URL(`${o.issuer}/auth`);
url.search = new URLSearchParams({
  response_type: "code", client_id: o.client, redirect_uri: REDIRECT, scope: o.scope, state, resource: o.resource,
  code_challenge: createHash("sha256").update(verifier).digest("base64url"), code_challenge_method: "S256",
}).toString();
for (let step = 0; step < 12 && !url.href.startsWith(REDIRECT); step++) {
  let res = await hop(url);
  if (url.pathname.startsWith("/interaction/") && res.status === 200) {
    const prompt = /name="prompt" value="(\w+)"/.exec(await res.text())?.[1];
    const form = new URLSearchParams({ prompt });
    if (prompt === "login") form.set("login", o.user), form.set("password", "any");
    res = await hop(url, { method: "POST", body: form, headers: { "content-type": "application/x-www-form-urlencoded" } });
  }
  const next = res.headers.get("location");
  if (!next) throw new Error(`authorization stopped at ${url}: HTTP ${res.status} ${await res.text()}`);
  url = new URL(next, url);
}
if (url.searchParams.get("state") !== state || !url.searchParams.get("code")) throw new Error(`bad redirect ${url}`);
const res = await fetch(`${o.issuer}/token`, {
  method: "POST",
  headers: { authorization: `Basic ${Buffer.from(`${o.client}:${o.client}-secret`).toString("base64")}` },
  body: new URLSearchParams({
    grant_type: "authorization_code", code: url.searchParams.get("code"), code_verifier: verifier,
    redirect_uri: REDIRECT, resource: o.resource,
  }),
});
const body = await res.json();
if (!body.access_token) throw new Error(`token endpoint: ${JSON.stringify(body)}`);
process.stdout.write(body.access_token);
