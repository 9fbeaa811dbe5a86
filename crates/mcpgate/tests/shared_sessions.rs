//! Stateful Streamable HTTP sessions (2025-11-25, `Mcp-Session-Id`) shared by two mcpgate
//! instances through one PostgreSQL store (issue 5): a session opened on A continues on B, stays
//! bound to the principal that opened it, ends everywhere when deleted on either instance, and
//! survives a restart of both.
//!
//! Needs a PostgreSQL server: `MCPGATE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) names a database to connect to as a user that may
//! create databases. The test creates a database of its own and drops it at the end.

mod common;
// The scratch-database helper of mcpgate-auth's tests, shared rather than copied.
#[allow(dead_code)] // not every helper is used here
#[path = "../../mcpgate-auth/tests/scratch_pg/mod.rs"]
mod scratch_pg;

use std::net::TcpListener;

use common::{Mcp, STATEFUL_VERSION, Server, http, structured};
use mcpgate_auth::server::secrets;
use scratch_pg::TestDb;
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// How many `mcp_sessions` rows of `db` have this id hash.
async fn session_rows(db: &TestDb, id_hash: &str) -> i64 {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM mcp_sessions WHERE id_hash = $1")
        .bind(id_hash)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

const ALPHA_SECRET: &str = "alpha-secret-3c1d7e0a9b";
const BETA_SECRET: &str = "beta-secret-8e2f4a6c1d";

/// Two replicas behind one load balancer: one public URL (A's), one store, two ports.
struct Deployment {
    public_url: String,
    store: String,
    ports: [u16; 2],
}

impl Deployment {
    fn config(&self) -> String {
        format!(
            r#"
[oauth]
enabled = true
mode = "builtin"
public_url = "{public}"
store = "{store}"
require_shared_store = true

[[oauth.clients]]
client_id = "svc-alpha"
client_secret = "{ALPHA_SECRET}"
scope = "mcp:tools:read mcp:tools:write"

[[oauth.clients]]
client_id = "svc-beta"
client_secret = "{BETA_SECRET}"
scope = "mcp:tools:read mcp:tools:write"
"#,
            public = self.public_url,
            store = self.store,
        )
    }

    /// Starts instance `i` (0 = A, 1 = B) and waits until it listens.
    fn start(&self, i: usize) -> Server {
        Server::builder()
            .env("MCP_PORT", &self.ports[i].to_string())
            .env("MCP_RATE_LIMIT_RPM", "0")
            .config_file(&self.config())
            .start()
    }
}

/// A client-credentials access token for `client_id`, from `server`'s token endpoint.
async fn token(server: &Server, public_url: &str, client_id: &str, secret: &str) -> String {
    let response = http()
        .post(server.url("/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "mcp:tools:read mcp:tools:write"),
            ("resource", &format!("{public_url}/mcp")),
        ])
        .send()
        .await
        .expect("POST /token");
    assert_eq!(response.status(), 200, "token for {client_id}");
    let body: Value = response.json().await.expect("token response");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// A client of `server` continuing the session `sid` with `token`.
fn joined(server: &Server, token: &str, sid: &str) -> Mcp {
    let mut mcp = server.mcp(Some(token));
    mcp.session = Some(sid.to_owned());
    mcp.protocol = Some(STATEFUL_VERSION.into());
    mcp
}

/// `whoami` in the session: it must answer for `subject`, in the session's protocol revision.
async fn assert_whoami(mcp: &Mcp, subject: &str) {
    let me = mcp.call_tool("whoami", json!({})).await;
    let me = structured(&me);
    assert_eq!(me["principal"], subject, "{me}");
    assert_eq!(me["protocol_version"], STATEFUL_VERSION, "{me}");
}

async fn tool_names(mcp: &Mcp) -> Vec<String> {
    let listed = mcp.request("tools/list", json!({})).await;
    listed["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

async fn status_of(mcp: &Mcp) -> reqwest::StatusCode {
    mcp.send("tools/list", json!({})).await.status
}

async fn delete(mcp: &Mcp) -> reqwest::StatusCode {
    let mut request = mcp
        .http
        .delete(&mcp.url)
        .header("MCP-Protocol-Version", STATEFUL_VERSION);
    if let Some(token) = &mcp.token {
        request = request.bearer_auth(token);
    }
    if let Some(sid) = &mcp.session {
        request = request.header("Mcp-Session-Id", sid);
    }
    request.send().await.expect("DELETE /mcp").status()
}

#[tokio::test]
async fn a_session_continues_on_another_instance_bound_to_its_principal() {
    let db = TestDb::new().await;
    let ports = [free_port(), free_port()];
    assert_ne!(ports[0], ports[1]);
    let deployment = Deployment {
        public_url: format!("http://127.0.0.1:{}", ports[0]),
        store: db.url.clone(),
        ports,
    };
    // One after the other: the first start creates the keys, the admin and the config clients.
    let mut a = deployment.start(0);
    let mut b = deployment.start(1);
    let alpha = token(&a, &deployment.public_url, "svc-alpha", ALPHA_SECRET).await;
    let beta = token(&b, &deployment.public_url, "svc-beta", BETA_SECRET).await;

    // Opened on A.
    let mut on_a = a.mcp(Some(&alpha));
    on_a.initialize().await;
    let sid = on_a.session.clone().expect("session id");
    assert_whoami(&on_a, "svc-alpha").await;

    // Stored hashed, never in clear.
    assert_eq!(session_rows(&db, &secrets::hash(&sid)).await, 1);
    assert_eq!(session_rows(&db, &sid).await, 0);

    // Continued on B, which never saw it: tools/list and tools/call, no new handshake.
    let on_b = joined(&b, &alpha, &sid);
    assert!(tool_names(&on_b).await.iter().any(|t| t == "whoami"));
    assert_whoami(&on_b, "svc-alpha").await;
    assert_whoami(&on_a, "svc-alpha").await;

    // Another principal with a valid token: as if the session did not exist, on both.
    assert_eq!(status_of(&joined(&b, &beta, &sid)).await, 404);
    assert_eq!(status_of(&joined(&a, &beta, &sid)).await, 404);
    assert_eq!(delete(&joined(&b, &beta, &sid)).await, 404);
    // ...and the session is unharmed by the attempts.
    assert_whoami(&on_b, "svc-alpha").await;

    // Both instances restart: the session (and the token, signed with the shared keys) lives on.
    drop(on_a);
    drop(on_b);
    for server in [&a, &b] {
        server.terminate();
    }
    assert!(a.wait_exit().is_some() && b.wait_exit().is_some());
    drop((a, b));
    let a = deployment.start(0);
    let b = deployment.start(1);
    let on_a = joined(&a, &alpha, &sid);
    let on_b = joined(&b, &alpha, &sid);
    assert_whoami(&on_b, "svc-alpha").await;
    assert_whoami(&on_a, "svc-alpha").await;
    assert_eq!(status_of(&joined(&a, &beta, &sid)).await, 404);

    // DELETE on B ends it on A too, although A holds it in memory.
    assert!(delete(&on_b).await.is_success());
    assert_eq!(status_of(&on_a).await, 404);
    assert_eq!(status_of(&on_b).await, 404);
    assert_eq!(session_rows(&db, &secrets::hash(&sid)).await, 0);

    // A session opened on B ends on B when deleted on A.
    let mut opened_on_b = b.mcp(Some(&beta));
    opened_on_b.initialize().await;
    let sid2 = opened_on_b.session.clone().expect("session id");
    assert_whoami(&opened_on_b, "svc-beta").await;
    let on_a = joined(&a, &beta, &sid2);
    assert_whoami(&on_a, "svc-beta").await;
    assert!(delete(&on_a).await.is_success());
    assert_eq!(status_of(&opened_on_b).await, 404);

    // Nothing secret reached the logs.
    for server in [&a, &b] {
        let logs = server.output();
        for secret in [alpha.as_str(), beta.as_str(), ALPHA_SECRET, BETA_SECRET] {
            assert!(!logs.contains(secret), "a secret is in the logs");
        }
        assert!(!logs.contains("panicked"), "{logs}");
    }
}

#[tokio::test]
async fn require_shared_store_refuses_sqlite() {
    let server = Server::builder()
        .env("MCP_OAUTH_ENABLED", "true")
        .env("MCP_OAUTH_REQUIRE_SHARED_STORE", "true")
        .env("MCP_OAUTH_STORE", "sqlite://oauth.db")
        .env("MCP_OAUTH_PUBLIC_URL", "http://127.0.0.1:9")
        .run();
    assert!(!server.status.success());
    let text = format!("{}{}", server.stdout, server.stderr);
    assert!(text.contains("require_shared_store"), "{text}");
}

#[tokio::test]
async fn a_sqlite_store_on_a_multi_instance_platform_warns_loudly() {
    let warned = |platform_env: Option<&str>| {
        let mut builder = Server::builder()
            .env("MCP_OAUTH_ENABLED", "true")
            .env("MCP_OAUTH_STORE", "sqlite://oauth.db")
            .env("MCP_OAUTH_PUBLIC_URL", "http://127.0.0.1:9");
        if let Some(var) = platform_env {
            builder = builder.env(var, "mcpgate");
        }
        let server = builder.start();
        // Start-up logs in order: any warning comes before the `listening` line.
        assert!(server.stderr.wait_for(|t| t.contains("listening")));
        let warned = server.stderr.text().contains("the OAuth store is SQLite");
        server.terminate();
        warned
    };
    assert!(warned(Some("K_SERVICE")));
    assert!(warned(Some("KUBERNETES_SERVICE_HOST")));
    assert!(!warned(None));
}
