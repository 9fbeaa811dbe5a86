// The built-in authorization server's pages in real headless Chromium (issue 4), driven by
// playwright-core with Debian's /usr/bin/chromium. Started by tests/browser/run.sh, which starts
// mcpgate in built-in mode with a user and a pre-registered loopback client, and passes:
//   BASE (mcpgate's URL), CB_PORT (the client's loopback callback), FRAMER_PORT (a foreign
//   origin that tries to frame the pages), CLIENT_ID, CLIENT_NAME, USERNAME, PASSWORD,
//   ART (screenshots and traces), MCPGATE_LOG, ONLY (space-separated check names, optional).
// Prints one PASS/FAIL line per check, then `browser: N passed, M failed`.
//
// The checks share one browser context (one user's browser), in order: each builds on the
// state the previous ones left (signed in, consent given, consent revoked).
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(path.join(ROOT, "tools/peers/browser/package.json"));
const { chromium } = require("playwright-core");

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env("BASE");
const CB_PORT = Number(env("CB_PORT"));
const FRAMER_PORT = Number(env("FRAMER_PORT"));
const CLIENT_ID = env("CLIENT_ID");
const CLIENT_NAME = env("CLIENT_NAME");
const USERNAME = env("USERNAME");
const PASSWORD = env("PASSWORD");
const ART = env("ART");
const ONLY = (process.env.ONLY || "").split(/\s+/).filter(Boolean);
const CALLBACK = `http://127.0.0.1:${CB_PORT}/callback`;
const SCOPE = "mcp:tools:read mcp:tools:write";
const TIMEOUT = 15_000; // only reached when something is broken

// ---------------------------------------------------------------------------------------------
// Helpers

function assert(cond, message) {
  if (!cond) throw new Error(message);
}
function assertEq(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

/// The client's loopback callback: records every request, answers a small page.
const callbacks = [];
const callbackServer = http.createServer((req, res) => {
  const url = new URL(req.url, `http://127.0.0.1:${CB_PORT}`);
  if (url.pathname === "/callback") callbacks.push(url); // not /favicon.ico, not the control page
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(`<!doctype html><title>Callback</title><h1 id="cb">Callback received</h1>`);
});

/// Another origin, trying to frame mcpgate's pages (and, as a control, the callback page).
const framerServer = http.createServer((req, res) => {
  const url = new URL(req.url, `http://127.0.0.1:${FRAMER_PORT}`);
  const src = url.searchParams.get("src") || "";
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(`<!doctype html><title>Framer</title><h1>Another site</h1>
<iframe id="victim" src="${src.replace(/"/g, "&quot;")}" width="600" height="500"></iframe>`);
});

const listen = (server, port) => new Promise((resolve, reject) => {
  server.once("error", reject);
  server.listen(port, "127.0.0.1", resolve);
});

function pkce() {
  const verifier = randomBytes(32).toString("base64url");
  const challenge = createHash("sha256").update(verifier).digest("base64url");
  return { verifier, challenge };
}

/// An authorization request for the test client; returns its URL and secrets.
function authorizeRequest(extra = {}) {
  const { verifier, challenge } = pkce();
  const state = randomBytes(12).toString("base64url");
  const url = new URL("/authorize", BASE);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: CLIENT_ID,
    redirect_uri: CALLBACK,
    code_challenge: challenge,
    code_challenge_method: "S256",
    state,
    scope: SCOPE,
    ...extra,
  }).toString();
  return { url: url.href, state, verifier };
}

/// The page headers every mcpgate page must carry.
async function assertPageHeaders(response, what) {
  assert(response, `${what}: no response`);
  const h = await response.allHeaders();
  const csp = h["content-security-policy"] || "";
  assert(/(^|;)\s*frame-ancestors 'none'\s*(;|$)/.test(csp), `${what}: CSP lacks frame-ancestors 'none': ${JSON.stringify(csp)}`);
  assertEq((h["x-frame-options"] || "").toUpperCase(), "DENY", `${what}: X-Frame-Options`);
  assert((h["cache-control"] || "").includes("no-store"), `${what}: Cache-Control lacks no-store: ${h["cache-control"]}`);
  assertEq(h["x-content-type-options"], "nosniff", `${what}: X-Content-Type-Options`);
  assert(/^text\/html/.test(h["content-type"] || ""), `${what}: content-type ${h["content-type"]}`);
  return h;
}

