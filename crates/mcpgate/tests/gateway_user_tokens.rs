//! Proxy mode's `pass_token_to_gateway` against the real binary: an HTTP gateway upstream sees
//! each signed-in user's own upstream IdP access token, never mcpgate's token or the client's,
//! and sees no token at all when the option is off.
//!
//! The upstream tokens are put in the store the way a proxy-mode sign-in keeps them (sealed with
//! `MCP_OAUTH_UPSTREAM_TOKEN_KEY`), and the users' mcpgate access tokens are signed with the
//! store's own key, as the built-in authorization server does at the end of a sign-in (the whole
//! flow against a real IdP is `tests/proxy/run.sh`, check `gateway-token`). The upstream is an
//! rmcp Streamable HTTP server in this process that answers the `Authorization` header it got.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mcpgate_auth::keys::KeyManager;
use mcpgate_auth::resource::claims::now_secs;
use mcpgate_auth::server::token::AccessTokenClaims;
use mcpgate_auth::store::sqlite::SqliteStore;
use mcpgate_auth::store::{Store, User};
use mcpgate_auth::upstream::{Federation, Provider, UpstreamSettings, UpstreamTokens};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolsCapability,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

use common::{Mcp, Server, TOKEN};

/// mcpgate's public URL (the issuer of its tokens); never contacted.
const PUBLIC_URL: &str = "http://127.0.0.1:9";
/// The upstream IdP; never contacted (the kept tokens do not expire, so none is refreshed).
const IDP: &str = "http://127.0.0.1:7";

fn token_key() -> String {
    STANDARD.encode([7u8; 32])
}

/// The upstream: `auth_header` answers the request's `Authorization` header; `tools/list` adds
/// `bearer_<token>` for a request with a bearer token.
#[derive(Clone)]
struct HeaderEcho;

fn auth_header(context: &RequestContext<RoleServer>) -> String {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.headers.get(http::header::AUTHORIZATION))
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl ServerHandler for HeaderEcho {
    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::default();
        capabilities.tools = Some(ToolsCapability::default());
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("header-echo", "0.0.1"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({ "type": "object", "properties": {} });
        let schema = Arc::new(schema.as_object().cloned().unwrap_or_default());
        let mut tools = vec![Tool::new(
            "auth_header",
            "The Authorization header",
            schema.clone(),
        )];
        if let Some(token) = auth_header(&context).strip_prefix("Bearer ") {
            tools.push(Tool::new(format!("bearer_{token}"), "", schema));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        _request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(auth_header(&context)),
        ])))
    }
}

async fn serve_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let service = StreamableHttpService::new(
        || Ok(HeaderEcho),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}/mcp")
}

