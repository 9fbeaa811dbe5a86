// Token-endpoint throughput (bench/token-endpoint.sh): authorization-code exchanges and refresh
// rotations per second, against mcpgate's built-in AS or oidc-provider (tools/peers/idp/oidc.mjs).
//
//   node token_bench.mjs --as mcpgate|oidc --base URL [--password PW] [--codes 200]
//                        [--concurrency 8] [--seconds 5] [--resource URL]
//
// Both sides use a public client registered by DCR (PKCE S256, token_endpoint_auth_method none), so
// both rotate refresh tokens on every use, and both sign ES256 JWT access tokens (run oidc.mjs with
// AT_ALG=ES256; the client registers id_token_signed_response_alg ES256). oidc-provider needs the
// `openid` scope to issue refresh tokens, so it also signs an ID token per exchange and refresh:
// one more ES256 signature than mcpgate per request, the one asymmetry left.
// Codes are collected untimed (for mcpgate by 4 browsers that each sign in once: it hashes the
// password with Argon2id; oidc-provider's devInteractions accept any password), in chunks of 100,
// each then exchanged with `concurrency` requests in flight (only the exchanges are timed); then `concurrency` families are refreshed in a loop for
// `seconds`, each worker using the refresh token it was just given. Prints one JSON line, with the
// client's own CPU use per phase (`*_client_cpu`, fraction of one core): near 1.0 would mean the
// client, not the server, is the limit.
import { parseArgs } from "node:util";
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import { readdirSync, readFileSync } from "node:fs";

const { values: o } = parseArgs({
  options: {
    as: { type: "string" },
    base: { type: "string" },
    password: { type: "string", default: "" },
    codes: { type: "string", default: "200" },
    concurrency: { type: "string", default: "8" },
    seconds: { type: "string", default: "5" },
    resource: { type: "string" },
    "server-pid": { type: "string" },
  },
});
const REDIRECT = "http://127.0.0.1:9/callback";
const base = o.base;
const resource = o.resource ?? `${base}/mcp`;
const K = Number(o.concurrency);
const scope = o.as === "oidc" ? "openid offline_access mcp:tools:read" : "mcp:tools:read";

function jar() {
  const cookies = new Map();
  return async (url, init = {}) => {
    const headers = new Headers(init.headers);
    if (cookies.size) headers.set("cookie", [...cookies].map(([k, v]) => `${k}=${v}`).join("; "));
    const res = await fetch(url, { ...init, headers, redirect: "manual" });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const i = pair.indexOf("=");
      cookies.set(pair.slice(0, i), pair.slice(i + 1));
    }
    return res;
  };
}
const form = (o) => ({ method: "POST", body: new URLSearchParams(o), headers: { "content-type": "application/x-www-form-urlencoded" } });
const hidden = (html, name) => new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1] ?? "";

async function register() {
  const path = o.as === "oidc" ? "/reg" : "/register";
  const res = await fetch(`${base}${path}`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ client_name: "token-bench", redirect_uris: [REDIRECT], token_endpoint_auth_method: "none",
      grant_types: ["authorization_code", "refresh_token"], response_types: ["code"],
      ...(o.as === "oidc" ? { id_token_signed_response_alg: "ES256" } : {}) }),
  });
  const body = await res.json();
  if (!body.client_id) throw new Error(`registration: ${res.status} ${JSON.stringify(body)}`);
  return body.client_id;
}

async function code(clientId, hop) {
  const verifier = randomBytes(32).toString("base64url");
  const params = { response_type: "code", client_id: clientId, redirect_uri: REDIRECT, scope, state: "s", resource,
    code_challenge: createHash("sha256").update(verifier).digest("base64url"), code_challenge_method: "S256" };
  if (o.as === "oidc") params.prompt = "consent";
  let url = new URL(`${base}${o.as === "oidc" ? "/auth" : "/authorize"}`);
  url.search = new URLSearchParams(params).toString();
  for (let step = 0; step < 12 && !url.href.startsWith(REDIRECT); step++) {
    let res = await hop(url);
    if (o.as === "oidc" && url.pathname.startsWith("/interaction/") && res.status === 200) {
      const prompt = /name="prompt" value="(\w+)"/.exec(await res.text())?.[1];
      const f = { prompt };
      if (prompt === "login") Object.assign(f, { login: "alice", password: "any" });
      res = await hop(url, form(f));
    } else if (o.as === "mcpgate" && res.status === 200) {
      const html = await res.text();
      if (html.includes('name="password"')) {
        res = await hop(`${base}/authorize/login`, form({ pending: hidden(html, "pending"), csrf: hidden(html, "csrf"), username: "admin", password: o.password }));
      } else {
        res = await hop(`${base}/authorize/consent`, form({ pending: hidden(html, "pending"), csrf: hidden(html, "csrf"), decision: "approve" }));
      }
      if (res.status === 200) {
        const html2 = await res.text();
        res = await hop(`${base}/authorize/consent`, form({ pending: hidden(html2, "pending"), csrf: hidden(html2, "csrf"), decision: "approve" }));
      }
    }
    const next = res.headers.get("location");
    if (!next) throw new Error(`authorization stopped at ${url}: HTTP ${res.status}`);
    url = new URL(next, url);
  }
  const c = url.searchParams.get("code");
  if (!c) throw new Error(`no code in ${url}`);
  return { code: c, verifier };
}

