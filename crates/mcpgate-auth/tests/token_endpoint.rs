//! The token, revocation and introspection endpoints, driven in-process against a real SQLite
//! store (in memory) and a real key manager. Codes, users and clients are put into the store
//! directly, as the authorization endpoint would.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, Method, Request, StatusCode, header};
use mcpgate_auth::ScopeSet;
use mcpgate_auth::keys::KeyManager;
use mcpgate_auth::server::token::{AccessTokenClaims, decode_access_token};
use mcpgate_auth::server::{
    AuthServer, AuthServerConfig, MetadataDocumentPolicy, RegistrationPolicy, client_auth, secrets,
};
use mcpgate_auth::store::sqlite::SqliteStore;
use mcpgate_auth::store::{AuthorizationCode, Client, ClientSource, Store, User};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const ISSUER: &str = "http://127.0.0.1:4400";
const RESOURCE: &str = "http://127.0.0.1:4400/mcp";
const SSE_RESOURCE: &str = "http://127.0.0.1:4400/sse";
const REDIRECT: &str = "https://app.example/cb";
const LOOPBACK_REDIRECT: &str = "http://127.0.0.1:53111/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const USER_ID: &str = "user-1";
const USERNAME: &str = "alice";
const CONF_SECRET: &str = "conf-secret-value";
const POST_SECRET: &str = "post-secret-value";

struct Env {
    server: Arc<AuthServer>,
    app: Router,
    store: Arc<SqliteStore>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn config(grace: Duration) -> AuthServerConfig {
    AuthServerConfig {
        issuer: ISSUER.into(),
        resources: vec![RESOURCE.into(), SSE_RESOURCE.into()],
        scopes_supported: vec!["mcp:read".into(), "mcp:write".into(), "admin".into()],
        scope_descriptions: vec![],
        default_scope: ScopeSet::parse("mcp:read"),
        access_token_ttl: Duration::from_secs(3600),
        refresh_token_ttl: Duration::from_secs(86400),
        code_ttl: Duration::from_secs(60),
        refresh_grace: grace,
        pending_ttl: Duration::from_secs(600),
        session_ttl: Duration::from_secs(3600),
        registration: RegistrationPolicy::default(),
        metadata_documents: MetadataDocumentPolicy::default(),
    }
}

async fn env_with_grace(grace: Duration) -> Env {
    let store = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
    let keys = KeyManager::load_or_create(store.clone()).await.unwrap();
    let server = AuthServer::new(config(grace), store.clone(), keys, reqwest::Client::new());
    let app = server.router();
    store
        .create_user(&User {
            id: USER_ID.into(),
            username: USERNAME.into(),
            password_hash: "$argon2id$unused".into(),
            created_at: now(),
        })
        .await
        .unwrap();
    let clients = [
        (
            "public-app",
            None,
            json!({
                "redirect_uris": [REDIRECT, "http://127.0.0.1/callback"],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
            }),
        ),
        (
            "other-app",
            None,
            json!({
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
            }),
        ),
        (
            "code-only-app",
            None,
            json!({
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "client_credentials"],
            }),
        ),
        (
            "conf-app",
            Some(secrets::hash(CONF_SECRET)),
            json!({
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
                "scope": "mcp:read mcp:write",
            }),
        ),
        (
            "post-app",
            Some(secrets::hash(POST_SECRET)),
            json!({
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "client_secret_post",
                "grant_types": ["client_credentials"],
            }),
        ),
    ];
    for (client_id, secret_hash, metadata) in clients {
        store
            .create_client(&Client {
                client_id: client_id.into(),
                secret_hash,
                metadata,
                source: ClientSource::Admin,
                created_at: now(),
            })
            .await
            .unwrap();
    }
    Env { server, app, store }
}

async fn env() -> Env {
    env_with_grace(Duration::from_secs(5)).await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    raw: Vec<u8>,
}

