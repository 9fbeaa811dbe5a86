//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test
//! (`tests/fuzz_corpus.rs`): raw bytes in, driven through the real handlers, invariants asserted.
//!
//! Not a stable API: it exists for testing only.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use mcpgate_auth::{Principal, ScopeSet};
use rmcp::ErrorData;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientJsonRpcMessage, ServerCapabilities, Tool,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::backend::{Backend, Call, TransportKind};
use crate::config::{Config, ConfigArgs, FileConfig};
use crate::handler::McpHandler;
use crate::http::jsonrpc;
use crate::http::scope_gate::ScopeGate;
use crate::policy::{PolicyConfig, Rule, ScopePolicy};
use crate::transport::sse;

/// A backend with nothing behind it: one read-only tool, calls refused.
struct NullBackend;

#[async_trait]
impl Backend for NullBackend {
    fn implementation(&self) -> (String, String, Option<String>) {
        ("fuzz".into(), "0".into(), None)
    }
    fn capabilities(&self) -> ServerCapabilities {
        ServerCapabilities::builder().enable_tools().build()
    }
    async fn list_tools(&self, _call: Call<'_>) -> Result<Vec<Tool>, ErrorData> {
        Ok(Vec::new())
    }
    fn tool_read_only(&self, name: &str) -> Option<bool> {
        (name == "lookup").then_some(true)
    }
    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        _call: Call<'_>,
    ) -> Result<CallToolResult, ErrorData> {
        Err(ErrorData::invalid_params(
            format!("no tool {}", params.name),
            None,
        ))
    }
}

struct Env {
    rt: tokio::runtime::Runtime,
    /// `POST /mcp` through [`jsonrpc::inspect_post`] to a handler that accepts any message.
    mcp: Router,
    /// The legacy `GET /sse` + `POST /messages`.
    legacy: Router,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let policy = Arc::new(ScopePolicy::new(
            &PolicyConfig {
                tools: vec![Rule {
                    pattern: "admin_*".into(),
                    scopes: vec!["mcp:admin".into()],
                }],
                resources: vec![Rule {
                    pattern: "secret://*".into(),
                    scopes: vec!["secrets:read".into()],
                }],
                ..PolicyConfig::default()
            },
            Vec::new(),
        ));
        let backend: Arc<dyn Backend> = Arc::new(NullBackend);
        let gate = Arc::new(ScopeGate {
            policy: policy.clone(),
            backend: backend.clone(),
            authenticator: None,
            http_errors: true,
        });
        // Like rmcp behind it: 415 for a body it cannot deserialise, which inspect_post turns
        // into the JSON-RPC error.
        let accept_messages = |body: axum::body::Bytes| async move {
            match serde_json::from_slice::<ClientJsonRpcMessage>(&body) {
                Ok(_) => StatusCode::ACCEPTED,
                Err(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            }
        };
        let mcp = Router::new()
            .route("/mcp", post(accept_messages))
            .layer(from_fn_with_state(gate.clone(), jsonrpc::inspect_post));
        let transport = {
            let _guard = rt.enter();
            sse::SseTransport::new(
                move || {
                    McpHandler::new(
                        backend.clone(),
                        TransportKind::LegacySse,
                        Duration::from_secs(5),
                    )
                    .with_policy(policy.clone())
                },
                "/messages",
                gate,
                CancellationToken::new(),
            )
        };
        let legacy = Router::new()
            .route("/sse", get(sse::open_stream))
            .route("/messages", post(sse::post_message))
            .with_state(transport);
        Env { rt, mcp, legacy }
    })
}

fn principal(selector: u8) -> Arc<Principal> {
    Arc::new(match selector % 3 {
        0 => Principal::anonymous(),
        1 => Principal::from_static_token("reader", ScopeSet::parse("mcp:tools:read")),
        _ => Principal::from_static_token(
            "writer",
            ScopeSet::parse("mcp:tools:write mcp:resources:read"),
        ),
    })
}

async fn collect(response: axum::response::Response) -> (StatusCode, Vec<u8>) {
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    (status, body)
}

/// What a refusal of a body must look like: a JSON-RPC error with the given code.
fn assert_jsonrpc_error(body: &[u8], codes: &[i64]) {
    let error: Value = serde_json::from_slice(body).expect("a JSON-RPC error body");
    let code = error["error"]["code"].as_i64();
    assert!(
        code.is_some_and(|c| codes.contains(&c)),
        "unexpected error {error}"
    );
    assert_eq!(error["jsonrpc"], "2.0");
}

