//! A tiny stdio MCP server used as the upstream in mcpgate's gateway tests
//! (`crates/mcpgate/tests/gateway.rs`). Cargo builds it for `cargo test` as
//! `target/<profile>/examples/echo_upstream`; by hand: `cargo build -p mcpgate --example echo_upstream`.
//!
//! Tools: `echo`, `add`, `pid`, `crash` (exits the process), `slow` (sleeps; `cancelled` counts
//! the cancelled ones), `progress` (reports
//! progress), `sample` / `roots` / `elicit` (ask the client), `toggle_extra` (changes the tool list
//! and says so) and `log`. `tools/list` answers in pages of three so clients must follow cursors.
//! One resource (`mem://greeting`), one template (`mem://echo/{text}`), one prompt (`greet`) with
//! completions for its argument.
//!
//! `echo_upstream --http 127.0.0.1:0` serves the same over Streamable HTTP at `/mcp` instead and
//! prints `listening on http://ADDR/mcp` on stdout. There, `auth_header` answers the
//! `Authorization` header of the request it came in (empty when none), and `tools/list` also
//! lists `bearer_<first 16 letters and digits of the bearer token>` when a token was sent, so a
//! gateway's per-user connections can be told apart (proxy mode's `pass_token_to_gateway`).

#![allow(deprecated)] // sampling, roots and logging are deprecated by SEP-2577 but still what clients speak

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientResult, CompleteRequestParams,
    CompleteResult, CompletionInfo, ContentBlock, CreateMessageRequestParams, ElicitRequest,
    ElicitRequestParams, ElicitationSchema, GetPromptRequestParams, GetPromptResponse,
    GetPromptResult, Implementation, JsonObject, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
    PaginatedRequestParams, ProgressNotificationParam, Prompt, PromptArgument, PromptMessage,
    PromptsCapability, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceTemplate, ResourcesCapability, Role, SamplingMessage,
    ServerCapabilities, ServerConfig, SetLevelRequestParams, SubscribeRequestParams, Tool,
    ToolsCapability, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

const PAGE_SIZE: usize = 3;

#[derive(Clone, Default)]
struct Echo {
    /// Whether the `extra` tool is currently listed (flipped by `toggle_extra`).
    extra: Arc<AtomicBool>,
    /// How many `slow` calls the client cancelled (reported by `cancelled`).
    cancelled: Arc<AtomicUsize>,
}

fn schema(value: Value) -> Arc<JsonObject> {
    Arc::new(value.as_object().cloned().unwrap_or_default())
}

