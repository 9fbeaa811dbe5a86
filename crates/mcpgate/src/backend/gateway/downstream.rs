//! Who is connected downstream, and which of their requests are in flight upstream.
//!
//! The upstream server sees a single client (mcpgate). This registry is how its notifications and
//! its server-to-client requests find their way back to the right downstream client.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rmcp::RoleServer;
use rmcp::model::{ClientCapabilities, InitializeRequestParams, ProgressToken, RequestId};
use rmcp::service::Peer;

/// Identifies one downstream session in the registry.
pub(super) type SessionId = u64;

/// A client capability the upstream may need from a downstream client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Sampling,
    Elicitation,
    Roots,
}

impl Need {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Sampling => "sampling",
            Self::Elicitation => "elicitation",
            Self::Roots => "roots",
        }
    }

    fn met_by(self, capabilities: &ClientCapabilities) -> bool {
        match self {
            Self::Sampling => capabilities.sampling.is_some(),
            Self::Elicitation => capabilities.elicitation.is_some(),
            Self::Roots => capabilities.roots.is_some(),
        }
    }
}

struct Session {
    id: SessionId,
    peer: Peer<RoleServer>,
    /// The client's `initialize` parameters. rmcp stores them once per session behind an `Arc`,
    /// so pointer identity tells two sessions apart (`Peer` has no identity of its own).
    info: Arc<InitializeRequestParams>,
}

/// A downstream request currently being served by the upstream.
struct InFlight {
    upstream_id: RequestId,
    upstream_progress: ProgressToken,
    downstream_id: RequestId,
    downstream_progress: Option<ProgressToken>,
    peer: Peer<RoleServer>,
    capabilities: Option<ClientCapabilities>,
}

/// Where to send a server-to-client request.
pub(super) struct Target {
    pub peer: Peer<RoleServer>,
    /// The downstream request it belongs to, when known: the streamable HTTP transport uses it to
    /// answer on that request's SSE stream instead of the standalone one.
    pub origin: Option<RequestId>,
}

/// The registry itself. Locks are std mutexes held only for short, non-async sections.
#[derive(Default)]
pub(super) struct Hub {
    sessions: Mutex<Vec<Session>>,
    /// Keyed by a sequence number, so "most recent" is the highest key.
    in_flight: Mutex<HashMap<u64, InFlight>>,
    /// Resource URI → downstream sessions subscribed to it.
    subscriptions: Mutex<HashMap<String, HashSet<SessionId>>>,
    next: AtomicU64,
}

