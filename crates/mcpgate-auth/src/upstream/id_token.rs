//! OpenID Connect ID token validation (Core §3.1.3.7): signature by a key of the upstream's JWKS
//! with the key's own algorithm, `iss`, `aud` (and `azp` when there are several audiences),
//! `exp`, `iat` and the `nonce` of this sign-in.

use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::UpstreamError;
use super::provider::IssuerCheck;
use crate::resource::jwks::JwksCache;
use crate::server::secrets;

/// What this sign-in expects of its ID token.
pub struct Expectations<'a> {
    pub issuer: &'a IssuerCheck,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now: i64,
    pub leeway: Duration,
}

fn invalid(m: impl Into<String>) -> UpstreamError {
    UpstreamError::InvalidIdentity(m.into())
}

/// Verifies the ID token and returns its claims.
pub async fn verify(
    token: &str,
    jwks: &JwksCache,
    expected: &Expectations<'_>,
) -> Result<Map<String, Value>, UpstreamError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| invalid("the ID token header is malformed or names an unknown algorithm"))?;
    if matches!(
        header.alg,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(invalid(
            "ID tokens signed with a shared secret are not accepted",
        ));
    }
    let keys = jwks.keys_for(header.kid.as_deref()).await.map_err(|e| {
        use crate::resource::VerifyError;
        match e {
            VerifyError::Unavailable(m) => UpstreamError::Unavailable(m),
            other => invalid(other.to_string()),
        }
    })?;
    let mut claims = None;
    for key in keys.iter().filter(|k| k.algorithms.contains(&header.alg)) {
        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.clone();
        // Checked below, with our clock and leeway and the Entra tenant rule.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        if let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            claims = Some(data.claims);
            break;
        }
    }
    let claims = claims.ok_or_else(|| invalid("the ID token signature is invalid"))?;
    check_claims(&claims, expected)?;
    Ok(claims)
}

/// The claim checks, apart from the signature.
pub fn check_claims(
    claims: &Map<String, Value>,
    expected: &Expectations<'_>,
) -> Result<(), UpstreamError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let iss = text("iss").ok_or_else(|| invalid("the ID token has no iss"))?;
    if !expected.issuer.accepts(iss, text("tid")) {
        return Err(invalid(format!(
            "the ID token was issued by {iss:?}, not the configured provider"
        )));
    }
    if text("sub").is_none_or(str::is_empty) {
        return Err(invalid("the ID token has no sub"));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(invalid("the ID token is not meant for this client (aud)"));
    }
    if audiences.len() > 1 && text("azp") != Some(expected.client_id) {
        return Err(invalid(
            "the ID token has several audiences and another azp",
        ));
    }
    let leeway = i64::try_from(expected.leeway.as_secs()).unwrap_or(0);
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    let exp = number("exp").ok_or_else(|| invalid("the ID token has no exp"))?;
    if exp.saturating_add(leeway) <= expected.now {
        return Err(invalid("the ID token has expired"));
    }
    let iat = number("iat").ok_or_else(|| invalid("the ID token has no iat"))?;
    if iat > expected.now.saturating_add(leeway) {
        return Err(invalid("the ID token was issued in the future"));
    }
    match text("nonce") {
        Some(nonce) if secrets::equal(nonce, expected.nonce) => Ok(()),
        Some(_) => Err(invalid("the ID token's nonce is not this sign-in's")),
        None => Err(invalid("the ID token has no nonce")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn good() -> Value {
        json!({"iss": "https://idp.example", "sub": "u1", "aud": "mcpgate",
               "exp": 2000, "iat": 1000, "nonce": "n-1"})
    }

    fn check(value: Value) -> Result<(), UpstreamError> {
        let issuer = IssuerCheck::Exact("https://idp.example".into());
        check_claims(
            &claims(value),
            &Expectations {
                issuer: &issuer,
                client_id: "mcpgate",
                nonce: "n-1",
                now: 1500,
                leeway: Duration::from_secs(60),
            },
        )
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = good();
        v[key] = value;
        v
    }

    #[test]
    fn each_claim_rule_refuses() {
        assert!(check(good()).is_ok());
        assert!(check(with("iss", json!("https://evil.example"))).is_err());
        assert!(check(with("aud", json!("someone-else"))).is_err());
        assert!(check(with("aud", json!(["mcpgate", "other"]))).is_err());
        let mut azp = with("aud", json!(["mcpgate", "other"]));
        azp["azp"] = json!("mcpgate");
        assert!(check(azp).is_ok());
        assert!(check(with("exp", json!(1400))).is_err());
        assert!(check(with("exp", json!(1450))).is_ok(), "within the leeway");
        assert!(check(with("iat", json!(1550))).is_ok(), "within the leeway");
        assert!(check(with("iat", json!(9000))).is_err());
        assert!(check(with("nonce", json!("n-2"))).is_err());
        assert!(check(with("sub", json!(""))).is_err());
        let mut no_nonce = good();
        no_nonce.as_object_mut().map(|o| o.remove("nonce"));
        assert!(check(no_nonce).is_err());
    }
}
