//! RFC 7591 dynamic client registration: `POST /register`.
//!
//! Deprecated by the 2026-07-28 revision (client ID metadata documents replace it) but still how
//! most MCP clients register. The endpoint exists only when `registration.enabled`; it can be
//! guarded by an initial access token, is rate-limited per client address, and validates every
//! piece of metadata it keeps:
//!
//! - redirect URIs: `https`, loopback `http` (any port), or a private-use scheme for native apps;
//!   never `javascript:`, `data:`, `file:`, plain `http` elsewhere, or fragments; non-loopback
//!   `https` URIs must match the configured allow-list of patterns when one is set;
//! - `token_endpoint_auth_method` ∈ `none`, `client_secret_basic` (the RFC 7591 default),
//!   `client_secret_post`; a secret is issued for the latter two and only its hash is stored;
//! - `grant_types` ⊆ `authorization_code`, `refresh_token`, `client_credentials` (the last only for
//!   confidential clients registering with the initial access token); `response_types` ⊆ `code`;
//! - `application_type` `native` or `web` (defaulted from the redirect URIs);
//! - `scope` narrowed to the supported scopes; informational URIs `https` only; sizes capped.
//!
//! Unrecognised metadata is dropped (RFC 7591 §2: the server ignores what it does not know), and
//! the answer echoes exactly what was registered.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value};
use tower_http::cors::{Any, CorsLayer};

use super::error::{ErrorCode, OAuthError};
use super::{AuthServer, AuthServerConfig, secrets};
use crate::ScopeSet;
use crate::resource::layer::refuse_unread;
use crate::store::{Client, ClientSource, StoreError};

/// Largest registration request accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Registrations allowed per client address (IPv4 address or IPv6 /64) and minute, as a burst
/// that refills continuously. Generous enough for test suites and hosts that register on every
/// connect, tight enough to stop a flood.
pub const RATE_LIMIT_PER_MINUTE: u32 = 20;

const MAX_REDIRECT_URIS: usize = 20;
const MAX_URI_LEN: usize = 2000;
const MAX_NAME_CHARS: usize = 200;
const MAX_CONTACTS: usize = 10;
const MAX_SHORT_STRING: usize = 320;
const MAX_SCOPE_LEN: usize = 2000;

/// `POST /register`, with CORS for browser-based clients and its own rate limiter.
pub fn router() -> Router<Arc<AuthServer>> {
    let limiter = Arc::new(RateLimiter::new(
        RATE_LIMIT_PER_MINUTE,
        Duration::from_secs(60),
    ));
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("mcp-protocol-version"),
        ])
        .max_age(Duration::from_secs(3600));
    Router::new()
        .route("/register", post(register))
        .layer(cors)
        .layer(Extension(limiter))
}

async fn register(
    State(server): State<Arc<AuthServer>>,
    Extension(limiter): Extension<Arc<RateLimiter>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    match admit(&server, &limiter, &parts) {
        // Refusals before the body is read still drain it, so the connection stays usable.
        Err(refusal) => refuse_unread(body, *refusal).await,
        Ok(authenticated) => match read_json(body).await {
            Err(refusal) => *refusal,
            Ok(request) => match create(&server, &request, authenticated).await {
                Ok(body) => {
                    let mut response = (StatusCode::CREATED, Json(body)).into_response();
                    let headers = response.headers_mut();
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
                    response
                }
                Err(e) => e.into_response(),
            },
        },
    }
}