/// The OAuth store shared with the server, its signing keys and proxy mode's federation.
struct Fixture {
    store_url: String,
    store: Arc<dyn Store>,
    keys: Arc<KeyManager>,
    federation: Federation,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store_url = format!("sqlite://{}", dir.path().join("oauth.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&store_url).await.expect("store"));
        let keys = KeyManager::load_or_create(store.clone())
            .await
            .expect("keys");
        let settings = UpstreamSettings {
            provider: Provider::Oidc,
            issuer: IDP.into(),
            client_id: "mcpgate".into(),
            client_secret: "idp-client-secret".into(),
            scopes: vec!["openid".into()],
            authorize_params: Vec::new(),
            token_params: Vec::new(),
            access: Default::default(),
            group_claims: Vec::new(),
            callback_url: format!("{PUBLIC_URL}/oauth/callback"),
            leeway: Duration::from_secs(60),
        };
        let key = STANDARD.decode(token_key()).expect("key");
        let federation =
            Federation::new(settings, reqwest::Client::new(), Some(&key)).expect("federation");
        Self {
            store_url,
            store,
            keys,
            federation,
            _dir: dir,
        }
    }

    /// A user as proxy mode's first sign-in creates it (no usable password).
    async fn user(&self, user: &str) {
        let user = User {
            id: user.into(),
            username: format!("{user}@example.test"),
            password_hash: "!".into(),
            created_at: now_secs(),
        };
        self.store.create_user(&user).await.expect("create user");
    }

    /// Keep `token` as `user`'s upstream access token, as a sign-in does.
    async fn keep(&self, user: &str, token: &str) {
        let tokens = UpstreamTokens {
            access_token: token.into(),
            refresh_token: None,
            expires_at: None,
        };
        let kept = self
            .federation
            .keep_tokens(self.store.as_ref(), user, &tokens, now_secs())
            .await
            .expect("keep upstream tokens");
        assert!(kept);
    }

    /// An mcpgate access token of `user`, as the built-in server issues after a sign-in.
    fn access_token(&self, user: &str) -> String {
        let now = now_secs();
        self.keys
            .sign(&AccessTokenClaims {
                iss: PUBLIC_URL.into(),
                sub: user.into(),
                aud: format!("{PUBLIC_URL}/mcp"),
                exp: now + 600,
                iat: now,
                nbf: now,
                jti: format!("jti-{user}-{now}"),
                client_id: "test-client".into(),
                scope: "mcp:admin".into(),
                fam: Some(format!("grant-of-{user}")),
                preferred_username: Some(user.into()),
            })
            .expect("sign")
    }

    fn server(&self, upstream_url: &str, pass_token: bool) -> Server {
        Server::builder()
            .with_token()
            .env("MCP_UPSTREAM_URL", upstream_url)
            .env("MCP_OAUTH_ENABLED", "true")
            .env("MCP_OAUTH_MODE", "proxy")
            .env("MCP_OAUTH_PUBLIC_URL", PUBLIC_URL)
            .env("MCP_OAUTH_STORE", &self.store_url)
            .env("MCP_OAUTH_UPSTREAM_PROVIDER", "oidc")
            .env("MCP_OAUTH_UPSTREAM_ISSUER", IDP)
            .env("MCP_OAUTH_UPSTREAM_CLIENT_ID", "mcpgate")
            .env("MCP_OAUTH_UPSTREAM_CLIENT_SECRET", "idp-client-secret")
            .env("MCP_OAUTH_UPSTREAM_TOKEN_KEY", &token_key())
            .env(
                "MCP_OAUTH_UPSTREAM_PASS_TOKEN",
                if pass_token { "true" } else { "false" },
            )
            .env("MCP_RATE_LIMIT_RPM", "0")
            .start()
    }
}

async fn session(server: &Server, token: &str) -> Mcp {
    let mut mcp = server.mcp(Some(token));
    mcp.initialize().await;
    mcp
}

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {result}"))
        .to_owned()
}

