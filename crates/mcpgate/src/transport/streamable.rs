//! Streamable HTTP at `/mcp`: rmcp's service, in both protocol eras (stateful sessions for
//! 2025-11-25 and older, stateless requests for 2026-07-28).

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::session::store::SessionStore;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::handler::McpHandler;
use crate::session_store::SharedSessions;

pub type McpService = StreamableHttpService<McpHandler, LocalSessionManager>;

/// Builds the service and the session manager it uses (the session binder sweeps against it).
/// With `shared`, sessions are persisted there and an instance revives a session it does not know.
pub fn service(
    config: &Config,
    make_handler: impl Fn() -> McpHandler + Send + Sync + 'static,
    shared: Option<Arc<SharedSessions>>,
    shutdown: CancellationToken,
) -> (McpService, Arc<LocalSessionManager>) {
    let mut sessions = SessionConfig::default();
    sessions.keep_alive = Some(config.session_idle_timeout);
    let mut manager = LocalSessionManager::default();
    manager.session_config = sessions;
    let manager = Arc::new(manager);
    // Host and Origin are checked by our own guard in front of every route (and
    // before authentication), so rmcp's copy of that check is switched off.
    let mut http_config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(config.max_body_bytes)
        // A stateless (2026-07-28) call whose handler answers without notifications gets one
        // `application/json` body instead of a one-event SSE stream: fewer allocations and
        // writes per call. rmcp falls back to SSE when the handler sends anything first
        // (progress, logging), and stateful sessions are not affected.
        .with_json_response(true);
    http_config.session_store = shared.map(|s| s as Arc<dyn SessionStore>);
    let service =
        StreamableHttpService::new(move || Ok(make_handler()), manager.clone(), http_config);
    (service, manager)
}
