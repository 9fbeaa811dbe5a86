//! Binding MCP sessions to the principal that opened them.
//!
//! rmcp hands each request's identity to the tools but never ties a session to one identity, so a
//! leaked `Mcp-Session-Id` would be usable by anyone with any valid token. We record the principal
//! of the `initialize` that created a session and answer every other principal as if the session
//! did not exist (404). Binding by (issuer, subject, client) rather than by token bytes keeps a
//! session alive across token refreshes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use mcpgate_auth::periodic::spawn_every;
use mcpgate_auth::{Principal, PrincipalKey};
use rmcp::transport::streamable_http_server::session::SessionManager;
use tokio_util::sync::CancellationToken;

const SESSION_HEADER: &str = "mcp-session-id";

/// Who owns a session, and under which grant it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    owner: PrincipalKey,
    grant: Option<String>,
}

/// Session id → the principal that owns it.
#[derive(Default)]
pub struct SessionBindings {
    owners: Mutex<HashMap<String, Binding>>,
}

impl SessionBindings {
    pub fn bind(&self, session: &str, principal: &Principal) {
        let binding = Binding {
            owner: principal.key(),
            grant: principal.grant_id.clone(),
        };
        self.lock().insert(session.to_owned(), binding);
        metrics::gauge!("mcpgate_sessions", "transport" => "streamable-http")
            .set(self.len() as f64);
    }

    pub fn owner(&self, session: &str) -> Option<PrincipalKey> {
        self.lock().get(session).map(|b| b.owner.clone())
    }

    pub fn unbind(&self, session: &str) {
        self.lock().remove(session);
        metrics::gauge!("mcpgate_sessions", "transport" => "streamable-http")
            .set(self.len() as f64);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions opened under a grant for which `revoked` holds.
    pub fn sessions_of_revoked_grants(&self, revoked: impl Fn(&str) -> bool) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, b)| b.grant.as_deref().is_some_and(&revoked))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Closes the sessions of revoked grants every `interval` (`mcpgate tokens revoke`).
    pub fn spawn_revocation_closer<M: SessionManager>(
        self: &Arc<Self>,
        manager: Arc<M>,
        revoked: Arc<dyn Fn(&str) -> bool + Send + Sync>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        spawn_every(self, interval, shutdown, move |bindings: Arc<Self>| {
            let (manager, revoked) = (manager.clone(), revoked.clone());
            async move {
                for id in bindings.sessions_of_revoked_grants(|g| revoked(g)) {
                    tracing::info!(target: "mcpgate::audit", event = "session_closed", reason = "grant_revoked");
                    let _ = manager.close_session(&id.as_str().into()).await;
                    bindings.unbind(&id);
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Binding>> {
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops bindings of sessions the session manager has expired, once a minute.
    pub fn spawn_sweeper<M: SessionManager>(
        self: &Arc<Self>,
        manager: Arc<M>,
        shutdown: CancellationToken,
    ) {
        spawn_every(
            self,
            Duration::from_secs(60),
            shutdown,
            move |bindings: Arc<Self>| {
                let manager = manager.clone();
                async move {
                    let ids: Vec<String> = bindings.lock().keys().cloned().collect();
                    for id in ids {
                        if !matches!(manager.has_session(&id.as_str().into()).await, Ok(true)) {
                            bindings.unbind(&id);
                        }
                    }
                }
            },
        );
    }
}

/// The answer for a session this principal may not see: the same as for an unknown one.
pub fn session_not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response()
}

/// Middleware for `/mcp`, after authentication.
pub async fn bind_streamable_sessions(
    State(bindings): State<Arc<SessionBindings>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(principal) = request.extensions().get::<Arc<Principal>>().cloned() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no principal").into_response();
    };
    let key = principal.key();
    let presented = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = request.method().clone();
    if let Some(session) = &presented {
        match bindings.owner(session) {
            Some(owner) if owner == key => {}
            // Unknown to us or owned by someone else: indistinguishable on purpose.
            _ => return session_not_found(),
        }
    }
    let mut response = next.run(request).await;
    // rmcp answers a successful DELETE with 202; clients (the Python SDK) expect 200 or 204.
    if method == Method::DELETE && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::OK;
    }
    match presented {
        None => {
            if response.status().is_success()
                && let Some(created) = response
                    .headers()
                    .get(SESSION_HEADER)
                    .and_then(|v| v.to_str().ok())
            {
                bindings.bind(created, &principal);
            }
        }
        Some(session) => {
            if method == Method::DELETE && response.status().is_success()
                || response.status() == StatusCode::NOT_FOUND
            {
                bindings.unbind(&session);
            }
        }
    }
    response
}