/// `data[0]` picks the caller (anonymous, read-only token, writer token) and whether the body
/// also goes to the legacy transport; the rest is the body of `POST /mcp` and
/// `POST /messages?sessionId=…`, exactly as a client sends it.
pub fn mcp_post(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let env = env();
    let caller = principal(selector);
    let parses = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    let message = serde_json::from_slice::<ClientJsonRpcMessage>(body).ok();
    let is_batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');

    env.rt.block_on(async {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/mcp")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_vec()))
            .expect("a request");
        request.extensions_mut().insert(caller.clone());
        let response = match env.mcp.clone().oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let (status, answer) = collect(response).await;
        match status {
            StatusCode::ACCEPTED => assert!(parses && !is_batch && message.is_some()),
            StatusCode::BAD_REQUEST => {
                assert!(!parses || is_batch || message.is_none());
                assert_jsonrpc_error(&answer, &[-32700, -32600]);
            }
            StatusCode::FORBIDDEN => {
                assert!(
                    !caller.is_anonymous(),
                    "the anonymous caller holds everything"
                );
                assert!(message.is_some());
            }
            other => panic!("POST /mcp answered {other}"),
        }

        if selector & 0x80 == 0 {
            return;
        }
        // Legacy transport: open a session as this caller, post the body to it.
        let mut open = Request::builder()
            .uri("/sse")
            .body(Body::empty())
            .expect("a request");
        open.extensions_mut().insert(caller.clone());
        let response = match env.legacy.clone().oneshot(open).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        assert_eq!(response.status(), StatusCode::OK);
        let mut stream = response.into_body();
        let first = stream
            .frame()
            .await
            .and_then(Result::ok)
            .and_then(|f| f.into_data().ok())
            .expect("the endpoint event");
        let first = String::from_utf8_lossy(&first);
        let endpoint = first
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("the endpoint event names the endpoint")
            .to_owned();
        let mut post = Request::builder()
            .method(Method::POST)
            .uri(&endpoint)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_vec()))
            .expect("a request");
        post.extensions_mut().insert(caller.clone());
        let response = match env.legacy.clone().oneshot(post).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let (status, answer) = collect(response).await;
        match status {
            StatusCode::ACCEPTED => assert!(message.is_some()),
            StatusCode::BAD_REQUEST => {
                assert!(message.is_none());
                let code = if serde_json::from_slice::<Value>(body).is_ok() {
                    -32600
                } else {
                    -32700
                };
                assert_jsonrpc_error(&answer, &[code]);
            }
            StatusCode::FORBIDDEN => {
                assert!(!caller.is_anonymous());
                assert!(message.is_some());
            }
            // The session ended between the two requests (its handler refused the first message).
            StatusCode::NOT_FOUND => {}
            other => panic!("POST {endpoint} answered {other}"),
        }
        drop(stream);
        // Let the session's handler see the cancellation and end.
        tokio::task::yield_now().await;
    });
}

/// A config file as `mcpgate --config` reads it; a file that parses resolves (or fails with
/// reasons) and renders without its secrets.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match FileConfig::parse(text) {
        Ok(file) => file,
        Err(e) => {
            assert!(!e.message.is_empty());
            return;
        }
    };
    let Ok(config) = Config::resolve(&ConfigArgs::default(), file) else {
        return;
    };
    let rendered = config.render_redacted();
    // Every secret-looking value that appears once in the file must not show in the rendering
    // more often than when the file holds another value of the same length there (the value may
    // coincide with text the rendering prints anyway, like a key name).
    let mut secrets = Vec::new();
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        collect_secrets(&table, &mut secrets);
    }
    for secret in secrets {
        if secret.len() < 8 || text.matches(secret.as_str()).count() != 1 {
            continue;
        }
        let filler = if secret.contains('Z') { "Y" } else { "Z" };
        let other = text.replacen(secret.as_str(), &filler.repeat(secret.chars().count()), 1);
        let Some(baseline) = FileConfig::parse(&other)
            .ok()
            .and_then(|file| Config::resolve(&ConfigArgs::default(), file).ok())
            .map(|config| config.render_redacted())
        else {
            continue;
        };
        assert!(
            rendered.matches(secret.as_str()).count() <= baseline.matches(secret.as_str()).count(),
            "the rendered config shows a secret"
        );
    }
}

fn collect_secrets(table: &toml::Table, out: &mut Vec<String>) {
    for (key, value) in table {
        let secret_key = (key == "token" || key.contains("secret") || key.ends_with("_token"))
            && !key.ends_with("_env");
        match value {
            toml::Value::String(s) if secret_key => out.push(s.clone()),
            toml::Value::Table(t) => collect_secrets(t, out),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        collect_secrets(t, out);
                    }
                }
            }
            _ => {}
        }
    }
}
