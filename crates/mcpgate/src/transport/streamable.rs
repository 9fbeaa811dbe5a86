//! Streamable HTTP at `/mcp`: rmcp's service, in both protocol eras (stateful sessions for
//! 2025-11-25 and older, stateless requests for 2026-07-28).

pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use mcpgate_auth::periodic::spawn_every;
use rmcp::transport::streamable_http_server::session::local::SessionConfig;
use rmcp::transport::streamable_http_server::session::store::SessionStore;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::handler::McpHandler;
use crate::session_store::SharedSessions;
pub use sessions::{HIBERNATE_AFTER, HibernatingSessions};

pub type McpService = StreamableHttpService<McpHandler, HibernatingSessions>;

/// Builds the service and the session manager it uses (the session binder sweeps against it).
/// With `shared`, sessions are persisted there and an instance revives a session it does not know.
pub fn service(
    config: &Config,
    make_handler: impl Fn() -> McpHandler + Send + Sync + 'static,
    shared: Option<Arc<SharedSessions>>,
    shutdown: CancellationToken,
) -> (McpService, Arc<HibernatingSessions>) {
    service_with(config, make_handler, shared, shutdown, HIBERNATE_AFTER)
}

/// [`service`], with idle sessions hibernating after `hibernate_after` (tests use a short one).
pub fn service_with(
    config: &Config,
    make_handler: impl Fn() -> McpHandler + Send + Sync + 'static,
    shared: Option<Arc<SharedSessions>>,
    shutdown: CancellationToken,
    hibernate_after: Duration,
) -> (McpService, Arc<HibernatingSessions>) {
    let manager = Arc::new(HibernatingSessions::new(
        SessionConfig::default(),
        config.session_idle_timeout,
        hibernate_after,
        shared.map(|s| s as Arc<dyn SessionStore>),
    ));
    // Hibernates quiet sessions and ends idle ones. A pass over the records is cheap (no I/O,
    // ~0.1 µs a session), so a short period keeps hibernation close to `hibernate_after`.
    let every = (hibernate_after / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
    spawn_every(&manager, every, shutdown.clone(), |manager| async move {
        manager.sweep().await;
    });
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
    // The manager is the store rmcp revives hibernated sessions from (it forwards to the
    // shared store when there is one).
    http_config.session_store = Some(manager.clone() as Arc<dyn SessionStore>);
    let service =
        StreamableHttpService::new(move || Ok(make_handler()), manager.clone(), http_config);
    (service, manager)
}