impl Answer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    #[track_caller]
    fn assert_error(&self, status: StatusCode, error: &str) {
        assert_eq!(
            (self.status, self.error()),
            (status, error),
            "body: {}",
            self.body
        );
        self.assert_no_store();
    }

    #[track_caller]
    fn assert_no_store(&self) {
        assert_eq!(self.headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(self.headers[header::PRAGMA], "no-cache");
    }

    fn str(&self, key: &str) -> String {
        self.body[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {}", self.body))
            .to_owned()
    }
}

impl Env {
    async fn call(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let raw = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            raw,
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            request = request.header(header::AUTHORIZATION, basic_header(id, secret));
        }
        self.call(request.body(Body::from(body)).unwrap()).await
    }

    async fn token(&self, form: &[(&str, &str)]) -> Answer {
        self.post("/token", form, None).await
    }

    /// Puts a code into the store as `/authorize` would after consent.
    async fn code_for(&self, client_id: &str, redirect_uri: &str, scope: &str) -> String {
        let code = secrets::random_token();
        self.store
            .create_code(&AuthorizationCode {
                code_hash: secrets::hash(&code),
                client_id: client_id.into(),
                user_id: USER_ID.into(),
                redirect_uri: redirect_uri.into(),
                code_challenge: challenge(VERIFIER),
                resource: RESOURCE.into(),
                scope: ScopeSet::parse(scope),
                expires_at: now() + 60,
                family_id: None,
            })
            .await
            .unwrap();
        code
    }

    async fn exchange(&self, client_id: &str, code: &str) -> Answer {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("resource", RESOURCE),
        ])
        .await
    }

    /// A fresh grant of `public-app`: (access token, refresh token).
    async fn grant(&self, scope: &str) -> (String, String) {
        let code = self.code_for("public-app", REDIRECT, scope).await;
        let answer = self.exchange("public-app", &code).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        (answer.str("access_token"), answer.str("refresh_token"))
    }

    async fn refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ];
        form.extend_from_slice(extra);
        self.token(&form).await
    }

    async fn introspect(&self, token: &str) -> Answer {
        self.post(
            "/introspect",
            &[("token", token)],
            Some(("conf-app", CONF_SECRET)),
        )
        .await
    }

    fn claims(&self, access_token: &str) -> AccessTokenClaims {
        decode_access_token(&self.server, access_token, true).expect("a valid access token")
    }
}

fn basic_header(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

// ---- authorization_code ----

#[tokio::test]
async fn code_exchange_issues_rfc9068_tokens() {
    let env = env().await;
    let code = env
        .code_for("public-app", REDIRECT, "mcp:read mcp:write")
        .await;
    let answer = env.exchange("public-app", &code).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.assert_no_store();
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 3600);
    assert_eq!(answer.body["scope"], "mcp:read mcp:write");
    assert!(answer.body["refresh_token"].is_string());

    let access = answer.str("access_token");
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert!(header.kid.is_some());
    let claims = env.claims(&access);
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.sub, USER_ID);
    assert_eq!(claims.aud, RESOURCE);
    assert_eq!(claims.client_id, "public-app");
    assert_eq!(claims.scope, "mcp:read mcp:write");
    assert_eq!(claims.preferred_username.as_deref(), Some(USERNAME));
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(claims.nbf, claims.iat);
    assert!(claims.fam.is_some());
    assert!(!claims.jti.is_empty());

    // The raw payload carries exactly the promised claim names.
    let payload = access.split('.').nth(1).unwrap();
    let raw: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let mut names: Vec<&str> = raw
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "aud",
            "client_id",
            "exp",
            "fam",
            "iat",
            "iss",
            "jti",
            "nbf",
            "preferred_username",
            "scope",
            "sub"
        ]
    );
}

