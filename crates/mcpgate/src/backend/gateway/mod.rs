//! The gateway backend: mcpgate fronts another MCP server, a stdio command it runs as a child
//! process or a Streamable HTTP URL, and serves that server's tools, resources, prompts and
//! completions to its own (authenticated) clients.
//!
//! - [`upstream`]: connecting, supervising and reconnecting the upstream.
//! - [`client_handler`]: what the upstream sends on its own (notifications, sampling, …) goes
//!   back to the downstream clients.
//! - [`downstream`]: the registry of downstream sessions and in-flight calls that routing uses.
//! - [`forward`]: one downstream request → one upstream request, with timeout and cancellation.
//! - [`per_user`]: proxy mode's `pass_token_to_gateway`, one connection per signed-in user.

#![allow(deprecated)] // logging and resources/subscribe are deprecated by SEP-2577 but still forwarded

mod client_handler;
mod downstream;
mod forward;
mod per_user;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam,
    ClientRequest, CompleteRequest, CompleteRequestParams, CompleteResult, GetPromptRequest,
    GetPromptRequestParams, GetPromptResult, ListPromptsRequest, ListResourceTemplatesRequest,
    ListResourcesRequest, ListToolsRequest, Prompt, ReadResourceRequest, ReadResourceRequestParams,
    ReadResourceResult, Resource, ResourceTemplate, ServerCapabilities, ServerResult,
    SetLevelRequest, SetLevelRequestParams, SubscribeRequest, SubscribeRequestParams, Tool,
    UnsubscribeRequest, UnsubscribeRequestParams,
};
use rmcp::service::NotificationContext;
use rmcp::{ErrorData, RoleServer};
use tokio_util::sync::CancellationToken;

use self::downstream::Hub;
use self::forward::{Forwarder, unexpected};
pub use self::per_user::UserTokens;
use self::per_user::{Pool, Route};
use self::upstream::Upstream;
pub use self::upstream::UpstreamTarget;
use super::{Backend, Call};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid upstream command: {0}")]
    InvalidCommand(String),
    #[error("cannot start upstream command `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid upstream URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("upstream MCP handshake failed: {0}")]
    Handshake(String),
}

/// How requests reach the upstream.
enum Upstreams {
    /// One supervised connection for everyone (the default).
    Shared(Route),
    /// A connection per signed-in user, carrying that user's upstream IdP token.
    PerUser(Arc<Pool>),
}

/// A [`Backend`] that forwards everything to an upstream MCP server.
pub struct GatewayBackend {
    upstreams: Upstreams,
    call_timeout: Duration,
    /// `readOnlyHint` of the upstream's tools as last listed, for scope checks before dispatch.
    read_only: std::sync::RwLock<std::collections::HashMap<String, bool>>,
}

