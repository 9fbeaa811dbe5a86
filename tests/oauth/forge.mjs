// Forge access tokens for the negative tests, with the IdP's own private keys (the JWKS_FILE of
// tools/peers/idp/oidc.mjs) or deliberately broken. Prints the token on stdout.
//
//   node forge.mjs --keys FILE --iss ISS --aud AUD [options] KIND
//
// Options: --kid rs-1 (signing key from the file), --sub, --scope, --exp-in S (default 300),
//   --nbf-in S, --iat-in S, --typ (default at+jwt; "none" omits it), --token T (for tamper-*),
//   --client-id.
// KIND:
//   valid            a well-formed RFC 9068 token signed by --kid
//   alg-none         header alg "none", empty signature
//   alg-none-sig     header alg "none", with the signature of a valid token kept
//   hs256-pubkey     HS256 with the RSA public key (PEM, then JWK JSON: see --secret-form) as secret
//   unknown-kid      signed by a fresh key whose kid ("forged-…") the IdP never published
//   unknown-key      signed by a fresh key but claiming the IdP's --kid
//   tamper-sig       --token (or a valid token) with one signature byte changed
//   tamper-payload   --token (or a valid token) with its payload rewritten (scope mcp:admin), old signature
import fs from "node:fs";
import { parseArgs } from "node:util";
import { createPublicKey, createHmac, randomUUID } from "node:crypto";
import { createRequire } from "node:module";

// jose comes from tools/peers/node_modules (pinned), wherever this file is run from.
const require = createRequire(new URL("../../tools/peers/package.json", import.meta.url));
const { SignJWT, importJWK, generateKeyPair, exportJWK } = await import(require.resolve("jose"));

const { values: o, positionals } = parseArgs({
  options: {
    keys: { type: "string" },
    kid: { type: "string", default: "rs-1" },
    iss: { type: "string" },
    aud: { type: "string" },
    sub: { type: "string", default: "forged-user" },
    scope: { type: "string", default: "mcp:tools:read" },
    "client-id": { type: "string", default: "forge" },
    "exp-in": { type: "string", default: "300" },
    "nbf-in": { type: "string" },
    "iat-in": { type: "string", default: "0" },
    typ: { type: "string", default: "at+jwt" },
    token: { type: "string" },
    "secret-form": { type: "string", default: "pem" },
  },
  allowPositionals: true,
});
const kind = positionals[0] ?? "valid";
const now = Math.floor(Date.now() / 1000);
const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

function claims() {
  const c = {
    iss: o.iss,
    sub: o.sub,
    aud: o.aud,
    exp: now + Number(o["exp-in"]),
    iat: now + Number(o["iat-in"]),
    jti: randomUUID(),
    client_id: o["client-id"],
    scope: o.scope,
  };
  if (o["nbf-in"] !== undefined) c.nbf = now + Number(o["nbf-in"]);
  return c;
}

function keyFromFile(kid) {
  const jwks = JSON.parse(fs.readFileSync(o.keys, "utf8"));
  const jwk = jwks.keys.find((k) => k.kid === kid);
  if (!jwk) throw new Error(`no key ${kid} in ${o.keys}`);
  return jwk;
}

async function sign(jwk, header = {}) {
  const key = await importJWK(jwk, jwk.alg);
  const h = { alg: jwk.alg, kid: jwk.kid, ...header };
  if (o.typ !== "none") h.typ = o.typ;
  return new SignJWT(claims()).setProtectedHeader(h).sign(key);
}

const valid = () => sign(keyFromFile(o.kid));

async function forge() {
  switch (kind) {
    case "valid":
      return valid();
    case "alg-none":
      return `${b64({ alg: "none", typ: "at+jwt", kid: o.kid })}.${b64(claims())}.`;
    case "alg-none-sig": {
      const sig = (await valid()).split(".")[2];
      return `${b64({ alg: "none", typ: "at+jwt", kid: o.kid })}.${b64(claims())}.${sig}`;
    }
    case "hs256-pubkey": {
      // The classic key-confusion attack: HMAC keyed with the verifier's public RSA key.
      const jwk = keyFromFile(o.kid);
      const { d, p, q, dp, dq, qi, ...pub } = jwk;
      const secret =
        o["secret-form"] === "jwk"
          ? JSON.stringify(pub)
          : createPublicKey({ key: pub, format: "jwk" }).export({ type: "spki", format: "pem" });
      const input = `${b64({ alg: "HS256", typ: "at+jwt", kid: o.kid })}.${b64(claims())}`;
      return `${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`;
    }
    case "unknown-kid":
    case "unknown-key": {
      const { privateKey } = await generateKeyPair("RS256", { extractable: true });
      const jwk = { ...(await exportJWK(privateKey)), alg: "RS256" };
      jwk.kid = kind === "unknown-kid" ? `forged-${randomUUID().slice(0, 8)}` : o.kid;
      return sign(jwk);
    }
    case "tamper-sig": {
      const [h, p, s] = (o.token ?? (await valid())).split(".");
      const bytes = Buffer.from(s, "base64url");
      bytes[Math.floor(bytes.length / 2)] ^= 0x01;
      return `${h}.${p}.${bytes.toString("base64url")}`;
    }
    case "tamper-payload": {
      const [h, p, s] = (o.token ?? (await valid())).split(".");
      const payload = JSON.parse(Buffer.from(p, "base64url").toString());
      payload.scope = "mcp:admin mcp:tools:write mcp:tools:read";
      return `${h}.${b64(payload)}.${s}`;
    }
    default:
      throw new Error(`unknown kind ${kind}`);
  }
}

process.stdout.write(await forge());
