//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay tests
//! (`tests/fuzz_corpus.rs`): each takes the raw bytes a peer controls and drives the same code the
//! network does, asserting the invariants that are cheap to state. A panic here is a bug in the
//! code under test (or in the invariant).
//!
//! Not a stable API: it exists for testing only.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::ScopeSet;
use crate::keys::KeyManager;
use crate::resource::audience::AudiencePolicy;
use crate::resource::bearer::{self, BearerError};
use crate::resource::claims::{AccessClaims, ClaimRules, now_secs};
use crate::resource::jwt::looks_like_jwt;
use crate::resource::local::{LocalJwtVerifier, RevocationList};
use crate::resource::verifier::Verifier;
use crate::server::cimd::{self, FetchGuard};
use crate::server::clients::{AuthMethod, ClientKind, ResolvedClient, redirect_uri_matches};
use crate::server::register::{check_redirect_uri, validate_metadata};
use crate::server::token::decode_access_token;
use crate::server::{
    AuthServer, AuthServerConfig, MetadataDocumentPolicy, RegistrationPolicy, secrets,
};
use crate::store::sqlite::SqliteStore;
use crate::store::{Client, ClientSource, Store};

/// The issuer of the fixture server.
pub const ISSUER: &str = "https://as.fuzz.example";
/// Its canonical resources.
pub const RESOURCES: [&str; 2] = ["https://as.fuzz.example/mcp", "https://as.fuzz.example/sse"];
/// Registered clients of the fixture server: id, secret, redirect URIs.
pub const CLIENTS: [(&str, Option<&str>, &[&str]); 3] = [
    (
        "public-app",
        None,
        &["https://app.example/cb", "http://127.0.0.1/callback"],
    ),
    (
        "conf-app",
        Some("conf-secret"),
        &["https://conf.example/cb"],
    ),
    (
        "post-app",
        Some("post-secret"),
        &["https://post.example/cb"],
    ),
];

struct Env {
    rt: tokio::runtime::Runtime,
    server: Arc<AuthServer>,
    app: Router,
    local: LocalJwtVerifier,
    rules: ClaimRules,
}

/// The fixture authorization server, as its tests configure it.
pub fn config() -> AuthServerConfig {
    AuthServerConfig {
        issuer: ISSUER.into(),
        resources: RESOURCES.map(str::to_owned).to_vec(),
        scopes_supported: vec![
            "mcp:tools:read".into(),
            "mcp:tools:write".into(),
            "mcp:admin".into(),
        ],
        scope_descriptions: vec![],
        default_scope: ScopeSet::parse("mcp:tools:read"),
        access_token_ttl: Duration::from_secs(3600),
        refresh_token_ttl: Duration::from_secs(86400),
        code_ttl: Duration::from_secs(60),
        refresh_grace: Duration::from_secs(5),
        pending_ttl: Duration::from_secs(600),
        session_ttl: Duration::from_secs(3600),
        registration: RegistrationPolicy {
            enabled: true,
            initial_access_token: None,
            redirect_uri_allowlist: vec!["https://*.example/**".into()],
        },
        // Never on: a metadata-document client id would make the target fetch from the network.
        metadata_documents: MetadataDocumentPolicy::default(),
    }
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (server, local) = rt.block_on(async {
            let store = Arc::new(
                SqliteStore::open("sqlite::memory:")
                    .await
                    .expect("an in-memory store"),
            );
            let keys = KeyManager::load_or_create(store.clone())
                .await
                .expect("a signing key");
            for (id, secret, redirects) in CLIENTS {
                let method = match id {
                    "conf-app" => "client_secret_basic",
                    "post-app" => "client_secret_post",
                    _ => "none",
                };
                store
                    .create_client(&Client {
                        client_id: id.into(),
                        secret_hash: secret.map(secrets::hash),
                        metadata: json!({
                            "redirect_uris": redirects,
                            "token_endpoint_auth_method": method,
                            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
                        }),
                        source: ClientSource::Admin,
                        created_at: now_secs(),
                    })
                    .await
                    .expect("a fixture client");
            }
            let server = AuthServer::new(config(), store, keys.clone(), reqwest::Client::new());
            let local =
                LocalJwtVerifier::new(keys, Arc::new(RevocationList::default()), rules());
            (server, local)
        });
        let app = server.router();
        Env {
            rt,
            server,
            app,
            local,
            rules: rules(),
        }
    })
}

fn rules() -> ClaimRules {
    ClaimRules {
        issuer: ISSUER.into(),
        audiences: AudiencePolicy::new(RESOURCES.map(str::to_owned), ["api://fuzz".to_owned()]),
        leeway: Duration::from_secs(30),
        exposed_claims: vec!["email".into()],
    }
}