#[tokio::test]
async fn missing_pkce_verifier_is_refused_without_spending_the_code() {
    let env = env().await;
    let code = env.code_for("public-app", REDIRECT, "mcp:read").await;
    let answer = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "public-app"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ])
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(answer.body["access_token"].is_null());
    // A malformed verifier (too short) likewise.
    let answer = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "public-app"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", "short"),
        ])
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // The legitimate exchange still works.
    assert_eq!(
        env.exchange("public-app", &code).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_pkce_verifier_is_invalid_grant_and_spends_the_code() {
    let env = env().await;
    let code = env.code_for("public-app", REDIRECT, "mcp:read").await;
    let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj";
    let answer = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "public-app"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", wrong),
        ])
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert!(answer.body["access_token"].is_null());
    env.exchange("public-app", &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn code_replay_is_refused_and_revokes_the_first_grant() {
    let env = env().await;
    let code = env.code_for("public-app", REDIRECT, "mcp:read").await;
    let first = env.exchange("public-app", &code).await;
    assert_eq!(first.status, StatusCode::OK);
    let access = first.str("access_token");
    let refresh = first.str("refresh_token");
    assert_eq!(env.introspect(&access).await.body["active"], true);

    env.exchange("public-app", &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    // Everything the first exchange issued is dead.
    env.refresh("public-app", &refresh, &[])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(env.introspect(&access).await.body, json!({"active": false}));
    let fam = env.claims(&access).fam.unwrap();
    let family = env.store.family(&fam).await.unwrap().unwrap();
    assert!(family.revoked_at.is_some());
}

#[tokio::test]
async fn unknown_code_is_invalid_grant() {
    let env = env().await;
    env.exchange("public-app", "no-such-code")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn redirect_uri_must_match_exactly() {
    let env = env().await;
    let code = env.code_for("public-app", REDIRECT, "mcp:read").await;
    let answer = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "public-app"),
            ("code", &code),
            ("redirect_uri", "https://app.example/cb/"),
            ("code_verifier", VERIFIER),
        ])
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");

    // Loopback: the port chosen at /authorize is bound to the code.
    let code = env
        .code_for("public-app", LOOPBACK_REDIRECT, "mcp:read")
        .await;
    let answer = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "public-app"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:53112/callback"),
            ("code_verifier", VERIFIER),
        ])
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");

    let code = env
        .code_for("public-app", LOOPBACK_REDIRECT, "mcp:read")
        .await;
    let answer = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "public-app"),
            ("code", &code),
            ("redirect_uri", LOOPBACK_REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // Missing redirect_uri.
    let code = env.code_for("public-app", REDIRECT, "mcp:read").await;
    env.token(&[
        ("grant_type", "authorization_code"),
        ("client_id", "public-app"),
        ("code", &code),
        ("code_verifier", VERIFIER),
    ])
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn a_code_only_works_for_its_client() {
    let env = env().await;
    let code = env.code_for("public-app", REDIRECT, "mcp:read").await;
    env.exchange("other-app", &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn resource_must_be_the_authorized_one() {
    let env = env().await;
    let code = env.code_for("public-app", REDIRECT, "mcp:read").await;
    let answer = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "public-app"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("resource", SSE_RESOURCE),
        ])
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_target");

    // The same resource spelled differently is the same resource.
    let code = env.code_for("public-app", REDIRECT, "mcp:read").await;
    let answer = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "public-app"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("resource", "HTTP://127.0.0.1:4400/mcp/"),
        ])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(env.claims(&answer.str("access_token")).aud, RESOURCE);

    // Two resources at once: one audience per token.
    let code = env.code_for("public-app", REDIRECT, "mcp:read").await;
    env.token(&[
        ("grant_type", "authorization_code"),
        ("client_id", "public-app"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("resource", RESOURCE),
        ("resource", SSE_RESOURCE),
    ])
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_target");
}

#[tokio::test]
async fn clients_without_the_refresh_grant_get_no_refresh_token() {
    let env = env().await;
    let code = env.code_for("code-only-app", REDIRECT, "mcp:read").await;
    let answer = env.exchange("code-only-app", &code).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.body.get("refresh_token").is_none());
}

