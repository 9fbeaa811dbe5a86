//! Signing keys of the built-in authorization server: generated on first start, kept in the
//! store, published at `/jwks`, rotated with `mcpgate keys rotate`.
//!
//! Every instance reloads the key ring from the store every few seconds, so a rotation made by
//! the CLI (or another instance) is picked up without a restart. Access tokens are signed with
//! the newest key whose activation time has passed; keys stay published until `retire_at`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use tokio_util::sync::CancellationToken;

use crate::resource::claims::now_secs;
use crate::store::{SigningKey, Store, StoreError, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot generate or load a signing key: {0}")]
    Crypto(String),
    #[error("no signing key is active")]
    NoActiveKey,
}

/// One key of the ring, ready to use.
struct LoadedKey {
    kid: String,
    activate_at: Timestamp,
    retire_at: Option<Timestamp>,
    /// The private key, parsed once: `jsonwebtoken::encode` parses (and checks) the PKCS#8
    /// document on every call, which cost about as much as the signature itself.
    signing: EcdsaKeyPair,
    /// The base64url JOSE header of every token this key signs (`ES256`, `at+jwt`, its `kid`).
    header: String,
    decoding: DecodingKey,
    jwk: Jwk,
}

#[derive(Default)]
struct Ring {
    keys: Vec<Arc<LoadedKey>>,
}

impl Ring {
    /// The newest active key. Keys come in creation order, and `max_by_key` returns the last of
    /// equal maxima, so of two keys activated in the same second the later-created one signs.
    fn signing(&self, now: Timestamp) -> Option<Arc<LoadedKey>> {
        self.keys
            .iter()
            .filter(|k| k.activate_at <= now && k.retire_at.is_none_or(|r| r > now))
            .max_by_key(|k| k.activate_at)
            .cloned()
    }
}

pub struct KeyManager {
    store: Arc<dyn Store>,
    ring: RwLock<Ring>,
    /// When a reload for an unknown `kid` last ran (another instance may have just rotated).
    last_on_demand: std::sync::Mutex<Option<std::time::Instant>>,
}

impl KeyManager {
    /// Loads the keys, creating the first one if the store has none.
    pub async fn load_or_create(store: Arc<dyn Store>) -> Result<Arc<Self>, KeyError> {
        let manager = Arc::new(Self {
            store,
            ring: RwLock::new(Ring::default()),
            last_on_demand: std::sync::Mutex::new(None),
        });
        manager.reload().await?;
        if manager.read().signing(now_secs()).is_none() {
            manager.rotate(Duration::ZERO, None).await?;
        }
        Ok(manager)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-reads the key ring from the store.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let now = now_secs();
        let mut keys = Vec::new();
        for stored in self.store.keys().await? {
            if stored.retire_at.is_some_and(|r| r <= now) {
                continue;
            }
            keys.push(Arc::new(load(&stored)?));
        }
        self.ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys = keys;
        Ok(())
    }