/// Splits off the first line (without its `\n`).
fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn send(request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let env = env();
    env.rt.block_on(async {
        let response = match env.app.clone().oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        (status, headers, body)
    })
}

// ---------------------------------------------------------------------------------------------
// Authorization header → bearer token → JWT verification

/// `data[0]` even: the rest is `Authorization` header values, one per line (a line starting
/// with `?` is the query string), verified by the built-in server's verifier. Odd: the rest is a
/// JSON claims set, signed with the server's own key and then verified, so the claim checks
/// after the signature are reached.
pub fn bearer_jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let env = env();
    if mode % 2 == 1 {
        let Ok(claims) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        let Ok(token) = env.server.keys.sign(&claims) else {
            return;
        };
        check_token(env, &token, Some(&claims));
        return;
    }
    let mut headers = HeaderMap::new();
    let mut query = None;
    for line in rest.split(|b| *b == b'\n') {
        if let Some(q) = line.strip_prefix(b"?") {
            query = std::str::from_utf8(q).ok();
        } else if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(header::AUTHORIZATION, value);
        }
    }
    let values = headers.get_all(header::AUTHORIZATION).iter().count();
    match bearer::extract(&headers, query) {
        Ok(token) => {
            assert_eq!(values, 1, "a token was taken from {values} headers");
            assert!(!token.is_empty());
            assert!(
                token.bytes().all(|b| b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')),
                "{token:?} is no b64token"
            );
            let header = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(header.ends_with(token));
            assert!(header[..6].eq_ignore_ascii_case("bearer"));
            check_token(env, token, None);
        }
        Err(BearerError::Missing) => assert_eq!(values, 0),
        Err(BearerError::Duplicated) => assert!(values > 1),
        Err(BearerError::InQuery) => assert!(query.is_some_and(|q| q.contains("access_token"))),
        Err(BearerError::Malformed) => {}
    }
}

fn check_token(env: &Env, token: &str, signed_claims: Option<&Value>) {
    // The pieces every verifier runs before any key is involved.
    let shaped = looks_like_jwt(token);
    let _ = jsonwebtoken::decode_header(token);
    if let Ok(claims) = jsonwebtoken::dangerous::insecure_decode_claims::<AccessClaims>(token) {
        let _ = claims.scopes();
        let _ = claims.into_principal(&env.rules);
    }
    let verified = env.rt.block_on(env.local.verify(token));
    match &verified {
        Ok(Some(principal)) => {
            assert!(shaped);
            // Only a token we signed can pass; its claims must have passed every rule.
            let claims = signed_claims.expect("a forged token was accepted");
            assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
            assert_eq!(principal.issuer, ISSUER);
            assert!(!principal.subject.is_empty());
            let exp = claims.get("exp").and_then(Value::as_i64);
            assert!(exp.is_some_and(|exp| exp + 30 >= now_secs()));
            assert!(
                env.rules
                    .audiences
                    .accepts_any(principal.audience.iter().map(String::as_str))
            );
        }
        Ok(None) => assert!(!shaped),
        Err(_) => {}
    }
    // Introspection and revocation read this server's tokens through another decoder: it must
    // not accept what the verifier refuses.
    if let Some(claims) = decode_access_token(&env.server, token, true) {
        assert!(signed_claims.is_some(), "a forged token was decoded");
        assert_eq!(claims.iss, ISSUER);
        assert!(claims.exp > now_secs());
    }
}

// ---------------------------------------------------------------------------------------------
// Token, revocation and introspection endpoints