fn text_arg(args: &JsonObject, name: &str) -> String {
    args.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn num_arg(args: &JsonObject, name: &str) -> f64 {
    args.get(name).and_then(Value::as_f64).unwrap_or_default()
}

fn ok(text: impl Into<String>) -> Result<CallToolResponse, ErrorData> {
    Ok(CallToolResponse::Complete(CallToolResult::success(vec![
        ContentBlock::text(text),
    ])))
}

fn service_error(error: impl std::fmt::Display) -> ErrorData {
    ErrorData::internal_error(error.to_string(), None)
}

impl Echo {
    fn tools(&self, bearer: Option<&str>) -> Vec<Tool> {
        let none = json!({ "type": "object", "properties": {} });
        let text = json!({ "type": "object", "properties": { "text": { "type": "string" } }, "required": ["text"] });
        let mut tools = vec![
            Tool::new("echo", "Echo the text back", schema(text.clone())),
            Tool::new(
                "add",
                "Add two numbers",
                schema(
                    json!({ "type": "object", "properties": { "a": { "type": "number" }, "b": { "type": "number" } } }),
                ),
            ),
            Tool::new("pid", "This server's process id", schema(none.clone())),
            Tool::new(
                "crash",
                "Exit the server process at once",
                schema(none.clone()),
            ),
            Tool::new(
                "slow",
                "Sleep for `ms` milliseconds",
                schema(json!({ "type": "object", "properties": { "ms": { "type": "number" } } })),
            ),
            Tool::new(
                "progress",
                "Report `steps` progress notifications",
                schema(
                    json!({ "type": "object", "properties": { "steps": { "type": "number" } } }),
                ),
            ),
            Tool::new(
                "sample",
                "Ask the client's model (sampling)",
                schema(text.clone()),
            ),
            Tool::new("roots", "List the client's roots", schema(none.clone())),
            Tool::new("elicit", "Ask the user (elicitation)", schema(text.clone())),
            Tool::new(
                "toggle_extra",
                "Add or remove the `extra` tool",
                schema(none.clone()),
            ),
            Tool::new("log", "Send a log message", schema(text)),
            Tool::new(
                "auth_header",
                "The Authorization header this request came with (HTTP only)",
                schema(none.clone()),
            ),
        ];
        if let Some(token) = bearer {
            let name: String = token
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(16)
                .collect();
            tools.push(Tool::new(
                format!("bearer_{name}"),
                "Only listed to requests with this bearer token",
                schema(none.clone()),
            ));
        }
        if self.extra.load(Ordering::SeqCst) {
            tools.push(Tool::new(
                "extra",
                "Only listed after toggle_extra",
                schema(none),
            ));
        }
        tools
    }
}

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::default();
        let mut tools = ToolsCapability::default();
        tools.list_changed = Some(true);
        capabilities.tools = Some(tools);
        let mut resources = ResourcesCapability::default();
        resources.subscribe = Some(true);
        capabilities.resources = Some(resources);
        capabilities.prompts = Some(PromptsCapability::default());
        capabilities.completions = Some(JsonObject::new());
        capabilities.logging = Some(JsonObject::new());
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("echo-upstream", "1.2.3"))
            .with_instructions("A test upstream for mcpgate.")
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let start: usize = match request.and_then(|params| params.cursor) {
            Some(cursor) => cursor
                .parse()
                .map_err(|_| ErrorData::invalid_params("bad cursor", None))?,
            None => 0,
        };
        let header = auth_header(&context);
        let tools = self.tools(header.strip_prefix("Bearer "));
        let end = (start + PAGE_SIZE).min(tools.len());
        let mut result =
            ListToolsResult::with_all_items(tools.get(start..end).unwrap_or_default().to_vec());
        result.next_cursor = (end < tools.len()).then(|| end.to_string());
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        match request.name.as_ref() {
            "echo" => ok(text_arg(&args, "text")),
            "add" => ok((num_arg(&args, "a") + num_arg(&args, "b")).to_string()),
            "pid" => ok(std::process::id().to_string()),
            "crash" => {
                eprintln!("echo_upstream: crashing on request");
                std::process::exit(3);
            }
            "slow" => {
                let sleep = tokio::time::sleep(Duration::from_millis(num_arg(&args, "ms") as u64));
                tokio::select! {
                    () = sleep => ok("done"),
                    () = context.ct.cancelled() => {
                        self.cancelled.fetch_add(1, Ordering::SeqCst);
                        Err(ErrorData::internal_error("cancelled", None))
                    }
                }
            }
            "cancelled" => ok(self.cancelled.load(Ordering::SeqCst).to_string()),
            "progress" => {
                let steps = num_arg(&args, "steps") as u32;
                if let Some(token) = context.meta.get_progress_token() {
                    for step in 1..=steps {
                        let params = ProgressNotificationParam::new(token.clone(), f64::from(step))
                            .with_total(f64::from(steps));
                        context
                            .peer
                            .notify_progress(params)
                            .await
                            .map_err(service_error)?;
                    }
                }
                ok(format!("{steps} steps"))
            }
            "sample" => {
                let params = CreateMessageRequestParams::new(
                    vec![SamplingMessage::user_text(text_arg(&args, "text"))],
                    50,
                );
                let reply = context
                    .peer
                    .create_message(params)
                    .await
                    .map_err(service_error)?;
                ok(serde_json::to_string(&reply.message).map_err(service_error)?)
            }
            "roots" => {
                let roots = context.peer.list_roots().await.map_err(service_error)?;
                ok(roots
                    .roots
                    .iter()
                    .map(|root| root.uri.clone())
                    .collect::<Vec<_>>()
                    .join(","))
            }
            "elicit" => {
                let schema = ElicitationSchema::builder()
                    .required_string("answer")
                    .build()
                    .map_err(service_error)?;
                let params = ElicitRequestParams::FormElicitationParams {
                    meta: None,
                    message: text_arg(&args, "text"),
                    requested_schema: schema,
                };
                // `Peer::create_elicitation` needs rmcp's `elicitation` feature; the raw request does not.
                match context
                    .peer
                    .send_request(ElicitRequest::new(params).into())
                    .await
                    .map_err(service_error)?
                {
                    ClientResult::ElicitResult(reply) => {
                        ok(serde_json::to_string(&reply).map_err(service_error)?)
                    }
                    _ => Err(ErrorData::internal_error(
                        "unexpected elicitation reply",
                        None,
                    )),
                }
            }
            "toggle_extra" => {
                let now = !self.extra.fetch_xor(true, Ordering::SeqCst);
                context
                    .peer
                    .notify_tool_list_changed()
                    .await
                    .map_err(service_error)?;
                ok(format!("extra listed: {now}"))
            }
            "log" => {
                let params = LoggingMessageNotificationParam::new(
                    LoggingLevel::Warning,
                    json!(text_arg(&args, "text")),
                );
                context
                    .peer
                    .notify_logging_message(params)
                    .await
                    .map_err(service_error)?;
                ok("logged")
            }
            "extra" => ok("extra"),
            "auth_header" => ok(auth_header(&context)),
            other => Ok(CallToolResponse::Complete(CallToolResult::error(vec![
                ContentBlock::text(format!("unknown tool {other}")),
            ]))),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![Resource::new(
            "mem://greeting",
            "greeting",
        )]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("mem://echo/{text}", "echo"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let text = match request.uri.as_str() {
            "mem://greeting" => "hello from upstream".to_owned(),
            uri => match uri.strip_prefix("mem://echo/") {
                Some(text) => text.to_owned(),
                None => {
                    return Err(ErrorData::resource_not_found(
                        format!("no resource {uri}"),
                        None,
                    ));
                }
            },
        };
        Ok(ReadResourceResponse::Complete(ReadResourceResult::new(
            vec![ResourceContents::text(text, request.uri)],
        )))
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Announce an update right away so tests can see it forwarded.
        let peer = context.peer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = peer
                .notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                    request.uri,
                ))
                .await;
        });
        Ok(())
    }

    async fn unsubscribe(
        &self,
        _request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let argument = PromptArgument::new("name").with_required(true);
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "greet",
            Some("Greet someone"),
            Some(vec![argument]),
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != "greet" {
            return Err(ErrorData::invalid_params(
                format!("no prompt {}", request.name),
                None,
            ));
        }
        let name = request
            .arguments
            .as_ref()
            .map(|args| text_arg(args, "name"))
            .unwrap_or_default();
        let message = PromptMessage::new_text(Role::User, format!("Say hello to {name}"));
        Ok(GetPromptResponse::Complete(GetPromptResult::new(vec![
            message,
        ])))
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let values = ["alice", "bob", "carol"]
            .into_iter()
            .filter(|name| name.starts_with(&request.argument.value))
            .map(str::to_owned)
            .collect();
        let completion = CompletionInfo::new(values).map_err(service_error)?;
        Ok(CompleteResult::new(completion))
    }

    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }
}

/// The `Authorization` header of the HTTP request behind `context` (empty over stdio or without).
fn auth_header(context: &RequestContext<RoleServer>) -> String {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.headers.get(axum::http::header::AUTHORIZATION))
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Serve over Streamable HTTP at `/mcp` on `address` until killed.
async fn serve_http(address: &str) -> anyhow::Result<()> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let echo = Echo::default();
    let service = StreamableHttpService::new(
        move || Ok(echo.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, address] = args.as_slice()
        && flag == "--http"
    {
        return serve_http(address).await;
    }
    // stdout is the MCP channel; anything human goes to stderr (mcpgate logs it).
    eprintln!("echo_upstream: ready (pid {})", std::process::id());
    let service = Echo::default().serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}
