//! The gateway backend against real upstreams.
//!
//! The stdio upstream is `examples/echo_upstream.rs`, an rmcp server. A full `cargo test` builds
//! the package's examples, but `cargo test --test gateway` does not, so the tests run
//! `cargo build -p mcpgate --example echo_upstream` once themselves (a no-op when it is fresh;
//! skipped when `CARGO` is unset, e.g. for a prebuilt test archive) and use
//! `target/<profile>/examples/echo_upstream`. The HTTP upstream is an rmcp Streamable HTTP server
//! started in-process on a loopback port.
//!
//! Each test serves `McpHandler` over `GatewayBackend` on an in-memory duplex pipe and talks to it
//! with an rmcp client, so the whole path downstream client → mcpgate → upstream is exercised.

#![allow(deprecated)] // sampling, roots, logging and subscriptions are deprecated by SEP-2577

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mcpgate::backend::gateway::{GatewayBackend, GatewayError, UpstreamTarget};
use mcpgate::backend::{Backend, TransportKind};
use mcpgate::handler::McpHandler;
use rmcp::model::{
    ArgumentInfo, CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult,
    ClientCapabilities, ClientConfig, CompleteRequestParams, ContentBlock,
    CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams, ElicitResult,
    ElicitationAction, ElicitationCapability, GetPromptRequestParams, Implementation,
    ListRootsResult, ListToolsResult, LoggingMessageNotificationParam, PaginatedRequestParams,
    ProgressNotificationParam, ProtocolVersion, ReadResourceRequestParams, Reference,
    ResourceUpdatedNotificationParam, Root, RootsCapabilities, SamplingCapability, SamplingMessage,
    ServerCapabilities, ServerConfig, SubscribeRequestParams, Tool, ToolsCapability,
};
use rmcp::service::{
    NotificationContext, PeerRequestOptions, RequestContext, RunningService, ServiceError,
};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ClientHandler, ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test waits for; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

fn echo_upstream() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(build_echo_upstream).clone()
}

/// Locate echo_upstream next to this test binary, (re)building it first when cargo is at hand:
/// `cargo test --test gateway` alone does not build examples, and a stale one would mislead.
fn build_echo_upstream() -> PathBuf {
    // The test binary is target/<profile>/deps/gateway-<hash>; examples are in target/<profile>/examples.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile directory");
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
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for echo_upstream");
        assert!(status.success(), "building echo_upstream failed");
    }
    let path = profile_dir
        .join("examples")
        .join(format!("echo_upstream{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p mcpgate --example echo_upstream`",
        path.display()
    );
    path
}

/// What the downstream test client saw from the gateway.
#[derive(Default)]
struct Seen {
    tool_list_changed: usize,
    progress: Vec<ProgressNotificationParam>,
    logs: Vec<LoggingMessageNotificationParam>,
    updated: Vec<String>,
}

/// A downstream client that supports sampling, roots and elicitation, and records notifications.
#[derive(Clone, Default)]
struct TestClient {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
}

impl TestClient {
    fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().expect("seen lock"))
    }

    fn record(&self, write: impl FnOnce(&mut Seen)) {
        write(&mut self.seen.lock().expect("seen lock"));
        self.changed.notify_waiters();
    }

    /// Wait until `done` holds for what was seen.
    async fn wait_for(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        let waited = tokio::time::timeout(PATIENCE, async {
            loop {
                let notified = self.changed.notified();
                if self.seen(&done) {
                    return;
                }
                notified.await;
            }
        })
        .await;
        assert!(waited.is_ok(), "never saw {what}");
    }
}

impl ClientHandler for TestClient {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.sampling = Some(SamplingCapability::default());
        capabilities.roots = Some(RootsCapabilities::default());
        capabilities.elicitation = Some(ElicitationCapability::new());
        ClientConfig::new(capabilities, Implementation::new("gateway-test", "0"))
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    async fn create_message(
        &self,
        _params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text("sampled by the test client"),
            "test-model".into(),
        ))
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        Ok(ListRootsResult::new(vec![Root::new(
            "file:///tmp/test-root",
        )]))
    }

    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        Ok(ElicitResult::new(ElicitationAction::Accept)
            .with_content(json!({ "answer": "forty-two" })))
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.record(|seen| seen.tool_list_changed += 1);
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.record(|seen| seen.progress.push(params));
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.record(|seen| seen.logs.push(params));
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.record(|seen| seen.updated.push(params.uri));
    }
}

/// mcpgate (gateway backend + MCP handler) in front of echo_upstream, with a client connected.
struct Harness {
    backend: Arc<GatewayBackend>,
    client: RunningService<RoleClient, TestClient>,
    observer: TestClient,
    shutdown: CancellationToken,
}

