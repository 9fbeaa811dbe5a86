//! The MCP face of mcpgate: one `ServerHandler` that finds the caller, audits the call and asks
//! the backend. Every transport serves this same handler, so a tool sees the same context on all.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mcpgate_auth::Principal;
// Results relayed from an upstream may lack `resultType`, which 2026-07-28 requires (rmcp
// strips it again for peers on older versions).
use rmcp::model::ResultType;
// Logging (`logging/setLevel`) is deprecated by SEP-2577 but still used by current clients.
#[allow(deprecated)]
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelledNotificationParam, CompleteRequestParams,
    CompleteResult, GetPromptRequestParams, GetPromptResponse, Implementation, InitializeResult,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ServerConfig, SetLevelRequestParams, SubscribeRequestParams,
    UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::backend::{Backend, Call, TransportKind};
use crate::ops::audit;
use crate::policy::{Operation, PolicyConfig, ScopePolicy};

/// The per-connection MCP handler. Cheap to clone: one is made per session.
#[derive(Clone)]
pub struct McpHandler {
    backend: Arc<dyn Backend>,
    transport: TransportKind,
    tool_timeout: Duration,
    policy: Arc<ScopePolicy>,
}

impl McpHandler {
    /// A handler with the default scope policy.
    pub fn new(
        backend: Arc<dyn Backend>,
        transport: TransportKind,
        tool_timeout: Duration,
    ) -> Self {
        // Shared: rmcp builds a handler per stateless request (twice: once to look up tool
        // schemas), and building a policy each time cost ~2 % of a tool call.
        static DEFAULT_POLICY: OnceLock<Arc<ScopePolicy>> = OnceLock::new();
        let policy = DEFAULT_POLICY
            .get_or_init(|| Arc::new(ScopePolicy::new(&PolicyConfig::default(), Vec::new())))
            .clone();
        Self {
            backend,
            transport,
            tool_timeout,
            policy,
        }
    }

    pub fn with_policy(mut self, policy: Arc<ScopePolicy>) -> Self {
        self.policy = policy;
        self
    }

    fn call<'a>(
        &self,
        principal: &'a Arc<Principal>,
        context: &'a RequestContext<RoleServer>,
    ) -> Call<'a> {
        Call {
            principal,
            transport: self.transport,
            context,
        }
    }

    /// Refuses in-band what the HTTP layer let through: scope errors configured as MCP errors,
    /// and batches. (Stdio never refuses: its principal is anonymous.)
    fn permit(&self, principal: &Principal, op: Operation<'_>) -> Result<(), ErrorData> {
        let grants = self.policy.grants(principal);
        self.policy.check(&grants, op).map_err(|missing| {
            ErrorData::invalid_request(
                format!("insufficient scope: this request needs {}", missing.join(" ")),
                Some(serde_json::json!({ "error": "insufficient_scope", "required_scopes": missing })),
            )
        })
    }
}

/// The principal the HTTP layer authenticated, or the anonymous one (stdio, auth off).
pub fn principal_of(extensions: &rmcp::model::Extensions) -> Arc<Principal> {
    extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Arc<Principal>>())
        .cloned()
        .unwrap_or_else(|| ANONYMOUS.clone())
}