/// Everything decided from the request head, in order: the endpoint exists, the address is
/// under its rate limit, the initial access token (if one is configured) is right, the body is
/// JSON. `Ok(true)` when the request carried the initial access token.
fn admit(
    server: &AuthServer,
    limiter: &RateLimiter,
    parts: &http::request::Parts,
) -> Result<bool, Box<Response>> {
    let policy = &server.config.registration;
    if !policy.enabled {
        return Err(Box::new(StatusCode::NOT_FOUND.into_response()));
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Err(retry_after) = limiter.check(peer, Instant::now()) {
        let mut e = OAuthError::new(
            ErrorCode::SlowDown,
            "too many registrations from this address; try again later",
        );
        e.retry_after = Some(retry_after);
        return Err(Box::new(e.into_response()));
    }
    let authenticated = match &policy.initial_access_token {
        Some(expected) => match bearer(&parts.headers) {
            // Hashing first makes the comparison independent of the lengths too.
            Some(given) if secrets::equal(&secrets::hash(given), &secrets::hash(expected)) => true,
            given => return Err(Box::new(invalid_token(given.is_some()))),
        },
        None => false,
    };
    if !is_json(&parts.headers) {
        return Err(Box::new(
            metadata_error("the registration request must be application/json").into_response(),
        ));
    }
    Ok(authenticated)
}

async fn read_json(body: axum::body::Body) -> Result<Value, Box<Response>> {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        let mut e = OAuthError::new(
            ErrorCode::InvalidClientMetadata,
            format!("the registration request is larger than {MAX_BODY_BYTES} bytes"),
        );
        e.status = StatusCode::PAYLOAD_TOO_LARGE;
        let mut response = e.into_response();
        // The rest of the body was not read: this connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Err(Box::new(response));
    };
    serde_json::from_slice::<Value>(&bytes).map_err(|_| {
        Box::new(metadata_error("the registration request is not valid JSON").into_response())
    })
}

/// Validates, stores and describes a registration. The answer is the RFC 7591 §3.2.1 body.
async fn create(
    server: &AuthServer,
    request: &Value,
    authenticated: bool,
) -> Result<Map<String, Value>, OAuthError> {
    let registration = validate_metadata(&server.config, request, authenticated)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let secret = registration
        .confidential
        .then(|| format!("mcs_{}", secrets::random_token()));
    // A collision of 192 random bits does not happen; a second attempt covers a broken RNG no
    // better, so a conflict is reported as an outage rather than retried.
    let client_id = new_client_id();
    let client = Client {
        client_id: client_id.clone(),
        secret_hash: secret.as_deref().map(secrets::hash),
        metadata: Value::Object(registration.metadata.clone()),
        source: ClientSource::Dynamic,
        created_at: now,
    };
    server
        .store
        .create_client(&client)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => OAuthError::unavailable("client id collision"),
            other => OAuthError::from(other),
        })?;
    let field = |key: &str| {
        registration
            .metadata
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    tracing::info!(
        client_id = %client_id,
        client_name = %field("client_name"),
        auth_method = %field("token_endpoint_auth_method"),
        "client registered"
    );
    let mut body = Map::new();
    body.insert("client_id".into(), client_id.into());
    body.insert("client_id_issued_at".into(), now.into());
    if let Some(secret) = secret {
        body.insert("client_secret".into(), secret.into());
        body.insert("client_secret_expires_at".into(), 0.into());
    }
    body.extend(registration.metadata);
    Ok(body)
}

/// A registration id: random, and never URL-shaped (CIMD draft §7.1: AS-minted ids must not be
/// mistaken for metadata-document URLs).
fn new_client_id() -> String {
    format!("mcp_{}", &secrets::random_token()[..32])
}

/// What a valid registration request registers.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The metadata kept and echoed: every field normalised and with its default filled in.
    pub metadata: Map<String, Value>,
    /// A secret is issued (`client_secret_basic` or `client_secret_post`).
    pub confidential: bool,
}