/// Waits for the document response of the navigation `action` causes (a form submission).
async function navigation(page, action) {
  const [response] = await Promise.all([
    page.waitForEvent("response", { predicate: (r) => r.request().isNavigationRequest() && r.frame() === page.mainFrame(), timeout: TIMEOUT }),
    action(),
  ]);
  await page.waitForLoadState("load");
  return response;
}

/// The callback requests that arrived after `since` (an index into `callbacks`).
async function waitCallback(since) {
  const deadline = Date.now() + TIMEOUT;
  while (callbacks.length <= since) {
    if (Date.now() > deadline) throw new Error("the callback was not reached");
    await new Promise((r) => setTimeout(r, 20));
  }
  return callbacks[since];
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(ART, `${name}.png`), fullPage: true });
}

/// Exchanges a code at the token endpoint, as the (public) client would.
async function exchange(code, verifier) {
  const res = await fetch(new URL("/token", BASE), {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "authorization_code", code, code_verifier: verifier, redirect_uri: CALLBACK, client_id: CLIENT_ID }),
  });
  const body = await res.json();
  assertEq(res.status, 200, `token endpoint status (${JSON.stringify(body)})`);
  assert(body.access_token && body.refresh_token, `token response: ${JSON.stringify(body)}`);
  return body;
}

const issuer = async () => (await (await fetch(new URL("/.well-known/oauth-authorization-server", BASE))).json()).issuer;

// ---------------------------------------------------------------------------------------------
// Checks (in order; they share the browser's state)

const ctx = {}; // state passed between checks
const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check("login_page_renders", async ({ page }) => {
  ctx.request = authorizeRequest();
  const response = await page.goto(ctx.request.url);
  assertEq(response.status(), 200, "status of GET /authorize");
  await assertPageHeaders(response, "login page");
  assertEq(await page.getByRole("heading", { level: 1 }).innerText(), "Sign in", "heading");
  assert((await page.locator("main").innerText()).includes(CLIENT_NAME), "the login page does not name the client");
  // Accessible form: inputs found by their labels, a named submit button.
  assert(await page.getByLabel("Username").isVisible(), "no Username field by label");
  assert(await page.getByLabel("Password").isVisible(), "no Password field by label");
  assertEq(await page.getByLabel("Password").getAttribute("type"), "password", "password field type");
  assert(await page.getByRole("button", { name: "Sign in" }).isVisible(), "no Sign in button");
  assertEq(await page.locator("script").count(), 0, "scripts on the login page");
  await shot(page, "login");
});

check("wrong_password_shows_error", async ({ page }) => {
  await page.getByLabel("Username").fill(USERNAME);
  await page.getByLabel("Password").fill("not the password");
  const response = await navigation(page, () => page.getByRole("button", { name: "Sign in" }).click());
  assertEq(response.status(), 400, "status of a failed sign-in");
  await assertPageHeaders(response, "login error page");
  const alert = page.getByRole("alert");
  assertEq((await alert.innerText()).trim(), "Invalid username or password.", "error message");
  // The username is kept, the password is not.
  assertEq(await page.getByLabel("Username").inputValue(), USERNAME, "username kept");
  assertEq(await page.getByLabel("Password").inputValue(), "", "password cleared");
  assertEq(await page.getByLabel("Username").getAttribute("aria-describedby"), "login-error", "field described by the error");
  assertEq((await page.context().cookies(BASE)).filter((c) => c.name.startsWith("__Host-mcpgate-session")).length, 0, "session cookie after a failed sign-in");
  await shot(page, "login-error");
});