    /// Reloads every `interval` until `shutdown`.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        crate::periodic::spawn_every(self, interval, shutdown, |manager: Arc<Self>| async move {
            if let Err(e) = manager.reload().await {
                tracing::warn!(error = %e, "reloading signing keys failed; keeping the current ring");
            }
        });
    }

    /// Creates a new key, published at once and used for signing after `activate_after`. The
    /// previous signing key keeps being published until `old_key_retire_after` (if given;
    /// otherwise until a later rotation retires it).
    pub async fn rotate(
        &self,
        activate_after: Duration,
        old_key_retire_after: Option<Duration>,
    ) -> Result<String, KeyError> {
        let now = now_secs();
        let previous = self.read().signing(now);
        let key = generate(now, now + activate_after.as_secs() as i64)?;
        self.store.create_key(&key).await?;
        if let (Some(previous), Some(keep)) = (previous, old_key_retire_after) {
            let retire = now + activate_after.as_secs() as i64 + keep.as_secs() as i64;
            self.store.set_key_retirement(&previous.kid, retire).await?;
        }
        self.reload().await?;
        Ok(key.kid)
    }

    /// Signs `claims` as an RFC 9068 access token (`typ: at+jwt`) with the active key.
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let key = self
            .read()
            .signing(now_secs())
            .ok_or(KeyError::NoActiveKey)?;
        // As `jsonwebtoken::encode` does (JWS compact serialisation, RFC 7515 §7.1), with the
        // parsed key and the header encoded once per key.
        let claims = serde_json::to_vec(claims).map_err(|e| KeyError::Crypto(e.to_string()))?;
        let mut token = String::with_capacity(key.header.len() + claims.len() * 4 / 3 + 96);
        token.push_str(&key.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = key
            .signing
            .sign(&SystemRandom::new(), token.as_bytes())
            .map_err(|e| KeyError::Crypto(e.to_string()))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// The public keys, as published at `/jwks`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.read().keys.iter().map(|k| k.jwk.clone()).collect(),
        }
    }

    /// Whether `kid` is in the key ring (no I/O).
    pub fn has_key(&self, kid: &str) -> bool {
        self.read().keys.iter().any(|k| k.kid == kid)
    }

    /// The verification key for `kid`, for this server's own resource side (no HTTP round trip).
    pub fn decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        self.read()
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| k.decoding.clone())
    }

    /// The verification key for `kid`, reloading the ring first when the key is unknown — a
    /// token signed by another instance right after a rotation must work at once. At most one
    /// such reload per second, so forged `kid`s cannot hammer the store.
    pub async fn decoding_key_or_reload(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(key) = self.decoding_key(kid) {
            return Some(key);
        }
        {
            let mut last = self
                .last_on_demand
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return None;
            }
            *last = Some(std::time::Instant::now());
        }
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "reloading signing keys for an unknown kid failed");
        }
        self.decoding_key(kid)
    }

    /// `(kid, activate_at, retire_at, is_signing)` of every published key.
    pub fn describe(&self) -> Vec<(String, Timestamp, Option<Timestamp>, bool)> {
        let ring = self.read();
        let signing = ring.signing(now_secs()).map(|k| k.kid.clone());
        ring.keys
            .iter()
            .map(|k| {
                (
                    k.kid.clone(),
                    k.activate_at,
                    k.retire_at,
                    Some(&k.kid) == signing.as_ref(),
                )
            })
            .collect()
    }
}

fn generate(now: Timestamp, activate_at: Timestamp) -> Result<SigningKey, KeyError> {
    let crypto = |e: &dyn std::fmt::Display| KeyError::Crypto(e.to_string());
    let document =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|e| crypto(&e))?;
    let der = document.as_ref().to_vec();
    let encoding = EncodingKey::from_ec_der(&der);
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(|e| crypto(&e))?;
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| crypto(&e))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let public_jwk = serde_json::to_value(&jwk).map_err(|e| crypto(&e))?;
    Ok(SigningKey {
        kid,
        alg: "ES256".into(),
        private_pkcs8: der,
        public_jwk,
        created_at: now,
        activate_at,
        retire_at: None,
    })
}

fn load(stored: &SigningKey) -> Result<LoadedKey, KeyError> {
    let crypto = |e: &dyn std::fmt::Display| KeyError::Crypto(format!("key {}: {e}", stored.kid));
    let jwk: Jwk = serde_json::from_value(stored.public_jwk.clone()).map_err(|e| crypto(&e))?;
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| crypto(&e))?;
    let signing = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &stored.private_pkcs8)
        .map_err(|e| crypto(&e))?;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(stored.kid.clone());
    header.typ = Some("at+jwt".into());
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(|e| crypto(&e))?);
    Ok(LoadedKey {
        kid: stored.kid.clone(),
        activate_at: stored.activate_at,
        retire_at: stored.retire_at,
        signing,
        header,
        decoding,
        jwk,
    })
}
