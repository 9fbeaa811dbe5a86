//! Streamable HTTP sessions shared through the OAuth store, so that any instance of a deployment
//! continues a session another instance opened — still bound to the principal that opened it.
//!
//! Two halves: rmcp's [`SessionStore`] (it persists the client's `initialize` parameters and
//! replays them on an instance that does not know the session), and the binding (issuer, subject,
//! client, grant) that [`crate::session`] checks on every request. Both live in one row of the
//! store's `mcp_sessions` table, keyed by the SHA-256 of the session id.
//!
//! rmcp calls [`SessionStore::store`] without saying who asked; the session-binding middleware
//! runs the request that opens a session inside [`SharedSessions::opening`], which lends the
//! principal to that call through a task-local.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mcpgate_auth::resource::claims::now_secs;
use mcpgate_auth::server::secrets;
use mcpgate_auth::store::{McpSession, Store, StoreError, Timestamp};
use mcpgate_auth::{Principal, PrincipalKey};
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};

tokio::task_local! {
    /// The request that is opening a session, while rmcp answers its `initialize`.
    static OPENING: Arc<Opening>;
}

/// Longest time between two writes of a session's last use.
const MAX_TOUCH_INTERVAL_SECS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum SharedSessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("MCP session state: {0}")]
    State(#[from] serde_json::Error),
    #[error("an MCP session was opened outside an authenticated request")]
    NoPrincipal,
}

/// Who is opening a session, and whether its row was written.
pub struct Opening {
    principal: Arc<Principal>,
    saved: AtomicBool,
}

impl Opening {
    pub fn new(principal: Arc<Principal>) -> Arc<Self> {
        Arc::new(Self {
            principal,
            saved: AtomicBool::new(false),
        })
    }

    /// Whether rmcp stored the session it opened (it only logs a failure).
    pub fn saved(&self) -> bool {
        self.saved.load(Ordering::Acquire)
    }
}

/// A session as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBinding {
    pub owner: PrincipalKey,
    pub grant: Option<String>,
    last_seen_at: Timestamp,
}

/// The sessions of every instance, in the OAuth store.
pub struct SharedSessions {
    store: Arc<dyn Store>,
    /// How long an unused session lives: the session manager's keep-alive plus the touch
    /// interval, so the shared row never expires before an instance's in-memory session does.
    lifetime: i64,
    touch_every: i64,
}

impl SharedSessions {
    /// `idle` is the in-memory sessions' keep-alive (`session_idle_timeout`).
    pub fn new(store: Arc<dyn Store>, idle: Duration) -> Arc<Self> {
        let idle = i64::try_from(idle.as_secs()).unwrap_or(i64::MAX / 4);
        let touch_every = (idle / 4).clamp(1, MAX_TOUCH_INTERVAL_SECS);
        Arc::new(Self {
            store,
            lifetime: idle.saturating_add(touch_every),
            touch_every,
        })
    }

    /// Runs `serve` (the request that opens a session) with its principal lent to
    /// [`SessionStore::store`].
    pub async fn opening<F: Future>(opening: Arc<Opening>, serve: F) -> F::Output {
        OPENING.scope(opening, serve).await
    }

    /// The binding of a live session.
    pub async fn binding(&self, session: &str) -> Result<Option<SharedBinding>, StoreError> {
        let row = self
            .store
            .mcp_session(&secrets::hash(session), now_secs())
            .await?;
        Ok(row.map(|s| SharedBinding {
            owner: PrincipalKey {
                issuer: s.issuer,
                subject: s.subject,
                client_id: s.client_id,
            },
            grant: s.grant_id,
            last_seen_at: s.last_seen_at,
        }))
    }

    /// Records a use of the session (at most once per touch interval); `false` if it is gone.
    pub async fn touch(&self, session: &str, binding: &SharedBinding) -> Result<bool, StoreError> {
        let now = now_secs();
        if now - binding.last_seen_at < self.touch_every {
            return Ok(true);
        }
        self.store
            .touch_mcp_session(
                &secrets::hash(session),
                now,
                now.saturating_add(self.lifetime),
            )
            .await
    }