check("login_shows_consent", async ({ page }) => {
  await page.getByLabel("Password").fill(PASSWORD);
  const response = await navigation(page, () => page.getByRole("button", { name: "Sign in" }).click());
  assertEq(response.status(), 200, "status of a successful sign-in");
  await assertPageHeaders(response, "consent page");
  // The session cookie: __Host-, Secure, HttpOnly, SameSite=Lax — and the browser kept it.
  const cookies = await page.context().cookies(BASE);
  const session = cookies.find((c) => c.name === "__Host-mcpgate-session");
  assert(session, `the browser did not keep the session cookie (cookies: ${JSON.stringify(cookies.map((c) => c.name))}; Set-Cookie: ${(await response.allHeaders())["set-cookie"]})`);
  assert(session.secure && session.httpOnly && session.sameSite === "Lax" && session.path === "/", `session cookie attributes: ${JSON.stringify(session)}`);
  const main = await page.locator("main").innerText();
  const heading = await page.getByRole("heading", { level: 1 }).innerText();
  assert(heading.endsWith(`${CLIENT_NAME} wants to access your account`), `consent heading: ${JSON.stringify(heading)}`);
  assert(main.includes(`Signed in as ${USERNAME}`), "consent page does not say who is signed in");
  assert(main.includes(`127.0.0.1:${CB_PORT}`), "consent page does not show the redirect host");
  const warning = page.getByRole("note");
  assert(await warning.isVisible(), "no loopback warning");
  assert((await warning.innerText()).includes("This application runs on a computer"), "loopback warning text");
  const scopes = await page.locator("ul.scopes li").allInnerTexts();
  assertEq(scopes.length, 2, `number of scopes shown (${JSON.stringify(scopes)})`);
  assert(scopes.some((s) => s.includes("Use read-only tools") && s.includes("mcp:tools:read")), `read scope description: ${JSON.stringify(scopes)}`);
  assert(scopes.some((s) => s.includes("Use tools that change things") && s.includes("mcp:tools:write")), `write scope description: ${JSON.stringify(scopes)}`);
  assert(await page.getByRole("button", { name: "Approve" }).isVisible(), "no Approve button");
  assert(await page.getByRole("button", { name: "Deny" }).isVisible(), "no Deny button");
  assertEq(await page.locator("script").count(), 0, "scripts on the consent page");
  await shot(page, "consent");
});

check("approve_redirects_with_code", async ({ page }) => {
  const since = callbacks.length;
  const response = await navigation(page, () => page.getByRole("button", { name: "Approve" }).click());
  assertEq(response.status(), 303, "status of Approve");
  await page.waitForURL((u) => u.href.startsWith(`${CALLBACK}?`));
  const cb = await waitCallback(since);
  const code = cb.searchParams.get("code");
  assert(code, `no code in the callback: ${cb}`);
  assertEq(cb.searchParams.get("state"), ctx.request.state, "state");
  assertEq(cb.searchParams.get("iss"), await issuer(), "iss");
  assertEq(cb.searchParams.get("error"), null, "error");
  assertEq(await page.locator("#cb").innerText(), "Callback received", "callback page shown");
  const tokens = await exchange(code, ctx.request.verifier);
  assertEq(tokens.scope.split(" ").sort().join(" "), SCOPE, "granted scope");
});

check("remembered_consent_skips_pages", async ({ page }) => {
  const request = authorizeRequest();
  const since = callbacks.length;
  await page.goto(request.url);
  const cb = await waitCallback(since);
  assert(cb.searchParams.get("code"), `no code: ${cb}`);
  assertEq(cb.searchParams.get("state"), request.state, "state");
  assertEq(page.url().split("?")[0], CALLBACK, "page after a remembered consent");
});

check("deny_returns_access_denied", async ({ page }) => {
  const request = authorizeRequest({ prompt: "consent" });
  const response = await page.goto(request.url);
  await assertPageHeaders(response, "consent page (prompt=consent)");
  assert(await page.getByRole("button", { name: "Deny" }).isVisible(), "prompt=consent did not show the consent page");
  const since = callbacks.length;
  await navigation(page, () => page.getByRole("button", { name: "Deny" }).click());
  const cb = await waitCallback(since);
  assertEq(cb.searchParams.get("error"), "access_denied", "error");
  assertEq(cb.searchParams.get("code"), null, "code after Deny");
  assertEq(cb.searchParams.get("state"), request.state, "state");
  assertEq(cb.searchParams.get("iss"), await issuer(), "iss");
});

