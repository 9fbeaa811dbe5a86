//! The MCP face of mcpgate: one `ServerHandler` that finds the caller, audits the call and asks
//! the backend. Every transport serves this same handler, so a tool sees the same context on all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpgate_auth::Principal;
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

/// The per-connection MCP handler. Cheap to clone: one is made per session.
#[derive(Clone)]
pub struct McpHandler {
    backend: Arc<dyn Backend>,
    transport: TransportKind,
    tool_timeout: Duration,
}

impl McpHandler {
    pub fn new(
        backend: Arc<dyn Backend>,
        transport: TransportKind,
        tool_timeout: Duration,
    ) -> Self {
        Self {
            backend,
            transport,
            tool_timeout,
        }
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
        let tools = self
            .backend
            .list_tools(self.call(&principal, &context))
            .await?;
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
        outcome.map(CallToolResponse::Complete)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let principal = principal_of(&context.extensions);
        let items = self
            .backend
            .list_resources(self.call(&principal, &context))
            .await?;
        Ok(ListResourcesResult::with_all_items(items))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let principal = principal_of(&context.extensions);
        let items = self
            .backend
            .list_resource_templates(self.call(&principal, &context))
            .await?;
        Ok(ListResourceTemplatesResult::with_all_items(items))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let principal = principal_of(&context.extensions);
        self.backend
            .read_resource(request, self.call(&principal, &context))
            .await
            .map(ReadResourceResponse::Complete)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let principal = principal_of(&context.extensions);
        let items = self
            .backend
            .list_prompts(self.call(&principal, &context))
            .await?;
        Ok(ListPromptsResult::with_all_items(items))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let principal = principal_of(&context.extensions);
        self.backend
            .get_prompt(request, self.call(&principal, &context))
            .await
            .map(GetPromptResponse::Complete)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let principal = principal_of(&context.extensions);
        self.backend
            .complete(request, self.call(&principal, &context))
            .await
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