    /// Ends a session for every instance.
    pub async fn end(&self, session: &str) -> Result<bool, StoreError> {
        self.store.delete_mcp_session(&secrets::hash(session)).await
    }

    async fn save(&self, session: &str, state: &SessionState) -> Result<(), SharedSessionError> {
        let opening = OPENING
            .try_with(Arc::clone)
            .map_err(|_| SharedSessionError::NoPrincipal)?;
        let principal = &opening.principal;
        let now = now_secs();
        let row = McpSession {
            id_hash: secrets::hash(session),
            state: serde_json::to_value(state)?,
            issuer: principal.issuer.clone(),
            subject: principal.subject.clone(),
            client_id: principal.client_id.clone(),
            grant_id: principal.grant_id.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(self.lifetime),
        };
        self.store.save_mcp_session(&row).await?;
        opening.saved.store(true, Ordering::Release);
        Ok(())
    }

    async fn load(&self, session: &str) -> Result<Option<SessionState>, SharedSessionError> {
        let row = self
            .store
            .mcp_session(&secrets::hash(session), now_secs())
            .await?;
        Ok(row.map(|s| serde_json::from_value(s.state)).transpose()?)
    }
}

#[async_trait::async_trait]
impl SessionStore for SharedSessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(SharedSessions::load(self, session_id).await?)
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        Ok(self.save(session_id, state).await?)
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.end(session_id).await?;
        Ok(())
    }
}

/// Whether the OAuth store at `url` is shared by several instances (PostgreSQL) rather than
/// local to one process (SQLite).
pub fn is_shared_store_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The store Streamable HTTP sessions are shared through: the OAuth store when it is
/// PostgreSQL. Otherwise sessions stay in this process, and a deployment that looks like
/// several instances gets a loud warning.
pub fn shared_store(
    config: &crate::config::Config,
    oauth_store: Option<&Arc<dyn Store>>,
) -> Option<Arc<dyn Store>> {
    let url = config
        .oauth
        .as_ref()
        .and_then(|o| o.builtin.as_ref())
        .map(|b| b.store.expose());
    if url.is_some_and(is_shared_store_url) {
        return oauth_store.cloned();
    }
    if url.is_some()
        && let Some(platform) = multi_instance_platform(|name| std::env::var_os(name).is_some())
    {
        tracing::warn!(
            platform,
            "!!! the OAuth store is SQLite, local to this instance, on a platform that runs several: \
             signing keys, clients, grants and MCP sessions are not shared, so tokens and sessions \
             from one instance fail on another. Use MCP_OAUTH_STORE=postgres://… (and \
             MCP_OAUTH_REQUIRE_SHARED_STORE=true), or run exactly one instance !!!"
        );
    }
    None
}

/// The platform, when the environment says this process may be one of several instances.
pub fn multi_instance_platform(is_set: impl Fn(&str) -> bool) -> Option<&'static str> {
    if is_set("K_SERVICE") {
        Some("Cloud Run")
    } else if is_set("KUBERNETES_SERVICE_HOST") {
        Some("Kubernetes")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_is_shared() {
        assert!(is_shared_store_url("postgres://u@h/db"));
        assert!(is_shared_store_url("postgresql://u@h/db"));
        assert!(!is_shared_store_url("sqlite://mcpgate-oauth.db"));
        assert!(!is_shared_store_url("sqlite::memory:"));
    }

    #[test]
    fn platforms_are_recognised_from_their_environment() {
        assert_eq!(
            multi_instance_platform(|n| n == "K_SERVICE"),
            Some("Cloud Run")
        );
        assert_eq!(
            multi_instance_platform(|n| n == "KUBERNETES_SERVICE_HOST"),
            Some("Kubernetes")
        );
        assert_eq!(multi_instance_platform(|_| false), None);
    }
}