impl Harness {
    /// In front of echo_upstream.
    async fn start(call_timeout: Duration) -> Self {
        let command = format!("'{}'", echo_upstream().display());
        Self::start_with(UpstreamTarget::Command(command), call_timeout).await
    }

    async fn start_with(target: UpstreamTarget, call_timeout: Duration) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("mcpgate=debug,warn")
            .try_init();
        let shutdown = CancellationToken::new();
        let backend = GatewayBackend::connect(target, call_timeout, shutdown.clone())
            .await
            .expect("gateway connects to echo_upstream");
        let handler = McpHandler::new(
            backend.clone(),
            TransportKind::Stdio,
            Duration::from_secs(120),
        );
        let (server_io, client_io) = tokio::io::duplex(256 * 1024);
        tokio::spawn(async move {
            if let Ok(server) = handler.serve(server_io).await {
                let _ = server.waiting().await;
            }
        });
        let observer = TestClient::default();
        let client = observer
            .clone()
            .serve(client_io)
            .await
            .expect("client initializes with mcpgate");
        Self {
            backend,
            client,
            observer,
            shutdown,
        }
    }

    async fn call(&self, tool: &str, arguments: Value) -> Result<CallToolResult, ServiceError> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Value::Object(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        self.client.call_tool(params).await
    }

    async fn text(&self, tool: &str, arguments: Value) -> String {
        let result = self
            .call(tool, arguments)
            .await
            .unwrap_or_else(|error| panic!("{tool} failed: {error}"));
        text_of(&result)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text())
        .map(|text| text.text.as_str())
        .collect()
}

fn error_message(error: ServiceError) -> String {
    match error {
        ServiceError::McpError(error) => error.message.into_owned(),
        other => panic!("expected a JSON-RPC error, got {other}"),
    }
}

#[tokio::test]
async fn serves_the_upstream_tools_resources_prompts_and_completions() {
    let gate = Harness::start(Duration::from_secs(20)).await;

    let info = gate.client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|server| server.name.as_str()),
        Some("echo-upstream")
    );
    assert_eq!(
        info.server_info
            .as_ref()
            .map(|server| server.version.as_str()),
        Some("1.2.3")
    );
    assert_eq!(
        info.instructions.as_deref(),
        Some("A test upstream for mcpgate.")
    );
    let tools_capability = info
        .capabilities
        .tools
        .as_ref()
        .expect("tools capability mirrored");
    assert_eq!(tools_capability.list_changed, Some(true));
    assert_eq!(
        info.capabilities
            .resources
            .as_ref()
            .and_then(|resources| resources.subscribe),
        Some(true)
    );
    assert!(info.capabilities.prompts.is_some() && info.capabilities.completions.is_some());

    // The upstream pages tools three at a time: all pages must be followed.
    let tools = gate.client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    for expected in [
        "echo",
        "add",
        "pid",
        "crash",
        "slow",
        "progress",
        "sample",
        "roots",
        "elicit",
        "toggle_extra",
        "log",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    assert_eq!(gate.text("echo", json!({ "text": "hello" })).await, "hello");
    assert_eq!(gate.text("add", json!({ "a": 2, "b": 3 })).await, "5");
    let unknown = gate
        .call("nope", json!({}))
        .await
        .expect("tool errors are results");
    assert_eq!(unknown.is_error, Some(true));

    let resources = gate
        .client
        .list_all_resources()
        .await
        .expect("resources/list");
    assert_eq!(
        resources
            .iter()
            .map(|resource| resource.uri.as_str())
            .collect::<Vec<_>>(),
        ["mem://greeting"]
    );
    let templates = gate
        .client
        .list_all_resource_templates()
        .await
        .expect("resources/templates/list");
    assert_eq!(templates.len(), 1);
    let read = gate
        .client
        .read_resource(ReadResourceRequestParams::new("mem://echo/abc"))
        .await
        .expect("resources/read");
    assert_eq!(
        serde_json::to_value(&read.contents).expect("json")[0]["text"],
        "abc"
    );
    let missing = gate
        .client
        .read_resource(ReadResourceRequestParams::new("mem://nothing"))
        .await;
    assert!(
        matches!(missing, Err(ServiceError::McpError(error)) if error.code == rmcp::model::ErrorCode::RESOURCE_NOT_FOUND)
    );

    let prompts = gate.client.list_all_prompts().await.expect("prompts/list");
    assert_eq!(
        prompts
            .iter()
            .map(|prompt| prompt.name.as_str())
            .collect::<Vec<_>>(),
        ["greet"]
    );
    let mut arguments = serde_json::Map::new();
    arguments.insert("name".into(), json!("Ada"));
    let prompt = gate
        .client
        .get_prompt(GetPromptRequestParams::new("greet").with_arguments(arguments))
        .await
        .expect("prompts/get");
    assert!(
        serde_json::to_string(&prompt.messages)
            .expect("json")
            .contains("Say hello to Ada")
    );

    let completion = gate
        .client
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("greet"),
            ArgumentInfo::new("name", "a"),
        ))
        .await
        .expect("completion/complete");
    assert_eq!(completion.completion.values, ["alice"]);

    assert_eq!(gate.backend.readiness().await, Ok(()));
}

