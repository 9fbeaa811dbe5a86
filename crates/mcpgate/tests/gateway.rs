//! The gateway backend against a real stdio upstream.
//!
//! The upstream is `examples/echo_upstream.rs`, an rmcp server. `cargo test` (and nextest, which
//! builds through it) compiles the package's examples before running tests, so the binary sits
//! next to this test's: `target/<profile>/examples/echo_upstream`. To build it alone:
//! `cargo build -p mcpgate --example echo_upstream`.
//!
//! Each test serves `McpHandler` over `GatewayBackend` on an in-memory duplex pipe and talks to it
//! with an rmcp client, so the whole path downstream client → mcpgate → upstream is exercised.

#![allow(deprecated)] // sampling, roots, logging and subscriptions are deprecated by SEP-2577

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpgate::backend::gateway::{GatewayBackend, GatewayError, UpstreamTarget};
use mcpgate::backend::{Backend, TransportKind};
use mcpgate::handler::McpHandler;
use rmcp::model::{
    ArgumentInfo, CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
    CompleteRequestParams, CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams,
    ElicitResult, ElicitationAction, ElicitationCapability, GetPromptRequestParams, Implementation,
    ListRootsResult, LoggingMessageNotificationParam, ProgressNotificationParam, ProtocolVersion,
    ReadResourceRequestParams, Reference, ResourceUpdatedNotificationParam, Root,
    RootsCapabilities, SamplingCapability, SamplingMessage, SubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService, ServiceError};
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test waits for; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

fn echo_upstream() -> PathBuf {
    // The test binary is target/<profile>/deps/gateway-<hash>; examples live in target/<profile>/examples.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile directory");
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
    async fn start(call_timeout: Duration) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("mcpgate=debug,warn")
            .try_init();
        let shutdown = CancellationToken::new();
        let command = format!("'{}'", echo_upstream().display());
        let backend = GatewayBackend::connect(
            UpstreamTarget::Command(command),
            call_timeout,
            shutdown.clone(),
        )
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