// The timed requests go over a minimal HTTP/1.1 client on raw keep-alive sockets (one per
// request in flight), not node:http and not fetch: node:http cost the client 0.25 ms of CPU per
// code exchange (fetch ~1 ms), which on a 2-core machine made the client, not the server, the
// limit (it reports its CPU use, see above). This one only writes a request and reads a response
// framed by Content-Length (what both servers send for token responses); anything else fails.
const tokenUrl = new URL(`${base}/token`);
const HEAD = `POST ${tokenUrl.pathname} HTTP/1.1\r\nhost: ${tokenUrl.host}\r\n` +
  "content-type: application/x-www-form-urlencoded\r\ncontent-length: ";

class Connection {
  constructor() {
    this.socket = null;
    this.buffer = Buffer.alloc(0);
    this.waiting = null; // { resolve, reject } of the request in flight
  }

  request(payload) {
    if (!this.socket) this.open();
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.socket.write(`${HEAD}${Buffer.byteLength(payload)}\r\n\r\n${payload}`, "latin1");
    });
  }

  open() {
    const socket = net.connect({ host: tokenUrl.hostname, port: Number(tokenUrl.port), noDelay: true });
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    socket.on("data", (data) => this.received(data));
    const lost = (error) => {
      if (this.socket === socket) this.socket = null;
      const waiting = this.waiting;
      this.waiting = null;
      waiting?.reject(error ?? new Error("the server closed the connection mid-request"));
    };
    socket.on("error", lost);
    socket.on("close", () => lost());
    // A request unanswered this long fails the run instead of hanging it; an idle connection
    // is just closed (the next request opens another).
    socket.setTimeout(30_000, () => socket.destroy(this.waiting ? new Error("no response in 30 s") : undefined));
  }

  received(data) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, data]) : data;
    const end = this.buffer.indexOf("\r\n\r\n");
    if (end < 0) return;
    const head = this.buffer.toString("latin1", 0, end);
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!length) {
      this.socket.destroy(new Error(`response without Content-Length: ${head}`));
      return;
    }
    const total = end + 4 + Number(length[1]);
    if (this.buffer.length < total) return;
    const body = this.buffer.toString("utf8", end + 4, total);
    this.buffer = this.buffer.subarray(total);
    if (/\r\nconnection: *close/i.test(head)) {
      this.socket.end();
      this.socket = null;
    }
    let json = {};
    try { json = JSON.parse(body); } catch {}
    const waiting = this.waiting;
    this.waiting = null;
    waiting?.resolve({ status: Number(head.slice(9, 12)), json });
  }
}

const connections = Array.from({ length: K }, () => new Connection());
// `worker`: which of the K requests in flight this is (each has its own connection).
function token(body, worker) {
  return connections[worker].request(new URLSearchParams(body).toString());
}

async function pool(items, k, fn) {
  let i = 0;
  const out = [];
  await Promise.all(Array.from({ length: k }, async (_, worker) => {
    while (i < items.length) {
      const j = i++;
      out[j] = await fn(items[j], worker);
    }
  }));
  return out;
}

