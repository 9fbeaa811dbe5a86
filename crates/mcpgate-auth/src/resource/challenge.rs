//! `WWW-Authenticate: Bearer` challenges (RFC 6750 §3, RFC 9728 §5.1) and their JSON bodies.

use std::fmt::Write as _;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// The RFC 6750 error codes a resource server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

impl ChallengeError {
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope => StatusCode::FORBIDDEN,
        }
    }
}

/// One Bearer challenge. Every parameter is quoted and appears at most once, with the scheme
/// first, which is what real clients' parsers require.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    pub realm: Option<String>,
    pub error: Option<ChallengeError>,
    pub description: Option<String>,
    pub scope: Option<String>,
    pub resource_metadata: Option<String>,
}

impl Challenge {
    pub fn header_value(&self) -> String {
        let mut params: Vec<(&str, String)> = Vec::with_capacity(5);
        if let Some(realm) = &self.realm {
            params.push(("realm", quote(realm)));
        }
        if let Some(error) = self.error {
            params.push(("error", error.code().to_owned()));
        }
        // RFC 6750 §3.1: a description only accompanies an error code.
        if let Some(description) = self.description.as_ref().filter(|_| self.error.is_some()) {
            params.push((
                "error_description",
                quote(&sanitize_description(description)),
            ));
        }
        if let Some(scope) = &self.scope {
            params.push(("scope", quote(scope)));
        }
        if let Some(url) = &self.resource_metadata {
            params.push(("resource_metadata", quote(url)));
        }
        let mut out = String::from("Bearer");
        for (i, (name, value)) in params.iter().enumerate() {
            out.push_str(if i == 0 { " " } else { ", " });
            let _ = write!(out, "{name}=\"{value}\"");
        }
        out
    }

    /// The status this challenge goes with: 401 without an error code or for `invalid_token`.
    pub fn status(&self) -> StatusCode {
        self.error
            .map_or(StatusCode::UNAUTHORIZED, ChallengeError::status)
    }

    /// A response carrying this challenge and a JSON body saying what is wrong.
    pub fn into_response_with(self, status: StatusCode) -> Response {
        let code = self.error.map_or("unauthorized", ChallengeError::code);
        let body = serde_json::json!({
            "error": code,
            "error_description": self.description.clone().unwrap_or_else(|| "authentication required".into()),
        });
        let mut response = (status, Json(body)).into_response();
        if let Ok(value) = HeaderValue::from_str(&self.header_value()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl IntoResponse for Challenge {
    fn into_response(self) -> Response {
        let status = self.status();
        self.into_response_with(status)
    }
}

fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

// Some clients scan the whole header for `name=` pairs, so a description must not look like one;
// it must also be printable ASCII to fit in a header.
fn sanitize_description(description: &str) -> String {
    description
        .chars()
        .map(|c| match c {
            '=' => ':',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_challenge_is_just_the_scheme_and_realm() {
        let c = Challenge {
            realm: Some("mcpgate".into()),
            ..Default::default()
        };
        assert_eq!(c.header_value(), r#"Bearer realm="mcpgate""#);
        assert_eq!(c.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn full_challenge_quotes_every_value_in_a_fixed_order() {
        let c = Challenge {
            realm: None,
            error: Some(ChallengeError::InsufficientScope),
            description: Some("needs scope=\"x\" \u{e9}".into()),
            scope: Some("mcp:tools:write mcp:tools:read".into()),
            resource_metadata: Some("https://h/.well-known/oauth-protected-resource/mcp".into()),
        };
        assert_eq!(
            c.header_value(),
            "Bearer error=\"insufficient_scope\", error_description=\"needs scope:\\\"x\\\" ?\", \
             scope=\"mcp:tools:write mcp:tools:read\", \
             resource_metadata=\"https://h/.well-known/oauth-protected-resource/mcp\""
        );
        assert_eq!(c.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn response_has_the_header_and_a_json_body() {
        let c = Challenge {
            error: Some(ChallengeError::InvalidToken),
            description: Some("expired".into()),
            ..Default::default()
        };
        let response = c.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let header = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(header.starts_with("Bearer error=\"invalid_token\""));
    }
}
