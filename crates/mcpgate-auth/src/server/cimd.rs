//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document): a client whose
//! `client_id` is an `https` URL publishes its metadata at that URL, and the authorization server
//! fetches it instead of keeping a registration.
//!
//! Fetching a URL chosen by whoever sends an authorization request is a server-side request
//! forgery hazard, so the fetch is fenced in:
//!
//! 1. [`check_url`]: `https`, a non-root path, no userinfo, fragment or dot segments, already in
//!    canonical form (so the document's `client_id` can be compared as a plain string);
//! 2. [`check_host_policy`]: the configured deny and allow lists of host globs;
//! 3. the host is resolved here, and [`check_addresses`] refuses it if **any** address is private,
//!    loopback, link-local, unique-local, CGNAT, multicast, reserved or a cloud metadata service;
//! 4. the connection is pinned to the checked addresses (a fresh client with DNS overrides, no
//!    proxy), so a second DNS answer cannot swap in an internal address (DNS rebinding);
//! 5. no redirects are followed, the whole exchange has a 5 s deadline, and the body is read as a
//!    stream and abandoned past 5 KB;
//! 6. [`validate_document`]: a JSON object whose `client_id` is the URL, with `client_name` and
//!    `redirect_uris`, no shared secret and no shared-secret authentication method.
//!
//! Valid documents are cached for their `Cache-Control: max-age` (see [`cache_ttl`]); failures
//! never are.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use super::error::OAuthError;
use super::register::{RedirectKind, check_redirect_uri, glob_match};
use super::{AuthServer, MetadataDocumentPolicy};

/// Documents larger than this are refused (draft §6.6 suggests 5 KB).
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// Deadline for resolving, connecting and reading the document.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Cache lifetime when the response says nothing about caching.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Bounds applied to `max-age`.
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_URL_LEN: usize = 2048;
const MAX_CACHED_DOCUMENTS: usize = 1024;

/// Which addresses a fetch may reach.
///
/// Production code always uses [`FetchGuard::STRICT`] through [`fetch_document`]. The only other
/// guard, [`FetchGuard::LOOPBACK_FOR_TESTS`], exists because an integration test cannot obtain a
/// publicly trusted certificate or a public address: it lets a test serve documents over plain
/// `http` from `127.0.0.1` so that everything after the address check (pinning, redirects, size
/// cap, validation, caching) runs for real. It is a function parameter rather than a
/// `#[cfg(test)]` item because integration tests link the crate without `cfg(test)`; no
/// configuration reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchGuard {
    /// Accept `http` URLs and loopback addresses (127.0.0.0/8, ::1). Nothing else is relaxed.
    pub allow_loopback: bool,
}

impl FetchGuard {
    pub const STRICT: Self = Self {
        allow_loopback: false,
    };
    #[doc(hidden)]
    pub const LOOPBACK_FOR_TESTS: Self = Self {
        allow_loopback: true,
    };
}

/// Fetches and validates the metadata document at `url` (an `https` client id).
pub async fn fetch_document(server: &AuthServer, url: &str) -> Result<Value, OAuthError> {
    fetch_document_with(server, url, FetchGuard::STRICT).await
}

/// [`fetch_document`] with an explicit guard. Only tests pass anything but
/// [`FetchGuard::STRICT`]; see [`FetchGuard`].
#[doc(hidden)]
pub async fn fetch_document_with(
    server: &AuthServer,
    url: &str,
    guard: FetchGuard,
) -> Result<Value, OAuthError> {
    fetch(&server.config.metadata_documents, url, guard)
        .await
        .map_err(|why| {
            tracing::warn!(client_id = %url, reason = %why, "client metadata document refused");
            OAuthError::invalid_client(format!("client metadata document {url}: {why}"))
        })
}

