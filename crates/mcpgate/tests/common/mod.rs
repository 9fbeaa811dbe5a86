//! Helpers for the integration tests that run the real `mcpgate` binary.
//!
//! [`Server`] starts the binary on a random loopback port (`MCP_PORT=0`), reads the bound address
//! from the stdout banner, captures stdout and stderr, and kills the process on drop. [`Mcp`] is a
//! deliberately small MCP-over-HTTP client (reqwest + a hand-written SSE parser), so the tests see
//! exactly what goes over the wire. [`SseStream`] reads `text/event-stream` bodies event by event.
//!
//! Every wait is bounded by [`PATIENCE`], which is only ever reached when something is broken;
//! no test asserts on timing.

#![allow(dead_code)] // each test file uses a different subset of these helpers

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Upper bound for anything a test waits for; only reached when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The protocol revision of the stateful (session) era the tests speak.
pub const STATEFUL_VERSION: &str = "2025-11-25";
/// The stateless protocol revision.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// The legacy HTTP+SSE protocol revision.
pub const LEGACY_VERSION: &str = "2024-11-05";

/// The token of `MCP_AUTH_TOKEN` in the tests that set it (principal `default`).
pub const TOKEN: &str = "test-secret-token-9f2c4e";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcpgate")
}

/// Text a child process wrote on one of its output streams, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<String>>);

impl Captured {
    pub fn text(&self) -> String {
        self.0.lock().expect("captured output").clone()
    }

    fn push_line(&self, line: &str) {
        let mut text = self.0.lock().expect("captured output");
        text.push_str(line);
        text.push('\n');
    }

