//! The authorization endpoint with its login and consent pages, driven in-process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, Response, StatusCode, header};
use mcpgate_auth::ScopeSet;
use mcpgate_auth::keys::KeyManager;
use mcpgate_auth::server::secrets;
use mcpgate_auth::server::users;
use mcpgate_auth::server::{
    AuthServer, AuthServerConfig, MetadataDocumentPolicy, RegistrationPolicy, authorize,
};
use mcpgate_auth::store::sqlite::SqliteStore;
use mcpgate_auth::store::{Client, ClientSource, CodeRedemption, Store, User};
use serde_json::json;
use tower::ServiceExt;

const ISSUER: &str = "https://auth.example";
const RESOURCE: &str = "https://auth.example/mcp";
const SSE_RESOURCE: &str = "https://auth.example/sse";
const REDIRECT: &str = "https://app.example/cb";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const PASSWORD: &str = "correct horse battery";

fn config() -> AuthServerConfig {
    AuthServerConfig {
        issuer: ISSUER.into(),
        resources: vec![RESOURCE.into(), SSE_RESOURCE.into()],
        scopes_supported: vec![
            "mcp:tools:read".into(),
            "mcp:tools:write".into(),
            "offline_access".into(),
        ],
        scope_descriptions: vec![
            ("mcp:tools:read".into(), "List and read your tools".into()),
            (
                "mcp:tools:write".into(),
                "Run tools that change things".into(),
            ),
        ],
        default_scope: ScopeSet::parse("mcp:tools:read"),
        access_token_ttl: Duration::from_secs(3600),
        refresh_token_ttl: Duration::from_secs(86400),
        code_ttl: Duration::from_secs(60),
        refresh_grace: Duration::from_secs(5),
        pending_ttl: Duration::from_secs(600),
        session_ttl: Duration::from_secs(3600),
        registration: RegistrationPolicy::default(),
        metadata_documents: MetadataDocumentPolicy::default(),
    }
}

struct Env {
    server: Arc<AuthServer>,
    app: Router,
}

async fn env() -> Env {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
    let keys = KeyManager::load_or_create(store.clone()).await.unwrap();
    let server = AuthServer::new(config(), store.clone(), keys, reqwest::Client::new());
    add_client(
        &server,
        "app",
        json!({
            "client_name": "Test App",
            "redirect_uris": [REDIRECT, "https://app.example/other"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        }),
    )
    .await;
    add_client(
        &server,
        "cli",
        json!({
            "client_name": "Local CLI",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "scope": "mcp:tools:read",
        }),
    )
    .await;
    // One argon2 hash for everyone: hashing is slow in debug builds.
    static HASH: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| users::hash_password(PASSWORD).unwrap());
    for name in ["alice", "bob", "carol", "dave"] {
        store
            .create_user(&User {
                id: format!("id-{name}"),
                username: name.into(),
                password_hash: HASH.clone(),
                created_at: 0,
            })
            .await
            .unwrap();
    }
    let app = authorize::router().with_state(server.clone());
    Env { server, app }
}

