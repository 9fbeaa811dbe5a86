//! mcpgate's side of the upstream connection: an rmcp client that hands everything the upstream
//! server sends on its own initiative (notifications, sampling, elicitation, roots) to the
//! downstream clients.

#![allow(deprecated)] // sampling, roots, logging and subscriptions are deprecated by SEP-2577 but still served

use std::sync::Arc;

use futures::future::join_all;
use rmcp::model::{
    CancelledNotificationParam, ClientCapabilities, ClientConfig, ClientResult,
    CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult, ElicitRequest,
    ElicitRequestParams, ElicitResult, ElicitationCapability, ErrorCode, FormElicitationCapability,
    GetExtensions, Implementation, ListRootsRequest, ListRootsResult,
    LoggingMessageNotificationParam, ProgressNotificationParam, ProtocolVersion,
    ResourceUpdatedNotificationParam, RootsCapabilities, SamplingCapability, ServerRequest,
    UrlElicitationCapability,
};
use rmcp::service::{
    InboundStreamOrigin, NotificationContext, OriginatingRequestId, PeerRequestOptions,
    RequestContext, ServiceError,
};
use rmcp::{ClientHandler, ErrorData, RoleClient, RoleServer};

use super::downstream::{Hub, Need};

/// Handles upstream-initiated traffic for one upstream connection.
#[derive(Clone)]
pub(super) struct UpstreamClient {
    hub: Arc<Hub>,
}

impl UpstreamClient {
    pub(super) fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }

    /// Forward a server-to-client request to a downstream client that can answer it.
    async fn ask(
        &self,
        need: Need,
        build: impl FnOnce(Option<OriginatingRequestId>) -> ServerRequest,
        context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        let origin = match context.extensions.get::<InboundStreamOrigin>() {
            Some(InboundStreamOrigin::OutboundRequest(id)) => Some(id.clone()),
            _ => None,
        };
        let Some(target) = self.hub.route(need, origin.as_ref()) else {
            return Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("no connected client of mcpgate supports {}", need.as_str()),
                None,
            ));
        };
        let request = build(target.origin.map(OriginatingRequestId));
        let peer = target.peer;
        // Sent from a fresh task on purpose: rmcp tags an outbound request with the request being
        // handled on the current task, which here is the *upstream's* request id; on a streamable
        // HTTP downstream that tag would override ours and misroute the request.
        let sent = tokio::spawn(async move {
            peer.send_request_with_option(request, PeerRequestOptions::no_options())
                .await
        })
        .await
        .map_err(|error| {
            ErrorData::internal_error(format!("forwarding task failed: {error}"), None)
        })?;
        let handle = sent.map_err(downstream_error)?;
        let (id, peer) = (handle.id.clone(), handle.peer.clone());
        tokio::select! {
            response = handle.await_response() => response.map_err(downstream_error),
            // The upstream gave up (it cancelled its request): tell the downstream client too.
            () = context.ct.cancelled() => {
                let reason = Some("cancelled by the upstream MCP server".to_owned());
                let _ = peer.notify_cancelled(CancelledNotificationParam::new(Some(id), reason)).await;
                Err(ErrorData::internal_error("request cancelled by the upstream MCP server", None))
            }
        }
    }

    /// Send the same notification to several downstream peers at once, so a slow one does not
    /// delay the others. Failures only mean that client went away.
    async fn broadcast<F, Fut>(peers: Vec<rmcp::service::Peer<RoleServer>>, send: F)
    where
        F: Fn(rmcp::service::Peer<RoleServer>) -> Fut,
        Fut: Future<Output = Result<(), ServiceError>>,
    {
        for result in join_all(peers.into_iter().map(send)).await {
            if let Err(error) = result {
                tracing::debug!(%error, "could not forward an upstream notification downstream");
            }
        }
    }
}

fn tag<R: GetExtensions>(mut request: R, origin: Option<OriginatingRequestId>) -> R {
    if let Some(origin) = origin {
        request.extensions_mut().insert(origin);
    }
    request
}

/// A downstream client's error is passed through unchanged; anything else becomes internal.
fn downstream_error(error: ServiceError) -> ErrorData {
    match error {
        ServiceError::McpError(error) => error,
        other => {
            ErrorData::internal_error(format!("downstream client did not answer: {other}"), None)
        }
    }
}

fn unexpected() -> ErrorData {
    ErrorData::internal_error("downstream client sent an unexpected response", None)
}

/// What mcpgate announces to the upstream: everything it can forward, so the upstream uses it.
pub(super) fn client_config() -> ClientConfig {
    let mut capabilities = ClientCapabilities::default();
    capabilities.sampling = Some(SamplingCapability::default());
    capabilities.elicitation = Some(
        ElicitationCapability::new()
            .with_form(FormElicitationCapability::new())
            .with_url(UrlElicitationCapability::new()),
    );
    let mut roots = RootsCapabilities::default();
    roots.list_changed = Some(true);
    capabilities.roots = Some(roots);
    // Pinned to the last revision with `initialize`: the gateway needs a session, so that the
    // upstream can notify and ask mcpgate (2026-07-28 is stateless and has neither).
    ClientConfig::new(
        capabilities,
        Implementation::new("mcpgate", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        client_config()
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let build = |origin| tag(CreateMessageRequest::new(params), origin).into();
        match self.ask(Need::Sampling, build, context).await? {
            ClientResult::CreateMessageResult(result) => Ok(*result),
            _ => Err(unexpected()),
        }
    }

    async fn list_roots(
        &self,
        context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        let build = |origin| tag(ListRootsRequest::default(), origin).into();
        match self.ask(Need::Roots, build, context).await? {
            ClientResult::ListRootsResult(result) => Ok(result),
            _ => Err(unexpected()),
        }
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let build = |origin| tag(ElicitRequest::new(params), origin).into();
        match self.ask(Need::Elicitation, build, context).await? {
            ClientResult::ElicitResult(result) => Ok(result),
            _ => Err(unexpected()),
        }
    }

    async fn on_progress(
        &self,
        mut params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        // Upstream progress tokens are mcpgate's own; translate back to the downstream client's.
        let Some((peer, token)) = self.hub.progress_target(&params.progress_token) else {
            return;
        };
        params.progress_token = token;
        if let Err(error) = peer.notify_progress(params).await {
            tracing::debug!(%error, "could not forward progress downstream");
        }
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        Self::broadcast(self.hub.peers(), |peer| {
            let params = params.clone();
            async move { peer.notify_logging_message(params).await }
        })
        .await;
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        Self::broadcast(self.hub.subscribers(&params.uri), |peer| {
            let params = params.clone();
            async move { peer.notify_resource_updated(params).await }
        })
        .await;
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        Self::broadcast(self.hub.peers(), |peer| async move {
            peer.notify_resource_list_changed().await
        })
        .await;
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        Self::broadcast(self.hub.peers(), |peer| async move {
            peer.notify_tool_list_changed().await
        })
        .await;
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        Self::broadcast(self.hub.peers(), |peer| async move {
            peer.notify_prompt_list_changed().await
        })
        .await;
    }
}