async fn tool_names(mcp: &Mcp) -> Vec<String> {
    let result = mcp.request("tools/list", json!({})).await;
    result["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|tool| tool["name"].as_str().map(str::to_owned))
        .collect()
}

/// The JSON-RPC error of a `tools/call` that must fail.
async fn call_error(mcp: &Mcp, name: &str) -> Value {
    let exchange = mcp
        .send("tools/call", json!({ "name": name, "arguments": {} }))
        .await;
    exchange
        .message
        .get("error")
        .cloned()
        .unwrap_or_else(|| panic!("expected an error, got {}", exchange.message))
}

// Multi-threaded: the upstream in this process must answer while `start` blocks on the banner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_each_users_own_upstream_token_only_when_configured() {
    let fixture = Fixture::new().await;
    for user in ["user-alice", "user-bob", "user-carol"] {
        fixture.user(user).await;
    }
    fixture.keep("user-alice", "idpAliceToken1").await;
    fixture.keep("user-bob", "idpBobToken1").await;
    let upstream = serve_upstream().await;
    let server = fixture.server(&upstream, true);

    let alice_token = fixture.access_token("user-alice");
    let bob_token = fixture.access_token("user-bob");
    let alice = session(&server, &alice_token).await;
    let bob = session(&server, &bob_token).await;

    // Each user's requests carry that user's upstream token: not mcpgate's, not the other's.
    let seen = text(&alice.call_tool("auth_header", json!({})).await);
    assert_eq!(seen, "Bearer idpAliceToken1");
    assert!(!seen.contains(&alice_token));
    assert_eq!(
        text(&bob.call_tool("auth_header", json!({})).await),
        "Bearer idpBobToken1"
    );
    // Lists go on the user's connection too (the upstream lists per token).
    let tools = tool_names(&alice).await;
    assert!(
        tools.contains(&"bearer_idpAliceToken1".to_owned()),
        "{tools:?}"
    );
    assert!(!tools.iter().any(|t| t.contains("Bob")), "{tools:?}");
    let tools = tool_names(&bob).await;
    assert!(
        tools.contains(&"bearer_idpBobToken1".to_owned()),
        "{tools:?}"
    );

    // A new upstream token (a refresh, a new sign-in) is used from the next request on.
    fixture.keep("user-alice", "idpAliceToken2").await;
    assert_eq!(
        text(&alice.call_tool("auth_header", json!({})).await),
        "Bearer idpAliceToken2"
    );
    assert_eq!(
        text(&bob.call_tool("auth_header", json!({})).await),
        "Bearer idpBobToken1"
    );

    // A user with no kept upstream token is told to sign in again; nothing is forwarded.
    let carol = session(&server, &fixture.access_token("user-carol")).await;
    let error = call_error(&carol, "auth_header").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("sign in again"),
        "{error}"
    );
    assert_eq!(error["data"]["reason"], "upstream_token_missing");

    // A static-token principal has no upstream user: refused, never a shared connection.
    let machine = session(&server, TOKEN).await;
    let error = call_error(&machine, "auth_header").await;
    assert_eq!(
        error["data"]["reason"], "upstream_token_unavailable",
        "{error}"
    );
    let log = server.stderr.text() + &server.stdout.text();
    for secret in ["idpAliceToken", "idpBobToken", &alice_token, TOKEN] {
        assert!(!log.contains(secret), "a token reached the log");
    }
    drop(server);

    // Option off: the one shared connection sends no Authorization header at all.
    let server = fixture.server(&upstream, false);
    let alice = session(&server, &fixture.access_token("user-alice")).await;
    assert_eq!(text(&alice.call_tool("auth_header", json!({})).await), "");
    let tools = tool_names(&alice).await;
    assert!(!tools.iter().any(|t| t.starts_with("bearer_")), "{tools:?}");
}

#[test]
fn the_option_is_refused_without_an_http_upstream() {
    let proxy = |builder: common::ServerBuilder| {
        builder
            .env("MCP_OAUTH_ENABLED", "true")
            .env("MCP_OAUTH_MODE", "proxy")
            .env("MCP_OAUTH_PUBLIC_URL", PUBLIC_URL)
            .env("MCP_OAUTH_UPSTREAM_PROVIDER", "oidc")
            .env("MCP_OAUTH_UPSTREAM_ISSUER", IDP)
            .env("MCP_OAUTH_UPSTREAM_CLIENT_ID", "mcpgate")
            .env("MCP_OAUTH_UPSTREAM_CLIENT_SECRET", "idp-client-secret")
            .env("MCP_OAUTH_UPSTREAM_TOKEN_KEY", &token_key())
            .env("MCP_OAUTH_UPSTREAM_PASS_TOKEN", "true")
            .arg("config")
            .arg("check")
    };
    let stdio = proxy(Server::builder())
        .env("MCP_UPSTREAM_COMMAND", "some-mcp-server --stdio")
        .run();
    assert!(!stdio.status.success());
    assert!(
        stdio
            .stderr
            .contains("oauth.upstream.pass_token_to_gateway: a stdio upstream"),
        "{}",
        stdio.stderr
    );
    let http = proxy(Server::builder())
        .env("MCP_UPSTREAM_URL", "http://127.0.0.1:5/mcp")
        .run();
    assert!(http.status.success(), "{}", http.stderr);
}