/// `data[0]` picks the endpoint; then one line of `Authorization` header (empty: none); the rest
/// is the form body.
pub fn token_endpoint(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let path = match which % 4 {
        0 | 1 => "/token",
        2 => "/revoke",
        _ => "/introspect",
    };
    let (authorization, body) = first_line(rest);
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if !authorization.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(authorization)
    {
        request = request.header(header::AUTHORIZATION, value);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let (status, headers, body) = send(request);
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{path}: {status}"
    );
    if status.is_client_error() {
        let error: Value = serde_json::from_slice(&body).expect("an OAuth error body is JSON");
        assert!(error["error"].is_string(), "{error}");
        assert_eq!(
            headers
                .get(header::CACHE_CONTROL)
                .map(HeaderValue::as_bytes),
            Some(&b"no-store"[..]),
            "{path}: {status} without Cache-Control: no-store"
        );
    }
    if path == "/token" && status == StatusCode::OK {
        let answer: Value = serde_json::from_slice(&body).expect("a token response is JSON");
        let token = answer["access_token"].as_str().expect("an access token");
        let env = env();
        assert!(matches!(
            env.rt.block_on(env.local.verify(token)),
            Ok(Some(_))
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Authorization endpoint

/// `data[0]` even: the rest is the query string of `GET /authorize` (bytes a URI cannot carry
/// are percent-encoded first); odd: the form body of `POST /authorize`.
pub fn authorize(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let request = if mode % 2 == 0 {
        let mut uri = String::from("/authorize?");
        for &b in rest {
            if b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'#' | b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
                )
            {
                uri.push(char::from(b));
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
        Request::builder().uri(uri).body(Body::empty())
    } else {
        Request::builder()
            .method(Method::POST)
            .uri("/authorize")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(rest.to_vec()))
    };
    let Ok(request) = request else {
        return;
    };
    let (status, headers, _) = send(request);
    assert!(
        matches!(status.as_u16(), 200 | 303 | 400 | 413 | 415 | 503),
        "/authorize: {status}"
    );
    if status.is_redirection() {
        let location = headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("a redirect has a Location");
        assert_redirect_registered(location);
    }
}

/// The authorization endpoint never redirects anywhere but a registered redirect URI (loopback:
/// any port) with the answer added to its query.
fn assert_redirect_registered(location: &str) {
    let url = url::Url::parse(location).expect("an absolute Location");
    assert!(url.fragment().is_none(), "{location}");
    assert!(
        url.query_pairs().any(|(k, v)| k == "iss" && v == ISSUER),
        "{location} has no iss"
    );
    let mut base = url.clone();
    base.set_query(None);
    let registered = CLIENTS
        .iter()
        .flat_map(|(_, _, uris)| uris.iter())
        .any(|uri| redirect_uri_matches(uri, base.as_str()));
    assert!(registered, "redirected to an unregistered URI: {location}");
}

// ---------------------------------------------------------------------------------------------
// Dynamic client registration

/// The body of `POST /register`, validated as the endpoint does; what is registered validates
/// again to itself (the server echoes exactly what it keeps).
pub fn register(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let config = config();
    for authenticated in [false, true] {
        let Ok(registration) = validate_metadata(&config, &request, authenticated) else {
            continue;
        };
        let again = validate_metadata(
            &config,
            &Value::Object(registration.metadata.clone()),
            authenticated,
        )
        .unwrap_or_else(|e| panic!("registered metadata no longer validates: {}", e.description));
        assert_eq!(again, registration, "validation is not idempotent");
        for uri in registration.metadata["redirect_uris"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let uri = uri.as_str().expect("redirect URIs are strings");
            assert!(check_redirect_uri(uri).is_ok(), "{uri}");
        }
        let client = ResolvedClient::from_metadata(
            "fuzz",
            &Value::Object(registration.metadata.clone()),
            registration.confidential.then(|| secrets::hash("x")),
            ClientKind::Registered(ClientSource::Dynamic),
        );
        assert_eq!(client.is_confidential(), registration.confidential);
        // A self-registered client never gets a scope ceiling.
        assert!(client.scope.is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Client ID metadata documents

/// Line 1: the client id URL; line 2: the `Cache-Control` of the response; the rest: the fetched
/// document, checked as a fetch would check it.
pub fn cimd(data: &[u8]) {
    let (url, rest) = first_line(data);
    let (cache_control, document) = first_line(rest);
    let Ok(url) = std::str::from_utf8(url) else {
        return;
    };
    for guard in [FetchGuard::STRICT, FetchGuard::LOOPBACK_FOR_TESTS] {
        if let Ok(parsed) = cimd::check_url(url, guard) {
            assert!(guard.allow_loopback || parsed.scheme() == "https");
            assert!(parsed.fragment().is_none() && parsed.username().is_empty());
            if let Some(host) = parsed.host_str() {
                let policy = MetadataDocumentPolicy {
                    enabled: true,
                    allow_hosts: vec!["*.example".into(), "app.*.test".into()],
                    deny_hosts: vec!["evil.example".into()],
                };
                let _ = cimd::check_host_policy(&policy, host);
            }
        }
    }
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(cache_control) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    if let Some(ttl) = cimd::cache_ttl(&headers) {
        assert!((cimd::MIN_TTL..=cimd::MAX_TTL).contains(&ttl), "{ttl:?}");
    }
    if document.len() > cimd::MAX_DOCUMENT_BYTES {
        return;
    }
    let Ok(document) = serde_json::from_slice::<Value>(document) else {
        return;
    };
    let _ = cimd::is_loopback_only(&document);
    if cimd::validate_document(url, &document).is_ok() {
        let client =
            ResolvedClient::from_metadata(url, &document, None, ClientKind::MetadataDocument);
        assert_eq!(client.client_id, url);
        assert!(!client.redirect_uris.is_empty());
        assert!(client.secret_hash.is_none());
        assert!(matches!(
            client.auth_method,
            AuthMethod::None | AuthMethod::PrivateKeyJwt
        ));
        assert!(client.scope.is_none());
        for uri in &client.redirect_uris {
            assert!(check_redirect_uri(uri).is_ok(), "{uri}");
        }
    }
}