    /// Waits (bounded) until the text satisfies `predicate`; returns whether it did.
    pub fn wait_for(&self, predicate: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if predicate(&self.text()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads `stream` line by line into `captured`, forwarding each line to `lines` if given.
fn capture(
    stream: impl std::io::Read + Send + 'static,
    captured: Captured,
    lines: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.lines() {
            let Ok(line) = line else { break };
            captured.push_line(&line);
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
}

/// How to start `mcpgate`: arguments and environment, with test-friendly defaults.
pub struct ServerBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl ServerBuilder {
    /// Streamable HTTP on `127.0.0.1:0`, notes in a fresh temporary directory, no auth.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let notes = dir.path().join("notes.db");
        Self {
            args: Vec::new(),
            env: vec![
                ("MCP_TRANSPORT".into(), "streamable-http".into()),
                ("MCP_HOST".into(), "127.0.0.1".into()),
                ("MCP_PORT".into(), "0".into()),
                ("MCP_NOTES_DB".into(), notes.display().to_string()),
                ("MCP_LOG_LEVEL".into(), "info".into()),
            ],
            dir,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn without_env(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// `MCP_AUTH_TOKEN` = [`TOKEN`].
    pub fn with_token(self) -> Self {
        self.env("MCP_AUTH_TOKEN", TOKEN)
    }

    /// Writes `text` as a config file in the server's directory and passes it as `MCP_CONFIG`.
    pub fn config_file(self, text: &str) -> Self {
        let path = self.dir.path().join("mcpgate.toml");
        std::fs::write(&path, text).expect("write config file");
        let path = path.display().to_string();
        self.env("MCP_CONFIG", &path)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(self.dir.path());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts an HTTP server and waits for its banner.
    pub fn start(self) -> Server {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mcpgate");
        let stdout = Captured::default();
        let stderr = Captured::default();
        let (tx, rx) = mpsc::channel();
        capture(
            child.stdout.take().expect("stdout"),
            stdout.clone(),
            Some(tx),
        );
        capture(child.stderr.take().expect("stderr"), stderr.clone(), None);
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = banner_address(&line) {
                        break addr;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "mcpgate printed no banner (exit status {status:?})\nstdout:\n{}\nstderr:\n{}",
                        stdout.text(),
                        stderr.text()
                    );
                }
            }
        };
        Server {
            child,
            addr,
            stdout,
            stderr,
            dir: self.dir,
        }
    }

    /// Runs `mcpgate` to completion (for `config check` and the like).
    pub fn run(self) -> Output {
        let output = self.command().output().expect("run mcpgate");
        Output {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts `mcpgate` with piped stdin/stdout (the stdio transport).
    pub fn spawn_stdio(self) -> StdioServer {
        let mut cmd = self.command();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mcpgate");
        let stdout = Captured::default();
        let stderr = Captured::default();
        let (tx, rx) = mpsc::channel();
        let stdin = child.stdin.take();
        capture(
            child.stdout.take().expect("stdout"),
            stdout.clone(),
            Some(tx),
        );
        capture(child.stderr.take().expect("stderr"), stderr.clone(), None);
        StdioServer {
            child,
            stdin,
            lines: rx,
            stdout,
            stderr,
            _dir: self.dir,
        }
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// `mcpgate <version> listening on http://127.0.0.1:PORT` → the address.
fn banner_address(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("mcpgate ")?;
    let (_, url) = rest.split_once(" listening on http://")?;
    url.trim().trim_end_matches('/').parse().ok()
}

/// The result of a finished `mcpgate` run.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running HTTP `mcpgate`; killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub stdout: Captured,
    pub stderr: Captured,
    dir: tempfile::TempDir,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `Host` header a client of this server sends.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client of `/mcp` presenting `token` (if any).
    pub fn mcp(&self, token: Option<&str>) -> Mcp {
        Mcp::new(self.url("/mcp"), token)
    }

    /// Sends SIGTERM with the `kill` binary.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits (bounded by [`PATIENCE`]) for the process to exit.
    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote on stdout and stderr so far.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout.text(), self.stderr.text())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running stdio `mcpgate`; killed on drop.
pub struct StdioServer {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub stdout: Captured,
    pub stderr: Captured,
    _dir: tempfile::TempDir,
}

impl StdioServer {
    pub fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{message}").expect("write to mcpgate's stdin");
        stdin.flush().expect("flush stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line, or `None` if there was none within [`PATIENCE`] (or stdout closed).
    pub fn next_line(&self) -> Option<String> {
        self.lines.recv_timeout(PATIENCE).ok()
    }

    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `text/event-stream` event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

/// Parses `text/event-stream` bodies incrementally.
#[derive(Default)]
pub struct SseParser {
    buf: String,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.push_str(&String::from_utf8_lossy(bytes));
        let mut events = Vec::new();
        while let Some(pos) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=pos).collect();
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if line.is_empty() {
                let event = std::mem::take(&mut self.current);
                if std::mem::take(&mut self.has_data) {
                    events.push(event);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                "id" => self.current.id = Some(value.to_owned()),
                _ => {}
            }
        }
        events
    }
}

/// An open SSE response, read event by event.
pub struct SseStream {
    response: reqwest::Response,
    parser: SseParser,
    pending: std::collections::VecDeque<SseEvent>,
}

/// How an SSE stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The server finished the body cleanly.
    Closed,
    /// The connection failed mid-body.
    Broken(String),
    /// Nothing happened within [`PATIENCE`].
    TimedOut,
}

impl SseStream {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            parser: SseParser::default(),
            pending: Default::default(),
        }
    }

    /// The next event, or how the stream ended.
    pub async fn next(&mut self) -> Result<SseEvent, StreamEnd> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            match tokio::time::timeout(PATIENCE, self.response.chunk()).await {
                Err(_) => return Err(StreamEnd::TimedOut),
                Ok(Err(e)) => return Err(StreamEnd::Broken(format!("{e:?}"))),
                Ok(Ok(None)) => return Err(StreamEnd::Closed),
                Ok(Ok(Some(bytes))) => self.pending.extend(self.parser.feed(&bytes)),
            }
        }
    }

    /// The next event that is not a keep-alive; panics if the stream ends first.
    pub async fn expect_event(&mut self) -> SseEvent {
        match self.next().await {
            Ok(event) => event,
            Err(end) => panic!("the SSE stream ended before the expected event: {end:?}"),
        }
    }

    /// The next `message` event whose JSON-RPC id is `id`, skipping other messages.
    pub async fn expect_response(&mut self, id: i64) -> Value {
        loop {
            let event = self.expect_event().await;
            // Skip other event types, and priming events (an id and empty data, for resumption).
            if event.event.as_deref().is_some_and(|e| e != "message") || event.data.is_empty() {
                continue;
            }
            let message = event.json();
            if message.get("id") == Some(&json!(id)) {
                return message;
            }
        }
    }

    /// Reads until the stream ends, returning how it ended.
    pub async fn drain(&mut self) -> StreamEnd {
        loop {
            if let Err(end) = self.next().await {
                return end;
            }
        }
    }
}

/// A reqwest client that does not follow redirects or use proxies, and opens a fresh connection
/// per request: a refused request (413, 401…) may leave its connection closing, and a pooled
/// connection the server is closing makes reqwest fail instead of showing the server's answer.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

/// A minimal MCP client for Streamable HTTP.
pub struct Mcp {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
    pub session: Option<String>,
    /// Sent as `MCP-Protocol-Version` once initialized.
    pub protocol: Option<String>,
    next_id: AtomicI64,
}

/// One JSON-RPC exchange over POST /mcp.
#[derive(Debug)]
pub struct Exchange {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    /// The JSON-RPC message answering the request (from a JSON body or the SSE stream).
    pub message: Value,
}

impl Exchange {
    pub fn result(&self) -> &Value {
        assert!(
            self.message.get("error").is_none(),
            "expected a result, got {}",
            self.message
        );
        &self.message["result"]
    }
}

impl Mcp {
    pub fn new(url: String, token: Option<&str>) -> Self {
        Self {
            http: http(),
            url,
            token: token.map(str::to_owned),
            session: None,
            protocol: None,
            next_id: AtomicI64::new(1),
        }
    }

    pub fn next_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A POST to `/mcp` with the headers a conforming client sends.
    pub fn post(&self) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(session) = &self.session {
            request = request.header("Mcp-Session-Id", session);
        }
        if let Some(protocol) = &self.protocol {
            request = request.header("MCP-Protocol-Version", protocol);
        }
        request
    }

    /// Sends `request` (a JSON-RPC request with `id`) and reads the answer from JSON or SSE.
    pub async fn exchange(&self, request: reqwest::RequestBuilder, id: i64) -> Exchange {
        let response = request.send().await.expect("POST /mcp");
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let message = if content_type.starts_with("text/event-stream") {
            SseStream::new(response).expect_response(id).await
        } else {
            let text = response.text().await.expect("response body");
            serde_json::from_str(&text).unwrap_or_else(|_| json!({ "non_json_body": text }))
        };
        Exchange {
            status,
            headers,
            message,
        }
    }

    /// Sends a JSON-RPC request and returns the exchange (any status).
    pub async fn send(&self, method: &str, params: Value) -> Exchange {
        let id = self.next_id();
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.exchange(self.post().json(&body), id).await
    }

    /// Sends a JSON-RPC request that must succeed (HTTP 200, a `result`) and returns the result.
    pub async fn request(&self, method: &str, params: Value) -> Value {
        let exchange = self.send(method, params).await;
        assert_eq!(
            exchange.status,
            reqwest::StatusCode::OK,
            "{method}: {}",
            exchange.message
        );
        exchange.result().clone()
    }

    /// Sends a notification; returns the HTTP status.
    pub async fn notify(&self, method: &str) -> reqwest::StatusCode {
        let body = json!({ "jsonrpc": "2.0", "method": method });
        self.post()
            .json(&body)
            .send()
            .await
            .expect("POST notification")
            .status()
    }

    /// `initialize` (2025-11-25) + `notifications/initialized`; remembers the session id.
    pub async fn initialize(&mut self) -> Value {
        let exchange = self
            .send("initialize", initialize_params(STATEFUL_VERSION))
            .await;
        assert_eq!(
            exchange.status,
            reqwest::StatusCode::OK,
            "initialize: {}",
            exchange.message
        );
        let session = exchange
            .headers
            .get("mcp-session-id")
            .expect("initialize answered without Mcp-Session-Id")
            .to_str()
            .expect("ASCII session id")
            .to_owned();
        self.session = Some(session);
        self.protocol = Some(STATEFUL_VERSION.into());
        let result = exchange.result().clone();
        assert_eq!(
            self.notify("notifications/initialized").await,
            reqwest::StatusCode::ACCEPTED
        );
        result
    }

    /// `tools/call`; returns the result (which may have `isError`).
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Value {
        self.request(
            "tools/call",
            json!({ "name": name, "arguments": arguments }),
        )
        .await
    }
}

pub fn initialize_params(version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": { "name": "mcpgate-tests", "version": "0.0.0" },
    })
}

/// The `_meta` a 2026-07-28 request carries in place of the handshake.
pub fn stateless_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
        "io.modelcontextprotocol/clientInfo": { "name": "mcpgate-tests", "version": "0.0.0" },
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// Asserts a refusal carries a `WWW-Authenticate: Bearer` challenge and a JSON body with `error`;
/// returns `(challenge, body)`.
pub async fn assert_challenge(response: reqwest::Response, status: u16) -> (String, Value) {
    let url = response.url().clone();
    assert_eq!(response.status().as_u16(), status, "{url}");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{url}: no WWW-Authenticate header"))
        .to_str()
        .expect("ASCII challenge")
        .to_owned();
    assert!(
        challenge.starts_with("Bearer"),
        "{url}: challenge {challenge:?}"
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{url}: content-type {content_type:?}"
    );
    let body: Value = response.json().await.expect("JSON body");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{url}: body {body}"
    );
    (challenge, body)
}

/// Reads a JSON body, panicking with the text if it is not JSON.
pub async fn json_body(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// The structured content of a tool result that must not be an error.
pub fn structured(result: &Value) -> &Value {
    assert_ne!(result["isError"], json!(true), "tool error: {result}");
    &result["structuredContent"]
}

/// A config file path inside `dir`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}
