//! Extracting a bearer token from a request (RFC 6750 §2.1), and only from the header.

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// Why a request carries no usable bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("the request carries no Authorization header")]
    Missing,
    #[error("the Authorization header is not of the form `Bearer <token>`")]
    Malformed,
    #[error("the request carries more than one Authorization header")]
    Duplicated,
    #[error(
        "access tokens are accepted in the Authorization header only, never in the query string"
    )]
    InQuery,
}

/// Returns the token of the request's single `Authorization: Bearer` header.
///
/// A token in the query string (`access_token=`) is refused even when a header is present: it
/// would end up in proxy logs and browser history (RFC 6750 §5.3, MCP authorization spec).
pub fn extract<'a>(headers: &'a HeaderMap, query: Option<&str>) -> Result<&'a str, BearerError> {
    validate(extract_unchecked(headers, query)?)
}

/// [`extract`] without the token's syntax check: the credentials as presented, for looking up a
/// token verified before (whose syntax was checked then). Pass anything else to [`validate`].
pub fn extract_unchecked<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
) -> Result<&'a [u8], BearerError> {
    if query.is_some_and(query_has_token) {
        return Err(BearerError::InQuery);
    }
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(BearerError::Missing)?;
    if values.next().is_some() {
        return Err(BearerError::Duplicated);
    }
    // On bytes: `HeaderValue::to_str` would check every byte of the token once more, one at a
    // time, before the b64token check (which admits only ASCII) does it vectorised.
    let value = value.as_bytes();
    let space = value
        .iter()
        .position(|&b| b == b' ')
        .ok_or(BearerError::Malformed)?;
    let (scheme, token) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(BearerError::Malformed);
    }
    Ok(&token[token.iter().take_while(|&&b| b == b' ').count()..])
}

/// The token, if it is a non-empty RFC 6750 b64token.
pub fn validate(token: &[u8]) -> Result<&str, BearerError> {
    if token.is_empty() || !is_b64token(token) {
        return Err(BearerError::Malformed);
    }
    std::str::from_utf8(token).map_err(|_| BearerError::Malformed)
}

fn query_has_token(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("access_token"))
}

/// RFC 6750 b64token: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" followed by "="s.
///
/// Every request's token (often a kilobyte of JWT) goes through this, so it is written to be
/// vectorised: no early exit and only comparisons, which the compiler turns into SIMD compares
/// over 16 or 32 bytes at a time (a table lookup or a short-circuiting `all` cannot be).
fn is_b64token(token: &[u8]) -> bool {
    token.iter().fold(true, |ok, &b| {
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        // `+ , - . /` and the digits are 0x2B..=0x39, one range: only `,` in it is refused.
        let run = (b.wrapping_sub(b'+') < 15) & (b != b',');
        let other = (b == b'_') | (b == b'~') | (b == b'=');
        ok & (letter | run | other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn accepts_the_bearer_scheme_case_insensitively() {
        assert_eq!(
            extract(&headers(&["Bearer abc.def-_~+/="]), None),
            Ok("abc.def-_~+/=")
        );
        assert_eq!(extract(&headers(&["bearer abc"]), None), Ok("abc"));
        assert_eq!(extract(&headers(&["BEARER  abc"]), None), Ok("abc"));
    }

    /// The branch-free check agrees with RFC 6750's character set on every ASCII character, and
    /// refuses every non-ASCII one.
    #[test]
    fn b64token_alphabet_is_exactly_rfc_6750() {
        for b in 0u8..=127 {
            let by_rfc = b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
            let one = (b as char).to_string();
            assert_eq!(is_b64token(one.as_bytes()), by_rfc, "{b:#04x}");
            assert_eq!(
                is_b64token(format!("abc{one}def").as_bytes()),
                by_rfc,
                "{b:#04x}"
            );
        }
        for c in ['é', 'ß', '€', '\u{80}', '\u{ff}'] {
            assert!(!is_b64token(format!("abc{c}").as_bytes()), "{c:?}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(extract(&headers(&[]), None), Err(BearerError::Missing));
        assert_eq!(
            extract(&headers(&["Basic dTpw"]), None),
            Err(BearerError::Malformed)
        );
        assert_eq!(
            extract(&headers(&["Bearer"]), None),
            Err(BearerError::Malformed)
        );
        assert_eq!(
            extract(&headers(&["Bearer "]), None),
            Err(BearerError::Malformed)
        );
        assert_eq!(
            extract(&headers(&["Bearer a b"]), None),
            Err(BearerError::Malformed)
        );
        // Only spaces separate the scheme from the token, as RFC 6750's grammar says.
        for value in ["Bearer\tabc", "Bearer \tabc", "Bearer abc\t", "Bearerabc"] {
            assert_eq!(
                extract(&headers(&[value]), None),
                Err(BearerError::Malformed),
                "{value:?}"
            );
        }
        let mut opaque = HeaderMap::new();
        opaque.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer abc\xff").unwrap(),
        );
        assert_eq!(extract(&opaque, None), Err(BearerError::Malformed));
        assert_eq!(
            extract(&headers(&["Bearer a\"b"]), None),
            Err(BearerError::Malformed)
        );
        assert_eq!(
            extract(&headers(&["Bearer a", "Bearer b"]), None),
            Err(BearerError::Duplicated)
        );
    }

    #[test]
    fn refuses_tokens_in_the_query_string() {
        assert_eq!(
            extract(
                &headers(&["Bearer abc"]),
                Some("sessionId=1&access_token=abc")
            ),
            Err(BearerError::InQuery)
        );
        assert_eq!(
            extract(&headers(&["Bearer abc"]), Some("x_access_token=1")),
            Ok("abc")
        );
    }
}
