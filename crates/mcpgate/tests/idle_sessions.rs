//! Idle stateful sessions hibernate (their MCP service stops, a small record stays) and wake up on
//! their next request, keeping their id; sessions holding state a revival would lose stay awake.
//!
//! In process, on `transport::streamable::service_with` with a very short quiet period, so the
//! tests can drive the session manager's sweep themselves. Every wait is bounded by [`PATIENCE`],
//! reached only when something is broken.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpgate::backend::builtin::BuiltinBackend;
use mcpgate::backend::{Backend, TransportKind};
use mcpgate::config::{Config, ConfigArgs, FileConfig};
use mcpgate::handler::McpHandler;
use mcpgate::transport::streamable::{HibernatingSessions, service_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);
const VERSION: &str = "2025-11-25";

struct Gate {
    url: String,
    sessions: Arc<HibernatingSessions>,
    http: reqwest::Client,
    shutdown: CancellationToken,
    _notes: tempfile::TempDir,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn gate() -> Gate {
    let notes = tempfile::tempdir().expect("temp dir");
    let backend: Arc<dyn Backend> = Arc::new(
        BuiltinBackend::open(&notes.path().join("notes.db"))
            .await
            .expect("built-in backend"),
    );
    let config = Config::resolve(&ConfigArgs::default(), FileConfig::default()).expect("config");
    let shutdown = CancellationToken::new();
    let (service, sessions) = service_with(
        &config,
        move || {
            McpHandler::new(
                backend.clone(),
                TransportKind::StreamableHttp,
                Duration::from_secs(5),
            )
        },
        None,
        shutdown.clone(),
        // Quiet for a millisecond is enough: the tests decide when sessions are swept.
        Duration::from_millis(1),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("address"));
    let app = axum::Router::new().route_service("/mcp", service);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Gate {
        url,
        sessions,
        http: reqwest::Client::new(),
        shutdown,
        _notes: notes,
    }
}

/// The JSON-RPC message of a JSON or one-event SSE body.
fn message(body: &str) -> Value {
    if let Ok(value) = serde_json::from_str(body) {
        return value;
    }
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|value| value.get("id").is_some())
        .unwrap_or(Value::Null)
}

impl Gate {
    async fn post(
        &self,
        session: Option<&str>,
        body: Value,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(session) = session {
            request = request
                .header("Mcp-Session-Id", session)
                .header("MCP-Protocol-Version", VERSION);
        }
        let response = request.send().await.expect("POST /mcp");
        let status = response.status();
        let id = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        (status, id, message(&text))
    }

    async fn open(&self) -> String {
        let (status, id, init) = self
            .post(
                None,
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": VERSION, "capabilities": {},
                    "clientInfo": {"name": "idle-tests", "version": "0"}}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{init}");
        let id = id.expect("a session id");
        let (status, _, _) = self
            .post(
                Some(&id),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert!(status.is_success(), "{status}");
        id
    }

    async fn tool(&self, session: &str, name: &str, arguments: Value) -> (StatusCode, Value) {
        let (status, _, reply) = self
            .post(
                Some(session),
                json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": name, "arguments": arguments}}),
            )
            .await;
        (status, reply)
    }

    fn awake(&self) -> usize {
        self.sessions.counts().1
    }

    /// Sweeps until no session is awake (bounded).
    async fn until_asleep(&self) {
        let deadline = Instant::now() + PATIENCE;
        while self.awake() > 0 {
            assert!(Instant::now() < deadline, "sessions never hibernated");
            self.sessions.sweep().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn delete(&self, session: &str) -> StatusCode {
        self.http
            .delete(&self.url)
            .header("Mcp-Session-Id", session)
            .header("MCP-Protocol-Version", VERSION)
            .send()
            .await
            .expect("DELETE /mcp")
            .status()
    }
}

#[tokio::test]
async fn a_quiet_session_hibernates_and_wakes_up_on_its_next_request() {
    let gate = gate().await;
    let session = gate.open().await;
    gate.until_asleep().await;
    assert_eq!(gate.sessions.counts(), (1, 0), "known, asleep");

    let (status, reply) = gate
        .tool(&session, "echo", json!({"text": "still here"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["id"], 7, "{reply}");
    assert!(reply.to_string().contains("still here"), "{reply}");
    assert_eq!(gate.sessions.counts(), (1, 1), "awake again, same session");

    // Again: a revived session hibernates and wakes up like a new one.
    gate.until_asleep().await;
    let (status, reply) = gate.tool(&session, "echo", json!({"text": "twice"})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(reply.to_string().contains("twice"), "{reply}");
}

#[tokio::test]
async fn a_hibernating_session_ends_with_delete() {
    let gate = gate().await;
    let session = gate.open().await;
    let other = gate.open().await;
    gate.until_asleep().await;

    assert!(gate.delete(&session).await.is_success());
    assert!(!gate.sessions.knows(&session));
    let (status, _) = gate.tool(&session, "echo", json!({"text": "gone"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The other one is untouched, and an awake session ends the same way.
    let (status, _) = gate.tool(&other, "echo", json!({"text": "here"})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(gate.delete(&other).await.is_success());
    let (status, _) = gate.tool(&other, "echo", json!({"text": "gone"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gate.sessions.counts(), (0, 0));
}

#[tokio::test]
async fn a_session_with_an_open_stream_stays_awake() {
    let gate = gate().await;
    let session = gate.open().await;
    let stream = gate
        .http
        .get(&gate.url)
        .header("Accept", "text/event-stream")
        .header("Mcp-Session-Id", &session)
        .header("MCP-Protocol-Version", VERSION)
        .send()
        .await
        .expect("GET /mcp");
    assert_eq!(stream.status(), StatusCode::OK);
    for _ in 0..5 {
        gate.sessions.sweep().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gate.awake(), 1, "the standalone stream keeps it awake");

    // Closed by the client: nothing keeps it awake any more.
    drop(stream);
    gate.until_asleep().await;
}

#[tokio::test]
async fn a_session_with_a_logging_level_or_subscription_stays_awake() {
    let gate = gate().await;
    let session = gate.open().await;
    let (status, _, _) = gate
        .post(
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel",
                   "params": {"level": "debug"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let other = gate.open().await;
    let deadline = Instant::now() + PATIENCE;
    // The other session falls asleep; this one never does.
    while gate.sessions.counts().1 > 1 {
        assert!(
            Instant::now() < deadline,
            "the other session never hibernated"
        );
        gate.sessions.sweep().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, reply) = gate.tool(&session, "echo", json!({"text": "awake"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, _) = gate.tool(&other, "echo", json!({"text": "woken"})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_session_is_not_found_and_not_revived() {
    let gate = gate().await;
    let (status, _) = gate
        .tool(
            "0123456789abcdef0123456789abcdef",
            "echo",
            json!({"text": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gate.sessions.counts(), (0, 0));
}
