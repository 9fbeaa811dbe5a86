//! Who is calling: the identity every verifier produces and every layer above consumes.

use std::time::SystemTime;

use crate::scope::ScopeSet;

/// An authenticated caller.
///
/// For static bearer tokens the issuer is [`Principal::STATIC_ISSUER`] and the subject is the
/// token's configured name; for OAuth tokens they are the token's `iss` and `sub`.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub issuer: String,
    pub subject: String,
    pub client_id: Option<String>,
    pub scopes: ScopeSet,
    pub audience: Vec<String>,
    pub expires_at: Option<SystemTime>,
    /// Selected, non-secret claims a tool may want to see (email, name…).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The grant (token family) a built-in-server token belongs to: revoking the grant ends the
    /// sessions opened with it.
    pub grant_id: Option<String>,
}

/// The part of a principal a session is bound to: refreshing a token keeps it, another user changes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrincipalKey {
    pub issuer: String,
    pub subject: String,
    pub client_id: Option<String>,
}

impl Principal {
    /// Issuer recorded for principals authenticated by a configured static token.
    pub const STATIC_ISSUER: &'static str = "urn:mcpgate:static";
    /// Issuer recorded when authentication is disabled.
    pub const ANONYMOUS_ISSUER: &'static str = "urn:mcpgate:anonymous";

    /// A principal authenticated by a named static token.
    pub fn from_static_token(name: &str, scopes: ScopeSet) -> Self {
        Self {
            issuer: Self::STATIC_ISSUER.to_owned(),
            subject: name.to_owned(),
            client_id: None,
            scopes,
            audience: Vec::new(),
            expires_at: None,
            claims: serde_json::Map::new(),
            grant_id: None,
        }
    }

    /// The caller of a server that has no authentication configured (stdio, or HTTP with auth off).
    pub fn anonymous() -> Self {
        Self {
            issuer: Self::ANONYMOUS_ISSUER.to_owned(),
            subject: "anonymous".to_owned(),
            client_id: None,
            scopes: ScopeSet::new(),
            audience: Vec::new(),
            expires_at: None,
            claims: serde_json::Map::new(),
            grant_id: None,
        }
    }

    pub fn key(&self) -> PrincipalKey {
        PrincipalKey {
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            client_id: self.client_id.clone(),
        }
    }

    /// A short, log-safe name: the static token's name, or `sub` for OAuth principals.
    pub fn display_name(&self) -> &str {
        &self.subject
    }

    pub fn is_anonymous(&self) -> bool {
        self.issuer == Self::ANONYMOUS_ISSUER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_scopes_and_expiry() {
        let mut a = Principal::from_static_token("ci", ScopeSet::parse("x"));
        let mut b = a.clone();
        b.scopes = ScopeSet::parse("y z");
        b.expires_at = Some(SystemTime::now());
        assert_eq!(a.key(), b.key());
        a.subject = "other".into();
        assert_ne!(a.key(), b.key());
    }
}
