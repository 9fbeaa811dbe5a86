//! Opaque access tokens, verified by RFC 7662 introspection at the authorization server.
//!
//! Positive answers are cached (keyed by a hash of the token, never the token) until the token's
//! `exp` or the configured ceiling, whichever is first. Negative answers are not cached, so a
//! token becomes usable as soon as it is issued. An unreachable endpoint yields `Unavailable`
//! (503): never a silent accept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::claims::{AccessClaims, ClaimRules, now_secs};
use super::token_cache::{TokenKey, token_key};
use super::verifier::{Recalled, Verifier, VerifyError};
use crate::Principal;

#[derive(Debug, Clone)]
pub struct IntrospectionSettings {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: String,
    pub cache_ceiling: Duration,
    pub cache_capacity: usize,
}

pub struct IntrospectionVerifier {
    http: reqwest::Client,
    settings: IntrospectionSettings,
    rules: ClaimRules,
    cache: Mutex<HashMap<TokenKey, Introspected>>,
}

/// An introspection answer turned into a principal, and until when it is trusted.
type Introspected = (Arc<Principal>, Instant);

#[derive(serde::Deserialize)]
struct IntrospectionResponse {
    active: bool,
    #[serde(flatten)]
    claims: serde_json::Value,
}

impl IntrospectionVerifier {
    pub fn new(http: reqwest::Client, settings: IntrospectionSettings, rules: ClaimRules) -> Self {
        Self {
            http,
            settings,
            rules,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &TokenKey) -> Option<Arc<Principal>> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.get(key) {
            Some((principal, until)) if *until > Instant::now() => Some(principal.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: TokenKey, principal: &Arc<Principal>, exp: Option<i64>) {
        let mut ttl = self.settings.cache_ceiling;
        if let Some(exp) = exp {
            let left = u64::try_from(exp - now_secs()).unwrap_or(0);
            ttl = ttl.min(Duration::from_secs(left));
        }
        if ttl.is_zero() {
            return;
        }
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= self.settings.cache_capacity {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= self.settings.cache_capacity {
                cache.clear();
            }
        }
        cache.insert(key, (principal.clone(), Instant::now() + ttl));
    }

    async fn introspect(&self, token: &str) -> Result<IntrospectionResponse, VerifyError> {
        let unavailable =
            |e: String| VerifyError::Unavailable(format!("token introspection failed: {e}"));
        let response = self
            .http
            .post(&self.settings.endpoint)
            .basic_auth(&self.settings.client_id, Some(&self.settings.client_secret))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        response
            .json()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))
    }
}

#[async_trait]
impl Verifier for IntrospectionVerifier {
    async fn verify(&self, token: &str) -> Result<Option<Arc<Principal>>, VerifyError> {
        let key = token_key(token);
        if let Some(principal) = self.cached(&key) {
            return Ok(Some(principal));
        }
        let answer = self.introspect(token).await?;
        if !answer.active {
            return Err(VerifyError::Invalid("the token is not active".into()));
        }
        let mut claims: AccessClaims = serde_json::from_value(answer.claims).map_err(|_| {
            VerifyError::Unavailable("the introspection response is malformed".into())
        })?;
        // RFC 7662 makes `iss` and `exp` optional: the endpoint speaks for its issuer, and an
        // answer without expiry is trusted no longer than the cache ceiling.
        let exp = claims.exp;
        claims.iss.get_or_insert_with(|| self.rules.issuer.clone());
        claims
            .exp
            .get_or_insert(now_secs() + self.settings.cache_ceiling.as_secs() as i64);
        let principal = Arc::new(claims.into_principal(&self.rules)?);
        self.remember(key, &principal, exp);
        Ok(Some(principal))
    }

    fn recall(&self, key: &TokenKey) -> Option<Recalled> {
        self.cached(key).map(Ok)
    }

    fn recalls(&self) -> bool {
        true
    }
}
