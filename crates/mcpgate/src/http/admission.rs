//! Admission to the MCP routes: per-IP rate limit → authentication → per-principal rate limit →
//! baseline scopes, in one middleware.
//!
//! One layer instead of four on purpose: every axum `from_fn` layer boxes and clones the rest of
//! the stack below it on each request, which made the stack itself a measurable share of a tool
//! call's instructions (bench/RESULTS.md, "the request hot path").

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use mcpgate_auth::Principal;
use mcpgate_auth::resource::Authenticator;
use mcpgate_auth::resource::layer::{AuthOutcome, refuse_unread};

use super::scope_gate::ScopeGate;
use crate::ops::rate_limit::RateLimits;

pub struct Admission {
    /// `None` when rate limiting is off.
    pub limits: Option<Arc<RateLimits>>,
    /// `None` when authentication is off: every caller is [`Principal::anonymous`].
    pub authenticator: Option<Arc<Authenticator>>,
    pub gate: Arc<ScopeGate>,
    anonymous: Arc<Principal>,
}

impl Admission {
    pub fn new(
        limits: Option<Arc<RateLimits>>,
        authenticator: Option<Arc<Authenticator>>,
        gate: Arc<ScopeGate>,
    ) -> Self {
        Self {
            limits,
            authenticator,
            gate,
            anonymous: Arc::new(Principal::anonymous()),
        }
    }

    /// The principal the request is admitted as, or the refusal to send.
    async fn admit(&self, parts: &Parts) -> Result<Arc<Principal>, Response> {
        if let Some(limits) = &self.limits
            && let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>()
        {
            limits
                .check_ip(peer.ip())
                .map_err(IntoResponse::into_response)?;
        }
        let principal = match &self.authenticator {
            Some(auth) => {
                let outcome = auth.authenticate(parts).await;
                auth.report(&outcome, parts);
                match outcome {
                    AuthOutcome::Accepted(principal) => principal,
                    refused => return Err(auth.refusal(parts.uri.path(), &refused)),
                }
            }
            None => self.anonymous.clone(),
        };
        if let Some(limits) = &self.limits {
            limits
                .check_principal(&principal)
                .map_err(IntoResponse::into_response)?;
        }
        self.gate
            .check_baseline(&principal, parts.uri.path())
            .map_err(IntoResponse::into_response)?;
        Ok(principal)
    }
}

/// Middleware: admits the request with its `Arc<Principal>` in the extensions, or refuses it.
pub async fn admit(
    State(admission): State<Arc<Admission>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    match admission.admit(&parts).await {
        Ok(principal) => {
            parts.extensions.insert(principal);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(refusal) => refuse_unread(body, refusal).await,
    }
}
