//! The axum application: routes, and the layers every request crosses, outermost first:
//! trace → panic catcher → metrics → body limit → timeout → CORS → Host/Origin guard, then for
//! MCP routes admission (per-IP rate limit → authentication → per-principal rate limit →
//! baseline scopes) → session binding → body inspection (JSON-RPC errors, step-up) → transport.
//! `/health`, `/ready` and the protected-resource metadata are outside the guard.

pub mod admission;
pub mod auth;
pub mod auth_server;
pub mod guard;
pub mod jsonrpc;
pub mod scope_gate;
mod server;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use http::{HeaderName, Method, header};
use mcpgate_auth::resource::Authenticator;
use mcpgate_auth::resource::RevocationList;
use mcpgate_auth::resource::metadata;
use mcpgate_auth::server::AuthServer;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use server::serve;

use crate::backend::{Backend, TransportKind};
use crate::config::{Config, ScopeErrors, Transport};
use crate::handler::McpHandler;
use crate::ops::health::{self, HealthState};
use crate::ops::metrics as ops_metrics;
use crate::ops::rate_limit::RateLimits;
use crate::policy::ScopePolicy;
use crate::session::{self, SessionBindings};
use crate::session_store::SharedSessions;
use crate::transport::{sse, streamable};
use admission::Admission;
use mcpgate_auth::store::Store;
use scope_gate::ScopeGate;

/// Request headers MCP clients send, which CORS must allow.
const MCP_REQUEST_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "mcp-method",
];

/// Whether a grant has been revoked.
type GrantCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The authentication pieces the app is assembled with.
#[derive(Default)]
pub struct AuthWiring {
    pub authenticator: Option<Arc<Authenticator>>,
    /// The built-in authorization server, mounted at the root when present.
    pub server: Option<Arc<AuthServer>>,
    /// Revoked grants, whose sessions are closed.
    pub revocations: Option<Arc<RevocationList>>,
    /// The store Streamable HTTP sessions are shared through, when several instances may serve
    /// one deployment (the OAuth store on PostgreSQL); `None` keeps them in this process.
    pub session_store: Option<Arc<dyn Store>>,
}

/// What the running app shares with the rest of the process.
pub struct App {
    pub router: Router,
    pub sessions: Arc<SessionBindings>,
}