async fn fetch(
    policy: &MetadataDocumentPolicy,
    raw: &str,
    guard: FetchGuard,
) -> Result<Value, String> {
    let url = check_url(raw, guard)?;
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err("the URL has no host".into()),
    };
    check_host_policy(policy, &host)?;

    let key = (guard.allow_loopback, raw.to_owned());
    if let Some(document) = CACHE.get(&key, Instant::now()) {
        return Ok(document);
    }

    let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT;
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        _ => tokio::time::timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| "resolving the host timed out".to_owned())?
            .map_err(|e| format!("the host does not resolve ({e})"))?
            .collect(),
    };
    check_addresses(&addrs.iter().map(SocketAddr::ip).collect::<Vec<_>>(), guard)?;

    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(!guard.allow_loopback)
        .connect_timeout(FETCH_TIMEOUT)
        // A backstop: the deadline below is what ends a slow exchange.
        .timeout(FETCH_TIMEOUT + Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")));
    if let Some(url::Host::Domain(_)) = url.host() {
        builder = builder.resolve_to_addrs(&host, &addrs);
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build an HTTP client ({e})"))?;

    let exchange = async {
        let mut response = client
            .get(url.clone())
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("fetching failed ({})", error_chain(&e)))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(format!(
                "the server answered with a redirect (HTTP {}); redirects are not followed",
                status.as_u16()
            ));
        }
        if status != StatusCode::OK {
            return Err(format!("the server answered HTTP {}", status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(format!(
                "the document is larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the document failed ({})", error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!(
                    "the document is larger than {MAX_DOCUMENT_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((headers, body))
    };
    let (headers, body) = tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| format!("fetching timed out after {FETCH_TIMEOUT:?}"))??;

    let document: Value =
        serde_json::from_slice(&body).map_err(|_| "the document is not valid JSON".to_owned())?;
    validate_document(raw, &document)?;
    if let Some(ttl) = cache_ttl(&headers) {
        CACHE.put(key, document.clone(), Instant::now() + ttl);
    }
    Ok(document)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The URL rules of the draft (§3): `https`, a path, no userinfo, fragment or `.`/`..` segments.
/// The URL must also be in the canonical form the `url` crate produces (lower-case host, no
/// default port, no dot segments), so that comparing the document's `client_id` with it as a
/// plain string is sound. With [`FetchGuard::allow_loopback`], `http` is accepted too.
pub fn check_url(raw: &str, guard: FetchGuard) -> Result<url::Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err("the URL is too long".into());
    }
    if raw.contains('#') {
        return Err("the URL must not contain a fragment".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if guard.allow_loopback => {}
        _ => return Err("the URL must use https".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not contain userinfo".into());
    }
    if url.host().is_none() {
        return Err("the URL has no host".into());
    }
    // Dot segments, checked on the raw text (parsing has already removed them from `url`).
    let after_authority = raw
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(raw)
        .split_once('/')
        .map(|(_, path)| path)
        .unwrap_or("");
    let raw_path = after_authority.split('?').next().unwrap_or("");
    if raw_path.split('/').any(|segment| {
        let lower = segment.to_ascii_lowercase();
        matches!(
            lower.as_str(),
            "." | ".." | "%2e" | "%2e." | ".%2e" | "%2e%2e"
        )
    }) {
        return Err("the URL must not contain . or .. path segments".into());
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err("the URL must have a path".into());
    }
    if url.as_str() != raw {
        return Err(format!(
            "the URL is not in canonical form (expected {:?})",
            url.as_str()
        ));
    }
    Ok(url)
}

/// Applies the configured host lists: a host on the deny list is refused; when the allow list
/// is not empty, only hosts on it are accepted. Hosts compare lower-case.
pub fn check_host_policy(policy: &MetadataDocumentPolicy, host: &str) -> Result<(), String> {
    let host = host.to_ascii_lowercase();
    let matches = |pattern: &String| glob_match(&pattern.to_ascii_lowercase(), &host);
    if policy.deny_hosts.iter().any(matches) {
        return Err(format!("the host {host} is denied by this server's policy"));
    }
    if !policy.allow_hosts.is_empty() && !policy.allow_hosts.iter().any(matches) {
        return Err(format!(
            "the host {host} is not on this server's allow-list"
        ));
    }
    Ok(())
}

/// Refuses the fetch unless every address is a public unicast address. With
/// [`FetchGuard::allow_loopback`], loopback addresses are accepted as well.
pub fn check_addresses(addrs: &[IpAddr], guard: FetchGuard) -> Result<(), String> {
    if addrs.is_empty() {
        return Err("the host has no address".into());
    }
    for ip in addrs {
        let ip = ip.to_canonical();
        if guard.allow_loopback && ip.is_loopback() {
            continue;
        }
        if let Some(kind) = forbidden(ip) {
            return Err(format!(
                "the host resolves to {ip}, a {kind} address; only public addresses are fetched"
            ));
        }
    }
    Ok(())
}

/// Why an address must not be reached from the server, if it must not.
fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata service",
        (0, _, _) => "unspecified (this-network)",
        (10, _, _) => "private",
        (100, 64..=127, _) => "shared (CGNAT)",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (172, 16..=31, _) => "private",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay",
        (192, 168, _) => "private",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some("cloud metadata service");
    }
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    Some(match s[0] {
        // ::/96 (IPv4-compatible, deprecated) and ::ffff:0:0/96 (mapped, normally canonicalised
        // before this point): judge the embedded IPv4 address.
        0 if s[1..5] == [0, 0, 0, 0] && (s[5] == 0 || s[5] == 0xffff) => {
            return forbidden_v4(embedded_v4(s[6], s[7])).or(Some("IPv4-embedding"));
        }
        // NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48) reaches IPv4 addresses.
        0x0064 if s[1] == 0xff9b => {
            return forbidden_v4(embedded_v4(s[6], s[7])).or(Some("NAT64"));
        }
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only",
        0x2001 if s[1] == 0 => "Teredo",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x2001 if s[1] < 0x0200 => "IETF protocol assignment",
        // 6to4 (2002::/16) embeds an IPv4 address.
        0x2002 => return forbidden_v4(embedded_v4(s[1], s[2])),
        0x3fff if s[1] < 0x1000 => "documentation",
        x if x & 0xfe00 == 0xfc00 => "unique-local",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        // Only global unicast (2000::/3) is public.
        x if x & 0xe000 != 0x2000 => "reserved",
        _ => return None,
    })
}

/// Checks a fetched document against the draft (§4.1) for the URL it came from.
pub fn validate_document(url: &str, document: &Value) -> Result<(), String> {
    let Some(doc) = document.as_object() else {
        return Err("the document is not a JSON object".into());
    };
    match doc.get("client_id") {
        Some(Value::String(id)) if id == url => {}
        Some(Value::String(id)) => {
            return Err(format!(
                "its client_id {id:?} is not the URL it was fetched from"
            ));
        }
        _ => return Err("the document has no client_id".into()),
    }
    match doc.get("client_name") {
        Some(Value::String(name)) if !name.trim().is_empty() => {
            if name.chars().any(char::is_control) {
                return Err("client_name contains control characters".into());
            }
        }
        _ => return Err("the document has no client_name".into()),
    }
    let redirect_uris = match doc.get("redirect_uris") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => return Err("redirect_uris must be a non-empty array".into()),
    };
    for uri in redirect_uris {
        let Some(uri) = uri.as_str() else {
            return Err("redirect_uris must contain strings".into());
        };
        check_redirect_uri(uri)?;
    }
    if doc.contains_key("client_secret") || doc.contains_key("client_secret_expires_at") {
        return Err("a metadata document must not contain a client secret".into());
    }
    match doc.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) => match m.as_str() {
            "none" => {}
            "private_key_jwt" => match doc.get("jwks_uri").and_then(Value::as_str) {
                Some(jwks) if jwks.starts_with("https://") && url::Url::parse(jwks).is_ok() => {}
                _ => return Err("private_key_jwt needs an https jwks_uri".into()),
            },
            "client_secret_basic" | "client_secret_post" | "client_secret_jwt" => {
                return Err(format!(
                    "token_endpoint_auth_method {m} relies on a shared secret, which a public document cannot hold"
                ));
            }
            other => {
                return Err(format!(
                    "token_endpoint_auth_method {other:?} is not supported"
                ));
            }
        },
        Some(_) => return Err("token_endpoint_auth_method must be a string".into()),
    }
    let confidential = doc
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        == Some("private_key_jwt");
    if let Some(grants) = doc.get("grant_types") {
        let Some(grants) = grants.as_array() else {
            return Err("grant_types must be an array".into());
        };
        for grant in grants {
            match grant.as_str() {
                Some("authorization_code" | "refresh_token") => {}
                Some("client_credentials") if confidential => {}
                _ => return Err(format!("grant type {grant} is not supported")),
            }
        }
    }
    if let Some(types) = doc.get("response_types") {
        let ok = types
            .as_array()
            .is_some_and(|a| a.iter().all(|t| t.as_str() == Some("code")));
        if !ok {
            return Err("response_types may only contain code".into());
        }
    }
    if let Some(scope) = doc.get("scope")
        && !scope.is_string()
    {
        return Err("scope must be a string".into());
    }
    for key in ["client_uri", "logo_uri", "tos_uri", "policy_uri"] {
        if let Some(value) = doc.get(key) {
            let ok = value
                .as_str()
                .and_then(|s| url::Url::parse(s).ok())
                .is_some_and(|u| u.scheme() == "https");
            if !ok {
                return Err(format!("{key} must be an https URL"));
            }
        }
    }
    Ok(())
}