#[tokio::test]
async fn a_crashed_upstream_fails_cleanly_and_is_restarted() {
    let gate = Harness::start(Duration::from_secs(20)).await;
    let first_pid = gate.text("pid", json!({})).await;

    let crashed = gate
        .call("crash", json!({}))
        .await
        .expect_err("the call that kills the upstream fails");
    assert!(error_message(crashed).contains("upstream MCP server exited"));

    // Calls made while it is down fail with an error rather than hanging; then it comes back.
    let restarted = tokio::time::timeout(PATIENCE, async {
        loop {
            match gate.call("pid", json!({})).await {
                Ok(result) => return text_of(&result),
                Err(error) => {
                    let message = error_message(error);
                    assert!(
                        message.contains("upstream MCP server"),
                        "unexpected error: {message}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await
    .expect("the upstream is restarted");
    assert_ne!(restarted, first_pid, "a new upstream process serves calls");
    assert_eq!(gate.text("echo", json!({ "text": "again" })).await, "again");
    assert_eq!(gate.backend.readiness().await, Ok(()));
}

#[tokio::test]
async fn a_hung_upstream_call_times_out() {
    let gate = Harness::start(Duration::from_millis(300)).await;
    let timed_out = gate
        .call("slow", json!({ "ms": 10_000 }))
        .await
        .expect_err("slow call times out");
    assert!(error_message(timed_out).contains("did not answer within"));
    // The upstream itself is fine and keeps serving.
    assert_eq!(
        gate.text("echo", json!({ "text": "still here" })).await,
        "still here"
    );
}

#[tokio::test]
async fn upstream_notifications_reach_the_client() {
    let gate = Harness::start(Duration::from_secs(20)).await;

    assert_eq!(
        gate.text("toggle_extra", json!({})).await,
        "extra listed: true"
    );
    gate.observer
        .wait_for("tools/list_changed", |seen| seen.tool_list_changed > 0)
        .await;
    let tools = gate.client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|tool| tool.name == "extra"));

    // rmcp gives every request a progress token; progress must come back under the client's own.
    assert_eq!(
        gate.text("progress", json!({ "steps": 3 })).await,
        "3 steps"
    );
    gate.observer
        .wait_for("three progress notifications", |seen| {
            seen.progress.len() >= 3
        })
        .await;
    let tokens: Vec<_> = gate.observer.seen(|seen| {
        seen.progress
            .iter()
            .map(|p| p.progress_token.clone())
            .collect()
    });
    assert!(
        tokens.windows(2).all(|pair| pair[0] == pair[1]),
        "one token for one call: {tokens:?}"
    );

    assert_eq!(
        gate.text("log", json!({ "text": "careful" })).await,
        "logged"
    );
    gate.observer
        .wait_for("a log message", |seen| {
            seen.logs.iter().any(|log| log.data == json!("careful"))
        })
        .await;

    gate.client
        .subscribe(SubscribeRequestParams::new("mem://greeting"))
        .await
        .expect("resources/subscribe");
    gate.observer
        .wait_for("resources/updated", |seen| {
            seen.updated.iter().any(|uri| uri == "mem://greeting")
        })
        .await;
}

#[tokio::test]
async fn upstream_requests_are_answered_by_the_client() {
    let gate = Harness::start(Duration::from_secs(20)).await;
    assert!(
        gate.text("sample", json!({ "text": "hi" }))
            .await
            .contains("sampled by the test client")
    );
    assert_eq!(gate.text("roots", json!({})).await, "file:///tmp/test-root");
    let elicited = gate.text("elicit", json!({ "text": "what?" })).await;
    assert!(
        elicited.contains("accept") && elicited.contains("forty-two"),
        "{elicited}"
    );
}

#[tokio::test]
async fn bad_targets_fail_at_connect() {
    let shutdown = CancellationToken::new();
    let timeout = Duration::from_secs(5);
    let empty = GatewayBackend::connect(
        UpstreamTarget::Command("  ".into()),
        timeout,
        shutdown.clone(),
    )
    .await;
    assert!(matches!(empty, Err(GatewayError::InvalidCommand(_))));
    let quotes = GatewayBackend::connect(
        UpstreamTarget::Command("echo 'oops".into()),
        timeout,
        shutdown.clone(),
    )
    .await;
    assert!(matches!(quotes, Err(GatewayError::InvalidCommand(_))));
    let missing = GatewayBackend::connect(
        UpstreamTarget::Command("/nonexistent/mcp-server --flag".into()),
        timeout,
        shutdown.clone(),
    )
    .await;
    assert!(matches!(missing, Err(GatewayError::Spawn { .. })));
    let not_http = GatewayBackend::connect(
        UpstreamTarget::Url("ftp://example.test/mcp".into()),
        timeout,
        shutdown.clone(),
    )
    .await;
    assert!(matches!(not_http, Err(GatewayError::InvalidUrl { .. })));
    // A process that is not an MCP server: the handshake fails instead of hanging.
    let not_mcp = GatewayBackend::connect(
        UpstreamTarget::Command("true".into()),
        timeout,
        shutdown.clone(),
    )
    .await;
    assert!(matches!(not_mcp, Err(GatewayError::Handshake(_))));
    shutdown.cancel();
}

#[tokio::test]
async fn a_cancelled_call_is_cancelled_upstream() {
    let gate = Harness::start(Duration::from_secs(20)).await;
    let mut arguments = serde_json::Map::new();
    arguments.insert("ms".into(), json!(60_000));
    let request =
        CallToolRequest::new(CallToolRequestParams::new("slow").with_arguments(arguments));
    let handle = gate
        .client
        .send_request_with_option(request.into(), PeerRequestOptions::no_options())
        .await
        .expect("slow call sent");
    // Give the call time to reach the upstream; cancelling earlier would cancel nothing there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle
        .cancel(Some("test".into()))
        .await
        .expect("cancel sent");
    let seen = tokio::time::timeout(PATIENCE, async {
        while gate.text("cancelled", json!({})).await != "1" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(seen.is_ok(), "the upstream never saw the cancellation");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn shutdown_stops_the_upstream() {
    let gate = Harness::start(Duration::from_secs(20)).await;
    let pid = gate.text("pid", json!({})).await;
    gate.shutdown.cancel();
    let gone = tokio::time::timeout(PATIENCE, async {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "upstream process {pid} still runs after shutdown"
    );
    assert!(gate.backend.readiness().await.is_err());
}

/// A Streamable HTTP upstream with one tool, served by rmcp on a loopback port.
struct HttpUpstream;

impl ServerHandler for HttpUpstream {
    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::default();
        capabilities.tools = Some(ToolsCapability::default());
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("http-upstream", "0.0.1"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({ "type": "object", "properties": {} });
        let schema = Arc::new(schema.as_object().cloned().unwrap_or_default());
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "hello",
            "Say hello",
            schema,
        )]))
    }

    async fn call_tool(
        &self,
        _request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text("hello over http"),
        ])))
    }
}

