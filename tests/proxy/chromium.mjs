// Proxy mode in real headless Chromium (Debian's /usr/bin/chromium, pinned playwright-core of
// tools/peers/browser): mcpgate's consent page, the upstream IdP's (oidc-provider) login and
// consent pages, the callback, the client's loopback redirect — with the browser enforcing
// everything a test agent cannot (CSP form-action on the redirect upstream, cookie rules for
// `__Host-` cookies, SameSite on the IdP's redirect back). Then the refusal page of a user the
// access rules turn away. Screenshots: $ART/proxy-*.png.
//
//   BASE=http://127.0.0.1:P IDP=http://127.0.0.1:Q CB_PORT=R ART=dir node chromium.mjs
// Prints PASS/FAIL per check and `chromium: N passed, M failed`; exits 1 on any failure.
import http from "node:http";
import path from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(path.join(ROOT, "tools/peers/browser/package.json"));
const { chromium } = require("playwright-core");

const env = (name) => process.env[name] ?? (() => { throw new Error(`${name} is required`); })();
const BASE = env("BASE");
const IDP = env("IDP");
const CB_PORT = Number(env("CB_PORT"));
const ART = env("ART");
const CALLBACK = `http://127.0.0.1:${CB_PORT}/callback`;
const CLIENT_NAME = "Acme Research Assistant";
const TIMEOUT = 15_000;

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

const callbacks = [];
const callbackServer = http.createServer((req, res) => {
  const url = new URL(req.url, `http://127.0.0.1:${CB_PORT}`);
  if (url.pathname === "/callback") callbacks.push(url);
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(`<!doctype html><title>Callback</title><h1>Callback received</h1>`);
});
await new Promise((resolve) => callbackServer.listen(CB_PORT, "127.0.0.1", resolve));

async function register() {
  const res = await fetch(`${BASE}/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ client_name: CLIENT_NAME, redirect_uris: [CALLBACK], token_endpoint_auth_method: "none" }),
  });
  assert(res.status === 201, `registration: HTTP ${res.status}`);
  return (await res.json()).client_id;
}

function authorizeRequest(clientId) {
  const verifier = randomBytes(32).toString("base64url");
  const challenge = createHash("sha256").update(verifier).digest("base64url");
  const state = randomBytes(12).toString("base64url");
  const url = new URL("/authorize", BASE);
  url.search = new URLSearchParams({
    response_type: "code", client_id: clientId, redirect_uri: CALLBACK, code_challenge: challenge,
    code_challenge_method: "S256", state, scope: "mcp:tools:read",
  });
  return { url: url.href, state, verifier };
}

async function waitCallback(since) {
  const deadline = Date.now() + TIMEOUT;
  while (callbacks.length <= since) {
    if (Date.now() > deadline) throw new Error("the client's callback was not reached");
    await new Promise((r) => setTimeout(r, 20));
  }
  return callbacks[since];
}

async function navigation(page, action) {
  const [response] = await Promise.all([
    page.waitForEvent("response", { predicate: (r) => r.request().isNavigationRequest() && r.frame() === page.mainFrame(), timeout: TIMEOUT }),
    action(),
  ]);
  await page.waitForLoadState("load");
  return response;
}

/// Upstream login and consent at oidc-provider's devInteractions pages.
async function signInUpstream(page, user) {
  assert(page.url().startsWith(`${IDP}/interaction/`), `not at the IdP's login page: ${page.url()}`);
  await page.fill('input[name="login"]', user);
  await page.fill('input[name="password"]', "any");
  await navigation(page, () => page.click('button[type="submit"]'));
  if (page.url().startsWith(`${IDP}/interaction/`)) {
    await navigation(page, () => page.click('button[type="submit"]')); // the IdP's own consent
  }
}

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check("sign-in", async (page) => {
  const clientId = await register();
  const request = authorizeRequest(clientId);
  const before = callbacks.length;
  const consent = await page.goto(request.url);
  assert(consent.status() === 200, `consent page: HTTP ${consent.status()}`);
  const csp = (await consent.allHeaders())["content-security-policy"] ?? "";
  assert(csp.includes(new URL(IDP).origin) || csp.includes("http:"), `form-action does not allow the IdP: ${csp}`);
  const text = await page.textContent("body");
  assert(text.includes(CLIENT_NAME), "the consent page does not name the client");
  assert(/Approving takes you to/.test(text), "the consent page does not say where approving leads");
  await page.screenshot({ path: path.join(ART, "proxy-consent.png"), fullPage: true });
  // Approve: mcpgate's 303 to the IdP must survive the browser's form-action CSP.
  await navigation(page, () => page.click('button[value="approve"]'));
  await signInUpstream(page, "alice");
  const back = await waitCallback(before);
  assert(back.searchParams.get("state") === request.state, `state ${back.searchParams.get("state")}`);
  assert(back.searchParams.get("iss") === BASE, `iss ${back.searchParams.get("iss")}`);
  const code = back.searchParams.get("code");
  assert(code, `no code: ${back}`);
  const res = await fetch(`${BASE}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "authorization_code", code, code_verifier: request.verifier, redirect_uri: CALLBACK, client_id: clientId }),
  });
  const tokens = await res.json();
  assert(res.status === 200 && tokens.access_token, `token: ${res.status} ${JSON.stringify(tokens)}`);
  // Signed in at mcpgate now: a second authorization of the same client goes straight back.
  const again = authorizeRequest(clientId);
  const n = callbacks.length;
  await page.goto(again.url);
  const second = await waitCallback(n);
  assert(second.searchParams.get("code"), "a second authorization of an approved client needed the user");
});

check("refused", async (page, context) => {
  await context.clearCookies();
  const clientId = await register();
  await page.goto(authorizeRequest(clientId).url);
  await navigation(page, () => page.click('button[value="approve"]'));
  // The callback's own response, at the end of the IdP's redirect chain.
  let refusal;
  const onResponse = (r) => {
    if (r.frame() === page.mainFrame() && new URL(r.url()).pathname === "/oauth/callback") refusal = r;
  };
  page.on("response", onResponse);
  await page.fill('input[name="login"]', "eve@evil.test");
  await page.fill('input[name="password"]', "any");
  await navigation(page, () => page.click('button[type="submit"]'));
  if (page.url().startsWith(`${IDP}/interaction/`)) await navigation(page, () => page.click('button[type="submit"]'));
  page.off("response", onResponse);
  assert(refusal?.status() === 403, `refusal page: HTTP ${refusal?.status()} at ${page.url()}`);
  assert(new URL(page.url()).pathname === "/oauth/callback", `refused at ${page.url()}`);
  const text = await page.textContent("body");
  assert(text.includes("You cannot use this server") && text.includes("evil.test"), `refusal text: ${text.slice(0, 300)}`);
  await page.screenshot({ path: path.join(ART, "proxy-refused.png"), fullPage: true });
});

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  timeout: 60_000,
});
const context = await browser.newContext({ viewport: { width: 1024, height: 800 }, deviceScaleFactor: 1 });
context.setDefaultTimeout(TIMEOUT);
const page = await context.newPage();
let passed = 0;
let failed = 0;
for (const { name, fn } of checks) {
  try {
    await fn(page, context);
    passed++;
    console.log(`PASS ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.message.split("\n")[0]}`);
    await page.screenshot({ path: path.join(ART, `proxy-failed-${name}.png`), fullPage: true }).catch(() => {});
  }
}
await browser.close();
callbackServer.close();
console.log(`chromium: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