impl GatewayBackend {
    /// Start the upstream and complete its MCP handshake. A failure here is returned (bad
    /// command, unreachable URL); failures after that are retried in the background until
    /// `shutdown` is cancelled, which also stops the upstream.
    pub async fn connect(
        target: UpstreamTarget,
        call_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, GatewayError> {
        let hub = Arc::new(Hub::default());
        let upstream = Upstream::start(target, Arc::clone(&hub), shutdown).await?;
        let backend = Arc::new(Self {
            upstreams: Upstreams::Shared(Route { upstream, hub }),
            call_timeout,
            read_only: Default::default(),
        });
        backend.learn_tools().await;
        Ok(backend)
    }

    /// A gateway to the Streamable HTTP upstream at `url` that forwards each signed-in user's
    /// requests on a connection of their own, authenticated with their upstream IdP access token
    /// from `tokens` (see [`per_user`]). Nothing is connected until a user's first request.
    pub fn connect_per_user(
        url: String,
        tokens: UserTokens,
        call_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, GatewayError> {
        match url::Url::parse(&url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => {
                return Err(GatewayError::InvalidUrl {
                    url: "<the configured upstream URL>".to_owned(),
                    reason: "not an http(s) URL".to_owned(),
                });
            }
        }
        Ok(Arc::new(Self {
            upstreams: Upstreams::PerUser(Pool::new(url, tokens, call_timeout, shutdown)),
            call_timeout,
            read_only: Default::default(),
        }))
    }

    /// Lists the upstream's tools once, so scope checks know their hints before any client lists.
    async fn learn_tools(&self) {
        let Upstreams::Shared(route) = &self.upstreams else {
            return;
        };
        let Ok(connection) = route.upstream.connection() else {
            return;
        };
        if self.upstream_capabilities().tools.is_none() {
            return;
        }
        match tokio::time::timeout(self.call_timeout, connection.peer.list_all_tools()).await {
            Ok(Ok(tools)) => self.remember_tools(&tools),
            Ok(Err(error)) => {
                tracing::warn!(target: "mcpgate::upstream", %error, "listing the upstream's tools failed")
            }
            Err(_) => {
                tracing::warn!(target: "mcpgate::upstream", "listing the upstream's tools timed out")
            }
        }
    }

    fn remember_tools(&self, tools: &[Tool]) {
        let hints = tools.iter().map(|t| {
            (
                t.name.to_string(),
                t.annotations
                    .as_ref()
                    .and_then(|a| a.read_only_hint)
                    .unwrap_or(false),
            )
        });
        let mut known = self
            .read_only
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &self.upstreams {
            Upstreams::Shared(_) => *known = hints.collect(),
            // Users' lists may differ: a name any of them saw as a write stays a write.
            Upstreams::PerUser(_) => {
                for (name, read_only) in hints {
                    known
                        .entry(name)
                        .and_modify(|known| *known &= read_only)
                        .or_insert(read_only);
                }
            }
        }
    }

    /// The connection for the caller's request, with the caller's session remembered (for
    /// notifications).
    async fn route(&self, call: &Call<'_>) -> Result<Route, ErrorData> {
        let route = match &self.upstreams {
            Upstreams::Shared(route) => route.clone(),
            Upstreams::PerUser(pool) => pool.route(call.principal).await?,
        };
        route.hub.register(&call.context.peer);
        Ok(route)
    }

    fn forwarder<'a>(&self, route: &'a Route) -> Forwarder<'a> {
        Forwarder {
            upstream: &route.upstream,
            hub: &route.hub,
            timeout: self.call_timeout,
        }
    }

    async fn send(
        &self,
        request: impl Into<ClientRequest>,
        call: &Call<'_>,
    ) -> Result<ServerResult, ErrorData> {
        let route = self.route(call).await?;
        self.forwarder(&route)
            .send(request.into(), call.context)
            .await
    }

    /// A list request's connection, or `None` when its upstream does not have `capability`.
    async fn list_route(
        &self,
        call: &Call<'_>,
        capability: fn(&ServerCapabilities) -> bool,
    ) -> Result<Option<Route>, ErrorData> {
        if !capability(&self.upstream_capabilities()) {
            return Ok(None);
        }
        let route = self.route(call).await?;
        let has = route
            .upstream
            .info()
            .is_none_or(|info| capability(&info.capabilities));
        Ok(has.then_some(route))
    }

    fn upstream_capabilities(&self) -> ServerCapabilities {
        match &self.upstreams {
            Upstreams::Shared(route) => route
                .upstream
                .info()
                .map(|info| info.capabilities.clone())
                .unwrap_or_default(),
            Upstreams::PerUser(pool) => pool
                .info()
                .map(|info| info.capabilities.clone())
                .unwrap_or_else(Pool::assumed_capabilities),
        }
    }

    fn upstream_info(&self) -> Option<Arc<rmcp::model::ServerPeerInfo>> {
        match &self.upstreams {
            Upstreams::Shared(route) => route.upstream.info(),
            Upstreams::PerUser(pool) => pool.info(),
        }
    }
}

fn empty_result(result: ServerResult) -> Result<(), ErrorData> {
    match result {
        ServerResult::EmptyResult(_) => Ok(()),
        _ => Err(unexpected()),
    }
}

