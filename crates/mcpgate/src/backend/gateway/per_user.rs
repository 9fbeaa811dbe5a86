//! Proxy mode's `pass_token_to_gateway`: every signed-in user reaches the HTTP upstream on a
//! connection of their own that carries *their* upstream IdP access token
//! (`Authorization: Bearer …`), never the MCP client's mcpgate token and never a shared one.
//!
//! Connections are opened on a user's first request, kept in a bounded pool keyed by mcpgate's
//! user id, closed after [`IDLE_AFTER`] without use, and replaced when the user's upstream token
//! changes (after a refresh or a new sign-in). Each connection has its own [`Hub`], so what the
//! upstream sends on its own (notifications, sampling, elicitation) reaches only that user's
//! sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mcpgate_auth::Principal;
use mcpgate_auth::resource::claims::now_secs;
use mcpgate_auth::store::Store;
use mcpgate_auth::upstream::Federation;
use rmcp::ErrorData;
use rmcp::model::{JsonObject, ServerCapabilities, ServerPeerInfo};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::downstream::Hub;
use super::upstream::{Upstream, UpstreamTarget};

/// Users with an open upstream connection at most; the least recently used one is closed first.
const MAX_USERS: usize = 256;
/// A connection unused this long is closed; the next request opens a new one.
const IDLE_AFTER: Duration = Duration::from_secs(5 * 60);
/// How often idle connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Where the per-user upstream tokens come from: proxy mode's federation and its store, and the
/// issuer of mcpgate's own tokens (only their principals are users who signed in upstream).
#[derive(Clone)]
pub struct UserTokens {
    pub federation: Arc<Federation>,
    pub store: Arc<dyn Store>,
    /// The built-in authorization server's issuer (`iss` of mcpgate's access tokens).
    pub issuer: String,
}

/// One user's connection and the downstream registry that belongs to it.
#[derive(Clone)]
pub(super) struct Route {
    pub upstream: Arc<Upstream>,
    pub hub: Arc<Hub>,
}

struct Entry {
    route: Route,
    /// The upstream access token this connection carries (compared, never logged).
    token: String,
    /// Cancelling it closes the connection and stops its supervisor.
    ct: CancellationToken,
}

impl Entry {
    /// Close now, or after `grace` so requests already sent on it can finish.
    fn close(self, grace: Option<Duration>) {
        match grace {
            None => self.ct.cancel(),
            Some(grace) => {
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    self.ct.cancel();
                });
            }
        }
    }
}

struct Slot {
    /// Held while a connection is opened, so one user's slow handshake never blocks another.
    cell: Arc<tokio::sync::Mutex<Option<Entry>>>,
    last_used: Instant,
}

/// The per-user connections.
pub(super) struct Pool {
    url: String,
    tokens: UserTokens,
    shutdown: CancellationToken,
    /// How long a replaced connection stays open for the requests already on it.
    grace: Duration,
    slots: Mutex<HashMap<String, Slot>>,
    /// The last handshake seen from any user's connection: what `initialize` announces.
    info: RwLock<Option<Arc<ServerPeerInfo>>>,
}

