//! Static bearer tokens: `MCP_AUTH_TOKEN` and the named tokens of the config file.

use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::verifier::{Verifier, VerifyError};
use crate::{Principal, ScopeSet};

/// One configured token. Only its SHA-256 digest is kept in memory after construction.
#[derive(Clone)]
pub struct StaticToken {
    digest: [u8; 32],
    /// The principal every request with this token is: built once, shared.
    principal: Arc<Principal>,
}

impl StaticToken {
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        secret: &str,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        let name = name.into();
        let scopes: ScopeSet = scopes.into_iter().collect();
        Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
            principal: Arc::new(Principal::from_static_token(&name, scopes)),
        }
    }

    pub fn name(&self) -> &str {
        &self.principal.subject
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticToken")
            .field("name", &self.principal.subject)
            .field("scopes", &self.principal.scopes)
            .finish_non_exhaustive()
    }
}

/// Recognises the configured static tokens, comparing in constant time.
#[derive(Debug, Clone, Default)]
pub struct StaticTokenVerifier {
    tokens: Vec<StaticToken>,
}

impl StaticTokenVerifier {
    pub fn new(tokens: Vec<StaticToken>) -> Self {
        Self { tokens }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Compares against every token without stopping early, so the time taken says nothing
    /// about which token (or which prefix) matched. Digests make the comparison length-independent.
    pub fn find(&self, presented: &str) -> Option<&StaticToken> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(token);
            }
        }
        found
    }
}

#[async_trait]
impl Verifier for StaticTokenVerifier {
    async fn verify(&self, token: &str) -> Result<Option<Arc<Principal>>, VerifyError> {
        Ok(self.find(token).map(|t| t.principal.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recognises_each_configured_token_by_name() {
        let verifier = StaticTokenVerifier::new(vec![
            StaticToken::new("default", "alpha", Vec::<String>::new()),
            StaticToken::new("ci", "beta", ["mcp:tools:read"]),
        ]);
        let ci = verifier.verify("beta").await.unwrap().unwrap();
        assert_eq!(ci.subject, "ci");
        assert!(ci.scopes.contains("mcp:tools:read"));
        assert_eq!(
            verifier.verify("alpha").await.unwrap().unwrap().subject,
            "default"
        );
        assert_eq!(verifier.verify("alph").await.unwrap(), None);
        assert_eq!(verifier.verify("alphaa").await.unwrap(), None);
    }

    #[test]
    fn debug_output_never_shows_the_secret_or_digest() {
        let token = StaticToken::new("ci", "super-secret", ["a"]);
        let printed = format!("{token:?}");
        assert!(printed.contains("ci"));
        assert!(!printed.contains("super-secret"));
        assert!(!printed.contains("digest"));
    }
}
