//! Looking into `POST /mcp` bodies before rmcp does: JSON-RPC framing errors answered the way
//! JSON-RPC 2.0 names them, and the scope check that must happen before the response starts.
//!
//! rmcp answers a body it cannot deserialise with 415 and a plain-text message; clients expect a
//! JSON-RPC parse error (-32700) for malformed JSON and invalid request (-32600) for JSON that is
//! no JSON-RPC message.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Method, StatusCode};
use mcpgate_auth::Principal;
use rmcp::model::ClientJsonRpcMessage;

use super::scope_gate::ScopeGate;
use crate::policy::Operation;

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
        // MCP dropped JSON-RPC batching in 2025-06-18, and rmcp cannot read an array.
        return error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: JSON-RPC batches are not supported",
        );
    }
    let principal = parts.extensions.get::<Arc<Principal>>().cloned();
    // The hot path reads only what the scope check needs; rmcp parses the message itself.
    let peek = serde_json::from_slice::<Peek<'_>>(&bytes).ok();
    let Some(operation) = peek.as_ref().and_then(|peek| peek.operation(&gate)) else {
        return inspect_fully(&gate, parts, bytes, principal.as_deref(), next).await;
    };
    if let (Some(principal), Some(op)) = (&principal, operation)
        && gate
            .check_operation(principal, op, parts.uri.path())
            .is_err()
    {
        // Refusals are rare: decide them on the typed message, exactly as rmcp will read it.
        return inspect_fully(&gate, parts, bytes, Some(principal), next).await;
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes.clone())))
        .await;
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // The media type was checked above, so rmcp could not deserialise the message: answer
        // the JSON-RPC error for it instead of rmcp's plain-text 415.
        if let Err(refusal) = parse_message(&bytes) {
            return refusal.into_response();
        }
    }
    response
}

/// The slow path: the typed message, with -32700/-32600 for what is not one.
async fn inspect_fully(
    gate: &ScopeGate,
    parts: Parts,
    bytes: Bytes,
    principal: Option<&Principal>,
    next: Next,
) -> Response {
    let message = match parse_message(&bytes) {
        Ok(message) => message,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(principal) = principal
        && let Err(refused) = gate.check(principal, &message, parts.uri.path())
    {
        return refused.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// One message, or why the body is none.
fn parse_message(bytes: &[u8]) -> Result<ClientJsonRpcMessage, NoMessage> {
    serde_json::from_slice::<ClientJsonRpcMessage>(bytes).map_err(
        |e| match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(syntax) => NoMessage::Malformed(syntax),
            Ok(_) => NoMessage::Invalid(e),
        },
    )
}

/// A body that is no JSON-RPC message.
enum NoMessage {
    /// Not JSON at all: -32700.
    Malformed(serde_json::Error),
    /// JSON, but no JSON-RPC message: -32600.
    Invalid(serde_json::Error),
}

impl IntoResponse for NoMessage {
    fn into_response(self) -> Response {
        match self {
            Self::Malformed(e) => parse_error(&e),
            Self::Invalid(e) => error(
                StatusCode::BAD_REQUEST,
                -32600,
                &format!("Invalid Request: {e}"),
            ),
        }
    }
}

/// What the scope check needs of a message, borrowed from the body: a fraction of the cost of
/// rmcp's typed message (an untagged enum, which buffers and re-reads the body per variant).
///
/// A duplicated `method`, `params`, `name` or `uri` fails this parse (derived structs refuse
/// duplicate fields), so the slow path decides those: the peek cannot read another method or
/// name than rmcp does.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<PeekParams<'a>>,
}

#[derive(serde::Deserialize)]
struct PeekParams<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
}

impl<'a> Peek<'a> {
    /// `Some(None)`: nothing to check; `Some(Some(op))`: check `op`; `None`: the peek cannot
    /// tell (no method, or a checked method without its name), so the slow path must.
    fn operation(&'a self, gate: &ScopeGate) -> Option<Option<Operation<'a>>> {
        let method = self.method.as_deref()?;
        let param = |pick: fn(&'a PeekParams<'a>) -> &'a Option<Cow<'a, str>>| {
            self.params.as_ref().and_then(|p| pick(p).as_deref())
        };
        Some(Some(match method {
            "tools/call" => gate.tool_operation(param(|p| &p.name)?),
            "resources/read" => Operation::Resource {
                uri: param(|p| &p.uri)?,
            },
            "prompts/get" => Operation::Prompt {
                name: param(|p| &p.name)?,
            },
            _ => return Some(None),
        }))
    }
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
