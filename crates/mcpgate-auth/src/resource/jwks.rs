//! A cached JSON Web Key Set with a pinned algorithm per key.
//!
//! Verification reads the cache without I/O. An unknown `kid` triggers at most one refetch per
//! `min_refresh_interval`, so forged `kid`s cannot make us hammer the IdP. A stale set is
//! refreshed by the request that notices it (at most once per `min_refresh_interval` while the
//! keys are still trusted); if the IdP is unreachable, the cached keys keep serving until
//! `max_age`, after which verification is unavailable (503) until a fetch succeeds.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::verifier::VerifyError;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// One usable key and the only algorithms it may verify.
pub struct CachedKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

struct KeySet {
    keys: Vec<Arc<CachedKey>>,
    fetched_at: Instant,
}

#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// Algorithms accepted at all; HMAC and `none` are never accepted whatever this says.
    pub allowed_algorithms: Vec<Algorithm>,
    /// Least time between two fetches caused by unknown `kid`s.
    pub min_refresh_interval: Duration,
    /// Age at which a key set is refreshed proactively.
    pub refresh_after: Duration,
    /// Age beyond which an unrefreshable key set is no longer trusted.
    pub max_age: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            allowed_algorithms: vec![
                Algorithm::RS256,
                Algorithm::PS256,
                Algorithm::ES256,
                Algorithm::EdDSA,
            ],
            min_refresh_interval: Duration::from_secs(30),
            refresh_after: Duration::from_secs(15 * 60),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