static ANONYMOUS: std::sync::LazyLock<Arc<Principal>> =
    std::sync::LazyLock::new(|| Arc::new(Principal::anonymous()));

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        let (name, version, instructions) = self.backend.implementation();
        let mut info = InitializeResult::new(self.backend.capabilities());
        info.server_info = Implementation::new(name, version);
        info.instructions = instructions;
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let principal = principal_of(&context.extensions);
        let mut tools = self
            .backend
            .list_tools(self.call(&principal, &context))
            .await?;
        let grants = self.policy.grants(&principal);
        tools.retain(|tool| {
            let read_only = tool
                .annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .unwrap_or(false);
            self.policy
                .check(
                    &grants,
                    Operation::Tool {
                        name: &tool.name,
                        read_only,
                    },
                )
                .is_ok()
        });
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let principal = principal_of(&context.extensions);
        let tool = request.name.to_string();
        let started = Instant::now();
        let read_only = self.backend.tool_read_only(&tool).unwrap_or(false);
        if let Err(denied) = self.permit(
            &principal,
            Operation::Tool {
                name: &tool,
                read_only,
            },
        ) {
            audit::tool_call(
                &principal,
                self.transport,
                &tool,
                "insufficient_scope",
                started.elapsed(),
            );
            let result = rmcp::model::CallToolResult::error(vec![rmcp::model::ContentBlock::text(
                denied.message.to_string(),
            )]);
            return Ok(CallToolResponse::Complete(result));
        }
        let outcome = tokio::time::timeout(
            self.tool_timeout,
            self.backend
                .call_tool(request, self.call(&principal, &context)),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ErrorData::internal_error(
                format!(
                    "tool call timed out after {} s",
                    self.tool_timeout.as_secs()
                ),
                None,
            ))
        });
        let label = match &outcome {
            Ok(result) if result.is_error == Some(true) => "tool_error",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        audit::tool_call(&principal, self.transport, &tool, label, started.elapsed());
        outcome.map(|mut result| {
            result.result_type.get_or_insert(ResultType::COMPLETE);
            CallToolResponse::Complete(result)
        })
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let principal = principal_of(&context.extensions);
        let mut items = self
            .backend
            .list_resources(self.call(&principal, &context))
            .await?;
        let grants = self.policy.grants(&principal);
        items.retain(|r| {
            self.policy
                .check(&grants, Operation::Resource { uri: &r.uri })
                .is_ok()
        });
        Ok(ListResourcesResult::with_all_items(items))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let principal = principal_of(&context.extensions);
        let mut items = self
            .backend
            .list_resource_templates(self.call(&principal, &context))
            .await?;
        let grants = self.policy.grants(&principal);
        items.retain(|t| {
            self.policy
                .check(
                    &grants,
                    Operation::Resource {
                        uri: &t.uri_template,
                    },
                )
                .is_ok()
        });
        Ok(ListResourceTemplatesResult::with_all_items(items))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let principal = principal_of(&context.extensions);
        self.permit(&principal, Operation::Resource { uri: &request.uri })?;
        self.backend
            .read_resource(request, self.call(&principal, &context))
            .await
            .map(|mut result| {
                result.result_type.get_or_insert(ResultType::COMPLETE);
                ReadResourceResponse::Complete(result)
            })
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let principal = principal_of(&context.extensions);
        let mut items = self
            .backend
            .list_prompts(self.call(&principal, &context))
            .await?;
        let grants = self.policy.grants(&principal);
        items.retain(|p| {
            self.policy
                .check(&grants, Operation::Prompt { name: &p.name })
                .is_ok()
        });
        Ok(ListPromptsResult::with_all_items(items))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let principal = principal_of(&context.extensions);
        self.permit(
            &principal,
            Operation::Prompt {
                name: &request.name,
            },
        )?;
        self.backend
            .get_prompt(request, self.call(&principal, &context))
            .await
            .map(|mut result| {
                result.result_type.get_or_insert(ResultType::COMPLETE);
                GetPromptResponse::Complete(result)
            })
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let principal = principal_of(&context.extensions);
        let mut result = self
            .backend
            .complete(request, self.call(&principal, &context))
            .await?;
        result.result_type.get_or_insert(ResultType::COMPLETE);
        Ok(result)
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let principal = principal_of(&context.extensions);
        self.backend
            .set_level(request, self.call(&principal, &context))
            .await
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let principal = principal_of(&context.extensions);
        self.backend
            .subscribe(request, self.call(&principal, &context))
            .await
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let principal = principal_of(&context.extensions);
        self.backend
            .unsubscribe(request, self.call(&principal, &context))
            .await
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.backend.on_initialized(&context).await;
    }

    async fn on_cancelled(
        &self,
        notification: CancelledNotificationParam,
        context: NotificationContext<RoleServer>,
    ) {
        self.backend.on_cancelled(notification, &context).await;
    }

    async fn on_progress(
        &self,
        notification: ProgressNotificationParam,
        context: NotificationContext<RoleServer>,
    ) {
        self.backend.on_progress(notification, &context).await;
    }

    async fn on_roots_list_changed(&self, context: NotificationContext<RoleServer>) {
        self.backend.on_roots_list_changed(&context).await;
    }
}
