//! Sending one downstream request to the upstream: timeout, cancellation, progress routing and
//! error translation in one place.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CancelledNotificationParam, ClientRequest, PaginatedRequestParams, RequestMetaObject,
    ServerResult,
};
use rmcp::service::{PeerRequestOptions, RequestContext, ServiceError};
use rmcp::{ErrorData, RoleServer};
use serde_json::json;

use super::downstream::Hub;
use super::upstream::Upstream;

/// More pages than any sane server sends; stops a server whose cursors never end.
const MAX_PAGES: usize = 1000;

/// Everything a forwarded request needs besides the request itself.
pub(super) struct Forwarder<'a> {
    pub upstream: &'a Upstream,
    pub hub: &'a Arc<Hub>,
    pub timeout: Duration,
}

impl Forwarder<'_> {
    /// Send `request` upstream on behalf of the downstream request in `context`.
    pub(super) async fn send(
        &self,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        let connection = self.upstream.connection()?;
        let options = PeerRequestOptions::with_timeout(self.timeout)
            .with_meta(forwardable_meta(&context.meta));
        let handle = match connection
            .peer
            .send_request_with_option(request, options)
            .await
        {
            Ok(handle) => handle,
            Err(error) => return Err(self.failed(error, &connection)),
        };
        // rmcp puts its own progress token on every upstream request; remember which downstream
        // token it stands for until the call ends.
        let _tracked = self.hub.track(
            handle.id.clone(),
            handle.progress_token.clone(),
            context.id.clone(),
            context.meta.get_progress_token(),
            context.peer.clone(),
            context.client_capabilities(),
        );
        let (id, peer) = (handle.id.clone(), handle.peer.clone());
        let response = tokio::select! {
            response = handle.await_response() => response.map_err(|error| self.failed(error, &connection)),
            // rmcp cancels the context when the downstream client sends notifications/cancelled.
            () = context.ct.cancelled() => {
                let reason = Some("cancelled by the downstream client".to_owned());
                let _ = peer.notify_cancelled(CancelledNotificationParam::new(Some(id), reason)).await;
                Err(ErrorData::internal_error("request cancelled by the client", None))
            }
        };
        // rmcp hands each upstream notification to a task of its own but delivers the response
        // inline, so progress the upstream sent just before its result can still be queued here.
        // Let queued tasks run before the call's progress routing goes, so that progress reaches
        // the client ahead of the result (seen under load: the last of three arrived too late).
        // This makes the race unlikely, not impossible: a task another worker is running may
        // still be mid-send.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        response
    }

    /// Fetch every page of a list. `page` extracts the items and next cursor from one result.
    pub(super) async fn list_all<T>(
        &self,
        request: impl Fn(Option<PaginatedRequestParams>) -> ClientRequest,
        page: impl Fn(ServerResult) -> Option<(Vec<T>, Option<String>)>,
        context: &RequestContext<RoleServer>,
    ) -> Result<Vec<T>, ErrorData> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor
                .take()
                .map(|cursor| PaginatedRequestParams::default().with_cursor(Some(cursor)));
            let result = self.send(request(params), context).await?;
            let (mut more, next) = page(result).ok_or_else(unexpected)?;
            items.append(&mut more);
            match next {
                Some(next) if !next.is_empty() => cursor = Some(next),
                _ => return Ok(items),
            }
        }
        Err(ErrorData::internal_error(
            format!("upstream MCP server returned more than {MAX_PAGES} pages"),
            Some(json!({ "reason": "upstream_pagination" })),
        ))
    }

    /// Translate a failed upstream request into the JSON-RPC error the downstream client sees,
    /// and drop a connection whose transport failed so the supervisor reconnects.
    fn failed(&self, error: ServiceError, connection: &super::upstream::Connection) -> ErrorData {
        match error {
            ServiceError::McpError(error) => error,
            ServiceError::Timeout { timeout } => ErrorData::internal_error(
                format!("upstream MCP server did not answer within {timeout:?}"),
                Some(json!({ "reason": "upstream_timeout" })),
            ),
            ServiceError::TransportClosed => {
                self.upstream.reconnect(connection);
                let message = if self.upstream.is_command() {
                    "upstream MCP server exited"
                } else {
                    "upstream MCP server closed the connection"
                };
                ErrorData::internal_error(message, Some(json!({ "reason": "upstream_exited" })))
            }
            ServiceError::TransportSend(error) => {
                self.upstream.reconnect(connection);
                ErrorData::internal_error(
                    format!("cannot reach the upstream MCP server: {error}"),
                    Some(json!({ "reason": "upstream_unreachable" })),
                )
            }
            ServiceError::Cancelled { reason } => ErrorData::internal_error(
                format!(
                    "upstream request cancelled: {}",
                    reason.as_deref().unwrap_or("no reason given")
                ),
                None,
            ),
            other => ErrorData::internal_error(format!("upstream MCP server error: {other}"), None),
        }
    }
}

pub(super) fn unexpected() -> ErrorData {
    ErrorData::internal_error("upstream MCP server sent an unexpected response", None)
}

/// The downstream request's `_meta` minus what belongs to the downstream hop: its progress token
/// (rmcp sets its own) and the per-request protocol context of the 2026 stateless protocol.
fn forwardable_meta(meta: &RequestMetaObject) -> RequestMetaObject {
    let mut meta = meta.clone();
    meta.0
        .0
        .retain(|key, _| key != "progressToken" && !key.starts_with("io.modelcontextprotocol/"));
    meta
}