// ---- refresh_token ----

#[tokio::test]
async fn refresh_rotates_and_replay_after_grace_revokes_the_family() {
    let env = env_with_grace(Duration::ZERO).await;
    let (_, first) = env.grant("mcp:read mcp:write").await;
    let answer = env.refresh("public-app", &first, &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.assert_no_store();
    let second = answer.str("refresh_token");
    assert_ne!(second, first);
    let access = answer.str("access_token");
    let claims = env.claims(&access);
    assert_eq!(claims.scope, "mcp:read mcp:write");
    assert_eq!(claims.preferred_username.as_deref(), Some(USERNAME));
    assert_eq!(answer.body["scope"], "mcp:read mcp:write");

    // The rotated token comes back: the grant ends, the current token with it.
    env.refresh("public-app", &first, &[])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    env.refresh("public-app", &second, &[])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(env.introspect(&access).await.body, json!({"active": false}));
}

#[tokio::test]
async fn concurrent_refreshes_within_grace_all_succeed() {
    let env = Arc::new(env_with_grace(Duration::from_secs(10)).await);
    let (_, refresh) = env.grant("mcp:read").await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let env = env.clone();
            let refresh = refresh.clone();
            tokio::spawn(async move { env.refresh("public-app", &refresh, &[]).await })
        })
        .collect();
    let mut successors = Vec::new();
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        successors.push(answer.str("refresh_token"));
    }
    successors.sort();
    successors.dedup();
    assert_eq!(successors.len(), 4, "every refresh gets its own successor");
    // The user is still signed in: each successor works.
    for successor in &successors {
        let answer = env.refresh("public-app", successor, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
}

#[tokio::test]
async fn refresh_scope_may_narrow_but_never_widen() {
    let env = env().await;
    let (_, refresh) = env.grant("mcp:read mcp:write").await;
    let answer = env
        .refresh("public-app", &refresh, &[("scope", "mcp:read admin")])
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_scope");
    assert!(answer.body["access_token"].is_null());

    // The refused attempt rotated nothing: the token still works, narrowed.
    let answer = env
        .refresh("public-app", &refresh, &[("scope", "mcp:read")])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["scope"], "mcp:read");
    assert_eq!(env.claims(&answer.str("access_token")).scope, "mcp:read");

    // The successor keeps the whole grant.
    let answer = env
        .refresh("public-app", &answer.str("refresh_token"), &[])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["scope"], "mcp:read mcp:write");
}

#[tokio::test]
async fn refresh_resource_must_be_the_grant_s() {
    let env = env().await;
    let (_, refresh) = env.grant("mcp:read").await;
    env.refresh("public-app", &refresh, &[("resource", SSE_RESOURCE)])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_target");
    let answer = env
        .refresh("public-app", &refresh, &[("resource", RESOURCE)])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(env.claims(&answer.str("access_token")).aud, RESOURCE);
}