// CPU nanoseconds the server process (`--server-pid`, every thread) has run so far, from
// /proc/PID/task/*/schedstat (nanosecond resolution, unlike /proc/PID/stat's clock ticks); null
// without a pid. Threads that ended are not counted: both servers keep theirs for the run.
function serverCpuNs() {
  if (!o["server-pid"]) return null;
  const dir = `/proc/${o["server-pid"]}/task`;
  let ns = 0;
  for (const task of readdirSync(dir)) {
    try { ns += Number(readFileSync(`${dir}/${task}/schedstat`, "latin1").split(" ")[0]); } catch {}
  }
  return ns;
}
// Server CPU microseconds per request over a phase, or undefined without a pid.
const perRequestUs = (ns, requests) => (ns === null || !requests ? undefined : +(ns / 1e3 / requests).toFixed(1));

// Fraction of one core the client used since `since` (from process.cpuUsage) over `secs`.
const cpu = (since, secs) => { const u = process.cpuUsage(since); return +((u.user + u.system) / 1e6 / secs).toFixed(2); };

const clientId = await register();
const n = Number(o.codes);
const browsers = Array.from({ length: 4 }, () => jar());
// In chunks of 100 codes, each collected (untimed) and then exchanged (timed): oidc-provider's
// in-memory adapter is an LRU of 1000 entries, about five per authorization, so codes collected
// long before their exchange are evicted (invalid_grant). The same for both sides.
const CHUNK = 100;
const exchanged = [];
let exchangeSecs = 0;
let exchangeCpuSecs = 0;
let exchangeServerNs = o["server-pid"] ? 0 : null; // null: not measured
for (let done = 0; done < n; done += CHUNK) {
  // oidc-provider: a fresh browser per code; its sign-in costs nothing.
  const codes = await pool(Array.from({ length: Math.min(CHUNK, n - done) }), 4,
    (_, worker) => code(clientId, o.as === "oidc" ? jar() : browsers[worker]));
  // The collection's garbage (fetch, cookie jars) is collected now, not in the timed window
  // (run with --expose-gc; without it this is skipped).
  globalThis.gc?.();
  const server0 = serverCpuNs();
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  exchanged.push(...await pool(codes, K, ({ code, verifier }, worker) => token({
    grant_type: "authorization_code", code, code_verifier: verifier, redirect_uri: REDIRECT, client_id: clientId, resource,
  }, worker)));
  const u = process.cpuUsage(cpu0);
  exchangeCpuSecs += (u.user + u.system) / 1e6;
  exchangeSecs += (performance.now() - t0) / 1000;
  if (exchangeServerNs !== null) exchangeServerNs += serverCpuNs() - server0;
}
const exchangeCpu = +(exchangeCpuSecs / exchangeSecs).toFixed(2);
const okExchanges = exchanged.filter((r) => r.status === 200 && r.json.refresh_token);
if (okExchanges.length < K) throw new Error(`exchanges failed: ${JSON.stringify(exchanged.find((r) => r.status !== 200))}`);

globalThis.gc?.();
const refreshServer0 = serverCpuNs();
const stopAt = performance.now() + Number(o.seconds) * 1000;
let rotations = 0, failures = 0, rotated = 0;
const t = performance.now();
const cpu0 = process.cpuUsage();
// The newest grants: oidc-provider's LRU has evicted the first chunks' (see above).
await Promise.all(okExchanges.slice(-K).map(async ({ json }, worker) => {
  let rt = json.refresh_token;
  while (performance.now() < stopAt) {
    const r = await token({ grant_type: "refresh_token", refresh_token: rt, client_id: clientId, resource }, worker);
    if (r.status !== 200) { failures++; break; }
    if (r.json.refresh_token && r.json.refresh_token !== rt) rotated++;
    rt = r.json.refresh_token ?? rt;
    rotations++;
  }
}));
const refreshSecs = (performance.now() - t) / 1000;
const refreshCpu = cpu(cpu0, refreshSecs);
const refreshServerNs = refreshServer0 === null ? null : serverCpuNs() - refreshServer0;
console.log(JSON.stringify({
  as: o.as, concurrency: K,
  exchanges: okExchanges.length, exchange_failures: n - okExchanges.length,
  ...(okExchanges.length < n ? { exchange_error: exchanged.find((r) => r.status !== 200)?.json } : {}), exchanges_per_s: +(okExchanges.length / exchangeSecs).toFixed(1), exchange_client_cpu: exchangeCpu,
  exchange_server_us: perRequestUs(exchangeServerNs, okExchanges.length),
  refreshes: rotations, refresh_failures: failures, refreshes_rotated: rotated, refreshes_per_s: +(rotations / refreshSecs).toFixed(1), refresh_client_cpu: refreshCpu,
  refresh_server_us: perRequestUs(refreshServerNs, rotations),
}));
