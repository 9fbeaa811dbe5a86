//! RFC 7591 dynamic client registration against the real router and an in-memory SQLite store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode, header};
use mcpgate_auth::ScopeSet;
use mcpgate_auth::keys::KeyManager;
use mcpgate_auth::server::clients::{self, ClientKind};
use mcpgate_auth::server::register::RATE_LIMIT_PER_MINUTE;
use mcpgate_auth::server::{
    AuthServer, AuthServerConfig, MetadataDocumentPolicy, RegistrationPolicy, secrets,
};
use mcpgate_auth::store::sqlite::SqliteStore;
use mcpgate_auth::store::{ClientSource, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

fn config(registration: RegistrationPolicy) -> AuthServerConfig {
    AuthServerConfig {
        issuer: "https://as.example".into(),
        resources: vec!["https://as.example/mcp".into()],
        scopes_supported: vec!["mcp:tools".into(), "mcp:admin".into()],
        scope_descriptions: vec![],
        default_scope: ScopeSet::parse("mcp:tools"),
        access_token_ttl: Duration::from_secs(3600),
        refresh_token_ttl: Duration::from_secs(86400),
        code_ttl: Duration::from_secs(60),
        refresh_grace: Duration::from_secs(10),
        pending_ttl: Duration::from_secs(600),
        session_ttl: Duration::from_secs(3600),
        registration,
        metadata_documents: MetadataDocumentPolicy::default(),
    }
}

fn open() -> RegistrationPolicy {
    RegistrationPolicy {
        enabled: true,
        ..Default::default()
    }
}

async fn setup(registration: RegistrationPolicy) -> (Arc<AuthServer>, Router) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
    let keys = KeyManager::load_or_create(store.clone()).await.unwrap();
    let server = AuthServer::new(config(registration), store, keys, reqwest::Client::new());
    let router = server.router();
    (server, router)
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn request(body: &Value, from: &str, bearer: Option<&str>) -> Request<Body> {
    let mut builder = Request::post("/register").header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut request = builder.body(Body::from(body.to_string())).unwrap();
    let addr: SocketAddr = from.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

async fn register(router: &Router, body: Value) -> Answer {
    send(router, request(&body, "198.51.100.7:40000", None)).await
}

#[tokio::test]
async fn disabled_registration_is_not_found() {
    let (_, router) = setup(RegistrationPolicy::default()).await;
    let answer = register(
        &router,
        json!({"redirect_uris": ["http://localhost:3000/callback"]}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn public_native_client_like_the_inspector() {
    let (server, router) = setup(open()).await;
    let answer = register(
        &router,
        json!({
            "redirect_uris": ["http://localhost:6274/oauth/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "application_type": "native",
            "client_name": "MCP Inspector",
            "client_uri": "https://github.com/modelcontextprotocol/inspector",
            "scope": "mcp:tools offline_access",
        }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    let body = &answer.body;
    let client_id = body["client_id"].as_str().unwrap();
    assert!(!client_id.starts_with("https://"));
    assert!(client_id.len() >= 32);
    assert!(body["client_id_issued_at"].as_i64().unwrap() > 1_700_000_000);
    assert!(body.get("client_secret").is_none());
    assert!(body.get("client_secret_expires_at").is_none());
    assert_eq!(
        body["redirect_uris"],
        json!(["http://localhost:6274/oauth/callback"])
    );
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert_eq!(
        body["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(body["response_types"], json!(["code"]));
    assert_eq!(body["application_type"], "native");
    assert_eq!(body["client_name"], "MCP Inspector");
    assert_eq!(
        body["client_uri"],
        "https://github.com/modelcontextprotocol/inspector"
    );
    // Unsupported scopes are dropped.
    assert_eq!(body["scope"], "mcp:tools");

    let stored = server.store.client(client_id).await.unwrap().unwrap();
    assert_eq!(stored.source, ClientSource::Dynamic);
    assert!(stored.secret_hash.is_none());
    let resolved = clients::resolve(&server, client_id).await.unwrap().unwrap();
    assert_eq!(resolved.kind, ClientKind::Registered(ClientSource::Dynamic));
    assert!(!resolved.is_confidential());
    assert!(resolved.allows_redirect("http://localhost:51234/oauth/callback"));
    assert!(resolved.allows_grant("refresh_token"));

    // A second registration gets a different id.
    let again = register(
        &router,
        json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_ne!(again.body["client_id"], body["client_id"]);
}

#[tokio::test]
async fn minimal_request_gets_rfc7591_defaults_and_a_secret() {
    let (server, router) = setup(open()).await;
    // What the conformance suite's example client sends.
    let answer = register(
        &router,
        json!({"client_name": "conformance", "redirect_uris": ["http://localhost:3000/callback"], "application_type": "native"}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let body = &answer.body;
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(body["grant_types"], json!(["authorization_code"]));
    assert_eq!(body["response_types"], json!(["code"]));
    let secret = body["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 40);
    assert_eq!(body["client_secret_expires_at"], 0);

    let stored = server
        .store
        .client(body["client_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.secret_hash.as_deref(), Some(&*secrets::hash(secret)));
    assert!(!stored.metadata.to_string().contains(secret));
    let resolved = clients::resolve(&server, &stored.client_id)
        .await
        .unwrap()
        .unwrap();
    assert!(resolved.is_confidential());
}

#[tokio::test]
async fn confidential_web_client_with_post_auth() {
    let (_, router) = setup(open()).await;
    let answer = register(
        &router,
        json!({
            "redirect_uris": ["https://app.example/oauth/callback"],
            "token_endpoint_auth_method": "client_secret_post",
            "client_name": "Hosted app",
            "logo_uri": "https://app.example/logo.png",
            "contacts": ["ops@app.example"],
            "software_id": "hosted-app",
            "software_version": "1.2.3",
            "jwks": {"keys": []},
            "made_up_field": "dropped",
        }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let body = &answer.body;
    assert_eq!(body["application_type"], "web");
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_post");
    assert!(body["client_secret"].is_string());
    assert_eq!(body["logo_uri"], "https://app.example/logo.png");
    assert_eq!(body["contacts"], json!(["ops@app.example"]));
    assert_eq!(body["software_version"], "1.2.3");
    assert!(body.get("made_up_field").is_none());
    assert!(body.get("jwks").is_none());
}

#[tokio::test]
async fn private_use_scheme_for_native_apps() {
    let (_, router) = setup(open()).await;
    for uri in [
        "com.example.app:/oauth/callback",
        "cursor://anysphere.cursor-mcp/oauth/callback",
    ] {
        let answer = register(
            &router,
            json!({"redirect_uris": [uri], "token_endpoint_auth_method": "none"}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{uri}: {}", answer.body);
        assert_eq!(answer.body["application_type"], "native");
    }
}

#[tokio::test]
async fn dangerous_redirect_uris_are_refused() {
    let (server, router) = setup(open()).await;
    for uri in [
        "javascript:alert(document.cookie)",
        "JAVASCRIPT:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "file:///etc/passwd",
        "vbscript:msgbox(1)",
        "https://app.example/cb#access_token",
        "http://localhost:3000/cb#",
        "http://app.example/cb",
        "http://10.0.0.1/cb",
        "http://localhost.evil.example/cb",
        "https://user:pass@app.example/cb",
        "/relative/callback",
        "https:///evil.example/cb",
    ] {
        let answer = register(
            &router,
            json!({"redirect_uris": ["https://good.example/cb", uri], "token_endpoint_auth_method": "none"}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri} accepted");
        assert_eq!(answer.body["error"], "invalid_redirect_uri", "{uri}");
        assert!(answer.body["error_description"].is_string());
        assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    }
    for missing in [json!({}), json!({"redirect_uris": []})] {
        let answer = register(&router, missing).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.body["error"], "invalid_redirect_uri");
    }
    // Nothing was stored by any refused request.
    assert!(server.store.list_clients().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_metadata_is_refused() {
    let (server, router) = setup(open()).await;
    let cases = [
        json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
        json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "tls_client_auth"}),
        json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
        json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["password"]}),
        json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}),
        json!({"redirect_uris": ["https://a.example/cb"], "application_type": "desktop"}),
        json!({"redirect_uris": ["https://a.example/cb"], "client_uri": "javascript:alert(1)"}),
        json!({"redirect_uris": ["https://a.example/cb"], "logo_uri": "data:image/png;base64,AAAA"}),
        json!({"redirect_uris": ["https://a.example/cb"], "tos_uri": "http://a.example/tos"}),
        json!({"redirect_uris": ["https://a.example/cb"], "client_name": "n".repeat(500)}),
        json!({"redirect_uris": ["https://a.example/cb"], "client_name": ["not", "a", "string"]}),
        // client_credentials needs the initial access token.
        json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic"}),
        json!(["not", "an", "object"]),
    ];
    for case in cases {
        let answer = register(&router, case.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{case} accepted");
        assert_eq!(answer.body["error"], "invalid_client_metadata", "{case}");
    }

    // Not JSON, wrong content type, too large.
    let mut req = request(&json!({}), "198.51.100.7:1", None);
    *req.body_mut() = Body::from("{not json");
    let answer = send(&router, req).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"], "invalid_client_metadata");

    let mut req = request(
        &json!({"redirect_uris": ["https://a.example/cb"]}),
        "198.51.100.7:1",
        None,
    );
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let answer = send(&router, req).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"], "invalid_client_metadata");

    let huge =
        json!({"redirect_uris": ["https://a.example/cb"], "client_name": "x".repeat(20_000)});
    let answer = send(&router, request(&huge, "198.51.100.8:1", None)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.body["error"], "invalid_client_metadata");

    assert!(server.store.list_clients().await.unwrap().is_empty());
}

#[tokio::test]
async fn redirect_uri_allowlist_for_hosted_clients() {
    let (_, router) = setup(RegistrationPolicy {
        enabled: true,
        initial_access_token: None,
        redirect_uri_allowlist: vec![
            "https://claude.ai/api/mcp/auth_callback".into(),
            "https://chatgpt.com/connector_platform_oauth_redirect".into(),
            "https://*.vscode.dev/redirect".into(),
        ],
    })
    .await;
    for ok in [
        "https://claude.ai/api/mcp/auth_callback",
        "https://chatgpt.com/connector_platform_oauth_redirect",
        "https://insiders.vscode.dev/redirect",
        // Loopback and private-use redirects are not subject to the list.
        "http://127.0.0.1:33418/",
        "com.example.app:/cb",
    ] {
        let answer = register(
            &router,
            json!({"redirect_uris": [ok], "token_endpoint_auth_method": "none"}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{ok}: {}", answer.body);
    }
    for bad in [
        "https://evil.example/cb",
        "https://claude.ai/api/mcp/auth_callback/extra",
        "https://claude.ai.evil.example/api/mcp/auth_callback",
        "https://evil.example/.vscode.dev/redirect",
        "https://vscode.dev/redirect",
    ] {
        let answer = register(
            &router,
            json!({"redirect_uris": [bad], "token_endpoint_auth_method": "none"}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad} accepted");
        assert_eq!(answer.body["error"], "invalid_redirect_uri");
    }
}

#[tokio::test]
async fn initial_access_token_guards_registration() {
    let (_, router) = setup(RegistrationPolicy {
        enabled: true,
        initial_access_token: Some("let-me-register".into()),
        redirect_uri_allowlist: vec![],
    })
    .await;
    let body =
        json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"});

    let answer = send(&router, request(&body, "198.51.100.7:1", None)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(
        answer.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(answer.body["error"], "invalid_token");

    for wrong in ["let-me-registe", "let-me-register2", "LET-ME-REGISTER"] {
        let answer = send(&router, request(&body, "198.51.100.7:1", Some(wrong))).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert!(
            answer.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }
    let answer = send(
        &router,
        request(&body, "198.51.100.7:1", Some("let-me-register")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);

    // With the token, a confidential machine client may register client_credentials.
    let machine = json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic", "client_name": "ci"});
    let answer = send(
        &router,
        request(&machine, "198.51.100.7:1", Some("let-me-register")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["grant_types"], json!(["client_credentials"]));
    assert_eq!(answer.body["response_types"], json!([]));
    assert!(answer.body["client_secret"].is_string());
}

#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let (_, router) = setup(open()).await;
    let body =
        json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"});
    for i in 0..RATE_LIMIT_PER_MINUTE {
        let answer = send(&router, request(&body, "203.0.113.9:5000", None)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "request {i}");
    }
    // Another port of the same address is the same client.
    let answer = send(&router, request(&body, "203.0.113.9:5001", None)).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = answer.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    // Bad requests count too: the limiter runs before anything else.
    let answer = send(&router, request(&json!({}), "203.0.113.9:5002", None)).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    // Other addresses are not affected.
    let answer = send(&router, request(&body, "203.0.113.10:5000", None)).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let answer = send(&router, request(&body, "[2001:db8::1]:5000", None)).await;
    assert_eq!(answer.status, StatusCode::CREATED);
}

#[tokio::test]
async fn browser_clients_get_cors() {
    let (_, router) = setup(open()).await;
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/register")
        .header(header::ORIGIN, "http://localhost:6274")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "content-type,mcp-protocol-version",
        )
        .body(Body::empty())
        .unwrap();
    let answer = send(&router, preflight).await;
    assert!(answer.status.is_success(), "{}", answer.status);
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let allowed = answer.headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("content-type") && allowed.contains("mcp-protocol-version"));

    let mut req = request(
        &json!({"redirect_uris": ["http://localhost:6274/oauth/callback"], "token_endpoint_auth_method": "none"}),
        "198.51.100.7:1",
        None,
    );
    req.headers_mut()
        .insert(header::ORIGIN, "http://localhost:6274".parse().unwrap());
    let answer = send(&router, req).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

#[tokio::test]
async fn works_over_a_real_socket_with_connect_info() {
    let (_, router) = setup(open()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let http = reqwest::Client::new();
    let response = http
        .post(format!("http://{addr}/register"))
        .json(&json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none", "client_name": "socket"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["client_name"], "socket");
}
