//! A bounded cache of verified JWT access tokens, so a token presented again costs a SHA-256 and
//! a map lookup instead of a signature verification.
//!
//! - Keyed by the SHA-256 of the token, never the token itself.
//! - An entry lives `min(ttl, until the token expires)`; `exp` (with the verifier's leeway) is
//!   checked again against the wall clock on every hit, so a cached token is never accepted after
//!   its expiry.
//! - The verifiers re-check on every hit what can change while the token is cached: revocation
//!   (the built-in AS's denylist) and whether the signing key is still trusted (still in the key
//!   ring / in a JWKS younger than its `max_age`). A hit that fails those checks falls back to a
//!   full verification, which gives the same answer an uncached verifier would.
//! - Bounded: when full, expired entries are purged first, then the entries closest to their end.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::claims::now_secs;
use crate::Principal;

/// Size and lifetime of a [`VerifiedTokenCache`].
#[derive(Debug, Clone)]
pub struct TokenCacheSettings {
    /// Longest time a verified token is served from the cache (also bounded by its `exp`).
    pub ttl: Duration,
    /// Most tokens kept; `0` disables the cache.
    pub capacity: usize,
}

impl Default for TokenCacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            capacity: 10_000,
        }
    }
}

impl TokenCacheSettings {
    /// No caching: every presentation is verified in full.
    pub fn disabled() -> Self {
        Self {
            ttl: Duration::ZERO,
            capacity: 0,
        }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0 && !self.ttl.is_zero()
    }
}

/// What a verifier remembers about a token it verified.
#[derive(Debug)]
pub struct CachedToken {
    pub principal: Arc<Principal>,
    /// The token's `jti`, for revocation checks on hits.
    pub jti: Option<String>,
    /// The `kid` of the key that verified it, for key-trust checks on hits.
    pub kid: Option<String>,
    /// `exp + leeway`, in seconds since the epoch: the last second the token is accepted.
    last_valid_second: i64,
    until: Instant,
}

/// The SHA-256 of a token: the only form in which a token is kept.
pub type TokenKey = [u8; 32];

pub fn token_key(token: impl AsRef<[u8]>) -> TokenKey {
    Sha256::digest(token.as_ref()).into()
}

/// The map from token digests to their verifications. A SHA-256 digest is already a uniform hash,
/// and only tokens that verified are ever inserted, so a caller cannot crowd the map with chosen
/// collisions: the digest's first eight bytes are the map's hash. Hashing it again (SipHash)
/// cost more than the rest of a cache hit.
type Entries = HashMap<TokenKey, Arc<CachedToken>, BuildHasherDefault<DigestPrefix>>;

#[derive(Default)]
struct DigestPrefix(u64);

impl Hasher for DigestPrefix {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length (a `usize`, via `write_usize`) and then its bytes.
        let mut prefix = [0u8; 8];
        let n = bytes.len().min(8);
        prefix[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(prefix);
    }

    fn write_usize(&mut self, _len: usize) {}
}

/// Inserts between two sweeps of expired entries, so the map holds about the tokens seen within
/// one `ttl` rather than filling up to `capacity` with dead ones.
const SWEEP_EVERY: usize = 1024;

pub struct VerifiedTokenCache {
    settings: TokenCacheSettings,
    entries: RwLock<Entries>,
    inserts: AtomicUsize,
}

