//! Graceful degradation: what the real binary does when something it depends on goes away.
//!
//! - The built-in authorization server's PostgreSQL store becomes unreachable (a TCP relay in
//!   this test, cut and restored): the OAuth endpoints and `/ready` answer 503 with
//!   `Retry-After` (JSON `temporarily_unavailable` on the OAuth endpoints), tokens already issued
//!   keep working, and once the store is back nothing was half-written: the code and the refresh
//!   token a failed request carried still work, and a failed registration left no client.
//! - The external IdP's JWKS endpoint becomes unreachable: cached keys keep verifying until the
//!   key set's ceiling (`MCP_OAUTH_JWKS_MAX_AGE_SECS`), then requests get 503 — never accepted.
//! - The introspection endpoint becomes unreachable: cached answers serve until their TTL, then 503.
//! - A gateway's upstream hangs: tool calls end with a JSON-RPC error after the tool timeout, the
//!   server stays healthy, and other calls keep working.
//!
//! PostgreSQL: `MCPGATE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! names a database to connect to as a user that may create databases; the test creates a
//! database of its own and drops it at the end.

mod common;
// The scratch-database helper of mcpgate-auth's tests, shared rather than copied.
#[allow(dead_code)] // not every helper is used here
#[path = "../../mcpgate-auth/tests/scratch_pg/mod.rs"]
mod scratch_pg;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Mcp, PATIENCE, STATELESS_VERSION, Server, http, stateless_meta};
use mcpgate_auth::keys::KeyManager;
use mcpgate_auth::store::Store;
use mcpgate_auth::store::sqlite::SqliteStore;
use scratch_pg::TestDb;
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const SCOPE: &str = "mcp:tools:read";
/// The identifier audience the stand-in IdP's introspection answers carry.
const AUDIENCE: &str = "api://mcpgate";

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

// --- a TCP relay that can be cut ---------------------------------------------------------------

/// Forwards loopback connections to `target`; `cut` closes every relayed connection and refuses
/// new ones (accepted and closed at once) until `restore`.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (flag, conns) = (cut.clone(), live.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            port,
            cut,
            live,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

// --- a scratch PostgreSQL database --------------------------------------------------------------

/// What these tests need of a scratch database beyond the shared helper.
trait ScratchDbExt {
    /// The database's address as `host:port`.
    fn target(&self) -> SocketAddr;
    /// The same database, reached through a relay on `port`.
    fn url_via(&self, port: u16) -> String;
    async fn count(&self, table: &str) -> i64;
}

impl ScratchDbExt for TestDb {
    fn target(&self) -> SocketAddr {
        let url = url::Url::parse(&self.url).unwrap();
        let host = url.host_str().unwrap_or("127.0.0.1");
        let host = if host == "localhost" {
            "127.0.0.1"
        } else {
            host
        };
        format!("{host}:{}", url.port().unwrap_or(5432))
            .parse()
            .unwrap()
    }

    fn url_via(&self, port: u16) -> String {
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(port)).unwrap();
        url.to_string()
    }

    async fn count(&self, table: &str) -> i64 {
        let mut conn = PgConnection::connect(&self.url).await.unwrap();
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        n
    }
}

// --- the built-in authorization server, driven over HTTP ----------------------------------------

fn builtin_server(store_url: &str) -> (Server, String) {
    let port = free_port().to_string();
    let server = Server::builder()
        .env("MCP_PORT", &port)
        .env("MCP_OAUTH_ENABLED", "true")
        .env("MCP_OAUTH_PUBLIC_URL", &format!("http://127.0.0.1:{port}"))
        .env("MCP_OAUTH_STORE", store_url)
        .start();
    const BANNER: &str = "First start: created user `admin` with password ";
    assert!(
        server.stdout.wait_for(|out| out.contains(BANNER)),
        "no first-start admin password:\n{}",
        server.output()
    );
    let out = server.stdout.text();
    let password = out
        .lines()
        .find_map(|line| line.split_once(BANNER).map(|(_, rest)| rest))
        .expect("banner line")
        .trim()
        .trim_matches('`')
        .to_owned();
    (server, password)
}

fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in the page:\n{html}"))
        + marker.len();
    let end = html[start..].find('"').expect("end of the value") + start;
    html[start..end].to_owned()
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-mcpgate-session="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned()
}

async fn register(server: &Server) -> reqwest::Response {
    http()
        .post(server.url("/register"))
        .json(&json!({
            "client_name": "degradation test",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .expect("POST /register")
}

/// A PKCE verifier and the authorization URL that goes with it.
fn authorization_url(server: &Server, client_id: &str) -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    // S256: the hex SHA-256 mcpgate-auth computes, as base64url bytes.
    let hex = mcpgate_auth::server::secrets::hash(&verifier);
    let digest: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let challenge = URL_SAFE_NO_PAD.encode(digest);
    let mut url = url::Url::parse(&server.url("/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "s1")
        .append_pair("scope", SCOPE)
        .append_pair("resource", &server.url("/mcp"));
    (url.to_string(), verifier)
}

/// Signs in as `admin` and approves (when asked); returns the authorization code and verifier.
async fn authorization_code(server: &Server, client_id: &str, password: &str) -> (String, String) {
    let (auth_url, verifier) = authorization_url(server, client_id);
    let browser = http();
    let login = browser.get(&auth_url).send().await.unwrap();
    assert_eq!(login.status(), 200, "login page");
    let html = login.text().await.unwrap();
    let after_login = browser
        .post(server.url("/authorize/login"))
        .form(&[
            ("pending", hidden_field(&html, "pending").as_str()),
            ("csrf", hidden_field(&html, "csrf").as_str()),
            ("username", "admin"),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    let redirect = if after_login.status() == 303 {
        location(&after_login) // consent already given
    } else {
        assert_eq!(after_login.status(), 200, "consent page");
        let cookie = session_cookie(&after_login).expect("session cookie");
        let html = after_login.text().await.unwrap();
        let approved = browser
            .post(server.url("/authorize/consent"))
            .header(reqwest::header::COOKIE, cookie)
            .form(&[
                ("pending", hidden_field(&html, "pending").as_str()),
                ("csrf", hidden_field(&html, "csrf").as_str()),
                ("decision", "approve"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(approved.status(), 303, "approval redirects");
        location(&approved)
    };
    let redirect = url::Url::parse(&redirect).unwrap();
    let code = redirect
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {redirect}"));
    (code, verifier)
}

async fn token_request(server: &Server, form: &[(&str, &str)]) -> reqwest::Response {
    http()
        .post(server.url("/token"))
        .form(form)
        .send()
        .await
        .expect("POST /token")
}

async fn exchange(
    server: &Server,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    let resource = server.url("/mcp");
    token_request(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", verifier),
            ("resource", &resource),
        ],
    )
    .await
}

async fn refresh(server: &Server, client_id: &str, refresh_token: &str) -> reqwest::Response {
    token_request(
        server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ],
    )
    .await
}

/// A 503 that says when to come back; for OAuth endpoints also the RFC 6749 JSON error.
async fn assert_unavailable(response: reqwest::Response, what: &str, oauth_json: bool) {
    assert_eq!(response.status(), 503, "{what}");
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| s > 0),
        "{what}: 503 without Retry-After"
    );
    if oauth_json {
        assert_eq!(
            response
                .headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{what}"
        );
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], "temporarily_unavailable", "{what}: {body}");
    }
}

async fn whoami(server: &Server, token: &str) -> reqwest::Response {
    http()
        .post(server.url("/mcp"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", STATELESS_VERSION)
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", "whoami")
        .bearer_auth(token)
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "whoami", "arguments": {}, "_meta": stateless_meta() },
        }))
        .send()
        .await
        .expect("POST /mcp")
}

async fn wait_ready(server: &Server) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = http()
            .get(server.url("/ready"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if status == Some(200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again after the store came back: {status:?}\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_503_with_retry_after_and_leaves_nothing_half_written() {
    let db = TestDb::new().await;
    let relay = Relay::start(db.target()).await;
    let (server, password) = builtin_server(&db.url_via(relay.port));

    let registered = register(&server).await;
    assert_eq!(registered.status(), 201, "registration");
    let client_id = registered.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, verifier) = authorization_code(&server, &client_id, &password).await;
    let tokens: Value = exchange(&server, &client_id, &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().expect("access token");
    let refresh_token = tokens["refresh_token"].as_str().expect("refresh token");
    let (code2, verifier2) = authorization_code(&server, &client_id, &password).await;
    let clients_before = db.count("clients").await;

    relay.cut();

    assert_unavailable(
        http().get(server.url("/ready")).send().await.unwrap(),
        "/ready",
        false,
    )
    .await;
    assert_unavailable(
        exchange(&server, &client_id, &code2, &verifier2).await,
        "code exchange",
        true,
    )
    .await;
    assert_unavailable(
        refresh(&server, &client_id, refresh_token).await,
        "refresh",
        true,
    )
    .await;
    assert_unavailable(register(&server).await, "registration", true).await;
    let (auth_url, _) = authorization_url(&server, &client_id);
    assert_unavailable(
        http().get(&auth_url).send().await.unwrap(),
        "authorization endpoint",
        false,
    )
    .await;
    // Tokens already issued are verified without the store.
    let call = whoami(&server, access).await;
    assert_eq!(call.status(), 200, "an issued token still works");
    assert_eq!(
        http()
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    relay.restore();
    wait_ready(&server).await;

    // Nothing was half-written: the failed registration left no client, the failed exchange did
    // not consume the code, the failed refresh did not rotate the token.
    assert_eq!(db.count("clients").await, clients_before);
    let second = exchange(&server, &client_id, &code2, &verifier2).await;
    assert_eq!(
        second.status(),
        200,
        "the code survived the failed exchange"
    );
    let refreshed = refresh(&server, &client_id, refresh_token).await;
    assert_eq!(
        refreshed.status(),
        200,
        "the refresh token survived the failed refresh"
    );
    let refreshed: Value = refreshed.json().await.unwrap();
    let again = refresh(
        &server,
        &client_id,
        refreshed["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(again.status(), 200, "the family is intact");
    assert_eq!(register(&server).await.status(), 201);
    assert!(!server.output().contains("panicked"), "{}", server.output());
}

// --- an external IdP whose endpoints can go away ------------------------------------------------

/// An IdP stand-in: a JWKS (the keys of a throwaway key ring) and an introspection endpoint,
/// served until `stop`.
struct Idp {
    issuer: String,
    keys: Arc<KeyManager>,
    stop: CancellationToken,
    introspections: Arc<AtomicUsize>,
}

impl Idp {
    async fn start() -> Self {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
        let keys = KeyManager::load_or_create(store).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let jwks = serde_json::to_value(keys.jwks()).unwrap();
        let introspections = Arc::new(AtomicUsize::new(0));
        let counter = introspections.clone();
        let iss = issuer.clone();
        let app = axum::Router::new()
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let jwks = jwks.clone();
                    async move { axum::Json(jwks) }
                }),
            )
            .route(
                "/introspect",
                axum::routing::post(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let iss = iss.clone();
                    async move {
                        let now = now();
                        axum::Json(json!({
                            "active": true, "iss": iss, "sub": "carol", "client_id": "svc",
                            "scope": SCOPE, "exp": now + 3600, "iat": now,
                            "aud": AUDIENCE,
                        }))
                    }
                }),
            );
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
                .unwrap()
        });
        Self {
            issuer,
            keys,
            stop,
            introspections,
        }
    }

    fn jwt(&self, resource: &str) -> String {
        let now = now();
        self.keys
            .sign(&json!({
                "iss": self.issuer, "sub": "carol", "aud": resource, "client_id": "svc",
                "scope": SCOPE, "iat": now, "exp": now + 3600, "jti": format!("j{}", rand::random::<u32>()),
            }))
            .unwrap()
    }

    /// The IdP goes away: no new connections, idle ones closed.
    fn stop(&self) {
        self.stop.cancel();
    }
}

fn now() -> i64 {
    mcpgate_auth::resource::claims::now_secs()
}

fn external_server(idp: &Idp, extra: &[(&str, &str)]) -> Server {
    let port = free_port().to_string();
    let public = format!("http://127.0.0.1:{port}");
    let mut builder = Server::builder()
        .env("MCP_PORT", &port)
        .env("MCP_OAUTH_ENABLED", "true")
        .env("MCP_OAUTH_MODE", "external")
        .env("MCP_OAUTH_ISSUER", &idp.issuer)
        .env("MCP_OAUTH_PUBLIC_URL", &public)
        .env("MCP_OAUTH_AUDIENCES", AUDIENCE);
    for (k, v) in extra {
        builder = builder.env(k, v);
    }
    builder.start()
}

/// Polls `whoami` until it stops answering 200 (the cache ran out), within PATIENCE.
async fn until_not_ok(server: &Server, token: &str) -> reqwest::Response {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = whoami(server, token).await;
        if response.status() != 200 {
            return response;
        }
        assert!(Instant::now() < deadline, "still accepted after PATIENCE");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_serves_cached_keys_until_their_ceiling_then_503() {
    let idp = Idp::start().await;
    let server = external_server(
        &idp,
        &[
            ("MCP_OAUTH_JWKS_URI", &format!("{}/jwks", idp.issuer)),
            ("MCP_OAUTH_JWKS_MAX_AGE_SECS", "3"),
        ],
    );
    let token = idp.jwt(&server.url("/mcp"));
    let fresh = idp.jwt(&server.url("/mcp"));
    assert_eq!(whoami(&server, &token).await.status(), 200);

    idp.stop();
    // Within the ceiling the cached keys verify both a token seen before and a new one.
    assert_eq!(whoami(&server, &token).await.status(), 200, "cached token");
    let first_sight = whoami(&server, &fresh).await;
    if first_sight.status() != 200 {
        // Only acceptable if the ceiling passed already (a slow machine): then it must be 503.
        assert_unavailable(first_sight, "new token after the ceiling", false).await;
    }
    // Past the ceiling: 503 with Retry-After, never a silent accept.
    let refused = until_not_ok(&server, &token).await;
    assert_unavailable(refused, "cached token after the ceiling", false).await;
    assert_unavailable(whoami(&server, &fresh).await, "new token", false).await;
    assert_eq!(
        http()
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_introspection_endpoint_serves_cached_answers_until_their_ttl_then_503() {
    let idp = Idp::start().await;
    let server = external_server(
        &idp,
        &[
            (
                "MCP_OAUTH_INTROSPECTION_URL",
                &format!("{}/introspect", idp.issuer),
            ),
            ("MCP_OAUTH_INTROSPECTION_CLIENT_ID", "mcpgate"),
            ("MCP_OAUTH_INTROSPECTION_CLIENT_SECRET", "mcpgate-secret"),
            ("MCP_OAUTH_INTROSPECTION_CACHE_SECS", "3"),
            ("MCP_OAUTH_JWKS_URI", &format!("{}/jwks", idp.issuer)),
        ],
    );
    let seen = "opaque-token-seen-before-0123456789";
    assert_eq!(whoami(&server, seen).await.status(), 200);
    let calls = idp.introspections.load(Ordering::SeqCst);
    assert_eq!(whoami(&server, seen).await.status(), 200);
    assert_eq!(
        idp.introspections.load(Ordering::SeqCst),
        calls,
        "answered from the cache"
    );

    idp.stop();
    // A token never introspected cannot be checked: 503 at once.
    assert_unavailable(
        whoami(&server, "opaque-token-never-seen-0123456789").await,
        "unseen token",
        false,
    )
    .await;
    // The cached one serves until its TTL, then 503.
    let refused = until_not_ok(&server, seen).await;
    assert_unavailable(refused, "cached token after its TTL", false).await;
    assert_eq!(
        http()
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

// --- a hung upstream in gateway mode ------------------------------------------------------------

fn echo_upstream() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile directory")
        .to_path_buf();
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = std::process::Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "mcpgate",
            "--example",
            "echo_upstream",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build --example");
        assert!(status.success(), "building echo_upstream failed");
    }
    let path = profile_dir.join("examples").join("echo_upstream");
    assert!(path.exists(), "no echo_upstream at {}", path.display());
    path
}

/// A stateless `tools/call`; returns the HTTP status and the JSON-RPC message.
async fn call(server: &Server, tool: &str, arguments: Value) -> (u16, Value) {
    let mcp = Mcp::new(server.url("/mcp"), None);
    let id = mcp.next_id();
    let request = mcp
        .post()
        .header("MCP-Protocol-Version", STATELESS_VERSION)
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", tool)
        .json(&json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": tool, "arguments": arguments, "_meta": stateless_meta() },
        }));
    let exchange = mcp.exchange(request, id).await;
    (exchange.status.as_u16(), exchange.message)
}

fn is_timeout_error(message: &Value) -> bool {
    // Either a JSON-RPC error, or a tool result flagged as an error, naming the timeout.
    let text = message.to_string();
    (message.get("error").is_some() || message["result"]["isError"] == true)
        && (text.contains("did not answer within") || text.contains("timed out"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_times_out_cleanly_and_the_gateway_stays_healthy() {
    let upstream = echo_upstream();
    let server = Server::builder()
        .env("MCP_UPSTREAM_COMMAND", &upstream.display().to_string())
        .env("MCP_TOOL_TIMEOUT_SECS", "2")
        .start();
    let (status, message) = call(&server, "echo", json!({ "text": "hi" })).await;
    assert_eq!(status, 200, "{message}");
    let (_, pid) = call(&server, "pid", json!({})).await;
    let pid: i32 = pid["result"]["content"][0]["text"]
        .as_str()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("the upstream's pid in {pid}"));

    // One call hangs upstream; others go on meanwhile.
    let hung = {
        let url = server.url("/mcp");
        tokio::spawn(async move {
            let mcp = Mcp::new(url, None);
            let id = mcp.next_id();
            let request = mcp
                .post()
                .header("MCP-Protocol-Version", STATELESS_VERSION)
                .header("Mcp-Method", "tools/call")
                .header("Mcp-Name", "slow")
                .json(&json!({
                    "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": { "name": "slow", "arguments": { "ms": 600_000 }, "_meta": stateless_meta() },
                }));
            let exchange = mcp.exchange(request, id).await;
            (exchange.status.as_u16(), exchange.message)
        })
    };
    let (status, message) = call(&server, "echo", json!({ "text": "meanwhile" })).await;
    assert_eq!(status, 200);
    assert!(message.to_string().contains("meanwhile"), "{message}");
    let (status, message) = tokio::time::timeout(PATIENCE, hung)
        .await
        .expect("the hung call ends")
        .unwrap();
    assert_eq!(
        status, 200,
        "a timeout is a JSON-RPC answer, not an HTTP error"
    );
    assert!(is_timeout_error(&message), "{message}");

    // The whole upstream process hangs (stopped): calls time out cleanly, health stays up.
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let (status, message) =
        tokio::time::timeout(PATIENCE, call(&server, "echo", json!({ "text": "x" })))
            .await
            .expect("the call ends");
    assert_eq!(status, 200);
    assert!(is_timeout_error(&message), "{message}");
    assert_eq!(
        http()
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let cont = std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(cont.success());
    let (status, message) = call(&server, "echo", json!({ "text": "back" })).await;
    assert_eq!(status, 200);
    assert!(message.to_string().contains("back"), "{message}");
    assert!(!server.output().contains("panicked"), "{}", server.output());
}