impl Pool {
    pub(super) fn new(
        url: String,
        tokens: UserTokens,
        grace: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            url,
            tokens,
            shutdown: shutdown.clone(),
            grace,
            slots: Mutex::new(HashMap::new()),
            info: RwLock::new(None),
        });
        tokio::spawn(Arc::clone(&pool).sweep(shutdown));
        pool
    }

    /// The user behind `principal`, if it is one who signed in upstream through mcpgate.
    fn user_of<'p>(&self, principal: &'p Principal) -> Result<&'p str, ErrorData> {
        // Static tokens, external-mode tokens and client_credentials grants (no `fam`) stand
        // for no upstream user: they never get anyone's upstream token.
        if principal.issuer != self.tokens.issuer || principal.grant_id.is_none() {
            return Err(ErrorData::invalid_request(
                "this gateway calls its upstream with the signed-in user's own upstream token; \
                 this credential belongs to no user who signed in through mcpgate: sign in with OAuth",
                Some(json!({ "reason": "upstream_token_unavailable" })),
            ));
        }
        Ok(&principal.subject)
    }

    /// The connection for `principal`'s requests, opened (or replaced) as needed.
    pub(super) async fn route(&self, principal: &Principal) -> Result<Route, ErrorData> {
        let user = self.user_of(principal)?;
        let token = match self
            .tokens
            .federation
            .access_token_for(self.tokens.store.as_ref(), user, now_secs())
            .await
        {
            Ok(Some(token)) if !token.is_empty() => token,
            Ok(_) => {
                return Err(ErrorData::invalid_request(
                    "mcpgate holds no upstream access token for you (never kept, or the identity \
                     provider refused to refresh it): sign in again",
                    Some(json!({ "reason": "upstream_token_missing" })),
                ));
            }
            Err(error) => {
                tracing::warn!(target: "mcpgate::upstream", user, %error, "cannot get a user's upstream access token");
                return Err(ErrorData::internal_error(
                    format!("cannot get your upstream access token: {error}"),
                    Some(json!({ "reason": "upstream_token_error" })),
                ));
            }
        };
        let cell = self.slot(user);
        let mut entry = cell.lock().await;
        if let Some(current) = entry.as_ref() {
            if current.token == token && !current.ct.is_cancelled() {
                return Ok(current.route.clone());
            }
            tracing::debug!(target: "mcpgate::upstream", user, "the user's upstream token changed: reconnecting");
        }
        if let Some(old) = entry.take() {
            old.close(Some(self.grace));
        }
        let hub = Arc::new(Hub::default());
        let ct = self.shutdown.child_token();
        let upstream = Upstream::start_with_bearer(
            UpstreamTarget::Url(self.url.clone()),
            Some(token.clone()),
            Arc::clone(&hub),
            ct.clone(),
        )
        .await
        .map_err(|error| {
            ct.cancel();
            tracing::warn!(target: "mcpgate::upstream", user, %error, "cannot connect to the upstream with the user's token");
            // The details (which may name the upstream's URL) go to the log only.
            ErrorData::internal_error(
                "the upstream MCP server did not accept a connection with your upstream token; \
                 signing in again may help",
                Some(json!({ "reason": "upstream_unavailable" })),
            )
        })?;
        if let Some(info) = upstream.info() {
            *self.info.write().unwrap_or_else(PoisonError::into_inner) = Some(info);
        }
        let route = Route { upstream, hub };
        *entry = Some(Entry {
            route: route.clone(),
            token,
            ct,
        });
        Ok(route)
    }

    /// The open connection of `principal`, if any (for notifications, which open none).
    pub(super) fn existing(&self, principal: &Principal) -> Option<Route> {
        let user = self.user_of(principal).ok()?;
        let cell = {
            let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(&slots.get(user)?.cell)
        };
        // Not while a handshake holds it: a notification must not wait for one.
        let entry = cell.try_lock().ok()?;
        entry.as_ref().map(|entry| entry.route.clone())
    }

    /// The user's slot, marked used; when the pool is full, the least recently used user's
    /// connection is closed to make room.
    fn slot(&self, user: &str) -> Arc<tokio::sync::Mutex<Option<Entry>>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(user) {
            slot.last_used = Instant::now();
            return Arc::clone(&slot.cell);
        }
        if slots.len() >= MAX_USERS
            && let Some(oldest) = slots
                .iter()
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(user, _)| user.clone())
            && let Some(slot) = slots.remove(&oldest)
        {
            close_slot(slot, Some(self.grace));
        }
        let cell = Arc::new(tokio::sync::Mutex::new(None));
        slots.insert(
            user.to_owned(),
            Slot {
                cell: Arc::clone(&cell),
                last_used: Instant::now(),
            },
        );
        cell
    }

    /// Closes the connections nobody used for [`IDLE_AFTER`], until shutdown.
    async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let idle: Vec<Slot> = {
                let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
                let users: Vec<String> = slots
                    .iter()
                    .filter(|(_, slot)| slot.last_used.elapsed() >= IDLE_AFTER)
                    .map(|(user, _)| user.clone())
                    .collect();
                users.iter().filter_map(|user| slots.remove(user)).collect()
            };
            if !idle.is_empty() {
                tracing::debug!(target: "mcpgate::upstream", count = idle.len(), "closing idle per-user upstream connections");
            }
            for slot in idle {
                close_slot(slot, Some(self.grace));
            }
        }
    }

    /// The last handshake seen from any user's connection.
    pub(super) fn info(&self) -> Option<Arc<ServerPeerInfo>> {
        self.info
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What `initialize` announces before any user's connection has told: the kinds of things a
    /// gateway forwards. Lists on a connection whose upstream lacks one come back empty.
    pub(super) fn assumed_capabilities() -> ServerCapabilities {
        let mut capabilities = ServerCapabilities::default();
        capabilities.tools = Some(Default::default());
        capabilities.resources = Some(Default::default());
        capabilities.prompts = Some(Default::default());
        capabilities.completions = Some(JsonObject::new());
        capabilities
    }

    /// Closes every connection and waits (at most `limit`) for their supervisors to stop.
    pub(super) async fn close(&self, limit: Duration) {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, slot)| slot)
            .collect();
        for slot in slots {
            let entry = slot.cell.lock().await.take();
            if let Some(entry) = entry {
                let upstream = Arc::clone(&entry.route.upstream);
                entry.close(None);
                upstream.stopped(limit).await;
            }
        }
    }
}

/// Close a slot's connection (off the caller's task: its lock may be held by a handshake).
fn close_slot(slot: Slot, grace: Option<Duration>) {
    tokio::spawn(async move {
        if let Some(entry) = slot.cell.lock().await.take() {
            entry.close(grace);
        }
    });
}
