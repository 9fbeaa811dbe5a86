//! The verifier chain: each verifier either recognises a token, refuses it, or passes it on.

use std::sync::Arc;

use async_trait::async_trait;

use super::token_cache::TokenKey;
use crate::Principal;

/// Why a verifier refused a token it recognised, or could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not valid for this server. The message is safe to show to the client.
    #[error("{0}")]
    Invalid(String),
    /// The verifier could not reach what it needs (JWKS, introspection…): answer 503, never accept.
    #[error("token verification is temporarily unavailable: {0}")]
    Unavailable(String),
}

/// Turns a bearer token into a principal.
#[async_trait]
pub trait Verifier: Send + Sync {
    /// `Ok(None)` means "not a token of mine": the chain asks the next verifier. Shared, so a
    /// cached verification hands out the principal it holds rather than a deep copy.
    async fn verify(&self, token: &str) -> Result<Option<Arc<Principal>>, VerifyError>;

    /// The decision this verifier already made about the token whose SHA-256 is `key` (a cache
    /// hit, re-checked for what can change meanwhile: revocation, key trust, expiry), or `None`
    /// when it has to see the token itself. Only a token it verified in full is ever recalled.
    fn recall(&self, _key: &TokenKey) -> Option<Recalled> {
        None
    }

    /// Whether [`Verifier::recall`] can ever answer (the verifier keeps a cache).
    fn recalls(&self) -> bool {
        false
    }
}

/// What [`Verifier::recall`] found: the principal, or a refusal (a cached token since revoked).
pub type Recalled = Result<Arc<Principal>, VerifyError>;

/// Verifiers asked in order; the first that recognises the token decides.
#[derive(Clone, Default)]
pub struct VerifierChain {
    verifiers: Vec<Arc<dyn Verifier>>,
}

impl VerifierChain {
    pub fn new(verifiers: Vec<Arc<dyn Verifier>>) -> Self {
        Self { verifiers }
    }

    pub fn push(&mut self, verifier: Arc<dyn Verifier>) {
        self.verifiers.push(verifier);
    }

    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    /// The first verifier's recollection of the token whose SHA-256 is `key`, if any has one.
    pub fn recall(&self, key: &TokenKey) -> Option<Recalled> {
        self.verifiers.iter().find_map(|v| v.recall(key))
    }

    /// Whether any verifier of the chain can recall tokens.
    pub fn recalls(&self) -> bool {
        self.verifiers.iter().any(|v| v.recalls())
    }

    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, VerifyError> {
        for verifier in &self.verifiers {
            if let Some(principal) = verifier.verify(token).await? {
                return Ok(principal);
            }
        }
        Err(VerifyError::Invalid(
            "the access token is not recognised".into(),
        ))
    }
}
