// Interop client on the official TypeScript SDK (@modelcontextprotocol/sdk, pinned in tools/peers).
//
//   node ts_client.mjs --url URL [--transport http|sse] [--token T] SCENARIO
//   node ts_client.mjs --transport stdio SCENARIO -- COMMAND ARGS...   (e.g. a bridge such as mcp-remote)
//
// Scenarios (exit 0 when every assertion holds, 1 with a reason on stderr otherwise):
//   builtin       list tools (whoami + notes_*), whoami names --principal (default "default"), notes_put/get/list
//   unauthorized  connecting must fail with HTTP 401
//   echo          server-everything behind the gateway: tool `echo` is listed and echoes
//   add           Python upstream behind the gateway: add(2, 40) = 42
import { parseArgs } from "node:util";
import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";

// Resolve the SDK from tools/peers/node_modules, wherever this file is run from.
const require = createRequire(new URL("../../tools/peers/package.json", import.meta.url));
const sdk = (p) => import(require.resolve(`@modelcontextprotocol/sdk/${p}`));
const { Client } = await sdk("client/index.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");
const { SSEClientTransport } = await sdk("client/sse.js");
const { StdioClientTransport } = await sdk("client/stdio.js");

const { values: opt, positionals } = parseArgs({
  options: {
    url: { type: "string" },
    transport: { type: "string", default: "http" },
    token: { type: "string" },
    principal: { type: "string", default: "default" },
  },
  allowPositionals: true,
});
const [scenario, command, ...commandArgs] = positionals;

function fail(msg) {
  console.error(`ts_client ${scenario}: ${msg}`);
  process.exit(1);
}
function assert(cond, msg) {
  if (!cond) fail(msg);
}
// whoami answers JSON ({"principal": …}); accept plain text naming the principal too.
function principalOf(who) {
  try {
    return JSON.parse(who).principal;
  } catch {
    return who.includes(opt.principal) ? opt.principal : who;
  }
}
const text = (result) => (result.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("\n");

async function connect() {
  const requestInit = opt.token ? { headers: { Authorization: `Bearer ${opt.token}` } } : undefined;
  let transport;
  if (opt.transport === "stdio") transport = new StdioClientTransport({ command, args: commandArgs, env: process.env, stderr: "inherit" });
  else if (opt.transport === "sse") transport = new SSEClientTransport(new URL(opt.url), { requestInit });
  else transport = new StreamableHTTPClientTransport(new URL(opt.url), { requestInit });
  const client = new Client({ name: "mcpgate-interop-ts", version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

async function call(client, name, args) {
  const result = await client.callTool({ name, arguments: args });
  assert(!result.isError, `${name} returned isError: ${text(result)}`);
  return text(result);
}

async function close({ client, transport }) {
  // Streamable HTTP: end the session explicitly (DELETE /mcp) so that path is exercised too.
  if (transport instanceof StreamableHTTPClientTransport && transport.sessionId) await transport.terminateSession();
  await client.close();
}

const scenarios = {
  async builtin() {
    const conn = await connect();
    const { client } = conn;
    const names = (await client.listTools()).tools.map((t) => t.name);
    for (const n of ["whoami", "notes_list", "notes_get", "notes_put", "notes_delete"])
      assert(names.includes(n), `tools/list lacks ${n}: ${names.join(",")}`);
    const who = await call(client, "whoami", {});
    assert(principalOf(who) === opt.principal, `whoami does not name principal "${opt.principal}": ${who}`);
    const id = `ts-${randomUUID()}`;
    const content = `hello from ts ${randomUUID()}`;
    await call(client, "notes_put", { id, content });
    const got = await call(client, "notes_get", { id });
    assert(got.includes(content), `notes_get(${id}) = ${got}, want ${content}`);
    const list = await call(client, "notes_list", {});
    assert(list.includes(id), `notes_list lacks ${id}: ${list}`);
    await call(client, "notes_delete", { id });
    await close(conn);
  },

  async unauthorized() {
    let conn;
    try {
      conn = await connect();
    } catch (err) {
      const why = `${err?.code ?? ""} ${err?.message ?? err}`;
      assert(err?.code === 401 || /\b401\b|Unauthorized/i.test(why), `refused, but not with 401: ${why}`);
      return;
    }
    await conn.client.close();
    fail("connected without a token");
  },

  async echo() {
    const conn = await connect();
    const names = (await conn.client.listTools()).tools.map((t) => t.name);
    assert(names.includes("echo"), `tools/list lacks echo: ${names.join(",")}`);
    const word = randomUUID();
    const out = await call(conn.client, "echo", { message: word });
    assert(out.includes(`Echo: ${word}`), `echo returned ${out}`);
    await close(conn);
  },

  async add() {
    const conn = await connect();
    const names = (await conn.client.listTools()).tools.map((t) => t.name);
    assert(names.includes("add"), `tools/list lacks add: ${names.join(",")}`);
    const out = await call(conn.client, "add", { a: 2, b: 40 });
    assert(/\b42\b/.test(out), `add(2, 40) returned ${out}`);
    await close(conn);
  },
};

if (!scenarios[scenario] || !(opt.url || command))
  fail("usage: ts_client.mjs --url URL [--transport http|sse] [--token T] SCENARIO | --transport stdio SCENARIO -- CMD...");
try {
  await scenarios[scenario]();
} catch (err) {
  fail(`${err?.name ?? "Error"}: ${err?.message ?? err}`);
}
process.exit(0);