#[tokio::test]
async fn a_refresh_token_only_works_for_its_client() {
    let env = env().await;
    let (_, refresh) = env.grant("mcp:read").await;
    env.refresh("other-app", &refresh, &[])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    // Not rotated by the foreign attempt.
    assert_eq!(
        env.refresh("public-app", &refresh, &[]).await.status,
        StatusCode::OK
    );
    env.refresh("public-app", "garbage", &[])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

// ---- client_credentials ----

#[tokio::test]
async fn client_credentials_for_confidential_clients() {
    let env = env().await;
    let answer = env
        .post(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "mcp:write admin"),
            ],
            Some(("conf-app", CONF_SECRET)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.assert_no_store();
    assert!(answer.body.get("refresh_token").is_none());
    // admin is supported but not the client's: dropped.
    assert_eq!(answer.body["scope"], "mcp:write");
    let claims = env.claims(&answer.str("access_token"));
    assert_eq!(claims.sub, "conf-app");
    assert_eq!(claims.client_id, "conf-app");
    assert_eq!(claims.aud, RESOURCE);
    assert_eq!(claims.preferred_username, None);
    // A grant of its own, without a refresh token: revoking the client's grants ends it.
    let fam = claims
        .fam
        .expect("client_credentials tokens carry their grant");
    let family = env.store.family(&fam).await.unwrap().unwrap();
    assert_eq!(family.user_id, None);
    assert_eq!(family.client_id, "conf-app");
    let revoked = env
        .store
        .revoke_grants(None, Some("conf-app"), claims.iat)
        .await
        .unwrap();
    assert!(revoked.contains(&fam), "{revoked:?}");

    // No scope asked: the client's scopes.
    let answer = env
        .post(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("resource", SSE_RESOURCE),
            ],
            Some(("conf-app", CONF_SECRET)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["scope"], "mcp:read mcp:write");
    assert_eq!(env.claims(&answer.str("access_token")).aud, SSE_RESOURCE);

    env.post(
        "/token",
        &[("grant_type", "client_credentials"), ("scope", "admin")],
        Some(("conf-app", CONF_SECRET)),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_scope");
    env.post(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("resource", "https://elsewhere.example/mcp"),
        ],
        Some(("conf-app", CONF_SECRET)),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_target");

    // client_secret_post.
    let answer = env
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "post-app"),
            ("client_secret", POST_SECRET),
        ])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["scope"], "mcp:read");

    // A public client may not, even with the grant in its metadata.
    env.token(&[
        ("grant_type", "client_credentials"),
        ("client_id", "code-only-app"),
    ])
    .await
    .assert_error(StatusCode::BAD_REQUEST, "unauthorized_client");
}

// ---- client authentication ----

