//! Binding MCP sessions to the principal that opened them.
//!
//! rmcp hands each request's identity to the tools but never ties a session to one identity, so a
//! leaked `Mcp-Session-Id` would be usable by anyone with any valid token. We record the principal
//! of the `initialize` that created a session and answer every other principal as if the session
//! did not exist (404). Binding by (issuer, subject, client) rather than by token bytes keeps a
//! session alive across token refreshes.
//!
//! With a shared store ([`SharedSessions`], the OAuth store on PostgreSQL) the binding is also
//! kept there: a session unknown to this process is looked up in the store (another instance
//! opened it), and every request checks that the session still exists, so a DELETE on any
//! instance ends it on all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use mcpgate_auth::periodic::spawn_every;
use mcpgate_auth::{Principal, PrincipalKey};
use tokio_util::sync::CancellationToken;

use crate::session_store::{Opening, SharedSessions};
use crate::transport::streamable::HibernatingSessions;

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
    /// The sessions of every instance, when the deployment shares a store.
    shared: Option<Arc<SharedSessions>>,
    /// Whether a grant has been revoked: a shared session opened under it is over.
    revoked: Option<GrantCheck>,
}

/// Whether a grant has been revoked.
pub type GrantCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a presented session id allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// Unknown, ended, or another principal's: answered alike.
    NotFound,
    /// The shared store did not answer.
    Unavailable,
}

impl SessionBindings {
    /// Bindings kept in the shared store too.
    pub fn with_shared(shared: Arc<SharedSessions>, revoked: Option<GrantCheck>) -> Self {
        Self {
            owners: Mutex::default(),
            shared: Some(shared),
            revoked,
        }
    }

    pub fn shared(&self) -> Option<&Arc<SharedSessions>> {
        self.shared.as_ref()
    }

    /// Whether `principal` may use `session`. With a shared store, a session unknown here is
    /// looked up there (and bound here when it is the principal's), and a known one must still
    /// be there.
    pub async fn access(&self, session: &str, principal: &Principal) -> Access {
        let key = principal.key();
        let local = self.lock().get(session).cloned();
        if local.as_ref().is_some_and(|b| b.owner != key) {
            return Access::NotFound;
        }
        let Some(shared) = &self.shared else {
            return if local.is_some() {
                Access::Allowed
            } else {
                Access::NotFound
            };
        };
        let binding = match shared.binding(session).await {
            Ok(Some(binding)) if binding.owner == key => binding,
            Ok(_) => return Access::NotFound,
            Err(e) => {
                tracing::warn!(error = %e, "the shared session store did not answer");
                return Access::Unavailable;
            }
        };
        // Opened under a grant revoked since (perhaps while no instance held the session): the
        // principal may hold a new grant, but this session is over.
        if let (Some(revoked), Some(grant)) = (&self.revoked, &binding.grant)
            && revoked(grant)
        {
            if let Err(e) = shared.end(session).await {
                tracing::warn!(error = %e, "ending a revoked grant's shared session failed");
            }
            return Access::NotFound;
        }
        match shared.touch(session, &binding).await {
            Ok(true) => {}
            Ok(false) => return Access::NotFound,
            Err(e) => tracing::warn!(error = %e, "recording a session's use failed"),
        }
        if local.is_none() {
            self.insert(
                session,
                Binding {
                    owner: binding.owner,
                    grant: binding.grant,
                },
            );
        }
        Access::Allowed
    }

    pub fn bind(&self, session: &str, principal: &Principal) {
        let binding = Binding {
            owner: principal.key(),
            grant: principal.grant_id.clone(),
        };
        self.insert(session, binding);
    }

