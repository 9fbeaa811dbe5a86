// A real external IdP for mcpgate's resource-server tests: npm `oidc-provider` (pinned in
// tools/peers/package.json), configured as in ../shared/reference/stack-and-peers.md §7.
//
//   PORT=4400 RESOURCE=http://127.0.0.1:8787/mcp JWKS_FILE=/tmp/idp-keys.json node tools/peers/idp/oidc.mjs
//
// Environment:
//   PORT              listen port on 127.0.0.1 (required); issuer = http://127.0.0.1:PORT
//   RESOURCE          default resource indicator (mcpgate's /mcp URL) for requests without `resource`
//   JWKS_FILE         private JWKS (JSON {"keys": […]}) the IdP signs with. Created when missing with
//                     two keys: RS256 `rs-1` and ES256 `es-1`. Keys are used in file order, so
//                     putting a new key first is a rotation. Tests read this file to forge tokens.
//   AT_ALG            signing alg of JWT access tokens (default RS256; per client: `at_alg`)
//   OPAQUE_RESOURCES  comma-separated resource URLs that get opaque access tokens (introspection)
//   AT_TTL            access-token lifetime in seconds (default 600; per client: `at_ttl`)
//   DCR_SCOPE_ALLOWLIST=1  keep oidc-provider's default of treating the `scope` a client registers
//                     with (DCR) as an allow-list. Off by default: MCP SDK clients register with the
//                     narrow scope of the first challenge, and step-up then needs a wider one.
//   LOG_REQUESTS=1    print `METHOD path status` per request on stdout (tests count /jwks fetches)
//   PROXY_REDIRECTS   comma-separated redirect URIs of the confidential client `mcpgate-proxy`
//                     (secret `mcpgate-proxy-secret`): mcpgate in proxy mode signs users in here
//   TAMPER_HOOKS=1    enable `POST /__test/tamper` (form `mode=nonce|aud|iss|signature|expired`):
//                     the next authorization_code token response carries an ID token altered that
//                     way and re-signed with the IdP's own key (`signature`: a foreign key with the
//                     same kid), so a relying party's ID-token checks can be tested one by one
//
// Clients: anyone may register (DCR at /reg). Static confidential clients (secret = `<id>-secret`):
//   mcp-rs      introspection client for mcpgate (client_credentials only)
//   svc-a, svc-b  client_credentials principals (sub = client id), JWT access tokens
//   svc-opaque  client_credentials, opaque access tokens (for introspection)
//   svc-es256   client_credentials, JWT access tokens signed with the ES256 key
//   svc-short   client_credentials, JWT access tokens living 1 second
//   web, web-opaque  authorization_code + refresh_token, redirect http://127.0.0.1:9/callback
//               (web-opaque gets opaque access tokens: users' tokens for introspection)
// Scopes: openid offline_access profile email mcp:tools:read mcp:tools:write mcp:admin.
// Accounts: a login name with `@` is the email, otherwise `<name>@example.test`; emails are
// verified unless the name starts with `unverified`; `groups` is ["mcp-users"] unless the name
// starts with `nogroup` (claim `groups`, scope profile).
// Login and consent are oidc-provider's devInteractions: POST /interaction/<uid> with
// prompt=login&login=<user>&password=<any>, then prompt=consent. Any login name is an account.
import fs from "node:fs";
import { generateKeyPair, exportJWK, importJWK, decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import Provider from "oidc-provider";

const PORT = Number(process.env.PORT);
if (!PORT) {
  console.error("oidc.mjs: PORT is required");
  process.exit(2);
}
const ISSUER = `http://127.0.0.1:${PORT}`;
const RESOURCE = process.env.RESOURCE || undefined;
const AT_ALG = process.env.AT_ALG || "RS256";
const AT_TTL = Number(process.env.AT_TTL || 600);
const OPAQUE = new Set((process.env.OPAQUE_RESOURCES || "").split(",").filter(Boolean));
const RESOURCE_SCOPES = "mcp:tools:read mcp:tools:write mcp:admin";

async function privateKey(alg, kid) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg, use: "sig" };
}

async function loadKeys(file) {
  if (file && fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, "utf8"));
  const jwks = { keys: [await privateKey("RS256", "rs-1"), await privateKey("ES256", "es-1")] };
  if (file) fs.writeFileSync(file, JSON.stringify(jwks, null, 2), { mode: 0o600 });
  return jwks;
}

const cc = (id, extra = {}) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  grant_types: ["client_credentials"],
  response_types: [],
  redirect_uris: [],
  scope: RESOURCE_SCOPES,
  ...extra,
});

