//! The access-token claims both JWT verification and introspection understand (RFC 9068, RFC 7662).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::audience::AudiencePolicy;
use super::verifier::VerifyError;
use crate::{Principal, ScopeSet};

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let slice: &[String] = match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many,
        };
        slice.iter().map(String::as_str)
    }
}

/// Claims of an access token, from a JWT payload or an introspection response.
#[derive(Debug, Clone, Deserialize)]
pub struct AccessClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Option<OneOrMany>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    pub scope: Option<String>,
    /// Entra and Okta put scopes in `scp`, as an array or a space-separated string.
    pub scp: Option<OneOrMany>,
    pub client_id: Option<String>,
    pub azp: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// What every verifier checks the same way.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub issuer: String,
    pub audiences: AudiencePolicy,
    pub leeway: Duration,
    /// Claims copied into [`Principal::claims`] for tools to read (never secrets).
    pub exposed_claims: Vec<String>,
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl AccessClaims {
    pub fn scopes(&self) -> ScopeSet {
        let mut scopes = self
            .scope
            .as_deref()
            .map(ScopeSet::parse)
            .unwrap_or_default();
        if let Some(scp) = &self.scp {
            for value in scp.iter() {
                for scope in value.split(' ').filter(|s| !s.is_empty()) {
                    scopes.insert(scope);
                }
            }
        }
        scopes
    }

    /// Checks issuer, audience and time claims, then builds the principal.
    pub fn into_principal(self, rules: &ClaimRules) -> Result<Principal, VerifyError> {
        let invalid = |m: &str| Err(VerifyError::Invalid(m.to_owned()));
        match self.iss.as_deref() {
            Some(iss) if iss == rules.issuer => {}
            Some(_) => return invalid("the token was issued by another authorization server"),
            None => return invalid("the token has no issuer"),
        }
        let audiences_ok = self
            .aud
            .as_ref()
            .is_some_and(|aud| rules.audiences.accepts_any(aud.iter()));
        if !audiences_ok {
            return invalid("the token was not issued for this resource (audience mismatch)");
        }
        let now = now_secs();
        let leeway = rules.leeway.as_secs() as i64;
        match self.exp {
            Some(exp) if exp + leeway < now => return invalid("the token has expired"),
            Some(_) => {}
            None => return invalid("the token has no expiry"),
        }
        if self.nbf.is_some_and(|nbf| nbf - leeway > now) {
            return invalid("the token is not valid yet");
        }
        if self.iat.is_some_and(|iat| iat - leeway > now) {
            return invalid("the token was issued in the future");
        }
        // Okta names the client `cid`; OIDC-style tokens `azp`.
        let client_id = self
            .client_id
            .clone()
            .or_else(|| self.azp.clone())
            .or_else(|| {
                self.other
                    .get("cid")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            });
        // A token without `sub` acts for its client alone (client credentials, RFC 7662 answers
        // for machine tokens); a token naming neither is refused.
        let Some(subject) = self
            .sub
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| client_id.clone())
        else {
            return invalid("the token has no subject");
        };
        let scopes = self.scopes();
        let claims = rules
            .exposed_claims
            .iter()
            .filter_map(|name| self.other.get(name).map(|v| (name.clone(), v.clone())))
            .collect();
        Ok(Principal {
            issuer: rules.issuer.clone(),
            subject,
            client_id,
            scopes,
            audience: self
                .aud
                .map(|a| a.iter().map(str::to_owned).collect())
                .unwrap_or_default(),
            expires_at: self
                .exp
                .and_then(|e| u64::try_from(e).ok())
                .map(|e| UNIX_EPOCH + Duration::from_secs(e)),
            claims,
            grant_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://as.example".into(),
            audiences: AudiencePolicy::new(["https://mcp.example/mcp".to_owned()], []),
            leeway: Duration::from_secs(30),
            exposed_claims: vec!["email".into()],
        }
    }

    fn claims(v: serde_json::Value) -> AccessClaims {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_good_token_becomes_a_principal() {
        let now = now_secs();
        let p = claims(json!({
            "iss": "https://as.example", "sub": "alice", "aud": ["x", "https://mcp.example/mcp/"],
            "exp": now + 60, "iat": now, "scope": "a b", "scp": ["c"], "client_id": "cli",
            "email": "a@example.test", "secret_claim": "no",
        }))
        .into_principal(&rules())
        .unwrap();
        assert_eq!(p.subject, "alice");
        assert_eq!(p.client_id.as_deref(), Some("cli"));
        assert_eq!(p.scopes.to_string(), "a b c");
        assert_eq!(p.claims.get("email"), Some(&json!("a@example.test")));
        assert!(!p.claims.contains_key("secret_claim"));
    }

    #[test]
    fn each_bad_claim_is_refused_with_a_reason() {
        let now = now_secs();
        let base = json!({ "iss": "https://as.example", "sub": "a", "aud": "https://mcp.example/mcp", "exp": now + 60 });
        let cases = [
            (
                "iss",
                json!("https://evil.example"),
                "another authorization server",
            ),
            ("aud", json!("https://mcp.example/other"), "audience"),
            ("exp", json!(now - 120), "expired"),
            ("nbf", json!(now + 120), "not valid yet"),
            ("iat", json!(now + 120), "future"),
        ];
        for (claim, value, expected) in cases {
            let mut v = base.clone();
            v[claim] = value;
            let err = claims(v).into_principal(&rules()).unwrap_err();
            assert!(
                matches!(&err, VerifyError::Invalid(m) if m.contains(expected)),
                "{claim}: {err:?}"
            );
        }
        let mut no_exp = base.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(claims(no_exp).into_principal(&rules()).is_err());
    }

    #[test]
    fn leeway_tolerates_small_clock_skew() {
        let now = now_secs();
        let v = json!({ "iss": "https://as.example", "sub": "a", "aud": "https://mcp.example/mcp", "exp": now - 10, "nbf": now + 10 });
        assert!(claims(v).into_principal(&rules()).is_ok());
    }
}
