//! Local users: argon2id password hashes (PHC strings), authentication that answers unknown users
//! and wrong passwords alike, login throttling, and the first-start admin password.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use super::AuthServer;
use crate::store::{Store, StoreResult, User};

/// Longer passwords are refused outright (argon2 would hash them, but nobody types 1 KiB).
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes a password with argon2id (the crate's default parameters: 19 MiB, 2 passes) and a
/// random salt; returns the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub fn hash_password(password: &str) -> Result<String, HashError> {
    if password.is_empty() {
        return Err(HashError("the password is empty".into()));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(HashError(format!(
            "the password is longer than {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Checks a password against a PHC string; `false` for a malformed hash as well.
/// The parameters come from the hash, so older hashes keep working after a parameter change.
pub fn verify_password(hash: &str, password: &str) -> bool {
    password.len() <= MAX_PASSWORD_LEN
        && Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
}

/// A hash of nothing anyone knows, with the same parameters as real hashes: verified against
/// when the user does not exist, so that both failures cost the same.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&super::secrets::random_token()).expect("hashing a random token")
    })
}

/// Looks the user up and checks the password. An unknown user costs one argon2 verification,
/// like a wrong password, and yields the same `None`. Store failures are errors, not `None`.
pub async fn authenticate(
    store: &dyn Store,
    username: &str,
    password: &str,
) -> StoreResult<Option<User>> {
    let username = username.trim();
    let user = if username.is_empty() || username.len() > 256 {
        None
    } else {
        store.user_by_name(username).await?
    };
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_owned());
    let password = password.to_owned();
    // Argon2 is CPU-bound and takes 19 MiB per verification: more at once than there are cores
    // only adds latency, and a burst of logins would otherwise hold a buffer per blocking thread.
    let ok = match verification_slots().acquire().await {
        Ok(_slot) => tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false),
        Err(_closed) => false,
    };
    Ok(user.filter(|_| ok))
}

/// One slot per core for password verifications, shared by every server in the process.
fn verification_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    })
}

/// A random password for the first-start admin: 20 characters from an alphabet without
/// look-alikes (about 116 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    const LEN: usize = 20;
    // Rejection sampling keeps every character equally likely.
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut out = String::with_capacity(LEN);
    while out.len() < LEN {
        let bytes: [u8; 32] = rand::random();
        for b in bytes {
            if b < limit && out.len() < LEN {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

/// Failed logins counted in a sliding window, per username and per client address.
#[derive(Debug)]
pub struct LoginThrottle {
    per_user: usize,
    per_ip: usize,
    window: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    users: HashMap<String, VecDeque<Instant>>,
    ips: HashMap<String, VecDeque<Instant>>,
    last_sweep: Option<Instant>,
}

impl Default for LoginThrottle {
    /// 5 failures per user and 20 per address in 15 minutes.
    fn default() -> Self {
        Self::new(5, 20, Duration::from_secs(15 * 60))
    }
}

impl LoginThrottle {
    pub fn new(per_user: usize, per_ip: usize, window: Duration) -> Self {
        Self {
            per_user,
            per_ip,
            window,
            state: Mutex::new(ThrottleState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ThrottleState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(retry_after)` when either the user or the address has used up its failures.
    pub fn check(&self, username: &str, ip: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        let window = self.window;
        let mut wait = Duration::ZERO;
        let mut blocked =
            |map: &mut HashMap<String, VecDeque<Instant>>, key: String, limit: usize| {
                if let Some(times) = map.get_mut(&key) {
                    prune(times, now, window);
                    if times.len() >= limit
                        && let Some(oldest) = times.front()
                    {
                        wait = wait.max(window.saturating_sub(now.duration_since(*oldest)));
                        return true;
                    }
                }
                false
            };
        let by_user = blocked(&mut state.users, user_key(username), self.per_user);
        let by_ip = match ip {
            Some(ip) => blocked(&mut state.ips, ip_key(ip), self.per_ip),
            None => false,
        };
        if by_user || by_ip {
            Err(wait.max(Duration::from_secs(1)))
        } else {
            Ok(())
        }
    }

    pub fn record_failure(&self, username: &str, ip: Option<IpAddr>) {
        let now = Instant::now();
        let mut state = self.lock();
        self.sweep(&mut state, now);
        state
            .users
            .entry(user_key(username))
            .or_default()
            .push_back(now);
        if let Some(ip) = ip {
            state.ips.entry(ip_key(ip)).or_default().push_back(now);
        }
    }

    /// A successful login clears the user's failures (not the address's).
    pub fn record_success(&self, username: &str) {
        self.lock().users.remove(&user_key(username));
    }

    /// Drops expired entries now and then, so that the maps stay bounded.
    fn sweep(&self, state: &mut ThrottleState, now: Instant) {
        let due = state
            .last_sweep
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(60));
        if !due && state.users.len() + state.ips.len() < 100_000 {
            return;
        }
        state.last_sweep = Some(now);
        let window = self.window;
        for map in [&mut state.users, &mut state.ips] {
            map.retain(|_, times| {
                prune(times, now, window);
                !times.is_empty()
            });
        }
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

fn user_key(username: &str) -> String {
    username.trim().to_lowercase()
}

/// IPv6 clients are counted per /64: one host usually holds a whole prefix.
fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The throttle of one authorization server.
// TODO: a `login_throttle` field on `AuthServer` would replace this registry; the `Weak` keeps
// the server's allocation (and so its address) alive until its entry is dropped.
pub fn throttle(server: &Arc<AuthServer>) -> Arc<LoginThrottle> {
    type Registry = Mutex<Vec<(Weak<AuthServer>, Arc<LoginThrottle>)>>;
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let mut registry = REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    registry.retain(|(server, _)| server.strong_count() > 0);
    let weak = Arc::downgrade(server);
    if let Some((_, throttle)) = registry.iter().find(|(s, _)| s.ptr_eq(&weak)) {
        return throttle.clone();
    }
    let throttle = Arc::new(LoginThrottle::default());
    registry.push((weak, throttle.clone()));
    throttle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horse "));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(hash, hash_password("correct horse").unwrap());
        assert!(hash_password("").is_err());
    }

    #[test]
    fn generated_passwords_are_random_and_readable() {
        let a = generate_password();
        assert_eq!(a.len(), 20);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(!a.contains(['0', 'O', 'l', '1', 'I']));
        assert_ne!(a, generate_password());
    }

    #[test]
    fn throttles_per_user_and_per_address() {
        let t = LoginThrottle::new(2, 3, Duration::from_secs(60));
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(t.check("alice", Some(ip)).is_ok());
        t.record_failure("alice", Some(ip));
        t.record_failure("Alice", Some(ip));
        assert!(t.check("alice", None).is_err());
        assert!(t.check("bob", Some(ip)).is_ok());
        t.record_failure("bob", Some(ip));
        assert!(t.check("carol", Some(ip)).is_err());
        assert!(
            t.check("carol", Some("203.0.113.8".parse().unwrap()))
                .is_ok()
        );
        t.record_success("alice");
        assert!(t.check("alice", None).is_ok());
    }

    #[test]
    fn ipv6_counts_per_prefix() {
        let a: IpAddr = "2001:db8:1:2:3::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.1");
    }
}
