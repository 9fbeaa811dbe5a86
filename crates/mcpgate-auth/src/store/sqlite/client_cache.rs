//! Registered clients, remembered for a moment. Every token request looks its client up, and a
//! read through the pool is a round trip to one of sqlx's worker threads, which costs more than
//! the rest of a refresh rotation but the commit. Clients change rarely, and only through
//! [`Store::create_client`](crate::store::Store::create_client) and
//! [`Store::delete_client`](crate::store::Store::delete_client): this store forgets a client the
//! moment it changes it. A change made by another process on the same file (`mcpgate clients
//! remove` next to `serve`) is seen once the entry is older than the time to live, as if that
//! request had been in flight during the change.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::store::Client;

/// Default for [`super::SqliteStore::with_client_cache_ttl`].
pub const DEFAULT_CLIENT_CACHE_TTL: Duration = Duration::from_secs(1);
/// Clients remembered at most (DCR lets anyone register; the cache must not grow with that).
const MAX_ENTRIES: usize = 1024;

#[derive(Debug)]
pub(super) struct ClientCache {
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every change: a lookup that read the store before a change must not put what
    /// it read afterwards.
    generation: u64,
    entries: HashMap<String, (Instant, Client)>,
}

impl ClientCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoned only if a panic hit between two plain map operations: the map is sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client, if it was read less than the time to live ago.
    pub(super) fn get(&self, client_id: &str) -> Option<Client> {
        let state = self.lock();
        let (read_at, client) = state.entries.get(client_id)?;
        (read_at.elapsed() < self.ttl).then(|| client.clone())
    }

    /// To take before reading the store, and to hand to [`ClientCache::put`] with what was read.
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Remembers `client`, read from the store when the generation was `generation`; ignored if
    /// a change came in between (what was read may be older than that change).
    pub(super) fn put(&self, generation: u64, client: &Client) {
        if self.ttl.is_zero() {
            return;
        }
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            state
                .entries
                .retain(|_, (read_at, _)| read_at.elapsed() < ttl);
            if state.entries.len() >= MAX_ENTRIES {
                state.entries.clear();
            }
        }
        state
            .entries
            .insert(client.client_id.clone(), (Instant::now(), client.clone()));
    }

    /// Forgets `client_id` (this store has just changed it).
    pub(super) fn forget(&self, client_id: &str) {
        let mut state = self.lock();
        state.generation += 1;
        state.entries.remove(client_id);
    }
}
