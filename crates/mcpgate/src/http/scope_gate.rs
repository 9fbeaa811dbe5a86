//! Step-up at the HTTP layer: a `tools/call`, `resources/read` or `prompts/get` beyond the token's
//! scopes is answered `403` with an `insufficient_scope` challenge before the backend sees it, so
//! clients can ask for a wider token. (With `scope_errors = "mcp"` the handler refuses in-band.)

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mcpgate_auth::Principal;
use mcpgate_auth::resource::layer::refuse_unread;
use mcpgate_auth::resource::{Authenticator, Challenge, ChallengeError};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest};

use crate::backend::Backend;
use crate::policy::{Operation, ScopePolicy};

pub struct ScopeGate {
    pub policy: Arc<ScopePolicy>,
    pub backend: Arc<dyn Backend>,
    pub authenticator: Option<Arc<Authenticator>>,
    /// False when scope errors are reported in-band instead of as HTTP 403.
    pub http_errors: bool,
}

impl ScopeGate {
    /// `Err(403 challenge)` when `message` asks for more than `principal` may do.
    pub fn check(
        &self,
        principal: &Principal,
        message: &ClientJsonRpcMessage,
        path: &str,
    ) -> Result<(), Challenge> {
        if !self.http_errors {
            return Ok(());
        }
        let ClientJsonRpcMessage::Request(request) = message else {
            return Ok(());
        };
        let op = match &request.request {
            ClientRequest::CallToolRequest(call) => {
                let name = call.params.name.as_ref();
                // Unknown tools are treated as writes: the safe side.
                let read_only = self.backend.tool_read_only(name).unwrap_or(false);
                Operation::Tool { name, read_only }
            }
            ClientRequest::ReadResourceRequest(read) => Operation::Resource {
                uri: read.params.uri.as_str(),
            },
            ClientRequest::GetPromptRequest(get) => Operation::Prompt {
                name: get.params.name.as_str(),
            },
            _ => return Ok(()),
        };
        let grants = self.policy.grants(principal);
        match self.policy.check(&grants, op) {
            Ok(()) => Ok(()),
            Err(missing) => {
                metrics::counter!("mcpgate_insufficient_scope_total").increment(1);
                tracing::info!(
                    target: "mcpgate::audit",
                    event = "insufficient_scope",
                    principal = principal.display_name(),
                    missing = missing.join(" "),
                );
                Err(self.refusal(path, self.policy.challenge_scope(principal, op), &missing))
            }
        }
    }

    fn refusal(&self, path: &str, scope: String, missing: &[String]) -> Challenge {
        let mut challenge = self
            .authenticator
            .as_ref()
            .map(|a| a.challenge_for(path))
            .unwrap_or_default();
        challenge.error = Some(ChallengeError::InsufficientScope);
        challenge.description = Some(format!(
            "this request needs the scopes {}",
            missing.join(" ")
        ));
        challenge.scope = Some(scope);
        challenge
    }

    /// The baseline scopes every request needs, checked right after authentication.
    pub fn check_baseline(&self, principal: &Principal, path: &str) -> Result<(), Challenge> {
        let grants = self.policy.grants(principal);
        self.policy
            .check_baseline(&grants)
            .map_err(|missing| self.refusal(path, self.policy.baseline().join(" "), &missing))
    }
}

/// Middleware: refuse callers lacking the baseline scopes.
pub async fn require_baseline(
    State(gate): State<Arc<ScopeGate>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(principal) = request.extensions().get::<Arc<Principal>>()
        && let Err(refused) = gate.check_baseline(principal, request.uri().path())
    {
        return refuse_unread(request.into_body(), refused.into_response()).await;
    }
    next.run(request).await
}
