//! What answers MCP requests: the built-in tools or an upstream MCP server.
//!
//! A backend sees plain MCP operations and the caller's [`Principal`]; transport details,
//! authentication, scope policy and audit are handled above it in [`crate::handler`].

pub mod builtin;
pub mod gateway;

use std::sync::Arc;

use async_trait::async_trait;
use mcpgate_auth::Principal;
use rmcp::ErrorData;
use rmcp::RoleServer;
// Logging (`logging/setLevel`) is deprecated by SEP-2577 but still used by current clients.
#[allow(deprecated)]
use rmcp::model::{
    CallToolRequestParams, CallToolResult, CancelledNotificationParam, CompleteRequestParams,
    CompleteResult, GetPromptRequestParams, GetPromptResult, ProgressNotificationParam, Prompt,
    ReadResourceRequestParams, ReadResourceResult, Resource, ResourceTemplate, ServerCapabilities,
    SetLevelRequestParams, SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext};

/// The transport a request arrived on, as tools see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Stdio,
    StreamableHttp,
    LegacySse,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::StreamableHttp => "streamable-http",
            Self::LegacySse => "sse",
        }
    }
}

/// Everything a backend knows about the request it is serving.
pub struct Call<'a> {
    pub principal: &'a Arc<Principal>,
    pub transport: TransportKind,
    pub context: &'a RequestContext<RoleServer>,
}

/// An MCP server behind mcpgate. Lists are returned whole; the handler pages them if needed.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Server name, version and instructions announced at `initialize`.
    fn implementation(&self) -> (String, String, Option<String>);
    fn capabilities(&self) -> ServerCapabilities;

    async fn list_tools(&self, call: Call<'_>) -> Result<Vec<Tool>, ErrorData>;

    /// The tool's `readOnlyHint`, if the backend knows the tool without I/O (scope checks
    /// before dispatch use it; `None` is treated as a write).
    fn tool_read_only(&self, _name: &str) -> Option<bool> {
        None
    }
    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        call: Call<'_>,
    ) -> Result<CallToolResult, ErrorData>;

    async fn list_resources(&self, _call: Call<'_>) -> Result<Vec<Resource>, ErrorData> {
        Ok(Vec::new())
    }
    async fn list_resource_templates(
        &self,
        _call: Call<'_>,
    ) -> Result<Vec<ResourceTemplate>, ErrorData> {
        Ok(Vec::new())
    }
    async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
        _call: Call<'_>,
    ) -> Result<ReadResourceResult, ErrorData> {
        Err(ErrorData::resource_not_found(
            format!("no resource {}", params.uri),
            None,
        ))
    }
    async fn list_prompts(&self, _call: Call<'_>) -> Result<Vec<Prompt>, ErrorData> {
        Ok(Vec::new())
    }
    async fn get_prompt(
        &self,
        params: GetPromptRequestParams,
        _call: Call<'_>,
    ) -> Result<GetPromptResult, ErrorData> {
        Err(ErrorData::invalid_params(
            format!("no prompt {}", params.name),
            None,
        ))
    }
    async fn complete(
        &self,
        _params: CompleteRequestParams,
        _call: Call<'_>,
    ) -> Result<CompleteResult, ErrorData> {
        Ok(CompleteResult::default())
    }
    #[allow(deprecated)]
    async fn set_level(
        &self,
        _params: SetLevelRequestParams,
        _call: Call<'_>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }
    async fn subscribe(
        &self,
        _params: SubscribeRequestParams,
        _call: Call<'_>,
    ) -> Result<(), ErrorData> {
        Err(ErrorData::invalid_request(
            "resource subscriptions are not supported",
            None,
        ))
    }
    async fn unsubscribe(
        &self,
        _params: UnsubscribeRequestParams,
        _call: Call<'_>,
    ) -> Result<(), ErrorData> {
        Err(ErrorData::invalid_request(
            "resource subscriptions are not supported",
            None,
        ))
    }

    /// Client-to-server notifications, for backends that forward them.
    async fn on_initialized(&self, _context: &NotificationContext<RoleServer>) {}
    async fn on_cancelled(
        &self,
        _params: CancelledNotificationParam,
        _context: &NotificationContext<RoleServer>,
    ) {
    }
    async fn on_progress(
        &self,
        _params: ProgressNotificationParam,
        _context: &NotificationContext<RoleServer>,
    ) {
    }
    async fn on_roots_list_changed(&self, _context: &NotificationContext<RoleServer>) {}

    /// Called once after shutdown was signalled: release what outlives the process otherwise.
    async fn close(&self) {}

    /// `Err` with a reason when the backend cannot serve requests right now (`/ready`).
    async fn readiness(&self) -> Result<(), String> {
        Ok(())
    }
}