/// How long a valid document may be reused: `None` for `no-store` or `no-cache`, `max-age`
/// clamped to [`MIN_TTL`]..=[`MAX_TTL`], [`DEFAULT_TTL`] when the response says nothing.
pub fn cache_ttl(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return None;
            }
            if name.eq_ignore_ascii_case("max-age") {
                max_age = arg.and_then(|a| a.parse::<u64>().ok());
            }
        }
    }
    Some(max_age.map_or(DEFAULT_TTL, |seconds| {
        Duration::from_secs(seconds).clamp(MIN_TTL, MAX_TTL)
    }))
}

type CacheKey = (bool, String);

/// Valid documents by URL, until their cache lifetime ends. Shared by every [`AuthServer`] in
/// the process: a document is a public resource, and each server still applies its own URL and
/// host policy before looking here.
struct DocumentCache {
    entries: Mutex<HashMap<CacheKey, (Value, Instant)>>,
}

static CACHE: LazyLock<DocumentCache> = LazyLock::new(|| DocumentCache {
    entries: Mutex::new(HashMap::new()),
});

impl DocumentCache {
    fn get(&self, key: &CacheKey, now: Instant) -> Option<Value> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some((doc, expires)) if *expires > now => Some(doc.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: CacheKey, document: Value, expires: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED_DOCUMENTS && !entries.contains_key(&key) {
            let now = Instant::now();
            entries.retain(|_, (_, e)| *e > now);
            if entries.len() >= MAX_CACHED_DOCUMENTS
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(key, (document, expires));
    }
}

/// Whether a redirect URI of a metadata document is only a local listener (the consent page
/// warns about those).
pub fn is_loopback_only(document: &Value) -> bool {
    document
        .get("redirect_uris")
        .and_then(Value::as_array)
        .is_some_and(|uris| {
            !uris.is_empty()
                && uris.iter().all(|u| {
                    u.as_str()
                        .and_then(|u| check_redirect_uri(u).ok())
                        .is_some_and(|k| k == RedirectKind::Loopback)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: FetchGuard = FetchGuard::STRICT;

    #[test]
    fn url_rules() {
        assert!(check_url("https://app.example/client.json", STRICT).is_ok());
        assert!(check_url("https://app.example:8443/oauth/client?v=1", STRICT).is_ok());
        for bad in [
            "http://app.example/client.json",
            "https://app.example",
            "https://app.example/",
            "https://app.example/client.json#x",
            "https://user@app.example/client.json",
            "https://user:pw@app.example/client.json",
            "https://app.example/a/../client.json",
            "https://app.example/./client.json",
            "https://app.example/a/%2e%2e/client.json",
            "https://APP.example/client.json",
            "https://app.example:443/client.json",
            "ftp://app.example/client.json",
            "not a url",
        ] {
            assert!(check_url(bad, STRICT).is_err(), "{bad} accepted");
        }
        assert!(
            check_url(
                "http://127.0.0.1:8080/c.json",
                FetchGuard::LOOPBACK_FOR_TESTS
            )
            .is_ok()
        );
    }

    #[test]
    fn host_lists() {
        let policy = MetadataDocumentPolicy {
            enabled: true,
            allow_hosts: vec![],
            deny_hosts: vec!["*.evil.example".into()],
        };
        assert!(check_host_policy(&policy, "app.example").is_ok());
        assert!(check_host_policy(&policy, "x.evil.example").is_err());
        let policy = MetadataDocumentPolicy {
            enabled: true,
            allow_hosts: vec!["claude.ai".into(), "*.vscode.dev".into()],
            deny_hosts: vec![],
        };
        assert!(check_host_policy(&policy, "claude.ai").is_ok());
        assert!(check_host_policy(&policy, "Insiders.VSCode.dev").is_ok());
        assert!(check_host_policy(&policy, "evil.example").is_err());
    }

    #[test]
    fn addresses() {
        let refused = [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::1",
            "2001:db8::1",
        ];
        for ip in refused {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check_addresses(&[ip], STRICT).is_err(), "{ip} accepted");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check_addresses(&[ip], STRICT).is_ok(), "{ip} refused");
        }
        // One bad address among good ones is enough to refuse.
        let mixed: Vec<IpAddr> = vec!["8.8.8.8".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        assert!(check_addresses(&mixed, STRICT).is_err());
        assert!(check_addresses(&[], STRICT).is_err());
        // The test guard relaxes loopback only.
        let loose = FetchGuard::LOOPBACK_FOR_TESTS;
        assert!(check_addresses(&["127.0.0.1".parse().unwrap()], loose).is_ok());
        assert!(check_addresses(&["::1".parse().unwrap()], loose).is_ok());
        assert!(check_addresses(&["169.254.169.254".parse().unwrap()], loose).is_err());
        assert!(check_addresses(&["10.0.0.1".parse().unwrap()], loose).is_err());
    }

    fn good() -> Value {
        serde_json::json!({
            "client_id": "https://app.example/client.json",
            "client_name": "App",
            "redirect_uris": ["http://127.0.0.1/callback", "https://app.example/cb"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        })
    }

    #[test]
    fn documents() {
        let url = "https://app.example/client.json";
        assert_eq!(validate_document(url, &good()), Ok(()));
        let mutate = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut doc = good();
            f(doc.as_object_mut().unwrap());
            validate_document(url, &doc)
        };
        assert!(
            mutate(&|d| {
                d.insert(
                    "client_id".into(),
                    "https://app.example/client.json/".into(),
                );
            })
            .is_err()
        );
        assert!(
            mutate(&|d| {
                d.remove("client_id");
            })
            .is_err()
        );
        assert!(
            mutate(&|d| {
                d.remove("client_name");
            })
            .is_err()
        );
        assert!(
            mutate(&|d| {
                d.insert("redirect_uris".into(), serde_json::json!([]));
            })
            .is_err()
        );
        assert!(
            mutate(&|d| {
                d.insert(
                    "redirect_uris".into(),
                    serde_json::json!(["javascript:alert(1)"]),
                );
            })
            .is_err()
        );
        assert!(
            mutate(&|d| {
                d.insert("client_secret".into(), "s".into());
            })
            .is_err()
        );
        for method in [
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
        ] {
            assert!(
                mutate(&|d| {
                    d.insert("token_endpoint_auth_method".into(), method.into());
                })
                .is_err()
            );
        }
        assert!(
            mutate(&|d| {
                d.insert(
                    "token_endpoint_auth_method".into(),
                    "private_key_jwt".into(),
                );
            })
            .is_err()
        );
        assert!(
            mutate(&|d| {
                d.insert(
                    "token_endpoint_auth_method".into(),
                    "private_key_jwt".into(),
                );
                d.insert("jwks_uri".into(), "https://app.example/jwks".into());
            })
            .is_ok()
        );
        assert!(validate_document(url, &serde_json::json!([1])).is_err());
        assert!(!is_loopback_only(&good()));
    }

    #[test]
    fn cache_lifetimes() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CACHE_CONTROL, v.parse().unwrap());
            cache_ttl(&h)
        };
        assert_eq!(cache_ttl(&HeaderMap::new()), Some(DEFAULT_TTL));
        assert_eq!(with("no-store"), None);
        assert_eq!(with("public, no-cache"), None);
        assert_eq!(with("max-age=3600"), Some(Duration::from_secs(3600)));
        assert_eq!(with("public, max-age=5"), Some(MIN_TTL));
        assert_eq!(with("max-age=0"), Some(MIN_TTL));
        assert_eq!(with("max-age=99999999"), Some(MAX_TTL));
        assert_eq!(with("public"), Some(DEFAULT_TTL));
    }
}