/// Checks a registration request against RFC 7591 and this server's policy. `authenticated`:
/// the request carried the initial access token (needed for `client_credentials`).
pub fn validate_metadata(
    config: &AuthServerConfig,
    request: &Value,
    authenticated: bool,
) -> Result<Registration, OAuthError> {
    let Some(request) = request.as_object() else {
        return Err(metadata_error(
            "the registration request must be a JSON object",
        ));
    };
    let mut out = Map::new();

    // Authentication method.
    let auth_method = match optional_str(request, "token_endpoint_auth_method")? {
        None => "client_secret_basic",
        Some(m @ ("none" | "client_secret_basic" | "client_secret_post")) => m,
        Some(other) => {
            return Err(metadata_error(format!(
                "token_endpoint_auth_method {other:?} is not supported; use none, client_secret_basic or client_secret_post"
            )));
        }
    };
    let confidential = auth_method != "none";

    // Grant and response types.
    let grant_types = match optional_str_array(request, "grant_types")? {
        None => vec!["authorization_code".to_owned()],
        Some(list) => dedup(list),
    };
    for grant in &grant_types {
        match grant.as_str() {
            "authorization_code" | "refresh_token" => {}
            "client_credentials" => {
                if !confidential {
                    return Err(metadata_error(
                        "the client_credentials grant needs a confidential client (client_secret_basic or client_secret_post)",
                    ));
                }
                if !authenticated {
                    return Err(metadata_error(
                        "the client_credentials grant is only available to clients registered with an initial access token",
                    ));
                }
            }
            other => {
                return Err(metadata_error(format!(
                    "grant type {other:?} is not supported"
                )));
            }
        }
    }
    let uses_code = grant_types.iter().any(|g| g == "authorization_code");
    if !uses_code && !grant_types.iter().any(|g| g == "client_credentials") {
        return Err(metadata_error(
            "grant_types must include authorization_code or client_credentials",
        ));
    }
    let response_types = match optional_str_array(request, "response_types")? {
        None if uses_code => vec!["code".to_owned()],
        None => Vec::new(),
        Some(list) => dedup(list),
    };
    if let Some(other) = response_types.iter().find(|r| *r != "code") {
        return Err(metadata_error(format!(
            "response type {other:?} is not supported; only code"
        )));
    }
    if uses_code != response_types.iter().any(|r| r == "code") {
        return Err(metadata_error(
            "the authorization_code grant and the code response type go together",
        ));
    }

    // Redirect URIs.
    let redirect_uris = optional_str_array(request, "redirect_uris")?.unwrap_or_default();
    if uses_code && redirect_uris.is_empty() {
        return Err(redirect_error(
            "redirect_uris is required and must not be empty",
        ));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(redirect_error(format!(
            "at most {MAX_REDIRECT_URIS} redirect URIs may be registered"
        )));
    }
    let mut kinds = Vec::with_capacity(redirect_uris.len());
    for uri in &redirect_uris {
        let kind = check_redirect_uri(uri).map_err(redirect_error)?;
        if kind == RedirectKind::Https {
            let allowlist = &config.registration.redirect_uri_allowlist;
            if !allowlist.is_empty() && !allowlist.iter().any(|p| glob_match(p, uri)) {
                return Err(redirect_error(format!(
                    "redirect URI {uri:?} is not on this server's allow-list"
                )));
            }
        }
        kinds.push(kind);
    }
    let redirect_uris = dedup(redirect_uris);

    // Application type (OpenID Connect Registration §2; required of 2026-07-28 clients).
    let all_native = kinds
        .iter()
        .all(|k| matches!(k, RedirectKind::Loopback | RedirectKind::PrivateUse));
    let application_type = match optional_str(request, "application_type")? {
        // A private-use redirect is only allowed to native apps: defaulting a mix of https and
        // private-use URIs to `web` would register what an explicit `web` is refused for.
        None if kinds.contains(&RedirectKind::PrivateUse) => "native",
        None if all_native && !kinds.is_empty() => "native",
        None => "web",
        Some("native") => "native",
        Some("web") => {
            if kinds.contains(&RedirectKind::PrivateUse) {
                return Err(redirect_error(
                    "a web application cannot use private-use URI scheme redirects; register it as native",
                ));
            }
            "web"
        }
        Some(other) => {
            return Err(metadata_error(format!(
                "application_type {other:?} is not supported; use native or web"
            )));
        }
    };

    out.insert("redirect_uris".into(), redirect_uris.into());
    out.insert("token_endpoint_auth_method".into(), auth_method.into());
    out.insert("grant_types".into(), grant_types.into());
    out.insert("response_types".into(), response_types.into());
    out.insert("application_type".into(), application_type.into());

    // Human-readable metadata.
    if let Some(name) = optional_str(request, "client_name")? {
        let name = name.trim();
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(metadata_error(format!(
                "client_name is longer than {MAX_NAME_CHARS} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(metadata_error("client_name contains control characters"));
        }
        if !name.is_empty() {
            out.insert("client_name".into(), name.into());
        }
    }
    for key in ["client_uri", "logo_uri", "tos_uri", "policy_uri"] {
        if let Some(uri) = optional_str(request, key)? {
            check_https_uri(uri).map_err(|why| metadata_error(format!("{key}: {why}")))?;
            out.insert(key.into(), uri.into());
        }
    }
    if let Some(contacts) = optional_str_array(request, "contacts")? {
        if contacts.len() > MAX_CONTACTS
            || contacts
                .iter()
                .any(|c| c.len() > MAX_SHORT_STRING || c.chars().any(char::is_control))
        {
            return Err(metadata_error("contacts is too long or malformed"));
        }
        out.insert("contacts".into(), contacts.into());
    }
    for key in ["software_id", "software_version"] {
        if let Some(value) = optional_str(request, key)? {
            if value.len() > MAX_SHORT_STRING || value.chars().any(char::is_control) {
                return Err(metadata_error(format!("{key} is too long or malformed")));
            }
            out.insert(key.into(), value.into());
        }
    }

    // Scope: what the client may ever ask for, narrowed to what this server knows. Nothing left
    // means the same as no declaration (the server's own scope policy applies).
    if let Some(scope) = optional_str(request, "scope")? {
        if scope.len() > MAX_SCOPE_LEN {
            return Err(metadata_error("scope is too long"));
        }
        let narrowed: ScopeSet = ScopeSet::parse(scope)
            .iter()
            .filter(|s| {
                config
                    .scopes_supported
                    .iter()
                    .any(|supported| supported == s)
            })
            .collect();
        if !narrowed.is_empty() {
            out.insert("scope".into(), narrowed.to_string().into());
        }
    }

    Ok(Registration {
        metadata: out,
        confidential,
    })
}

/// The kinds of redirect URI a client may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `https://…` (web applications, claimed https URIs of native apps).
    Https,
    /// `http://localhost|127.x|[::1]:any-port/…` (a native app's listener, RFC 8252 §7.3).
    Loopback,
    /// `com.example.app:/callback` (a native app's private-use scheme, RFC 8252 §7.1).
    PrivateUse,
}

/// Schemes that are never a redirect target: script and data carriers, local files, browser
/// internals, and protocols that are not an app hand-off.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "vbscript",
    "data",
    "file",
    "blob",
    "filesystem",
    "about",
    "view-source",
    "ftp",
    "ws",
    "wss",
    "mailto",
    "tel",
    "sms",
    "urn",
    "jar",
    "intent",
];