const configuration = {
  jwks: await loadKeys(process.env.JWKS_FILE),
  clients: [
    cc("mcp-rs"),
    cc("svc-a"),
    cc("svc-b"),
    cc("svc-opaque", { at_format: "opaque" }),
    cc("svc-es256", { at_alg: "ES256" }),
    cc("svc-short", { at_ttl: 1 }),
    ...["web", "web-opaque"].map((id) => ({
      client_id: id,
      client_secret: `${id}-secret`,
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      redirect_uris: ["http://127.0.0.1:9/callback"],
      ...(id === "web-opaque" ? { at_format: "opaque" } : {}),
    })),
    ...(process.env.PROXY_REDIRECTS
      ? [
          {
            client_id: "mcpgate-proxy",
            client_secret: "mcpgate-proxy-secret",
            grant_types: ["authorization_code", "refresh_token"],
            response_types: ["code"],
            redirect_uris: process.env.PROXY_REDIRECTS.split(","),
          },
        ]
      : []),
  ],
  scopes: ["openid", "offline_access", "profile", "email", ...RESOURCE_SCOPES.split(" ")],
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name", "preferred_username", "groups"] },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: id.includes("@") ? id : `${id}@example.test`,
          email_verified: !id.startsWith("unverified"),
          name: id,
          preferred_username: id,
          groups: id.startsWith("nogroup") ? [] : ["mcp-users"],
        };
      },
    };
  },
  extraClientMetadata: {
    properties: ["at_format", "at_alg", "at_ttl"],
    validator(ctx, key, value, metadata) {
      // Runs before the standard checks: drop the DCR `scope` allow-list (see DCR_SCOPE_ALLOWLIST).
      if (key === "at_format" && ctx?.oidc?.route === "registration" && process.env.DCR_SCOPE_ALLOWLIST !== "1") {
        delete metadata.scope;
      }
    },
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator, client) => {
        const format = client.at_format ?? (OPAQUE.has(resourceIndicator) ? "opaque" : "jwt");
        const info = {
          scope: RESOURCE_SCOPES,
          audience: resourceIndicator,
          accessTokenTTL: client.at_ttl ?? AT_TTL,
          accessTokenFormat: format,
        };
        if (format === "jwt") info.jwt = { sign: { alg: client.at_alg ?? AT_ALG } };
        return info;
      },
    },
  },
  pkce: { required: () => true },
  // A function, so the resource server's (per-client) accessTokenTTL wins over the default.
  ttl: {
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL || AT_TTL,
    ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL || AT_TTL,
  },
  cookies: { keys: ["mcpgate-test-cookie-key-1"] },
  // Static clients are confidential; the introspection policy default already refuses public
  // clients introspecting other clients' tokens.
  renderError(ctx, out) {
    ctx.type = "json";
    ctx.body = out;
  },
};

const provider = new Provider(ISSUER, configuration);
if (process.env.TAMPER_HOOKS === "1") {
  // One pending alteration of the next code exchange's ID token.
  let tamper = null;
  const signingKey = configuration.jwks.keys.find((k) => k.alg === "RS256");
  provider.use(async (ctx, next) => {
    if (ctx.method === "POST" && ctx.path === "/__test/tamper") {
      const body = await new Promise((resolve) => {
        let data = "";
        ctx.req.on("data", (c) => (data += c));
        ctx.req.on("end", () => resolve(data));
      });
      tamper = new URLSearchParams(body).get("mode");
      ctx.body = { tamper };
      return;
    }
    await next();
    if (!tamper || ctx.path !== "/token" || !ctx.body?.id_token) return;
    const mode = tamper;
    tamper = null;
    const claims = decodeJwt(ctx.body.id_token);
    const { kid } = decodeProtectedHeader(ctx.body.id_token);
    let key = await importJWK(signingKey, "RS256");
    if (mode === "nonce") claims.nonce = "not-the-nonce-of-this-sign-in";
    if (mode === "aud") claims.aud = "some-other-client";
    if (mode === "iss") claims.iss = "http://127.0.0.1:1/evil";
    if (mode === "expired") (claims.iat -= 7200), (claims.exp = claims.iat + 60);
    if (mode === "signature") key = (await generateKeyPair("RS256")).privateKey;
    ctx.body = {
      ...ctx.body,
      id_token: await new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid, typ: "JWT" }).sign(key),
    };
    console.log(`tampered ID token: ${mode}`);
  });
}
if (process.env.LOG_REQUESTS === "1") {
  provider.use(async (ctx, next) => {
    await next();
    console.log(`${ctx.method} ${ctx.path} ${ctx.status}`);
  });
}
provider.on("server_error", (_ctx, err) => console.error("server_error:", err));
const server = provider.listen(PORT, "127.0.0.1", () => {
  console.log(`oidc-provider ${ISSUER} ready (resource ${RESOURCE ?? "-"}, keys ${configuration.jwks.keys.map((k) => k.kid).join(",")})`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => server.close(() => process.exit(0)));