pub struct JwksCache {
    uri: String,
    http: reqwest::Client,
    settings: JwksSettings,
    current: RwLock<Option<Arc<KeySet>>>,
    last_fetch: std::sync::Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub fn new(uri: impl Into<String>, http: reqwest::Client, settings: JwksSettings) -> Self {
        Self {
            uri: uri.into(),
            http,
            settings,
            current: RwLock::new(None),
            last_fetch: std::sync::Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The keys that may verify a token with this `kid` (all keys when the token names none).
    pub async fn keys_for(&self, kid: Option<&str>) -> Result<Vec<Arc<CachedKey>>, VerifyError> {
        let snapshot = self.snapshot();
        if let Some(set) = &snapshot {
            let age = set.fetched_at.elapsed();
            let found = select(set, kid);
            // Refresh well before the ceiling, whatever `refresh_after` says.
            let fresh_for = self.settings.refresh_after.min(self.settings.max_age / 2);
            if !found.is_empty() && age < fresh_for {
                return Ok(found);
            }
            if !found.is_empty() && age < self.settings.max_age && self.fetched_recently() {
                // A refresh was tried moments ago (the IdP may be down): don't make every
                // request wait for another attempt while the cached keys are still trusted.
                return Ok(found);
            }
            if !found.is_empty() {
                // Stale but usable: refresh now, fall back to the old keys if the IdP is down.
                return match self.refresh(false).await {
                    Ok(fresh) => Ok(select(&fresh, kid)).and_then(|k| non_empty(k, kid)),
                    Err(e) if age < self.settings.max_age => {
                        tracing::warn!(error = %e, jwks = %self.uri, "JWKS refresh failed; using cached keys");
                        Ok(found)
                    }
                    Err(e) => Err(e),
                };
            }
        }
        // Unknown kid (or nothing cached yet): one refetch, rate-limited.
        let fresh = self.refresh(snapshot.is_some()).await;
        match fresh {
            Ok(set) => non_empty(select(&set, kid), kid),
            Err(VerifyError::Invalid(m)) => Err(VerifyError::Invalid(m)),
            Err(e) => match snapshot {
                Some(set) if set.fetched_at.elapsed() < self.settings.max_age => {
                    non_empty(select(&set, kid), kid)
                }
                _ => Err(e),
            },
        }
    }

    /// Whether the key set, as cached now, still holds a key for `kid` and is younger than
    /// `max_age` (no I/O): a verification made earlier with that key may still stand.
    pub fn still_trusts(&self, kid: Option<&str>) -> bool {
        self.snapshot().is_some_and(|set| {
            set.fetched_at.elapsed() < self.settings.max_age
                && set.keys.iter().any(|k| match kid {
                    Some(kid) => k.kid.as_deref() == Some(kid),
                    None => true,
                })
        })
    }

    /// Whether a fetch was attempted (successfully or not) within `min_refresh_interval`.
    fn fetched_recently(&self) -> bool {
        self.last_fetch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() < self.settings.min_refresh_interval)
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Fetches the key set. With `rate_limited`, refuses (as an unknown key) when the last fetch
    /// was too recent.
    async fn refresh(&self, rate_limited: bool) -> Result<Arc<KeySet>, VerifyError> {
        let started = Instant::now();
        let _single_flight = self.fetching.lock().await;
        // Someone else fetched while we waited: use theirs.
        if let Some(set) = self.snapshot()
            && set.fetched_at >= started
        {
            return Ok(set);
        }
        if rate_limited {
            let last = *self
                .last_fetch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < self.settings.min_refresh_interval) {
                return Err(VerifyError::Invalid(
                    "the token's signing key is unknown".into(),
                ));
            }
        }
        *self
            .last_fetch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        tracing::debug!(jwks = %self.uri, "fetching the JWKS");
        let set = self.fetch().await?;
        let set = Arc::new(set);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(set.clone());
        Ok(set)
    }

    async fn fetch(&self) -> Result<KeySet, VerifyError> {
        let unavailable =
            |e: String| VerifyError::Unavailable(format!("cannot fetch the JWKS: {e}"));
        let response = self
            .http
            .get(&self.uri)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        // A key set is small; a huge body is an attack or a misconfiguration.
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(e.to_string()))?
        {
            if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(unavailable(format!(
                    "the JWKS is larger than {MAX_JWKS_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let body: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| unavailable(e.to_string()))?;
        let keys = body
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| unavailable("no `keys` array".into()))?;
        let keys = keys
            .iter()
            .filter_map(|raw| parse_key(raw, &self.settings.allowed_algorithms))
            .map(Arc::new)
            .collect();
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
        })
    }
}

fn select(set: &KeySet, kid: Option<&str>) -> Vec<Arc<CachedKey>> {
    set.keys
        .iter()
        .filter(|k| match kid {
            Some(kid) => k.kid.as_deref() == Some(kid),
            None => true,
        })
        .cloned()
        .collect()
}

fn non_empty(
    keys: Vec<Arc<CachedKey>>,
    kid: Option<&str>,
) -> Result<Vec<Arc<CachedKey>>, VerifyError> {
    if keys.is_empty() {
        let what = if kid.is_some() {
            "the token's signing key is unknown"
        } else {
            "no usable signing key"
        };
        Err(VerifyError::Invalid(what.into()))
    } else {
        Ok(keys)
    }
}

/// A JWK we can use, pinned to its algorithm; keys we cannot use (encryption keys, HMAC secrets,
/// unknown types) are skipped rather than failing the whole set.
pub fn parse_key(raw: &serde_json::Value, allowed: &[Algorithm]) -> Option<CachedKey> {
    let jwk: Jwk = serde_json::from_value(raw.clone()).ok()?;
    if matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    ) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => return None,
    };
    let pinned: Vec<Algorithm> = match jwk.common.key_algorithm {
        Some(declared) => {
            let declared = key_algorithm(declared)?;
            if !family.contains(&declared) {
                return None;
            }
            vec![declared]
        }
        None => family,
    };
    let algorithms: Vec<Algorithm> = pinned.into_iter().filter(|a| allowed.contains(a)).collect();
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(CachedKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hmac_and_encryption_keys_are_skipped() {
        let all = JwksSettings::default().allowed_algorithms;
        assert!(
            parse_key(
                &json!({ "kty": "oct", "k": "c2VjcmV0", "alg": "HS256" }),
                &all
            )
            .is_none()
        );
        let ec = json!({
            "kty": "EC", "crv": "P-256", "kid": "e1", "use": "enc",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        });
        assert!(parse_key(&ec, &all).is_none());
    }

    #[test]
    fn keys_are_pinned_to_their_declared_algorithm() {
        let all = JwksSettings::default().allowed_algorithms;
        let ec = json!({
            "kty": "EC", "crv": "P-256", "kid": "e1", "alg": "ES256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        });
        let key = parse_key(&ec, &all).unwrap();
        assert_eq!(key.algorithms, vec![Algorithm::ES256]);
        assert_eq!(key.kid.as_deref(), Some("e1"));
        let mut lying = ec.clone();
        lying["alg"] = json!("RS256");
        assert!(
            parse_key(&lying, &all).is_none(),
            "an EC key cannot claim an RSA algorithm"
        );
    }
}
