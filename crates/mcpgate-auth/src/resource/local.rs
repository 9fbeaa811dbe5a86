//! Verifying the built-in authorization server's own access tokens: keys come from the shared
//! key ring and revocations from a denylist refreshed in the background, so a valid token costs
//! no I/O on the request path.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, Validation};
use tokio_util::sync::CancellationToken;

use super::claims::{AccessClaims, ClaimRules, now_secs};
use super::jwt::{has_two_dots, looks_like_jwt};
use super::token_cache::{TokenCacheSettings, TokenKey, VerifiedTokenCache, token_key};
use super::verifier::{Recalled, Verifier, VerifyError};
use crate::Principal;
use crate::keys::KeyManager;
use crate::store::Store;

/// Revoked access tokens (by `jti`) and grants (by family id), as last read from the store.
#[derive(Default)]
pub struct RevocationList {
    state: RwLock<(HashSet<String>, HashSet<String>)>,
}

impl RevocationList {
    /// Whether a grant has been revoked (its sessions must end).
    pub fn is_grant_revoked(&self, family: &str) -> bool {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .contains(family)
    }

    pub fn is_revoked(&self, jti: Option<&str>, family: Option<&str>) -> bool {
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        jti.is_some_and(|j| state.0.contains(j)) || family.is_some_and(|f| state.1.contains(f))
    }

    /// Reads the revocations that can still matter: families revoked within the life of an
    /// access token, and unexpired jtis.
    pub async fn reload(
        &self,
        store: &dyn Store,
        access_token_ttl: Duration,
    ) -> Result<(), crate::store::StoreError> {
        let now = now_secs();
        let since = now - access_token_ttl.as_secs() as i64 - 60;
        let revocations = store.revocations(since, now).await?;
        let jtis = revocations.jtis.into_iter().map(|(j, _)| j).collect();
        let families = revocations.families.into_iter().collect();
        *self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (jtis, families);
        Ok(())
    }

    pub fn spawn_reloader(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        access_token_ttl: Duration,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        crate::periodic::spawn_every(self, interval, shutdown, move |list: Arc<Self>| {
            let store = store.clone();
            async move {
                if let Err(e) = list.reload(store.as_ref(), access_token_ttl).await {
                    tracing::warn!(error = %e, "reloading revocations failed; keeping the current list");
                }
            }
        });
    }
}

/// Verifies ES256 access tokens signed by this server's own keys.
pub struct LocalJwtVerifier {
    keys: Arc<KeyManager>,
    revocations: Arc<RevocationList>,
    rules: ClaimRules,
    /// Tokens verified recently (see [`super::token_cache`]); revocation is checked on every hit.
    cache: VerifiedTokenCache,
}

impl LocalJwtVerifier {
    /// A verifier with the default verified-token cache ([`TokenCacheSettings::default`]).
    pub fn new(keys: Arc<KeyManager>, revocations: Arc<RevocationList>, rules: ClaimRules) -> Self {
        Self {
            keys,
            revocations,
            rules,
            cache: VerifiedTokenCache::new(TokenCacheSettings::default()),
        }
    }

    /// Replaces the verified-token cache ([`TokenCacheSettings::disabled`] turns it off).
    pub fn with_token_cache(mut self, settings: TokenCacheSettings) -> Self {
        self.cache = VerifiedTokenCache::new(settings);
        self
    }

    pub fn token_cache(&self) -> &VerifiedTokenCache {
        &self.cache
    }
}

#[async_trait]
impl Verifier for LocalJwtVerifier {
    async fn verify(&self, token: &str) -> Result<Option<Arc<Principal>>, VerifyError> {
        let invalid = |m: &str| VerifyError::Invalid(m.to_owned());
        // The cache first: a hit was a JWT when it was verified (see `JwtVerifier::verify`).
        if !has_two_dots(token) {
            return Ok(None);
        }
        let cache_key = token_key(token);
        if let Some(recalled) = self.recall(&cache_key) {
            return recalled.map(Some);
        }
        if !looks_like_jwt(token) {
            return Ok(None);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("the token header is malformed"))?;
        if header.alg != Algorithm::ES256 || header.typ.as_deref() != Some("at+jwt") {
            return Err(invalid("the token was not issued by this server"));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| invalid("the token names no signing key"))?;
        let key = self
            .keys
            .decoding_key_or_reload(kid)
            .await
            .ok_or_else(|| invalid("the token's signing key is unknown"))?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_aud = false;
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
            .map_err(|_| invalid("the token signature is invalid"))?;
        let jti = data
            .claims
            .other
            .get("jti")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let family = data
            .claims
            .other
            .get("fam")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        if self
            .revocations
            .is_revoked(jti.as_deref(), family.as_deref())
        {
            return Err(invalid("the token has been revoked"));
        }
        let mut principal = data.claims.into_principal(&self.rules)?;
        principal.grant_id = family;
        let principal = Arc::new(principal);
        self.cache.insert(
            cache_key,
            &principal,
            jti,
            Some(kid.to_owned()),
            self.rules.leeway,
        );
        Ok(Some(principal))
    }

    fn recall(&self, key: &TokenKey) -> Option<Recalled> {
        let hit = self.cache.get(key)?;
        // Revocation can happen at any time: checked on every hit, as on a full verification.
        if self
            .revocations
            .is_revoked(hit.jti.as_deref(), hit.principal.grant_id.as_deref())
        {
            self.cache.remove(key);
            return Some(Err(VerifyError::Invalid(
                "the token has been revoked".to_owned(),
            )));
        }
        if hit.kid.as_deref().is_some_and(|kid| self.keys.has_key(kid)) {
            return Some(Ok(hit.principal.clone()));
        }
        // Its key left the ring: verify afresh, as without a cache.
        self.cache.remove(key);
        None
    }

    fn recalls(&self) -> bool {
        self.cache.is_enabled()
    }
}