/// Serve `HttpUpstream` at `/mcp` until the returned token is cancelled.
fn serve_http_upstream(listener: tokio::net::TcpListener) -> CancellationToken {
    let stop = CancellationToken::new();
    let config = StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token());
    let service = StreamableHttpService::new(
        || Ok(HttpUpstream),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(until.cancelled_owned())
            .await;
    });
    stop
}

#[tokio::test]
async fn an_http_upstream_is_served_and_reconnected() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let stop = serve_http_upstream(listener);
    let url = format!("http://{address}/mcp");
    let gate = Harness::start_with(UpstreamTarget::Url(url), Duration::from_secs(20)).await;

    let info = gate.client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|server| server.name.as_str()),
        Some("http-upstream")
    );
    let tools = gate.client.list_all_tools().await.expect("tools/list");
    assert_eq!(
        tools
            .iter()
            .map(|tool| tool.name.as_ref())
            .collect::<Vec<_>>(),
        ["hello"]
    );
    assert_eq!(gate.text("hello", json!({})).await, "hello over http");

    // The upstream goes away: calls fail with a clear error, never hang.
    stop.cancel();
    let failed = tokio::time::timeout(PATIENCE, async {
        loop {
            match gate.call("hello", json!({})).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(error) => return error_message(error),
            }
        }
    })
    .await
    .expect("calls fail once the upstream is gone");
    assert!(
        failed.contains("upstream MCP server"),
        "unexpected error: {failed}"
    );

    // It comes back on the same address: mcpgate reconnects by itself.
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("rebind");
    let _stop_again = serve_http_upstream(listener);
    let back = tokio::time::timeout(PATIENCE, async {
        loop {
            match gate.call("hello", json!({})).await {
                Ok(result) => return text_of(&result),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("mcpgate reconnects to the upstream");
    assert_eq!(back, "hello over http");
}