check("invalid_client_shows_error_page", async ({ page }) => {
  const since = callbacks.length;
  const request = authorizeRequest({ client_id: "no-such-client" });
  const response = await page.goto(request.url);
  assertEq(response.status(), 400, "status");
  await assertPageHeaders(response, "error page");
  assertEq(await page.getByRole("heading", { level: 1 }).innerText(), "Invalid sign-in request", "heading");
  assert((await page.getByRole("alert").innerText()).includes("unknown client_id"), "error message");
  assertEq(await page.locator("form").count(), 0, "forms on the error page");
  await shot(page, "error");
  // A registered client with an unregistered redirect URI: an error page too.
  const mismatch = authorizeRequest({ redirect_uri: `http://127.0.0.1:${CB_PORT}/elsewhere` });
  const r2 = await page.goto(mismatch.url);
  assertEq(r2.status(), 400, "status for an unregistered redirect URI");
  await assertPageHeaders(r2, "error page (redirect URI)");
  assert((await page.getByRole("alert").innerText()).includes("redirect URI does not match"), "redirect mismatch message");
  await page.waitForTimeout(300); // a redirect, if any, would reach the callback by now
  assertEq(callbacks.length, since, "requests that reached the callback");
  assert(page.url().startsWith(BASE), `navigated away from mcpgate: ${page.url()}`);
});

check("consents_page_lists_and_revokes", async ({ page }) => {
  const response = await page.goto(new URL("/consents", BASE).href);
  assertEq(response.status(), 200, "status");
  await assertPageHeaders(response, "consents page");
  assertEq(await page.getByRole("heading", { level: 1 }).innerText(), "Authorized applications", "heading");
  const row = page.locator("tbody tr", { hasText: CLIENT_NAME });
  assertEq(await row.count(), 1, "rows for the client");
  const rowText = await row.innerText();
  assert(rowText.includes(CLIENT_ID) && rowText.includes("mcp:tools:read") && rowText.includes("mcp:tools:write"), `row: ${rowText}`);
  await shot(page, "consents");
  const revoke = await navigation(page, () => page.getByRole("button", { name: `Revoke ${CLIENT_NAME}` }).click());
  assertEq(revoke.status(), 200, "status after Revoke");
  await assertPageHeaders(revoke, "consents page after revoke");
  assertEq((await page.getByRole("status").innerText()).trim(), "Access revoked.", "notice");
  assertEq(await page.locator("tbody tr", { hasText: CLIENT_NAME }).count(), 0, "rows after revoking");
  await shot(page, "consents-revoked");
  // The next authorization asks again.
  const request = authorizeRequest();
  const since = callbacks.length;
  await page.goto(request.url);
  assert(await page.getByRole("button", { name: "Approve" }).isVisible(), "consent was not asked again after revoking");
  assertEq(callbacks.length, since, "callback reached without consent");
});

check("pages_cannot_be_framed", async ({ page, context }) => {
  const framer = (src) => `http://127.0.0.1:${FRAMER_PORT}/?src=${encodeURIComponent(src)}`;
  // Control: a page without anti-framing headers renders in the same frame, so the harness
  // would see a rendered page.
  await page.goto(framer(`http://127.0.0.1:${CB_PORT}/control`));
  const control = page.frame({ url: (u) => u.pathname === "/control" });
  assert(control, "control frame missing");
  await control.waitForSelector("#cb", { timeout: TIMEOUT });
  // The login page (a fresh browser, not signed in) and the consents page.
  const fresh = await context.browser().newContext();
  try {
    const p = await fresh.newPage();
    const consoleLines = [];
    p.on("console", (m) => consoleLines.push(m.text()));
    for (const [what, target] of [["login page", authorizeRequest().url], ["consents page", new URL("/consents", BASE).href]]) {
      consoleLines.length = 0;
      const blocked = [];
      const onResponse = (r) => { if (r.url() === target) blocked.push(r); };
      p.on("response", onResponse);
      await p.goto(framer(target));
      await p.waitForLoadState("load");
      await p.waitForTimeout(300);
      p.off("response", onResponse);
      assert(blocked.length === 1, `${what}: the frame's request was not made (${blocked.length})`);
      await assertPageHeaders(blocked[0], `${what} (framed)`);
      const frame = p.frames().find((f) => f !== p.mainFrame());
      assert(frame, `${what}: no child frame`);
      // A blocked frame shows Chromium's error page, not mcpgate's document.
      let content = "";
      try { content = await frame.content(); } catch (e) { content = ""; }
      assert(!content.includes("Sign in") && !content.includes("password") && !content.includes("mcpgate"), `${what}: rendered inside the frame: ${frame.url()} ${content.slice(0, 200)}`);
      assertEq(await frame.locator("input").count(), 0, `${what}: inputs in the frame`);
      ctx.framingConsole = (ctx.framingConsole || []).concat(consoleLines);
    }
    console.error(`framing: Chromium said ${JSON.stringify(ctx.framingConsole)}`);
    assert((ctx.framingConsole || []).some((l) => /frame-ancestors|X-Frame-Options/i.test(l)),
      `Chromium logged no framing refusal: ${JSON.stringify(ctx.framingConsole)}`);
  } finally {
    await fresh.close();
  }
});

