//! Looking into `POST /mcp` bodies before rmcp does: JSON-RPC framing errors answered the way
//! JSON-RPC 2.0 names them, and the scope check that must happen before the response starts.
//!
//! rmcp answers a body it cannot deserialise with 415 and a plain-text message; clients expect a
//! JSON-RPC parse error (-32700) for malformed JSON and invalid request (-32600) for JSON that is
//! no JSON-RPC message.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use mcpgate_auth::Principal;
use rmcp::model::ClientJsonRpcMessage;

use super::scope_gate::ScopeGate;

pub async fn inspect_post(
    State(gate): State<Arc<ScopeGate>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || !is_json(request.headers()) {
        // Wrong media types are rmcp's to answer (415/406, as the transport spec says).
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => return read_error(&e),
    };
    // A batch is an array; anything else must be one message.
    let is_batch = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if is_batch {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            return parse_error(&e);
        }
    } else {
        // One pass for a well-formed message (the hot path); a second one only to tell malformed
        // JSON (-32700) from JSON that is no JSON-RPC message (-32600).
        let message = match serde_json::from_slice::<ClientJsonRpcMessage>(&bytes) {
            Ok(message) => message,
            Err(e) => {
                if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                    return parse_error(&syntax);
                }
                return error(
                    StatusCode::BAD_REQUEST,
                    -32600,
                    &format!("Invalid Request: {e}"),
                );
            }
        };
        if let Some(principal) = parts.extensions.get::<Arc<Principal>>()
            && let Err(refused) = gate.check(principal, &message, parts.uri.path())
        {
            return refused.into_response();
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn parse_error(e: &serde_json::Error) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        -32700,
        &format!("Parse error: {e}"),
    )
}

pub fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The body-limit layer reports an oversized body as an error while it is read.
pub fn read_error(e: &axum::Error) -> Response {
    // The limit error sits somewhere down the chain (axum wraps the body's error).
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut too_large = false;
    while let Some(error) = source {
        too_large |= error.is::<http_body_util::LengthLimitError>();
        source = error.source();
    }
    if too_large {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            "request body too large",
        )
    } else {
        error(
            StatusCode::BAD_REQUEST,
            -32600,
            "the request body could not be read",
        )
    }
}

pub fn error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = serde_json::json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_must_be_json() {
        let mut h = http::HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json(&h));
        h.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json(&h));
    }
}
