//! The legacy HTTP+SSE transport (MCP 2024-11-05), which rmcp no longer ships.
//!
//! `GET /sse` opens a stream whose first event names the POST endpoint
//! (`endpoint` → `/messages?sessionId=…`); every `POST /messages` answers 202 and the reply travels
//! down the stream. Each session runs the same [`McpHandler`] as Streamable HTTP over an rmcp
//! sink/stream transport, and each POST's `http::request::Parts` travel with its message, so tools
//! see the same request context on both transports.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use http::{StatusCode, header};
use mcpgate_auth::periodic::spawn_every;
use mcpgate_auth::{Principal, PrincipalKey};
use rmcp::ServiceExt;
use rmcp::model::GetExtensions;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use tokio_util::sync::CancellationToken;

use crate::handler::McpHandler;
use crate::http::jsonrpc;
use crate::http::scope_gate::ScopeGate;
use crate::session::session_not_found;

/// Messages a client may have in flight on one session before POSTs wait.
const INBOUND_CAPACITY: usize = 64;
/// How long a POST waits for room in a session's queue before giving up.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(10);

struct Session {
    owner: PrincipalKey,
    grant: Option<String>,
    inbound: mpsc::Sender<ClientJsonRpcMessage>,
    ct: CancellationToken,
}

/// Shared state of the legacy endpoints.
pub struct SseTransport {
    sessions: Mutex<HashMap<String, Session>>,
    make_handler: Box<dyn Fn() -> McpHandler + Send + Sync>,
    messages_path: String,
    gate: Arc<ScopeGate>,
    keep_alive: Duration,
    shutdown: CancellationToken,
}