/// Classifies a redirect URI, or says why it is refused: absolute, no fragment, no userinfo, and
/// `https`, loopback `http`, or a private-use scheme.
pub fn check_redirect_uri(raw: &str) -> Result<RedirectKind, String> {
    if raw.len() > MAX_URI_LEN {
        return Err(format!(
            "redirect URI is longer than {MAX_URI_LEN} characters"
        ));
    }
    if raw.contains('#') {
        return Err(format!("redirect URI {raw:?} must not contain a fragment"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "redirect URI {raw:?} contains whitespace or control characters"
        ));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| format!("redirect URI {raw:?} is not an absolute URI ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("redirect URI {raw:?} must not contain userinfo"));
    }
    let scheme = url.scheme();
    if matches!(scheme, "http" | "https") {
        // The WHATWG parser forgives `https:///host` or `https:\\host`; a registered URI must
        // say what it means, because it is later compared as a plain string.
        let rest = &raw[scheme.len()..];
        if !rest.starts_with("://") || rest[3..].starts_with(['/', '\\']) {
            return Err(format!("redirect URI {raw:?} is malformed"));
        }
    }
    match scheme {
        "https" => {
            if url.host().is_none() {
                return Err(format!("redirect URI {raw:?} has no host"));
            }
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            Ok(if loopback {
                RedirectKind::Loopback
            } else {
                RedirectKind::Https
            })
        }
        "http" => {
            if super::clients::is_loopback_redirect(&url) {
                Ok(RedirectKind::Loopback)
            } else {
                Err(format!(
                    "redirect URI {raw:?} uses plain http; only https or loopback (localhost, 127.0.0.1, [::1]) are allowed"
                ))
            }
        }
        s if FORBIDDEN_SCHEMES.contains(&s) => Err(format!(
            "redirect URI {raw:?} uses the {s}: scheme, which is never allowed"
        )),
        // Private-use schemes (RFC 8252 §7.1). Reverse-DNS names (`com.example.app`) are what the
        // RFC asks for; single-label ones (`cursor://…`, `vscode://…`) are what real native
        // clients use, so they are accepted too. `url` already enforces RFC 3986 scheme syntax.
        _ => Ok(RedirectKind::PrivateUse),
    }
}

/// An informational URI (`client_uri`, `logo_uri`, …): https, absolute, no userinfo or fragment.
fn check_https_uri(raw: &str) -> Result<(), String> {
    if raw.len() > MAX_URI_LEN {
        return Err("URI is too long".into());
    }
    let url = url::Url::parse(raw).map_err(|_| format!("{raw:?} is not an absolute URI"))?;
    if url.scheme() != "https" || url.host().is_none() {
        return Err(format!("{raw:?} must be an https URI"));
    }
    if !url.username().is_empty() || url.password().is_some() || raw.contains('#') {
        return Err(format!("{raw:?} must not contain userinfo or a fragment"));
    }
    Ok(())
}

/// Glob match where `*` stands for any run of characters that cannot end a URI component
/// (`/`, `\`, `?`, `#`, `@`, whitespace), so `https://*.example.com/cb` never matches
/// `https://evil.test/.example.com/cb`. Case-sensitive, like redirect-URI matching.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn crosses(c: char) -> bool {
        matches!(c, '/' | '\\' | '?' | '#' | '@') || c.is_whitespace()
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with backtracking to the last star; a star may only extend over
    // characters that do not cross a component boundary.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            if crosses(t[st]) {
                return false;
            }
            star = Some((sp, st + 1));
            pi = sp + 1;
            ti = st + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn dedup(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

fn optional_str<'a>(
    request: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, OAuthError> {
    match request.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(metadata_error(format!("{key} must be a string"))),
    }
}