#[async_trait]
impl Backend for GatewayBackend {
    fn implementation(&self) -> (String, String, Option<String>) {
        let info = self.upstream_info();
        let instructions = info.as_ref().and_then(|info| info.instructions.clone());
        match info.as_ref().and_then(|info| info.server_info.as_ref()) {
            Some(server) => (server.name.clone(), server.version.clone(), instructions),
            None => (
                "mcpgate-gateway".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
                instructions,
            ),
        }
    }

    /// The upstream's capabilities, minus what the gateway cannot forward (experimental
    /// methods, extensions such as tasks).
    fn capabilities(&self) -> ServerCapabilities {
        let upstream = self.upstream_capabilities();
        let mut capabilities = ServerCapabilities::default();
        capabilities.tools = upstream.tools;
        capabilities.resources = upstream.resources;
        capabilities.prompts = upstream.prompts;
        capabilities.completions = upstream.completions;
        capabilities.logging = upstream.logging;
        capabilities
    }

    async fn list_tools(&self, call: Call<'_>) -> Result<Vec<Tool>, ErrorData> {
        let Some(route) = self.list_route(&call, |c| c.tools.is_some()).await? else {
            return Ok(Vec::new());
        };
        self.forwarder(&route)
            .list_all(
                |params| {
                    ListToolsRequest {
                        params,
                        ..Default::default()
                    }
                    .into()
                },
                |result| match result {
                    ServerResult::ListToolsResult(page) => Some((page.tools, page.next_cursor)),
                    _ => None,
                },
                call.context,
            )
            .await
            .inspect(|tools| self.remember_tools(tools))
    }

    fn tool_read_only(&self, name: &str) -> Option<bool> {
        self.read_only
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .copied()
    }