impl SseTransport {
    pub fn new(
        make_handler: impl Fn() -> McpHandler + Send + Sync + 'static,
        messages_path: impl Into<String>,
        gate: Arc<ScopeGate>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(HashMap::new()),
            make_handler: Box::new(make_handler),
            messages_path: messages_path.into(),
            gate,
            keep_alive: Duration::from_secs(15),
            shutdown,
        })
    }

    pub fn session_count(&self) -> usize {
        self.lock().len()
    }

    /// Checks every `interval` for sessions of revoked grants and ends them.
    pub fn spawn_revocation_closer(
        self: &Arc<Self>,
        revoked: Arc<dyn Fn(&str) -> bool + Send + Sync>,
        interval: Duration,
    ) {
        let shutdown = self.shutdown.clone();
        spawn_every(self, interval, shutdown, move |transport: Arc<Self>| {
            let revoked = revoked.clone();
            async move { transport.close_revoked(|g| revoked(g)) }
        });
    }

    /// Ends the streams of sessions opened under a revoked grant.
    pub fn close_revoked(&self, revoked: impl Fn(&str) -> bool) {
        for session in self.lock().values() {
            if session.grant.as_deref().is_some_and(&revoked) {
                session.ct.cancel();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remove(&self, id: &str) {
        let remaining = {
            let mut sessions = self.lock();
            sessions.remove(id);
            sessions.len()
        };
        metrics::gauge!("mcpgate_sessions", "transport" => "sse").set(remaining as f64);
    }
}

/// `GET /sse`: opens a session bound to the caller and streams its messages.
pub async fn open_stream(State(transport): State<Arc<SseTransport>>, request: Request) -> Response {
    let Some(principal) = request.extensions().get::<Arc<Principal>>().cloned() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let id = new_session_id();
    let (inbound_tx, inbound_rx) = mpsc::channel::<ClientJsonRpcMessage>(INBOUND_CAPACITY);
    let (outbound_tx, outbound_rx) = mpsc::channel::<ServerJsonRpcMessage>(INBOUND_CAPACITY);
    let session_ct = transport.shutdown.child_token();

    let remaining = {
        let mut sessions = transport.lock();
        sessions.insert(
            id.clone(),
            Session {
                owner: principal.key(),
                grant: principal.grant_id.clone(),
                inbound: inbound_tx,
                ct: session_ct.clone(),
            },
        );
        sessions.len()
    };
    metrics::gauge!("mcpgate_sessions", "transport" => "sse").set(remaining as f64);

    let handler = (transport.make_handler)();
    let service_ct = session_ct.clone();
    let session_id = id.clone();
    tokio::spawn(async move {
        match handler
            .serve_with_ct((outbound_tx, inbound_rx), service_ct.clone())
            .await
        {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => {
                tracing::debug!(session = %session_id, error = %e, "legacy SSE session ended before initialize")
            }
        }
        // The handler is gone: end the client's stream too.
        service_ct.cancel();
    });

    let endpoint = format!("{}?sessionId={id}", transport.messages_path);
    let guard = SessionGuard {
        transport: transport.clone(),
        id,
        ct: session_ct.clone(),
    };
    let events =
        futures::stream::once(async move { Ok(Event::default().event("endpoint").data(endpoint)) })
            .chain(outbound_rx.map(|message| Ok(to_event(&message))))
            .take_until(session_ct.cancelled_owned());
    Sse::new(GuardedStream {
        inner: Box::pin(events),
        _guard: guard,
    })
    .keep_alive(KeepAlive::new().interval(transport.keep_alive))
    .into_response()
}

fn to_event(message: &ServerJsonRpcMessage) -> Event {
    match serde_json::to_string(message) {
        Ok(json) => Event::default().event("message").data(json),
        Err(e) => Event::default().comment(format!("unserialisable message dropped: {e}")),
    }
}

/// Ends the session when the client goes away: the stream (and this guard) is dropped.
struct SessionGuard {
    transport: Arc<SseTransport>,
    id: String,
    ct: CancellationToken,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.ct.cancel();
        self.transport.remove(&self.id);
    }
}

struct GuardedStream {
    inner: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>,
    _guard: SessionGuard,
}

impl Stream for GuardedStream {
    type Item = Result<Event, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// `POST /messages?sessionId=…`: hands one JSON-RPC message to the session; the reply goes down the stream.
pub async fn post_message(
    State(transport): State<Arc<SseTransport>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let Some(session_id) = session_id_of(parts.uri.query()) else {
        return bad_request("the sessionId query parameter is required");
    };
    let Some(principal) = parts.extensions.get::<Arc<Principal>>() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let inbound = {
        let sessions = transport.lock();
        match sessions.get(&session_id) {
            Some(session) if session.owner == principal.key() => session.inbound.clone(),
            _ => return session_not_found(),
        }
    };
    if !jsonrpc::is_json(&parts.headers) {
        return jsonrpc::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            -32600,
            "Content-Type must be application/json",
        );
    }
    let bytes: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => return jsonrpc::read_error(&e),
    };
    let mut message: ClientJsonRpcMessage = match serde_json::from_slice(&bytes) {
        Ok(message) => message,
        Err(e) => {
            let (code, text) = if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok() {
                (-32600, format!("Invalid Request: {e}"))
            } else {
                (-32700, format!("Parse error: {e}"))
            };
            return jsonrpc::error(StatusCode::BAD_REQUEST, code, &text);
        }
    };
    if let Err(refused) = transport.gate.check(principal, &message, parts.uri.path()) {
        return refused.into_response();
    }
    match &mut message {
        ClientJsonRpcMessage::Request(r) => {
            r.request.extensions_mut().insert(parts);
        }
        ClientJsonRpcMessage::Notification(n) => {
            n.notification.extensions_mut().insert(parts);
        }
        _ => {}
    }
    let mut inbound = inbound;
    match tokio::time::timeout(ENQUEUE_TIMEOUT, inbound.send(message)).await {
        Ok(Ok(())) => (StatusCode::ACCEPTED, "Accepted").into_response(),
        Ok(Err(_)) => session_not_found(),
        Err(_) => {
            let mut response = jsonrpc::error(
                StatusCode::SERVICE_UNAVAILABLE,
                -32603,
                "the session is not reading its messages",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            response
        }
    }
}

fn session_id_of(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "sessionId")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

fn bad_request(message: &str) -> Response {
    jsonrpc::error(StatusCode::BAD_REQUEST, -32600, message)
}

/// 128 random bits, hex: unguessable and visible ASCII, as the transport spec asks.
fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_comes_from_the_query() {
        assert_eq!(session_id_of(Some("sessionId=abc")), Some("abc".into()));
        assert_eq!(
            session_id_of(Some("x=1&sessionId=a%20b")),
            Some("a b".into())
        );
        assert_eq!(session_id_of(Some("sessionId=")), None);
        assert_eq!(session_id_of(None), None);
    }
}
