//! Step-up at the HTTP layer: a `tools/call`, `resources/read` or `prompts/get` beyond the token's
//! scopes is answered `403` with an `insufficient_scope` challenge before the backend sees it, so
//! clients can ask for a wider token. (With `scope_errors = "mcp"` the handler refuses in-band.)

use std::sync::Arc;

use mcpgate_auth::Principal;
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
        let ClientJsonRpcMessage::Request(request) = message else {
            return Ok(());
        };
        let op = match &request.request {
            ClientRequest::CallToolRequest(call) => self.tool_operation(call.params.name.as_ref()),
            ClientRequest::ReadResourceRequest(read) => Operation::Resource {
                uri: read.params.uri.as_str(),
            },
            ClientRequest::GetPromptRequest(get) => Operation::Prompt {
                name: get.params.name.as_str(),
            },
            _ => return Ok(()),
        };
        self.check_operation(principal, op, path)
    }

    /// A call of the tool `name`, as the policy sees it.
    pub fn tool_operation<'a>(&self, name: &'a str) -> Operation<'a> {
        // Unknown tools are treated as writes: the safe side.
        let read_only = self.backend.tool_read_only(name).unwrap_or(false);
        Operation::Tool { name, read_only }
    }

    /// `Err(403 challenge)` when `op` needs more than `principal` holds.
    pub fn check_operation(
        &self,
        principal: &Principal,
        op: Operation<'_>,
        path: &str,
    ) -> Result<(), Challenge> {
        if !self.http_errors {
            return Ok(());
        }
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