/// Recover from a poisoned lock: the maps stay consistent because no code path panics while
/// holding one, and a gateway must not stop routing because some unrelated thread panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Remember a downstream session; returns its id. Peers without handshake info (stateless
    /// requests) cannot receive notifications outside their request, so they are not kept.
    pub(super) fn register(&self, peer: &Peer<RoleServer>) -> Option<SessionId> {
        let info = peer.peer_info()?;
        let mut sessions = lock(&self.sessions);
        sessions.retain(|session| !session.peer.is_transport_closed());
        if let Some(session) = sessions
            .iter()
            .find(|session| Arc::ptr_eq(&session.info, &info))
        {
            return Some(session.id);
        }
        let id = self.next_id();
        sessions.push(Session {
            id,
            peer: peer.clone(),
            info,
        });
        Some(id)
    }

    /// Every live downstream session, pruning closed ones (and their subscriptions).
    pub(super) fn peers(&self) -> Vec<Peer<RoleServer>> {
        let mut sessions = lock(&self.sessions);
        let before: Vec<SessionId> = sessions.iter().map(|session| session.id).collect();
        sessions.retain(|session| !session.peer.is_transport_closed());
        if sessions.len() != before.len() {
            let live: HashSet<SessionId> = sessions.iter().map(|session| session.id).collect();
            let mut subscriptions = lock(&self.subscriptions);
            for subscribers in subscriptions.values_mut() {
                subscribers.retain(|id| live.contains(id));
            }
            subscriptions.retain(|_, subscribers| !subscribers.is_empty());
        }
        sessions
            .iter()
            .map(|session| session.peer.clone())
            .collect()
    }

    /// Record a forwarded request until the returned guard is dropped.
    pub(super) fn track(
        self: &Arc<Self>,
        upstream_id: RequestId,
        upstream_progress: ProgressToken,
        downstream_id: RequestId,
        downstream_progress: Option<ProgressToken>,
        peer: Peer<RoleServer>,
        capabilities: Option<ClientCapabilities>,
    ) -> InFlightGuard {
        let seq = self.next_id();
        let call = InFlight {
            upstream_id,
            upstream_progress,
            downstream_id,
            downstream_progress,
            peer,
            capabilities,
        };
        lock(&self.in_flight).insert(seq, call);
        InFlightGuard {
            hub: Arc::clone(self),
            seq,
        }
    }

    /// The downstream peer and progress token an upstream progress token stands for.
    pub(super) fn progress_target(
        &self,
        upstream: &ProgressToken,
    ) -> Option<(Peer<RoleServer>, ProgressToken)> {
        let in_flight = lock(&self.in_flight);
        let call = in_flight
            .values()
            .find(|call| &call.upstream_progress == upstream)?;
        Some((call.peer.clone(), call.downstream_progress.clone()?))
    }

    /// Choose the downstream client for a server-to-client request.
    ///
    /// `origin` is the upstream request the transport says it belongs to (streamable HTTP
    /// upstreams tell us; stdio cannot). Without it, the most recent in-flight call whose client
    /// has the capability is the best guess; with nothing in flight, any capable session.
    pub(super) fn route(&self, need: Need, origin: Option<&RequestId>) -> Option<Target> {
        {
            let in_flight = lock(&self.in_flight);
            if let Some(origin) = origin
                && let Some(call) = in_flight.values().find(|call| &call.upstream_id == origin)
            {
                // The caller is known: never hand its request to someone else's client.
                return call
                    .capabilities
                    .as_ref()
                    .is_some_and(|caps| need.met_by(caps))
                    .then(|| Target {
                        peer: call.peer.clone(),
                        origin: Some(call.downstream_id.clone()),
                    });
            }
            let newest = in_flight
                .iter()
                .filter(|(_, call)| !call.peer.is_transport_closed())
                .filter(|(_, call)| {
                    call.capabilities
                        .as_ref()
                        .is_some_and(|caps| need.met_by(caps))
                })
                .max_by_key(|(seq, _)| **seq);
            if let Some((_, call)) = newest {
                return Some(Target {
                    peer: call.peer.clone(),
                    origin: Some(call.downstream_id.clone()),
                });
            }
        }
        let sessions = lock(&self.sessions);
        sessions
            .iter()
            .rev()
            .filter(|session| !session.peer.is_transport_closed())
            .find(|session| need.met_by(&session.info.capabilities))
            .map(|session| Target {
                peer: session.peer.clone(),
                origin: None,
            })
    }

    /// Add a subscriber; true when it is the first one for this URI.
    pub(super) fn subscribe(&self, uri: &str, session: SessionId) -> bool {
        let mut subscriptions = lock(&self.subscriptions);
        let subscribers = subscriptions.entry(uri.to_owned()).or_default();
        let first = subscribers.is_empty();
        subscribers.insert(session);
        first
    }

    /// Remove a subscriber; true when it was the last one for this URI.
    pub(super) fn unsubscribe(&self, uri: &str, session: SessionId) -> bool {
        let mut subscriptions = lock(&self.subscriptions);
        let Some(subscribers) = subscriptions.get_mut(uri) else {
            return false;
        };
        let removed = subscribers.remove(&session);
        let last = removed && subscribers.is_empty();
        if subscribers.is_empty() {
            subscriptions.remove(uri);
        }
        last
    }

    /// The live peers subscribed to a resource.
    pub(super) fn subscribers(&self, uri: &str) -> Vec<Peer<RoleServer>> {
        let ids = lock(&self.subscriptions)
            .get(uri)
            .cloned()
            .unwrap_or_default();
        lock(&self.sessions)
            .iter()
            .filter(|session| ids.contains(&session.id) && !session.peer.is_transport_closed())
            .map(|session| session.peer.clone())
            .collect()
    }

    /// Every URI someone is subscribed to (re-subscribed after an upstream restart).
    pub(super) fn subscribed_uris(&self) -> Vec<String> {
        lock(&self.subscriptions).keys().cloned().collect()
    }
}

/// Removes its call from the in-flight table when the forwarding future ends or is dropped.
pub(super) struct InFlightGuard {
    hub: Arc<Hub>,
    seq: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        lock(&self.hub.in_flight).remove(&self.seq);
    }
}