check("works_without_javascript", async ({ context }) => {
  // The whole flow in a browser with JavaScript disabled (the pages use none).
  const nojs = await context.browser().newContext({ javaScriptEnabled: false });
  try {
    const p = await nojs.newPage();
    const request = authorizeRequest();
    await p.goto(request.url);
    await p.getByLabel("Username").fill(USERNAME);
    await p.getByLabel("Password").fill(PASSWORD);
    await navigation(p, () => p.getByRole("button", { name: "Sign in" }).click());
    const since = callbacks.length;
    await navigation(p, () => p.getByRole("button", { name: "Approve" }).click());
    const cb = await waitCallback(since);
    assert(cb.searchParams.get("code"), `no code: ${cb}`);
    assertEq(cb.searchParams.get("state"), request.state, "state");
    await exchange(cb.searchParams.get("code"), request.verifier);
  } finally {
    await nojs.close();
  }
});

check("small_screen_and_dark_mode", async ({ context }) => {
  // A phone-sized window in dark mode: nothing wider than the screen; screenshots to look at.
  const dark = await context.browser().newContext({ viewport: { width: 360, height: 740 }, colorScheme: "dark" });
  try {
    const p = await dark.newPage();
    const overflow = () => p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await p.goto(authorizeRequest({ prompt: "consent" }).url);
    await shot(p, "login-dark-small");
    assertEq(await overflow(), 0, "horizontal overflow of the login page");
    await p.getByLabel("Username").fill(USERNAME);
    await p.getByLabel("Password").fill(PASSWORD);
    await navigation(p, () => p.getByRole("button", { name: "Sign in" }).click());
    assert(await p.getByRole("button", { name: "Approve" }).isVisible(), "no consent page");
    await shot(p, "consent-dark-small");
    assertEq(await overflow(), 0, "horizontal overflow of the consent page");
    await p.goto(new URL("/consents", BASE).href);
    await shot(p, "consents-dark-small");
    assertEq(await overflow(), 0, "horizontal overflow of the consents page");
  } finally {
    await dark.close();
  }
});

check("no_secrets_in_log", async () => {
  const log = readFileSync(env("MCPGATE_LOG"), "utf8");
  assert(!log.includes(PASSWORD), "the password reached mcpgate's log");
  for (const cb of callbacks) {
    const code = cb.searchParams.get("code");
    assert(!code || !log.includes(code), "an authorization code reached mcpgate's log");
  }
});

// ---------------------------------------------------------------------------------------------
// Runner

await listen(callbackServer, CB_PORT);
await listen(framerServer, FRAMER_PORT);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  timeout: 60_000,
});
// launch() starts Chromium with a fresh temporary profile (its own --user-data-dir, removed on
// close); it refuses a --user-data-dir in args.
const context = await browser.newContext({ viewport: { width: 1024, height: 800 }, deviceScaleFactor: 1 });
context.setDefaultTimeout(TIMEOUT);
const page = await context.newPage();

let passed = 0;
let failed = 0;
for (const { name, fn } of checks) {
  if (ONLY.length && !ONLY.includes(name)) continue;
  try {
    await fn({ page, context });
    passed++;
    console.log(`PASS ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.message.split("\n")[0]}`);
    console.error(`--- ${name}\n${e.stack}`);
    await shot(page, `failed-${name}`).catch(() => {});
  }
}
await browser.close();
callbackServer.close();
framerServer.close();
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