    fn insert(&self, session: &str, binding: Binding) {
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
    pub fn spawn_revocation_closer(
        self: &Arc<Self>,
        manager: Arc<HibernatingSessions>,
        revoked: Arc<dyn Fn(&str) -> bool + Send + Sync>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        spawn_every(self, interval, shutdown, move |bindings: Arc<Self>| {
            let (manager, revoked) = (manager.clone(), revoked.clone());
            async move {
                for id in bindings.sessions_of_revoked_grants(|g| revoked(g)) {
                    tracing::info!(target: "mcpgate::audit", event = "session_closed", reason = "grant_revoked");
                    manager.end(&id.as_str().into()).await;
                    if let Some(shared) = bindings.shared()
                        && let Err(e) = shared.end(&id).await
                    {
                        tracing::warn!(error = %e, "ending a revoked grant's shared session failed");
                    }
                    bindings.unbind(&id);
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Binding>> {
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops bindings of sessions the session manager has expired, once a minute.
    pub fn spawn_sweeper(
        self: &Arc<Self>,
        manager: Arc<HibernatingSessions>,
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
                        // Ended on another instance: close our copy (and its open streams).
                        if let Some(shared) = bindings.shared()
                            && matches!(shared.binding(&id).await, Ok(None))
                        {
                            manager.end(&id.as_str().into()).await;
                            bindings.unbind(&id);
                            continue;
                        }
                        // Expired here (a hibernating session is still known). With a shared
                        // store it may live on elsewhere, and come back here restored from the
                        // store.
                        if !manager.knows(&id) {
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

fn session_store_unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(http::header::RETRY_AFTER, "5")],
        "Service Unavailable: the session store did not answer",
    )
        .into_response()
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
    let presented = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = request.method().clone();
    if let Some(session) = &presented {
        match bindings.access(session, &principal).await {
            Access::Allowed => {}
            // Unknown to us or owned by someone else: indistinguishable on purpose.
            Access::NotFound => return session_not_found(),
            Access::Unavailable => return session_store_unavailable(),
        }
    }
    let opening = match (&presented, bindings.shared()) {
        (None, Some(_)) => Some(Opening::new(principal.clone())),
        _ => None,
    };
    let mut response = match &opening {
        // rmcp stores the session it opens while answering: lend it the principal.
        Some(opening) => SharedSessions::opening(opening.clone(), next.run(request)).await,
        None => next.run(request).await,
    };
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
                if opening.as_ref().is_some_and(|o| !o.saved()) {
                    // Other instances could not continue it, and this one refuses sessions the
                    // store does not know: the client had better open another one later.
                    return session_store_unavailable();
                }
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

#[cfg(test)]
mod tests {
    use mcpgate_auth::ScopeSet;
    use mcpgate_auth::store::Store;
    use mcpgate_auth::store::sqlite::SqliteStore;
    use rmcp::transport::streamable_http_server::session::store::{SessionState, SessionStore};

    use super::*;

    fn principal(subject: &str, grant: Option<&str>) -> Arc<Principal> {
        let mut p = Principal::from_static_token(subject, ScopeSet::new());
        p.issuer = "https://as.example".into();
        p.client_id = Some("client".into());
        p.grant_id = grant.map(str::to_owned);
        Arc::new(p)
    }

    fn state() -> SessionState {
        serde_json::from_value(serde_json::json!({ "initialize_params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "tests", "version": "0" },
        }}))
        .expect("session state")
    }

    /// Two instances' bindings on one store.
    async fn instances(
        revoked: Option<GrantCheck>,
    ) -> (SessionBindings, SessionBindings, Arc<SharedSessions>) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
        let shared = SharedSessions::new(store, Duration::from_secs(600));
        (
            SessionBindings::with_shared(shared.clone(), revoked.clone()),
            SessionBindings::with_shared(shared.clone(), revoked),
            shared,
        )
    }

    /// What rmcp does while the opening request of `opener` runs.
    async fn open(shared: &Arc<SharedSessions>, session: &str, opener: &Arc<Principal>) {
        let opening = Opening::new(opener.clone());
        SharedSessions::opening(opening.clone(), async {
            shared.store(session, &state()).await.unwrap();
        })
        .await;
        assert!(opening.saved());
    }

    #[tokio::test]
    async fn a_session_opened_on_one_instance_is_its_openers_on_another() {
        let (a, b, shared) = instances(None).await;
        let alice = principal("alice", Some("g1"));
        open(&shared, "s1", &alice).await;
        a.bind("s1", &alice);

        assert_eq!(b.access("s1", &alice).await, Access::Allowed);
        assert_eq!(b.owner("s1"), Some(alice.key()), "bound on B too");
        let mut other_client = (*alice).clone();
        other_client.client_id = Some("other".into());
        for intruder in [principal("mallory", Some("g1")), Arc::new(other_client)] {
            assert_eq!(b.access("s1", &intruder).await, Access::NotFound);
            assert_eq!(a.access("s1", &intruder).await, Access::NotFound);
        }
        assert!(SessionStore::load(&*shared, "s1").await.unwrap().is_some());
        assert_eq!(b.access("unknown", &alice).await, Access::NotFound);

        // Ended through one instance (rmcp deletes on DELETE): over on both.
        SessionStore::delete(&*shared, "s1").await.unwrap();
        assert_eq!(a.access("s1", &alice).await, Access::NotFound);
        assert_eq!(b.access("s1", &alice).await, Access::NotFound);
        assert!(SessionStore::load(&*shared, "s1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn sessions_are_only_stored_by_an_opening_request() {
        let (_, _, shared) = instances(None).await;
        assert!(shared.store("s1", &state()).await.is_err());
        assert!(SessionStore::load(&*shared, "s1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_revoked_grant_ends_its_shared_sessions_even_for_a_new_grant() {
        let revoked: GrantCheck = Arc::new(|grant: &str| grant == "g-old");
        let (_, b, shared) = instances(Some(revoked)).await;
        open(&shared, "s1", &principal("alice", Some("g-old"))).await;
        let alice_again = principal("alice", Some("g-new"));
        assert_eq!(b.access("s1", &alice_again).await, Access::NotFound);
        assert!(shared.binding("s1").await.unwrap().is_none(), "deleted");
    }

    #[tokio::test]
    async fn without_a_shared_store_only_local_bindings_count() {
        let local = SessionBindings::default();
        let alice = principal("alice", None);
        assert_eq!(local.access("s1", &alice).await, Access::NotFound);
        local.bind("s1", &alice);
        assert_eq!(local.access("s1", &alice).await, Access::Allowed);
        assert_eq!(
            local.access("s1", &principal("bob", None)).await,
            Access::NotFound
        );
    }
}