    async fn close(&self) {
        match &self.upstreams {
            Upstreams::Shared(route) => route.upstream.stopped(Duration::from_secs(10)).await,
            Upstreams::PerUser(pool) => pool.close(Duration::from_secs(10)).await,
        }
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        call: Call<'_>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.send(CallToolRequest::new(params), &call).await? {
            ServerResult::CallToolResult(result) => Ok(result),
            // Some servers answer a tool call with no content at all.
            ServerResult::EmptyResult(_) => Ok(CallToolResult::default()),
            _ => Err(unexpected()),
        }
    }

    async fn list_resources(&self, call: Call<'_>) -> Result<Vec<Resource>, ErrorData> {
        let Some(route) = self.list_route(&call, |c| c.resources.is_some()).await? else {
            return Ok(Vec::new());
        };
        self.forwarder(&route)
            .list_all(
                |params| {
                    ListResourcesRequest {
                        params,
                        ..Default::default()
                    }
                    .into()
                },
                |result| match result {
                    ServerResult::ListResourcesResult(page) => {
                        Some((page.resources, page.next_cursor))
                    }
                    _ => None,
                },
                call.context,
            )
            .await
    }

    async fn list_resource_templates(
        &self,
        call: Call<'_>,
    ) -> Result<Vec<ResourceTemplate>, ErrorData> {
        let Some(route) = self.list_route(&call, |c| c.resources.is_some()).await? else {
            return Ok(Vec::new());
        };
        self.forwarder(&route)
            .list_all(
                |params| {
                    ListResourceTemplatesRequest {
                        params,
                        ..Default::default()
                    }
                    .into()
                },
                |result| match result {
                    ServerResult::ListResourceTemplatesResult(page) => {
                        Some((page.resource_templates, page.next_cursor))
                    }
                    _ => None,
                },
                call.context,
            )
            .await
    }

    async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
        call: Call<'_>,
    ) -> Result<ReadResourceResult, ErrorData> {
        match self.send(ReadResourceRequest::new(params), &call).await? {
            ServerResult::ReadResourceResult(result) => Ok(result),
            _ => Err(unexpected()),
        }
    }

    async fn list_prompts(&self, call: Call<'_>) -> Result<Vec<Prompt>, ErrorData> {
        let Some(route) = self.list_route(&call, |c| c.prompts.is_some()).await? else {
            return Ok(Vec::new());
        };
        self.forwarder(&route)
            .list_all(
                |params| {
                    ListPromptsRequest {
                        params,
                        ..Default::default()
                    }
                    .into()
                },
                |result| match result {
                    ServerResult::ListPromptsResult(page) => Some((page.prompts, page.next_cursor)),
                    _ => None,
                },
                call.context,
            )
            .await
    }

    async fn get_prompt(
        &self,
        params: GetPromptRequestParams,
        call: Call<'_>,
    ) -> Result<GetPromptResult, ErrorData> {
        match self.send(GetPromptRequest::new(params), &call).await? {
            ServerResult::GetPromptResult(result) => Ok(result),
            _ => Err(unexpected()),
        }
    }

    async fn complete(
        &self,
        params: CompleteRequestParams,
        call: Call<'_>,
    ) -> Result<CompleteResult, ErrorData> {
        if self.upstream_capabilities().completions.is_none() {
            return Ok(CompleteResult::default());
        }
        match self.send(CompleteRequest::new(params), &call).await? {
            ServerResult::CompleteResult(result) => Ok(result),
            _ => Err(unexpected()),
        }
    }

    async fn set_level(
        &self,
        params: SetLevelRequestParams,
        call: Call<'_>,
    ) -> Result<(), ErrorData> {
        if self.upstream_capabilities().logging.is_none() {
            return Ok(());
        }
        // The upstream has one log level for all of mcpgate: the latest request wins.
        empty_result(self.send(SetLevelRequest::new(params), &call).await?)
    }

    async fn subscribe(
        &self,
        params: SubscribeRequestParams,
        call: Call<'_>,
    ) -> Result<(), ErrorData> {
        let route = self.route(&call).await?;
        let Some(session) = route.hub.register(&call.context.peer) else {
            return Err(ErrorData::invalid_request(
                "resource subscriptions need a session",
                None,
            ));
        };
        // Only the first subscriber is forwarded: the upstream sees one client.
        if route.hub.subscribe(&params.uri, session) {
            let uri = params.uri.clone();
            let forwarded = self
                .forwarder(&route)
                .send(SubscribeRequest::new(params).into(), call.context)
                .await
                .and_then(empty_result);
            if let Err(error) = forwarded {
                route.hub.unsubscribe(&uri, session);
                return Err(error);
            }
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        params: UnsubscribeRequestParams,
        call: Call<'_>,
    ) -> Result<(), ErrorData> {
        let route = self.route(&call).await?;
        let Some(session) = route.hub.register(&call.context.peer) else {
            return Ok(());
        };
        if route.hub.unsubscribe(&params.uri, session) {
            let request = UnsubscribeRequest::new(params).into();
            empty_result(self.forwarder(&route).send(request, call.context).await?)?;
        }
        Ok(())
    }

    async fn on_initialized(&self, context: &NotificationContext<RoleServer>) {
        // Per-user connections register their sessions on the first request.
        if let Upstreams::Shared(route) = &self.upstreams {
            route.hub.register(&context.peer);
        }
    }

    /// Nothing to do here: rmcp cancels the request's context, and the forwarding future
    /// (see `forward`) reacts by cancelling the upstream request.
    async fn on_cancelled(
        &self,
        _params: CancelledNotificationParam,
        _context: &NotificationContext<RoleServer>,
    ) {
    }

    async fn on_roots_list_changed(&self, context: &NotificationContext<RoleServer>) {
        let route = match &self.upstreams {
            Upstreams::Shared(route) => Some(route.clone()),
            Upstreams::PerUser(pool) => {
                let principal = crate::handler::principal_of(&context.extensions);
                pool.existing(&principal)
            }
        };
        let Some(route) = route else { return };
        route.hub.register(&context.peer);
        if let Ok(connection) = route.upstream.connection()
            && let Err(error) = connection.peer.notify_roots_list_changed().await
        {
            tracing::debug!(%error, "could not forward roots/list_changed upstream");
        }
    }

    async fn readiness(&self) -> Result<(), String> {
        match &self.upstreams {
            Upstreams::Shared(route) => route.upstream.readiness(),
            // Connections are opened per user, on demand: none is needed to be ready.
            Upstreams::PerUser(_) => Ok(()),
        }
    }
}