pub fn build(
    config: &Config,
    backend: Arc<dyn Backend>,
    wiring: AuthWiring,
    shutdown: CancellationToken,
) -> App {
    let AuthWiring {
        authenticator: auth,
        server: auth_server,
        revocations,
        session_store,
    } = wiring;
    let revoked: Option<GrantCheck> = revocations
        .map(|list| Arc::new(move |grant: &str| list.is_grant_revoked(grant)) as GrantCheck);
    let limits = RateLimits::new(config.rate_limit_rpm);
    if let Some(limits) = &limits {
        limits.spawn_housekeeping(shutdown.clone());
    }
    let shared_sessions =
        session_store.map(|store| SharedSessions::new(store, config.session_idle_timeout));
    let sessions = Arc::new(match &shared_sessions {
        Some(shared) => SessionBindings::with_shared(shared.clone(), revoked.clone()),
        None => SessionBindings::default(),
    });
    let baseline = config
        .oauth
        .as_ref()
        .map(|o| o.required_scopes.clone())
        .unwrap_or_default();
    let policy = Arc::new(ScopePolicy::new(&config.policy, baseline));
    let gate = Arc::new(ScopeGate {
        policy: policy.clone(),
        backend: backend.clone(),
        authenticator: auth.clone(),
        http_errors: config
            .oauth
            .as_ref()
            .is_none_or(|o| o.scope_errors == ScopeErrors::Http),
    });
    let handler = {
        let backend = backend.clone();
        let (tool_timeout, policy) = (config.tool_timeout, policy.clone());
        move |transport| {
            McpHandler::new(backend.clone(), transport, tool_timeout).with_policy(policy.clone())
        }
    };

    let mut mcp = Router::new();
    if config.transport == Transport::StreamableHttp {
        let make = handler.clone();
        let (service, manager) = streamable::service(
            config,
            move || make(TransportKind::StreamableHttp),
            shared_sessions,
            shutdown.clone(),
        );
        sessions.spawn_sweeper(manager.clone(), shutdown.clone());
        if let Some(revoked) = &revoked {
            sessions.spawn_revocation_closer(
                manager,
                revoked.clone(),
                Duration::from_secs(2),
                shutdown.clone(),
            );
        }
        // Layers on the service itself, not on a Router: no boxing per layer and request.
        let service = ServiceBuilder::new()
            .layer(from_fn_with_state(
                sessions.clone(),
                session::bind_streamable_sessions,
            ))
            .layer(from_fn_with_state(gate.clone(), jsonrpc::inspect_post))
            .service(service);
        let streamable = Router::new().route_service("/mcp", service);
        mcp = mcp.merge(streamable);
    }
    if config.transport == Transport::Sse || config.legacy_sse {
        let make = handler.clone();
        let transport = sse::SseTransport::new(
            move || make(TransportKind::LegacySse),
            "/messages",
            gate.clone(),
            shutdown.clone(),
        );
        if let Some(revoked) = &revoked {
            transport.spawn_revocation_closer(revoked.clone(), Duration::from_secs(2));
        }
        mcp = mcp.merge(
            Router::new()
                .route("/sse", get(sse::open_stream))
                .route("/messages", post(sse::post_message))
                .with_state(transport),
        );
    }
    let admission = Arc::new(Admission::new(limits, auth, gate));
    mcp = mcp.layer(from_fn_with_state(admission, admission::admit));

    let origin_policy = Arc::new(guard::OriginPolicy::new(
        &config.allowed_hosts,
        config.dns_rebinding_protection,
        &config.cors_allowed_origins,
    ));
    if config.metrics_enabled
        && let Some(handle) = ops_metrics::install()
    {
        mcp = mcp.merge(
            Router::new()
                .route("/metrics", get(ops_metrics::render))
                .with_state(handle),
        );
    }
    let guarded = mcp.layer(
        ServiceBuilder::new()
            .layer(cors(config))
            .layer(from_fn_with_state(origin_policy, guard::check_origin)),
    );

    let health_state = HealthState {
        started: Instant::now(),
        backend,
        oauth_store: auth_server.as_ref().map(|s| s.store.clone()),
    };
    let mut open = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .with_state(health_state);
    if let Some(oauth) = &config.oauth {
        // Public discovery documents: outside the Origin guard, open CORS.
        open = open.merge(metadata::router(auth::resource_metadata(oauth)));
    }
    if let Some(server) = &auth_server {
        // The authorization server guards its own endpoints: CSRF tokens on its forms, CORS only
        // where browser clients need it, and framing headers on its pages.
        open = open.merge(server.router());
    }

    // One `Router::layer` call for the whole stack (outermost first): each call boxes every route
    // once more, and a boxed route is cloned on every request.
    let router = guarded.merge(open).layer(
        ServiceBuilder::new()
            // Spans name the path only: a query string may carry a (refused) token or a session id.
            .layer(TraceLayer::new_for_http().make_span_with(
                |request: &http::Request<axum::body::Body>| {
                    tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
                },
            ))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(from_fn(ops_metrics::track))
            .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                http::StatusCode::GATEWAY_TIMEOUT,
                // A stateless tool call answers in the response itself: give it the tool's time.
                config.request_timeout.max(config.tool_timeout + Duration::from_secs(5)),
            )),
    );
    App { router, sessions }
}

fn cors(config: &Config) -> CorsLayer {
    let allow_origin = if config.cors_allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .cors_allowed_origins
                .iter()
                .filter_map(|o| o.trim_end_matches('/').parse().ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers(MCP_REQUEST_HEADERS.map(HeaderName::from_static))
        .expose_headers([
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
            header::WWW_AUTHENTICATE,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> http::Response<axum::body::Body> {
    metrics::counter!("mcpgate_panics_total").increment(1);
    tracing::error!("a request handler panicked");
    let body = serde_json::json!({ "jsonrpc": "2.0", "id": null, "error": { "code": -32603, "message": "Internal error" } });
    let mut response = http::Response::new(axum::body::Body::from(body.to_string()));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
