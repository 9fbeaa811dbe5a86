// A scripted browser for proxy mode: from an authorization URL at mcpgate, through mcpgate's
// consent page, the upstream IdP's login and consent (npm oidc-provider's devInteractions), the
// callback at mcpgate, to the redirect back to the MCP client. Cookies are kept per origin by
// hand (`__Host-` cookies are Secure, and this is plain http on loopback).
//
//   const agent = new Agent();
//   const { back, pages } = await agent.signIn(url, { user: "alice", redirect: REDIRECT });
//
// `pages` lists what the user saw: "mcpgate:/authorize/upstream", "mcpgate:/authorize/consent",
// "idp:login", "idp:consent". With `stopAtCallback`, the callback URL is returned unvisited.

export class Agent {
  jars = new Map(); // origin → Map(name → value)
  trace = [];

  async hop(url, init = {}) {
    url = new URL(url);
    const jar = this.jars.get(url.origin) ?? new Map();
    this.jars.set(url.origin, jar);
    const headers = new Headers(init.headers);
    if (jar.size) headers.set("cookie", [...jar].map(([k, v]) => `${k}=${v}`).join("; "));
    const res = await fetch(url, { ...init, headers, redirect: "manual" });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const i = pair.indexOf("=");
      const [name, value] = [pair.slice(0, i), pair.slice(i + 1)];
      if (value === "" || /max-age=0/i.test(c)) jar.delete(name);
      else jar.set(name, value);
    }
    this.trace.push(`${init.method ?? "GET"} ${url.origin}${url.pathname} -> ${res.status}`);
    return res;
  }

  cookie(origin, name) {
    return this.jars.get(origin)?.get(name);
  }

  async signIn(authorizationUrl, { user, redirect, mcpgate, decision = "approve", stopAtCallback = false }) {
    let url = new URL(authorizationUrl);
    const mcpOrigin = mcpgate ?? url.origin;
    const pages = [];
    let res = await this.hop(url);
    for (let step = 0; step < 16; step++) {
      const location = res.headers.get("location");
      if (location) {
        url = new URL(location, url);
        if (url.href.startsWith(redirect)) return { back: url, pages };
        if (stopAtCallback && url.pathname === "/oauth/callback") return { callback: url, pages };
        res = await this.hop(url);
        continue;
      }
      const html = await res.text();
      if (res.status !== 200) return { status: res.status, html, pages, url };
      if (url.origin === mcpOrigin) {
        const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
        const field = (name) => new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1] ?? "";
        if (!action?.startsWith("/authorize/")) return { status: res.status, html, pages, url };
        pages.push(`mcpgate:${action}`);
        const form = new URLSearchParams({ pending: field("pending"), csrf: field("csrf"), decision });
        url = new URL(action, mcpOrigin);
        res = await this.hop(url, {
          method: "POST",
          body: form,
          headers: { "content-type": "application/x-www-form-urlencoded" },
        });
      } else if (url.pathname.startsWith("/interaction/")) {
        const prompt = /name="prompt" value="(\w+)"/.exec(html)?.[1];
        if (prompt !== "login" && prompt !== "consent") throw new Error(`unexpected IdP page: ${html.slice(0, 300)}`);
        pages.push(`idp:${prompt}`);
        const form = new URLSearchParams({ prompt });
        if (prompt === "login") form.set("login", user), form.set("password", "any");
        res = await this.hop(url, {
          method: "POST",
          body: form,
          headers: { "content-type": "application/x-www-form-urlencoded" },
        });
      } else {
        return { status: res.status, html, pages, url };
      }
    }
    throw new Error(`sign-in did not finish: ${this.trace.slice(-6).join(" | ")}`);
  }
}