impl VerifiedTokenCache {
    pub fn new(settings: TokenCacheSettings) -> Self {
        Self {
            settings,
            entries: RwLock::new(Entries::default()),
            inserts: AtomicUsize::new(0),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.settings.enabled()
    }

    /// Number of tokens currently held (expired ones included until they are purged).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached verification of `key`, if it is still within its lifetime and the token has
    /// not expired. The caller still checks revocation and key trust.
    pub fn get(&self, key: &TokenKey) -> Option<Arc<CachedToken>> {
        if !self.is_enabled() {
            return None;
        }
        let entry = self.read().get(key).cloned()?;
        if entry.until <= Instant::now() || entry.last_valid_second < now_secs() {
            self.remove(key);
            return None;
        }
        Some(entry)
    }

    pub fn remove(&self, key: &TokenKey) {
        self.write().remove(key);
    }

    /// Remembers a successful verification. `leeway` is the one the verifier applied to `exp`.
    pub fn insert(
        &self,
        key: TokenKey,
        principal: &Arc<Principal>,
        jti: Option<String>,
        kid: Option<String>,
        leeway: Duration,
    ) {
        if !self.is_enabled() {
            return;
        }
        let Some(exp) = principal
            .expires_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok())
        else {
            return; // a token without expiry is never cached
        };
        let last_valid_second = exp.saturating_add(leeway.as_secs() as i64);
        let left = u64::try_from(last_valid_second.saturating_sub(now_secs())).unwrap_or(0);
        let ttl = self.settings.ttl.min(Duration::from_secs(left));
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let entry = Arc::new(CachedToken {
            principal: principal.clone(),
            jti,
            kid,
            last_valid_second,
            until: now + ttl,
        });
        let sweep = self.inserts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1;
        let mut entries = self.write();
        if sweep {
            entries.retain(|_, e| e.until > now);
        }
        if entries.len() >= self.settings.capacity && !entries.contains_key(&key) {
            evict(&mut entries, self.settings.capacity, now);
        }
        entries.insert(key, entry);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Makes room: drops expired entries, then (if still full) the eighth of the entries closest to
/// their end, so a full cache does not pay a scan on every insert.
fn evict(entries: &mut Entries, capacity: usize, now: Instant) {
    entries.retain(|_, e| e.until > now);
    if entries.len() < capacity {
        return;
    }
    let mut ends: Vec<Instant> = entries.values().map(|e| e.until).collect();
    let drop = (capacity / 8).max(1).min(ends.len());
    let (_, cutoff, _) = ends.select_nth_unstable(drop - 1);
    let cutoff = *cutoff;
    let mut dropped = 0;
    entries.retain(|_, e| {
        if dropped < drop && e.until <= cutoff {
            dropped += 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn principal(subject: &str, exp: i64) -> Arc<Principal> {
        Arc::new(Principal {
            issuer: "https://as.example".into(),
            subject: subject.into(),
            client_id: None,
            scopes: crate::ScopeSet::default(),
            audience: vec![],
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(exp as u64)),
            claims: Default::default(),
            grant_id: None,
        })
    }

    #[test]
    fn keys_are_hashes_and_distinct() {
        assert_ne!(token_key("a.b.c"), token_key("a.b.d"));
        assert_eq!(token_key("a.b.c"), token_key("a.b.c"));
    }

    #[test]
    fn hit_within_lifetime_and_miss_for_other_tokens() {
        let cache = VerifiedTokenCache::new(TokenCacheSettings::default());
        let p = principal("alice", now_secs() + 300);
        cache.insert(token_key("t1"), &p, Some("j1".into()), None, Duration::ZERO);
        let hit = cache.get(&token_key("t1")).unwrap();
        assert_eq!(hit.principal.subject, "alice");
        assert_eq!(hit.jti.as_deref(), Some("j1"));
        assert!(cache.get(&token_key("t2")).is_none());
    }

    #[test]
    fn expired_tokens_are_neither_cached_nor_served() {
        let cache = VerifiedTokenCache::new(TokenCacheSettings::default());
        cache.insert(
            token_key("old"),
            &principal("a", now_secs() - 5),
            None,
            None,
            Duration::ZERO,
        );
        assert!(cache.is_empty());
        // An entry whose wall-clock expiry has passed is refused even if its Instant has not.
        let entry = Arc::new(CachedToken {
            principal: principal("a", now_secs() - 5),
            jti: None,
            kid: None,
            last_valid_second: now_secs() - 1,
            until: Instant::now() + Duration::from_secs(600),
        });
        cache.write().insert(token_key("stale"), entry);
        assert!(cache.get(&token_key("stale")).is_none());
        assert!(cache.is_empty(), "a refused entry is dropped");
    }

    #[test]
    fn leeway_extends_the_last_valid_second() {
        let cache = VerifiedTokenCache::new(TokenCacheSettings::default());
        let p = principal("a", now_secs() - 5);
        cache.insert(token_key("t"), &p, None, None, Duration::from_secs(30));
        assert!(cache.get(&token_key("t")).is_some());
    }

    #[test]
    fn size_is_bounded() {
        let cache = VerifiedTokenCache::new(TokenCacheSettings {
            ttl: Duration::from_secs(60),
            capacity: 16,
        });
        let p = principal("a", now_secs() + 300);
        for i in 0..100 {
            cache.insert(token_key(i.to_string()), &p, None, None, Duration::ZERO);
            assert!(cache.len() <= 16);
        }
        assert!(
            cache.get(&token_key("99")).is_some(),
            "the newest entry stays"
        );
    }

    #[test]
    fn expired_entries_are_swept() {
        let cache = VerifiedTokenCache::new(TokenCacheSettings::default());
        let p = principal("a", now_secs() + 300);
        let dead = Arc::new(CachedToken {
            principal: p.clone(),
            jti: None,
            kid: None,
            last_valid_second: now_secs() + 300,
            until: Instant::now(),
        });
        cache.write().insert(token_key("dead"), dead);
        for i in 0..SWEEP_EVERY {
            cache.insert(token_key(i.to_string()), &p, None, None, Duration::ZERO);
        }
        assert!(!cache.read().contains_key(&token_key("dead")));
        assert_eq!(cache.len(), SWEEP_EVERY);
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        let cache = VerifiedTokenCache::new(TokenCacheSettings::disabled());
        cache.insert(
            token_key("t"),
            &principal("a", now_secs() + 300),
            None,
            None,
            Duration::ZERO,
        );
        assert!(cache.get(&token_key("t")).is_none());
    }
}