fn optional_str_array(
    request: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<String>>, OAuthError> {
    match request.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| metadata_error(format!("{key} must be an array of strings"))),
        Some(_) => Err(metadata_error(format!("{key} must be an array of strings"))),
    }
}

fn metadata_error(description: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, description)
}

fn redirect_error(description: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRedirectUri, description)
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// RFC 7591 §3 / RFC 6750 §3: a missing or wrong initial access token.
fn invalid_token(presented: bool) -> Response {
    let (challenge, body) = if presented {
        (
            "Bearer realm=\"mcpgate\", error=\"invalid_token\", error_description=\"the initial access token is not valid\"",
            serde_json::json!({"error": "invalid_token", "error_description": "the initial access token is not valid"}),
        )
    } else {
        (
            "Bearer realm=\"mcpgate\"",
            serde_json::json!({"error": "invalid_token", "error_description": "registration requires an initial access token"}),
        )
    };
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Token buckets per client address. IPv6 addresses count per /64 (one host usually owns the
/// whole prefix); requests without a known peer address (a server not started with
/// `into_make_service_with_connect_info`) share one bucket.
pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

const MAX_TRACKED_ADDRESSES: usize = 10_000;

impl RateLimiter {
    /// `burst` requests at once, refilled at `burst` per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            capacity: f64::from(burst.max(1)),
            per_second: f64::from(burst.max(1)) / window.as_secs_f64().max(0.001),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `peer`, or says in how many seconds one will be available.
    pub fn check(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let key = match peer.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            Some(v4) => v4,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_ADDRESSES && !buckets.contains_key(&key) {
            // Forget addresses whose bucket has refilled: they are indistinguishable from new ones.
            let full_after = Duration::from_secs_f64(self.capacity / self.per_second);
            buckets.retain(|_, (_, last)| now.saturating_duration_since(*last) < full_after);
        }
        let (tokens, last) = buckets.entry(key).or_insert((self.capacity, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_second).min(self.capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthServerConfig {
        AuthServerConfig {
            issuer: "https://as.example".into(),
            resources: vec!["https://as.example/mcp".into()],
            scopes_supported: vec!["mcp:tools".into(), "mcp:admin".into()],
            scope_descriptions: vec![],
            default_scope: ScopeSet::parse("mcp:tools"),
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(3600),
            code_ttl: Duration::from_secs(60),
            refresh_grace: Duration::from_secs(10),
            pending_ttl: Duration::from_secs(600),
            session_ttl: Duration::from_secs(3600),
            registration: Default::default(),
            metadata_documents: Default::default(),
        }
    }

    #[test]
    fn redirect_uri_kinds() {
        use RedirectKind::*;
        assert_eq!(check_redirect_uri("https://app.example/cb"), Ok(Https));
        assert_eq!(
            check_redirect_uri("http://127.0.0.1:5555/callback"),
            Ok(Loopback)
        );
        assert_eq!(check_redirect_uri("http://localhost/cb"), Ok(Loopback));
        assert_eq!(check_redirect_uri("http://[::1]:8/cb"), Ok(Loopback));
        assert_eq!(check_redirect_uri("com.example.app:/cb"), Ok(PrivateUse));
        assert_eq!(
            check_redirect_uri("cursor://anysphere.cursor-mcp/oauth/callback"),
            Ok(PrivateUse)
        );
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "file:///etc/passwd",
            "http://app.example/cb",
            "http://localhost.evil.example/cb",
            "https://app.example/cb#frag",
            "https://app.example/cb#",
            "https://user:pw@app.example/cb",
            "/relative/cb",
            "cb",
            "https:///nohost",
            "https://app.example/c b",
            "https:\\\\app.example/cb",
            "https:/app.example/cb",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn globs_stay_inside_components() {
        assert!(glob_match(
            "https://*.vscode.dev/redirect",
            "https://insiders.vscode.dev/redirect"
        ));
        assert!(!glob_match(
            "https://*.vscode.dev/redirect",
            "https://evil.test/.vscode.dev/redirect"
        ));
        assert!(!glob_match(
            "https://*.vscode.dev/redirect",
            "https://evil.test\\.vscode.dev/redirect"
        ));
        assert!(!glob_match(
            "https://*.vscode.dev/redirect",
            "https://vscode.dev/redirect"
        ));
        assert!(glob_match(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback"
        ));
        assert!(!glob_match(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback2"
        ));
        assert!(glob_match(
            "https://chatgpt.com/connector/oauth/*",
            "https://chatgpt.com/connector/oauth/abc123"
        ));
        assert!(!glob_match(
            "https://chatgpt.com/connector/oauth/*",
            "https://chatgpt.com/connector/oauth/a/b"
        ));
        assert!(glob_match("*.example.com", "a.example.com"));
        assert!(glob_match("*", "anything.example"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn defaults_follow_rfc7591() {
        let r = validate_metadata(
            &config(),
            &serde_json::json!({"redirect_uris": ["http://localhost:3000/callback"], "client_name": "x"}),
            false,
        )
        .unwrap();
        assert!(r.confidential);
        assert_eq!(
            r.metadata["token_endpoint_auth_method"],
            "client_secret_basic"
        );
        assert_eq!(
            r.metadata["grant_types"],
            serde_json::json!(["authorization_code"])
        );
        assert_eq!(r.metadata["response_types"], serde_json::json!(["code"]));
        assert_eq!(r.metadata["application_type"], "native");

        let r = validate_metadata(
            &config(),
            &serde_json::json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none", "scope": "mcp:tools openid", "unknown": 1}),
            false,
        )
        .unwrap();
        assert!(!r.confidential);
        assert_eq!(r.metadata["application_type"], "web");
        assert_eq!(r.metadata["scope"], "mcp:tools");
        assert!(!r.metadata.contains_key("unknown"));
    }

    #[test]
    fn inconsistent_metadata_is_refused() {
        let cases = [
            serde_json::json!({"redirect_uris": []}),
            serde_json::json!({}),
            serde_json::json!({"redirect_uris": "https://app.example/cb"}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["refresh_token"]}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"]}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["authorization_code"], "response_types": []}),
            serde_json::json!({"redirect_uris": ["com.example.app:/cb"], "application_type": "web"}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "application_type": "service"}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "logo_uri": "javascript:alert(1)"}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "client_uri": "http://a.example/"}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "client_name": "x".repeat(201)}),
            serde_json::json!({"redirect_uris": ["https://a.example/cb"], "client_name": 5}),
        ];
        for case in cases {
            assert!(
                validate_metadata(&config(), &case, false).is_err(),
                "{case} accepted"
            );
        }
        // client_credentials: confidential and authenticated only.
        let cc = serde_json::json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_post"});
        assert!(validate_metadata(&config(), &cc, false).is_err());
        let r = validate_metadata(&config(), &cc, true).unwrap();
        assert_eq!(r.metadata["response_types"], serde_json::json!([]));
    }

    #[test]
    fn limiter_refills() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "2001:db8::1".parse().unwrap();
        let same64: IpAddr = "2001:db8::2".parse().unwrap();
        let t = Instant::now();
        assert!(limiter.check(Some(ip), t).is_ok());
        assert!(limiter.check(Some(ip), t).is_ok());
        assert_eq!(limiter.check(Some(ip), t), Err(30));
        assert!(limiter.check(Some(other), t).is_ok());
        assert!(limiter.check(Some(same64), t).is_ok());
        assert!(limiter.check(Some(same64), t).is_err());
        assert!(limiter.check(Some(ip), t + Duration::from_secs(30)).is_ok());
    }
}