async fn add_client(server: &AuthServer, id: &str, metadata: serde_json::Value) {
    server
        .store
        .create_client(&Client {
            client_id: id.into(),
            secret_hash: None,
            metadata,
            source: ClientSource::Admin,
            created_at: 0,
        })
        .await
        .unwrap();
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> Option<url::Url> {
        self.headers
            .get(header::LOCATION)
            .map(|l| url::Url::parse(l.to_str().unwrap()).unwrap())
    }

    fn query(&self, name: &str) -> Option<String> {
        self.location()?
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The value of a hidden input.
    fn input(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            + marker.len();
        let end = start + self.body[start..].find('"').unwrap();
        self.body[start..end].to_owned()
    }

    fn session_cookie(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|c| c.starts_with("__Host-mcpgate-session="))
            .map(|c| c.split(';').next().unwrap().to_owned())
    }

    fn assert_page_headers(&self) {
        let h = |name: header::HeaderName| {
            self.headers
                .get(&name)
                .unwrap_or_else(|| panic!("no {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert!(h(header::CONTENT_TYPE).starts_with("text/html"));
        let csp = h(header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("script-src"), "{csp}");
        assert_eq!(h(header::X_FRAME_OPTIONS), "DENY");
        assert_eq!(h(header::REFERRER_POLICY), "no-referrer");
        assert_eq!(h(header::CACHE_CONTROL), "no-store");
        assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert!(
            self.headers
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none()
        );
        assert!(!self.body.contains("<script"));
    }

    /// An error page: the browser stays here.
    fn assert_error_page(&self) {
        assert!(
            self.status.is_client_error(),
            "{} {}",
            self.status,
            self.body
        );
        assert!(
            self.location().is_none(),
            "redirected: {:?}",
            self.location()
        );
        self.assert_page_headers();
    }

    /// An error sent back to the client, with `state` and `iss`.
    fn assert_error_redirect(&self, error: &str, state: &str) {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{}", self.body);
        let location = self.location().unwrap();
        assert!(
            location.as_str().starts_with(REDIRECT)
                || location.as_str().starts_with("http://127.0.0.1"),
            "{location}"
        );
        assert_eq!(self.query("error").as_deref(), Some(error), "{location}");
        assert!(self.query("error_description").is_some());
        assert_eq!(self.query("state").as_deref(), Some(state));
        assert_eq!(self.query("iss").as_deref(), Some(ISSUER));
        assert!(self.query("code").is_none());
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response: Response<Body> = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn with_ip(mut request: Request<Body>, ip: &str) -> Request<Body> {
    let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn get(app: &Router, pairs: &[(&str, &str)], cookie: Option<&str>) -> Reply {
    let mut builder = Request::get(format!("/authorize?{}", query(pairs)));
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    send(
        app,
        with_ip(builder.body(Body::empty()).unwrap(), "192.0.2.1"),
    )
    .await
}

async fn post(app: &Router, path: &str, pairs: &[(&str, &str)], cookie: Option<&str>) -> Reply {
    post_from(app, path, pairs, cookie, "192.0.2.1").await
}

async fn post_from(
    app: &Router,
    path: &str,
    pairs: &[(&str, &str)],
    cookie: Option<&str>,
    ip: &str,
) -> Reply {
    let mut builder =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    send(
        app,
        with_ip(builder.body(Body::from(query(pairs))).unwrap(), ip),
    )
    .await
}

/// A valid request for client `app`, with `extra` replacing or adding parameters.
fn request<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", "app"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
        ("resource", RESOURCE),
        ("scope", "mcp:tools:read"),
    ];
    for (k, v) in extra {
        pairs.retain(|(key, _)| key != k);
        if !v.is_empty() {
            pairs.push((k, v));
        }
    }
    pairs
}

async fn login(app: &Router, page: &Reply, username: &str, password: &str) -> Reply {
    login_in(app, page, username, password, None).await
}

/// Signs in from a browser that may already hold a session cookie.
async fn login_in(
    app: &Router,
    page: &Reply,
    username: &str,
    password: &str,
    cookie: Option<&str>,
) -> Reply {
    let pending = page.input("pending");
    let csrf = page.input("csrf");
    post(
        app,
        "/authorize/login",
        &[
            ("pending", &pending),
            ("csrf", &csrf),
            ("username", username),
            ("password", password),
        ],
        cookie,
    )
    .await
}

async fn decide(app: &Router, page: &Reply, cookie: &str, decision: &str) -> Reply {
    let pending = page.input("pending");
    let csrf = page.input("csrf");
    post(
        app,
        "/authorize/consent",
        &[
            ("pending", &pending),
            ("csrf", &csrf),
            ("decision", decision),
        ],
        Some(cookie),
    )
    .await
}

/// Runs the whole flow for `user`; returns the final redirect and the session cookie.
async fn approve(env: &Env, extra: &[(&str, &str)], user: &str) -> (Reply, String) {
    let page = get(&env.app, &request(extra), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let consent = login(&env.app, &page, user, PASSWORD).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    let cookie = consent.session_cookie().expect("session cookie");
    let done = decide(&env.app, &consent, &cookie, "approve").await;
    (done, cookie)
}

async fn redeem(server: &AuthServer, code: &str) -> mcpgate_auth::store::AuthorizationCode {
    match server
        .store
        .redeem_code(&secrets::hash(code), now())
        .await
        .unwrap()
    {
        CodeRedemption::Fresh(code) => code,
        other => panic!("code not fresh: {other:?}"),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_client_or_redirect_uri_shows_a_page_and_never_redirects() {
    let env = env().await;
    let cases: Vec<Vec<(&str, &str)>> = vec![
        request(&[("client_id", "")]),
        request(&[("client_id", "nobody")]),
        request(&[("client_id", "https://evil.example/client.json")]),
        request(&[("redirect_uri", "https://evil.example/cb")]),
        request(&[("redirect_uri", "https://app.example/cb/")]),
        request(&[(
            "redirect_uri",
            "https://app.example/cb?next=https://evil.example",
        )]),
        request(&[("redirect_uri", "https://app.example/cb/../../evil")]),
        request(&[("redirect_uri", "https://app.example.evil.example/cb")]),
        request(&[("redirect_uri", "https://app.example/cb#frag")]),
        request(&[("redirect_uri", "javascript:alert(1)")]),
        request(&[("redirect_uri", "//evil.example/cb")]),
        // Several registered and none named.
        request(&[("redirect_uri", "")]),
        // A loopback port change is allowed only for loopback registrations.
        request(&[("redirect_uri", "https://app.example:444/cb")]),
        // Even with other errors present, the bad redirect wins: no redirect.
        request(&[
            ("redirect_uri", "https://evil.example/cb"),
            ("code_challenge", ""),
            ("response_type", "token"),
        ]),
    ];
    for pairs in cases {
        let reply = get(&env.app, &pairs, None).await;
        reply.assert_error_page();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{pairs:?}");
    }
    // Repeated client_id / redirect_uri.
    let mut repeated = request(&[]);
    repeated.push(("redirect_uri", "https://evil.example/cb"));
    get(&env.app, &repeated, None).await.assert_error_page();
    let mut repeated = request(&[]);
    repeated.push(("client_id", "cli"));
    get(&env.app, &repeated, None).await.assert_error_page();
    // The page does not echo markup from the request.
    let reply = get(
        &env.app,
        &request(&[("client_id", "<script>alert(1)</script>")]),
        None,
    )
    .await;
    reply.assert_error_page();
    assert!(!reply.body.contains("<script>alert"));
}

#[tokio::test]
async fn loopback_redirects_match_any_port_and_default_when_single() {
    let env = env().await;
    let pairs = request(&[
        ("client_id", "cli"),
        ("redirect_uri", "http://127.0.0.1:53682/callback"),
    ]);
    let reply = get(&env.app, &pairs, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Omitted redirect_uri with exactly one registered: allowed.
    let reply = get(
        &env.app,
        &request(&[("client_id", "cli"), ("redirect_uri", "")]),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Loopback, but another host or path.
    for uri in [
        "http://localhost:53682/callback",
        "http://127.0.0.1:53682/other",
        "https://127.0.0.1:53682/callback",
    ] {
        get(
            &env.app,
            &request(&[("client_id", "cli"), ("redirect_uri", uri)]),
            None,
        )
        .await
        .assert_error_page();
    }
}

#[tokio::test]
async fn pkce_is_required_and_s256_only() {
    let env = env().await;
    for extra in [
        vec![("code_challenge", "")],
        vec![("code_challenge_method", "")],
        vec![("code_challenge_method", "plain")],
        vec![("code_challenge_method", "s256")],
        vec![("code_challenge", "too-short")],
        vec![(
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
        )],
    ] {
        let reply = get(&env.app, &request(&extra), None).await;
        reply.assert_error_redirect("invalid_request", "st-123");
        reply.assert_page_headers_on_redirect();
    }
}

trait RedirectHeaders {
    fn assert_page_headers_on_redirect(&self);
}

impl RedirectHeaders for Reply {
    fn assert_page_headers_on_redirect(&self) {
        assert_eq!(self.headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(self.headers[header::REFERRER_POLICY], "no-referrer");
    }
}

#[tokio::test]
async fn response_type_must_be_code() {
    let env = env().await;
    get(&env.app, &request(&[("response_type", "token")]), None)
        .await
        .assert_error_redirect("unsupported_response_type", "st-123");
    get(&env.app, &request(&[("response_type", "")]), None)
        .await
        .assert_error_redirect("invalid_request", "st-123");
    // Without state, no state comes back; iss always does.
    let reply = get(
        &env.app,
        &request(&[("response_type", "token"), ("state", "")]),
        None,
    )
    .await;
    assert_eq!(reply.query("state"), None);
    assert_eq!(reply.query("iss").as_deref(), Some(ISSUER));
}

#[tokio::test]
async fn unknown_resource_is_invalid_target() {
    let env = env().await;
    for resource in [
        "https://other.example/mcp",
        "https://auth.example/mcp/extra",
        "not a url",
    ] {
        get(&env.app, &request(&[("resource", resource)]), None)
            .await
            .assert_error_redirect("invalid_target", "st-123");
    }
    let mut two = request(&[]);
    two.push(("resource", SSE_RESOURCE));
    get(&env.app, &two, None)
        .await
        .assert_error_redirect("invalid_target", "st-123");
}

#[tokio::test]
async fn resource_is_bound_to_the_code_with_a_default() {
    let env = env().await;
    let (done, _) = approve(&env, &[("resource", "https://auth.example/sse/")], "alice").await;
    let code = redeem(&env.server, &done.query("code").unwrap()).await;
    assert_eq!(code.resource, SSE_RESOURCE);

    let (done, _) = approve(&env, &[("resource", "")], "bob").await;
    let code = redeem(&env.server, &done.query("code").unwrap()).await;
    assert_eq!(code.resource, RESOURCE);
}

#[tokio::test]
async fn scope_is_narrowed_or_refused() {
    let env = env().await;
    // Unknown scopes dropped.
    let (done, _) = approve(
        &env,
        &[("scope", "mcp:tools:read admin mcp:tools:write")],
        "alice",
    )
    .await;
    let code = redeem(&env.server, &done.query("code").unwrap()).await;
    assert_eq!(
        code.scope,
        ScopeSet::parse("mcp:tools:read mcp:tools:write")
    );
    // Nothing left.
    get(&env.app, &request(&[("scope", "admin root")]), None)
        .await
        .assert_error_redirect("invalid_scope", "st-123");
    // The client's registered scope limits it.
    let cli = |scope| {
        request(&[
            ("client_id", "cli"),
            ("redirect_uri", "http://127.0.0.1:5000/callback"),
            ("scope", scope),
        ])
    };
    let reply = get(&env.app, &cli("mcp:tools:write"), None).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.query("error").as_deref(), Some("invalid_scope"));
    assert_eq!(reply.query("iss").as_deref(), Some(ISSUER));
    // Absent: the default scope.
    let (done, _) = approve(&env, &[("scope", "")], "bob").await;
    let code = redeem(&env.server, &done.query("code").unwrap()).await;
    assert_eq!(code.scope, ScopeSet::parse("mcp:tools:read"));
}

#[tokio::test]
async fn full_flow_issues_a_bound_code_with_state_and_iss() {
    let env = env().await;
    let page = get(
        &env.app,
        &request(&[("scope", "mcp:tools:read mcp:tools:write")]),
        None,
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_page_headers();
    assert!(page.body.contains("<html lang=\"en\">"));
    assert!(page.body.contains("Test App"));
    assert!(page.body.contains("<label for=\"username\">"));
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("form-action 'self' https://app.example"),
        "{csp}"
    );

    let consent = login(&env.app, &page, "alice", PASSWORD).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    consent.assert_page_headers();
    let set_cookie = consent
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-mcpgate-session="))
        .unwrap();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Domain"));
    // The consent page: client, redirect host, scopes with descriptions, both buttons.
    assert!(consent.body.contains("Test App"));
    assert!(consent.body.contains("app.example"));
    assert!(consent.body.contains("List and read your tools"));
    assert!(consent.body.contains("Run tools that change things"));
    assert!(consent.body.contains("value=\"approve\""));
    assert!(consent.body.contains("value=\"deny\""));
    assert!(!consent.body.contains("runs on a computer"));
    // The session id is stored hashed only.
    let cookie = consent.session_cookie().unwrap();
    let value = cookie.split_once('=').unwrap().1;
    assert!(
        env.server
            .store
            .session(value, now())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        env.server
            .store
            .session(&secrets::hash(value), now())
            .await
            .unwrap()
            .is_some()
    );

    let done = decide(&env.app, &consent, &cookie, "approve").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let location = done.location().unwrap();
    assert!(location.as_str().starts_with("https://app.example/cb?"));
    assert_eq!(done.query("state").as_deref(), Some("st-123"));
    assert_eq!(done.query("iss").as_deref(), Some(ISSUER));
    assert!(done.query("error").is_none());
    let code = redeem(&env.server, &done.query("code").unwrap()).await;
    assert_eq!(code.client_id, "app");
    assert_eq!(code.user_id, "id-alice");
    assert_eq!(code.redirect_uri, REDIRECT);
    assert_eq!(code.code_challenge, CHALLENGE);
    assert_eq!(code.resource, RESOURCE);
    assert_eq!(
        code.scope,
        ScopeSet::parse("mcp:tools:read mcp:tools:write")
    );
    assert!(code.expires_at <= now() + 60);

    // The pending request was single use.
    let again = decide(&env.app, &consent, &cookie, "approve").await;
    again.assert_error_page();
}

#[tokio::test]
async fn authorize_by_post_works_too() {
    let env = env().await;
    let reply = post(&env.app, "/authorize", &request(&[]), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("Sign in"));
    let reply = post(
        &env.app,
        "/authorize",
        &request(&[("client_id", "x")]),
        None,
    )
    .await;
    reply.assert_error_page();
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let env = env().await;
    let page = get(&env.app, &request(&[]), None).await;
    let wrong = login(&env.app, &page, "alice", "not the password").await;
    let unknown = login(&env.app, &page, "mallory", "not the password").await;
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(wrong.body.contains("Invalid username or password"));
    assert_eq!(
        wrong.body.replace("alice", "USER"),
        unknown.body.replace("mallory", "USER")
    );
    assert!(wrong.session_cookie().is_none() && unknown.session_cookie().is_none());
    wrong.assert_page_headers();
    // The pending request survives a failed attempt.
    let consent = login(&env.app, &page, "alice", PASSWORD).await;
    assert_eq!(consent.status, StatusCode::OK);
    assert!(consent.body.contains("value=\"approve\""));
}

#[tokio::test]
async fn logins_are_throttled_per_user_and_per_address() {
    let env = env().await;
    let page = get(&env.app, &request(&[]), None).await;
    let attempt = |user: &'static str, password: &'static str, ip: &'static str| {
        let pending = page.input("pending");
        let csrf = page.input("csrf");
        let app = env.app.clone();
        async move {
            post_from(
                &app,
                "/authorize/login",
                &[
                    ("pending", &pending),
                    ("csrf", &csrf),
                    ("username", user),
                    ("password", password),
                ],
                None,
                ip,
            )
            .await
        }
    };
    for _ in 0..5 {
        let reply = attempt("carol", "wrong", "198.51.100.1").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }
    // Carol is locked out, even with the right password and from elsewhere.
    let reply = attempt("carol", PASSWORD, "198.51.100.2").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    assert!(reply.session_cookie().is_none());
    reply.assert_page_headers();
    // Others are not.
    let reply = attempt("dave", PASSWORD, "198.51.100.3").await;
    assert_eq!(reply.status, StatusCode::OK);

    // One address trying many users is stopped after 20 failures.
    let users = [
        "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9", "u10", "u11", "u12", "u13", "u14",
        "u15", "u16", "u17", "u18", "u19", "u20",
    ];
    for user in users {
        let reply = attempt(user, "guess", "203.0.113.9").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }
    let reply = attempt("bob", PASSWORD, "203.0.113.9").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn csrf_tokens_are_required() {
    let env = env().await;
    let page = get(&env.app, &request(&[]), None).await;
    let pending = page.input("pending");
    for csrf in [None, Some("wrong"), Some("")] {
        let mut fields = vec![
            ("pending", pending.as_str()),
            ("username", "alice"),
            ("password", PASSWORD),
        ];
        if let Some(csrf) = csrf {
            fields.push(("csrf", csrf));
        }
        let reply = post(&env.app, "/authorize/login", &fields, None).await;
        reply.assert_error_page();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.session_cookie().is_none());
    }

    let consent = login(&env.app, &page, "alice", PASSWORD).await;
    let cookie = consent.session_cookie().unwrap();
    let pending = consent.input("pending");
    // The login form's token is not the consent form's (that one is bound to the session).
    let unbound = page.input("csrf");
    for csrf in [None, Some("wrong"), Some(unbound.as_str())] {
        let mut fields = vec![("pending", pending.as_str()), ("decision", "approve")];
        if let Some(csrf) = csrf {
            fields.push(("csrf", csrf));
        }
        let reply = post(&env.app, "/authorize/consent", &fields, Some(&cookie)).await;
        reply.assert_error_page();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }
    // A consent token from another browser's session does not work here.
    let other_page = get(&env.app, &request(&[]), None).await;
    let other = login(&env.app, &other_page, "bob", PASSWORD).await;
    let reply = post(
        &env.app,
        "/authorize/consent",
        &[
            ("pending", &pending),
            ("csrf", &other.input("csrf")),
            ("decision", "approve"),
        ],
        Some(&cookie),
    )
    .await;
    reply.assert_error_page();
    // Nothing was consented; the request is still usable with the right token.
    assert!(
        env.server
            .store
            .consent("id-alice", "app")
            .await
            .unwrap()
            .is_none()
    );
    let done = decide(&env.app, &consent, &cookie, "approve").await;
    assert!(done.query("code").is_some());
}

#[tokio::test]
async fn cross_site_form_posts_are_refused() {
    let env = env().await;
    let page = get(&env.app, &request(&[]), None).await;
    let request = Request::post("/authorize/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(query(&[
            ("pending", &page.input("pending")),
            ("csrf", &page.input("csrf")),
            ("username", "alice"),
            ("password", PASSWORD),
        ])))
        .unwrap();
    let reply = send(&env.app, request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.session_cookie().is_none());
}

#[tokio::test]
async fn deny_sends_access_denied() {
    let env = env().await;
    let page = get(&env.app, &request(&[]), None).await;
    let consent = login(&env.app, &page, "alice", PASSWORD).await;
    let cookie = consent.session_cookie().unwrap();
    let done = decide(&env.app, &consent, &cookie, "deny").await;
    done.assert_error_redirect("access_denied", "st-123");
    assert!(
        env.server
            .store
            .consent("id-alice", "app")
            .await
            .unwrap()
            .is_none()
    );
    // Single use after a denial too.
    decide(&env.app, &consent, &cookie, "approve")
        .await
        .assert_error_page();
}

#[tokio::test]
async fn remembered_consent_skips_the_page_unless_prompted() {
    let env = env().await;
    let (done, cookie) = approve(
        &env,
        &[("scope", "mcp:tools:read mcp:tools:write")],
        "alice",
    )
    .await;
    assert!(done.query("code").is_some());

    // Signed in and consented to a superset: straight back with a code.
    let reply = get(&env.app, &request(&[]), Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(reply.query("code").is_some());
    assert_eq!(reply.query("state").as_deref(), Some("st-123"));
    assert_eq!(reply.query("iss").as_deref(), Some(ISSUER));

    // A wider request needs consent again.
    let reply = get(
        &env.app,
        &request(&[("scope", "mcp:tools:read offline_access")]),
        Some(&cookie),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("value=\"approve\""));
    assert!(reply.body.contains("offline_access"));

    // prompt=consent forces the page.
    let reply = get(&env.app, &request(&[("prompt", "consent")]), Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("value=\"approve\""));
    let done = decide(&env.app, &reply, &cookie, "approve").await;
    assert!(done.query("code").is_some());

    // prompt=login asks for the password again, then skips the known consent.
    let reply = get(&env.app, &request(&[("prompt", "login")]), Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("name=\"password\""));
    let done = login_in(&env.app, &reply, "alice", PASSWORD, Some(&cookie)).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(done.query("code").is_some());
    let new_cookie = done.session_cookie().unwrap();
    assert_ne!(new_cookie, cookie);
    // The old session ended with the new sign-in.
    let reply = get(&env.app, &request(&[]), Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("name=\"password\""));
}

#[tokio::test]
async fn prompt_none_never_shows_a_page() {
    let env = env().await;
    get(&env.app, &request(&[("prompt", "none")]), None)
        .await
        .assert_error_redirect("login_required", "st-123");
    let page = get(&env.app, &request(&[]), None).await;
    let consent = login(&env.app, &page, "alice", PASSWORD).await;
    let cookie = consent.session_cookie().unwrap();
    get(&env.app, &request(&[("prompt", "none")]), Some(&cookie))
        .await
        .assert_error_redirect("consent_required", "st-123");
    decide(&env.app, &consent, &cookie, "approve").await;
    let reply = get(&env.app, &request(&[("prompt", "none")]), Some(&cookie)).await;
    assert!(reply.query("code").is_some());
    get(
        &env.app,
        &request(&[("prompt", "none login")]),
        Some(&cookie),
    )
    .await
    .assert_error_redirect("invalid_request", "st-123");
    // A forged session cookie is no session.
    get(
        &env.app,
        &request(&[("prompt", "none")]),
        Some("__Host-mcpgate-session=forged"),
    )
    .await
    .assert_error_redirect("login_required", "st-123");
}

#[tokio::test]
async fn loopback_clients_get_a_warning() {
    let env = env().await;
    let page = get(
        &env.app,
        &request(&[
            ("client_id", "cli"),
            ("redirect_uri", "http://127.0.0.1:53682/callback"),
        ]),
        None,
    )
    .await;
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("http://127.0.0.1:53682"), "{csp}");
    let consent = login(&env.app, &page, "alice", PASSWORD).await;
    assert!(consent.body.contains("runs on a computer"));
    assert!(consent.body.contains("127.0.0.1:53682"));
    assert!(consent.body.contains("Local CLI"));
    let cookie = consent.session_cookie().unwrap();
    let done = decide(&env.app, &consent, &cookie, "approve").await;
    let location = done.location().unwrap();
    assert!(
        location
            .as_str()
            .starts_with("http://127.0.0.1:53682/callback?code=")
    );
}

#[tokio::test]
async fn consents_can_be_listed_and_revoked() {
    let env = env().await;
    // Not signed in: a sign-in form with a double-submit cookie.
    let reply = send(
        &env.app,
        Request::get("/consents").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.assert_page_headers();
    assert!(reply.body.contains("name=\"password\""));

    let (_, cookie) = approve(&env, &[], "alice").await;
    let reply = send(
        &env.app,
        Request::get("/consents")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("Test App"));
    assert!(reply.body.contains("mcp:tools:read"));
    let csrf = reply.input("csrf");

    // Wrong token: nothing revoked.
    let bad = post(
        &env.app,
        "/consents/revoke",
        &[("csrf", "nope"), ("client_id", "app")],
        Some(&cookie),
    )
    .await;
    bad.assert_error_page();
    assert!(
        env.server
            .store
            .consent("id-alice", "app")
            .await
            .unwrap()
            .is_some()
    );

    let done = post(
        &env.app,
        "/consents/revoke",
        &[("csrf", &csrf), ("client_id", "app")],
        Some(&cookie),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.body.contains("Access revoked"));
    assert!(
        env.server
            .store
            .consent("id-alice", "app")
            .await
            .unwrap()
            .is_none()
    );
    // Consent is asked again.
    let reply = get(&env.app, &request(&[]), Some(&cookie)).await;
    assert!(reply.body.contains("value=\"approve\""));

    // Stand-alone sign-in.
    let login_page = send(
        &env.app,
        Request::get("/consents").body(Body::empty()).unwrap(),
    )
    .await;
    let csrf_cookie = login_page
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("__Host-mcpgate-csrf="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let fields = [
        ("csrf", login_page.input("csrf")),
        ("username", "bob".to_owned()),
        ("password", PASSWORD.to_owned()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let no_cookie = post(&env.app, "/consents/login", &fields, None).await;
    no_cookie.assert_error_page();
    let signed = post(&env.app, "/consents/login", &fields, Some(&csrf_cookie)).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    assert!(signed.session_cookie().is_some());
}
