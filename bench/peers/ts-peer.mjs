// Benchmark peer: what a user would write with the official TypeScript SDK instead of mcpgate.
// Express 5 + @modelcontextprotocol/sdk 1.32.x `requireBearerAuth`, verifying the IdP's JWT access
// tokens with jose `createRemoteJWKSet` + `jwtVerify` (iss, aud, exp, signature), a stateless
// Streamable HTTP transport with JSON responses (one server + transport per request, as the SDK's
// stateless example does), and one tool, `echo`. Packages come from tools/peers/node_modules.
//
//   PORT=8792 ISSUER=http://127.0.0.1:4400 JWKS_URI=…/jwks node bench/peers/ts-peer.mjs
//   (AUTH=off serves without auth; RESOURCE defaults to http://127.0.0.1:PORT/mcp)
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const require = createRequire(new URL("../../tools/peers/package.json", import.meta.url));
const { McpServer } = require("@modelcontextprotocol/sdk/server/mcp.js");
const { StreamableHTTPServerTransport } = require("@modelcontextprotocol/sdk/server/streamableHttp.js");
const { createMcpExpressApp } = require("@modelcontextprotocol/sdk/server/express.js");
const { requireBearerAuth } = require("@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js");
const { mcpAuthMetadataRouter, getOAuthProtectedResourceMetadataUrl } = require("@modelcontextprotocol/sdk/server/auth/router.js");
const { InvalidTokenError } = require("@modelcontextprotocol/sdk/server/auth/errors.js");
const { z } = require("zod");
const { createRemoteJWKSet, jwtVerify } = await import(pathToFileURL(require.resolve("jose")).href);

const PORT = Number(process.env.PORT || 8792);
const ISSUER = process.env.ISSUER;
const RESOURCE = new URL(process.env.RESOURCE || `http://127.0.0.1:${PORT}/mcp`);
const AUTH = process.env.AUTH !== "off";

const jwks = AUTH ? createRemoteJWKSet(new URL(process.env.JWKS_URI)) : null;
const verifier = {
  async verifyAccessToken(token) {
    try {
      const { payload } = await jwtVerify(token, jwks, { issuer: ISSUER, audience: RESOURCE.href, typ: "at+jwt" });
      return {
        token,
        clientId: payload.client_id ?? payload.sub,
        scopes: typeof payload.scope === "string" ? payload.scope.split(" ") : [],
        expiresAt: payload.exp,
        resource: RESOURCE,
        extra: { sub: payload.sub },
      };
    } catch (e) {
      throw new InvalidTokenError(e.message);
    }
  },
};

function mcpServer() {
  const server = new McpServer({ name: "ts-peer", version: "1.0.0" });
  server.registerTool(
    "echo",
    { description: "Echoes its input", inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: "text", text }] }),
  );
  return server;
}

const app = createMcpExpressApp({ host: "127.0.0.1" });
const handlers = [];
if (AUTH) {
  app.use(
    mcpAuthMetadataRouter({
      oauthMetadata: {
        issuer: ISSUER,
        authorization_endpoint: `${ISSUER}/auth`,
        token_endpoint: `${ISSUER}/token`,
        response_types_supported: ["code"],
      },
      resourceServerUrl: RESOURCE,
    }),
  );
  handlers.push(requireBearerAuth({ verifier, resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(RESOURCE) }));
}
app.post("/mcp", ...handlers, async (req, res) => {
  const server = mcpServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  res.on("close", () => {
    transport.close();
    server.close();
  });
  try {
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (e) {
    if (!res.headersSent) res.status(500).json({ jsonrpc: "2.0", error: { code: -32603, message: String(e) }, id: null });
  }
});
const http = app.listen(PORT, "127.0.0.1", () => console.log(`ts-peer on ${RESOURCE.href} (auth ${AUTH ? "on" : "off"})`));
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => http.close(() => process.exit(0)));