#[tokio::test]
async fn client_authentication_failures() {
    let env = env().await;
    let cc = [("grant_type", "client_credentials")];
    let www = |a: &Answer| {
        a.headers
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned())
    };

    // Wrong secret, unknown client, via Basic: 401 with a Basic challenge.
    for (id, secret) in [("conf-app", "wrong"), ("nobody", "x"), ("conf-app", "")] {
        let answer = env.post("/token", &cc, Some((id, secret))).await;
        answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(www(&answer).unwrap().starts_with("Basic "), "{id}:{secret}");
    }
    // Malformed Basic credentials.
    let request = Request::post("/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, "Basic !!!not-base64")
        .body(Body::from("grant_type=client_credentials"))
        .unwrap();
    let answer = env.call(request).await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(www(&answer).is_some());

    // Confidential client without credentials: 401, no challenge (no header was used).
    let answer = env
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "conf-app"),
        ])
        .await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(www(&answer).is_none());
    // Nothing identifies the client at all.
    env.token(&cc)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // A client_secret_basic client using client_secret_post: not its method.
    env.token(&[
        ("grant_type", "client_credentials"),
        ("client_id", "conf-app"),
        ("client_secret", CONF_SECRET),
    ])
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // A client_secret_post client using Basic.
    let answer = env
        .post("/token", &cc, Some(("post-app", POST_SECRET)))
        .await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(www(&answer).is_some());
    // A public client presenting a secret.
    env.token(&[
        ("grant_type", "client_credentials"),
        ("client_id", "public-app"),
        ("client_secret", "x"),
    ])
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // Two methods at once.
    env.post(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", CONF_SECRET),
        ],
        Some(("conf-app", CONF_SECRET)),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // A body client_id that contradicts the header.
    env.post(
        "/token",
        &[("grant_type", "client_credentials"), ("client_id", "other")],
        Some(("conf-app", CONF_SECRET)),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // The same id in both places is fine, and Basic credentials are form-urlencoded.
    let answer = env
        .post(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "conf-app"),
            ],
            Some(("conf-app", CONF_SECRET)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn unsupported_grants_and_malformed_requests() {
    let env = env().await;
    env.token(&[("grant_type", "password"), ("client_id", "public-app")])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    env.token(&[("grant_type", "implicit")])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    env.token(&[("client_id", "public-app")])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // Repeated parameters.
    env.token(&[
        ("grant_type", "refresh_token"),
        ("grant_type", "refresh_token"),
        ("client_id", "public-app"),
    ])
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // A public client may not skip a required parameter.
    env.token(&[("grant_type", "refresh_token"), ("client_id", "public-app")])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    // Not a form.
    for content_type in [Some("application/json"), Some("text/plain"), None] {
        let mut request = Request::post("/token");
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let request = request
            .body(Body::from(
                r#"{"grant_type":"client_credentials","client_id":"public-app"}"#,
            ))
            .unwrap();
        env.call(request)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn browsers_may_call_the_endpoints() {
    let env = env().await;
    for path in ["/token", "/revoke", "/introspect"] {
        let request = Request::builder()
            .method(Method::OPTIONS)
            .uri(path)
            .header(header::ORIGIN, "http://localhost:6274")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type,mcp-protocol-version,authorization",
            )
            .body(Body::empty())
            .unwrap();
        let answer = env.call(request).await;
        assert!(answer.status.is_success(), "{path}: {}", answer.status);
        assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let methods = answer.headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(methods.contains("POST"), "{methods}");
        let allowed = answer.headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(allowed.contains("mcp-protocol-version"), "{allowed}");
    }
    // Errors carry the CORS headers too, so the browser can read them.
    let request = Request::post("/token")
        .header(header::ORIGIN, "http://localhost:6274")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("grant_type=password"))
        .unwrap();
    let answer = env.call(request).await;
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

// ---- revocation ----

#[tokio::test]
async fn revoking_a_refresh_token_ends_the_grant() {
    let env = env().await;
    let (access, refresh) = env.grant("mcp:read").await;
    let answer = env
        .post(
            "/revoke",
            &[
                ("token", &refresh),
                ("token_type_hint", "refresh_token"),
                ("client_id", "public-app"),
            ],
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.assert_no_store();
    assert!(answer.raw.is_empty());
    env.refresh("public-app", &refresh, &[])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    // Its access tokens are dead too (the RS checks `fam`).
    assert_eq!(env.introspect(&access).await.body, json!({"active": false}));
    let revoked = env.store.revocations(0, now()).await.unwrap();
    assert!(revoked.families.contains(&env.claims(&access).fam.unwrap()));
}

#[tokio::test]
async fn revoking_an_access_token_denylists_its_jti() {
    let env = env().await;
    let (access, refresh) = env.grant("mcp:read").await;
    // The wrong hint does not matter.
    let answer = env
        .post(
            "/revoke",
            &[
                ("token", &access),
                ("token_type_hint", "refresh_token"),
                ("client_id", "public-app"),
            ],
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let jti = env.claims(&access).jti;
    let revoked = env.store.revocations(0, now()).await.unwrap();
    assert!(revoked.jtis.iter().any(|(j, _)| *j == jti));
    assert_eq!(env.introspect(&access).await.body, json!({"active": false}));
    // The grant itself lives on.
    assert_eq!(
        env.refresh("public-app", &refresh, &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revocation_answers_200_for_unknown_and_foreign_tokens() {
    let env = env().await;
    let (access, refresh) = env.grant("mcp:read").await;
    for token in ["garbage", "a.b.c", refresh.as_str(), access.as_str()] {
        let answer = env
            .post(
                "/revoke",
                &[("token", token), ("client_id", "other-app")],
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{token}");
        answer.assert_no_store();
    }
    // Another client's tokens were left alone.
    assert_eq!(env.introspect(&access).await.body["active"], true);
    assert_eq!(
        env.refresh("public-app", &refresh, &[]).await.status,
        StatusCode::OK
    );
    // Client authentication still applies, and `token` is required.
    let answer = env
        .post("/revoke", &[("token", "x")], Some(("conf-app", "wrong")))
        .await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(answer.headers.contains_key(header::WWW_AUTHENTICATE));
    env.post("/revoke", &[("client_id", "public-app")], None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

// ---- introspection ----

#[tokio::test]
async fn introspection_describes_active_tokens_only() {
    let env = env().await;
    let (access, _) = env.grant("mcp:read mcp:write").await;
    let answer = env.introspect(&access).await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.assert_no_store();
    let claims = env.claims(&access);
    assert_eq!(
        answer.body,
        json!({
            "active": true,
            "scope": "mcp:read mcp:write",
            "client_id": "public-app",
            "sub": USER_ID,
            "aud": RESOURCE,
            "iss": ISSUER,
            "exp": claims.exp,
            "iat": claims.iat,
            "nbf": claims.nbf,
            "jti": claims.jti,
            "token_type": "Bearer",
            "username": USERNAME,
        })
    );

    // Anything else: exactly {"active": false}.
    let foreign = {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(include_bytes!("keys/ec256.pem")).unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("at+jwt".into());
        header.kid = jsonwebtoken::decode_header(&access).unwrap().kid;
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let expired = {
        let mut old = claims.clone();
        old.exp = now() - 10;
        old.iat = now() - 100;
        old.nbf = old.iat;
        env.server.keys.sign(&old).unwrap()
    };
    for token in ["garbage", "a.b.c", foreign.as_str(), expired.as_str()] {
        let answer = env.introspect(token).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, json!({"active": false}), "{token}");
        answer.assert_no_store();
    }
}

#[tokio::test]
async fn introspection_of_refresh_tokens_and_client_credentials_tokens() {
    let env = env().await;
    // A grant of the confidential client.
    let code = env.code_for("conf-app", REDIRECT, "mcp:read").await;
    let answer = env
        .post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            Some(("conf-app", CONF_SECRET)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let refresh = answer.str("refresh_token");
    let described = env.introspect(&refresh).await.body;
    assert_eq!(described["active"], true);
    assert_eq!(described["client_id"], "conf-app");
    assert_eq!(described["sub"], USER_ID);
    assert_eq!(described["username"], USERNAME);
    assert_eq!(described["token_type"], "refresh_token");

    // Another client's refresh token is not described.
    let (_, public_refresh) = env.grant("mcp:read").await;
    assert_eq!(
        env.introspect(&public_refresh).await.body,
        json!({"active": false})
    );
    // A rotated refresh token is no longer active.
    let rotated = env
        .post(
            "/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            Some(("conf-app", CONF_SECRET)),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert_eq!(
        env.introspect(&refresh).await.body,
        json!({"active": false})
    );

    // client_credentials tokens: sub is the client, no username.
    let answer = env
        .post(
            "/token",
            &[("grant_type", "client_credentials")],
            Some(("conf-app", CONF_SECRET)),
        )
        .await;
    let described = env.introspect(&answer.str("access_token")).await.body;
    assert_eq!(described["active"], true);
    assert_eq!(described["sub"], "conf-app");
    assert!(described.get("username").is_none());
}

#[tokio::test]
async fn introspection_requires_a_confidential_client() {
    let env = env().await;
    let (access, _) = env.grant("mcp:read").await;
    env.post(
        "/introspect",
        &[("token", &access), ("client_id", "public-app")],
        None,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    env.post("/introspect", &[("token", &access)], None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let answer = env
        .post(
            "/introspect",
            &[("token", &access)],
            Some(("conf-app", "wrong")),
        )
        .await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(answer.headers.contains_key(header::WWW_AUTHENTICATE));
    // client_secret_post works too.
    let answer = env
        .post(
            "/introspect",
            &[
                ("token", &access),
                ("client_id", "post-app"),
                ("client_secret", POST_SECRET),
            ],
            None,
        )
        .await;
    assert_eq!(answer.body["active"], true);
}

// ---- private_key_jwt ----

mod private_key_jwt {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    async fn jwks_server() -> String {
        let key = EncodingKey::from_ec_pem(include_bytes!("keys/ec256.pem")).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("client-key".into());
        let set = serde_json::to_value(JwkSet { keys: vec![jwk] }).unwrap();
        let app = Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let set = set.clone();
                async move { axum::Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/jwks.json")
    }

    fn assertion(claims: Value, pem: &[u8]) -> String {
        let key = EncodingKey::from_ec_pem(pem).unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("client-key".into());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    fn claims(aud: &str) -> Value {
        json!({
            "iss": "jwt-app", "sub": "jwt-app", "aud": aud,
            "exp": now() + 60, "iat": now(), "jti": secrets::random_token(),
        })
    }

    #[tokio::test]
    async fn signed_assertions_authenticate_once() {
        client_auth::allow_loopback_jwks_uri(true);
        let env = env().await;
        let jwks_uri = jwks_server().await;
        env.store
            .create_client(&Client {
                client_id: "jwt-app".into(),
                secret_hash: None,
                metadata: json!({
                    "redirect_uris": [REDIRECT],
                    "token_endpoint_auth_method": "private_key_jwt",
                    "jwks_uri": jwks_uri,
                    "grant_types": ["client_credentials"],
                }),
                source: ClientSource::Dynamic,
                created_at: now(),
            })
            .await
            .unwrap();
        // A registration whose jwks_uri points inside the network is never fetched.
        for (client_id, uri) in [
            ("ssrf-app", "https://127.0.0.1:1/jwks.json"),
            ("ssrf-app-2", "http://169.254.169.254/latest/meta-data"),
        ] {
            env.store
                .create_client(&Client {
                    client_id: client_id.into(),
                    secret_hash: None,
                    metadata: json!({
                        "redirect_uris": [REDIRECT],
                        "token_endpoint_auth_method": "private_key_jwt",
                        "jwks_uri": uri,
                        "grant_types": ["client_credentials"],
                    }),
                    source: ClientSource::Dynamic,
                    created_at: now(),
                })
                .await
                .unwrap();
            let mut claims = claims(ISSUER);
            claims["iss"] = json!(client_id);
            claims["sub"] = json!(client_id);
            let answer = env
                .token(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", client_auth::JWT_BEARER_ASSERTION),
                    (
                        "client_assertion",
                        &assertion(claims, include_bytes!("keys/ec256.pem")),
                    ),
                ])
                .await;
            answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        let pem = include_bytes!("keys/ec256.pem");
        let call = |assertion: String| {
            let env = &env;
            async move {
                env.token(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", client_auth::JWT_BEARER_ASSERTION),
                    ("client_assertion", &assertion),
                ])
                .await
            }
        };

        let good = assertion(claims(&format!("{ISSUER}/token")), pem);
        let answer = call(good.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(env.claims(&answer.str("access_token")).sub, "jwt-app");
        // Single use.
        call(good)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        // The issuer is an acceptable audience too.
        assert_eq!(
            call(assertion(claims(ISSUER), pem)).await.status,
            StatusCode::OK
        );
        // Wrong audience, wrong key, expired, too long-lived, wrong subject.
        call(assertion(claims("https://other.example/token"), pem))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        call(assertion(
            claims(ISSUER),
            include_bytes!("keys/ec256-other.pem"),
        ))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        let mut expired = claims(ISSUER);
        expired["exp"] = json!(now() - 120);
        call(assertion(expired, pem))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        let mut long = claims(ISSUER);
        long["exp"] = json!(now() + 3600);
        call(assertion(long, pem))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        let mut other = claims(ISSUER);
        other["sub"] = json!("conf-app");
        other["iss"] = json!("conf-app");
        call(assertion(other, pem))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        // A client registered for private_key_jwt cannot fall back to none.
        env.token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "jwt-app"),
        ])
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        // The assertion type is required with the assertion.
        env.token(&[
            ("grant_type", "client_credentials"),
            ("client_assertion", &assertion(claims(ISSUER), pem)),
        ])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
}
