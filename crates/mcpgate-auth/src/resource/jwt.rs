//! JWT access tokens (RFC 9068) verified against the issuer's JWKS.

use std::sync::Arc;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, Validation};

use super::claims::{AccessClaims, ClaimRules};
use super::jwks::JwksCache;
use super::token_cache::{TokenCacheSettings, TokenKey, VerifiedTokenCache, token_key};
use super::verifier::{Recalled, Verifier, VerifyError};
use crate::Principal;

pub struct JwtVerifier {
    jwks: Arc<JwksCache>,
    rules: ClaimRules,
    /// Accept JWTs without `typ: at+jwt` (many IdPs mint plain JWTs or ID-token-shaped ones).
    allow_plain_jwt: bool,
    /// Tokens verified recently (see [`super::token_cache`]).
    cache: VerifiedTokenCache,
}

impl JwtVerifier {
    /// A verifier with the default verified-token cache ([`TokenCacheSettings::default`]).
    pub fn new(jwks: Arc<JwksCache>, rules: ClaimRules, allow_plain_jwt: bool) -> Self {
        Self {
            jwks,
            rules,
            allow_plain_jwt,
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

/// A compact JWS has three base64url segments; anything else is not ours to judge.
pub fn looks_like_jwt(token: &str) -> bool {
    // One pass with a table: this runs on every request, over tokens of a kilobyte or more.
    let (mut dots, mut segment_len) = (0, 0);
    for &b in token.as_bytes() {
        if b == b'.' {
            if segment_len == 0 || dots == 2 {
                return false;
            }
            dots += 1;
            segment_len = 0;
        } else if BASE64URL[usize::from(b)] {
            segment_len += 1;
        } else {
            return false;
        }
    }
    dots == 2 && segment_len > 0
}

/// A quick first look: a compact JWS has exactly two dots.
pub fn has_two_dots(token: &str) -> bool {
    // Counted in bytes, per chunk of at most 255 so the byte count cannot wrap: the compiler
    // then counts 16 bytes per instruction. (`filter().count()` widens every byte to a `usize`
    // and cost ~5 instructions per byte of a kilobyte token, on every request.)
    let dots: usize = token
        .as_bytes()
        .chunks(255)
        .map(|chunk| usize::from(chunk.iter().fold(0u8, |n, &b| n + u8::from(b == b'.'))))
        .sum();
    dots == 2
}

/// The base64url alphabet (RFC 4648 §5), without padding.
const BASE64URL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

fn is_access_token_type(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| {
        t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
    })
}

#[async_trait]
impl Verifier for JwtVerifier {
    async fn verify(&self, token: &str) -> Result<Option<Arc<Principal>>, VerifyError> {
        // The cache first: a hit was a JWT when it was verified, so the full shape check is only
        // paid on a miss. Counting dots (vectorised) keeps opaque tokens from being hashed here.
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
        let invalid = |m: &str| VerifyError::Invalid(m.to_owned());
        // `alg: none` and unknown algorithms fail here: they are not in jsonwebtoken's enum.
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            invalid("the token header is malformed or uses an unsupported algorithm")
        })?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(invalid("symmetric (HMAC) signatures are not accepted"));
        }
        if !self.allow_plain_jwt && !is_access_token_type(header.typ.as_deref()) {
            return Err(invalid(
                "the token is not an access token (typ must be at+jwt)",
            ));
        }
        let keys = self.jwks.keys_for(header.kid.as_deref()).await?;
        let mut last_error = invalid("no key matches the token's algorithm");
        for key in keys.iter().filter(|k| k.algorithms.contains(&header.alg)) {
            // The algorithm comes from the key, never from the token alone.
            let mut validation = Validation::new(header.alg);
            validation.algorithms = key.algorithms.clone();
            validation.validate_aud = false; // audiences are normalised and checked in ClaimRules
            validation.validate_exp = false; // likewise expiry, with our leeway
            validation.required_spec_claims.clear();
            match jsonwebtoken::decode::<AccessClaims>(token, &key.key, &validation) {
                Ok(data) => {
                    let principal = Arc::new(data.claims.into_principal(&self.rules)?);
                    self.cache.insert(
                        cache_key,
                        &principal,
                        None,
                        key.kid.clone(),
                        self.rules.leeway,
                    );
                    return Ok(Some(principal));
                }
                Err(e) => {
                    last_error = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                            invalid("the token signature is invalid")
                        }
                        _ => invalid("the token could not be verified"),
                    };
                }
            }
        }
        Err(last_error)
    }

    fn recall(&self, key: &TokenKey) -> Option<Recalled> {
        let hit = self.cache.get(key)?;
        // The key that verified it must still be trusted (still published, and the key set not
        // older than its ceiling); otherwise verify afresh, as without a cache.
        if self.jwks.still_trusts(hit.kid.as_deref()) {
            return Some(Ok(hit.principal.clone()));
        }
        self.cache.remove(key);
        None
    }

    fn recalls(&self) -> bool {
        self.cache.is_enabled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("opaque-token"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b=.c"));
        assert!(!looks_like_jwt(".b.c"));
        assert!(!looks_like_jwt("a.b."));
        assert!(!looks_like_jwt("a.b.c."));
        assert!(!looks_like_jwt(""));
    }

    /// The one-pass check agrees with the definition (three non-empty base64url segments) on
    /// every string of up to 7 characters over an alphabet that exercises each branch.
    #[test]
    fn jwt_shape_matches_the_definition_exhaustively() {
        fn by_definition(token: &str) -> bool {
            let segments: Vec<&str> = token.split('.').collect();
            segments.len() == 3
                && segments.iter().all(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        }
        let alphabet = ['a', '.', '_', '='];
        let mut strings = vec![String::new()];
        for _ in 0..7 {
            let longer: Vec<String> = strings
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            for s in &longer {
                assert_eq!(looks_like_jwt(s), by_definition(s), "{s:?}");
            }
            strings = longer;
        }
    }

    #[test]
    fn two_dots_are_counted_in_long_tokens() {
        let segment = "a".repeat(300);
        assert!(has_two_dots(&format!("{segment}.{segment}.{segment}")));
        assert!(!has_two_dots(&format!("{segment}.{segment}{segment}")));
        assert!(!has_two_dots(&format!("{segment}.{segment}.{segment}.")));
        // Past 255 dots a byte counter would wrap back to two.
        assert!(!has_two_dots(&".".repeat(258)));
        assert!(!has_two_dots(&"..".repeat(300)));
    }

    #[test]
    fn typ_values() {
        assert!(is_access_token_type(Some("at+jwt")));
        assert!(is_access_token_type(Some("application/AT+JWT")));
        assert!(!is_access_token_type(Some("JWT")));
        assert!(!is_access_token_type(None));
    }
}
