//! MCP over stdin/stdout: no authentication (credentials come from the environment), logs on stderr.

use std::sync::Arc;

use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, TransportKind};
use crate::config::Config;
use crate::handler::McpHandler;

pub async fn serve(
    config: &Config,
    backend: Arc<dyn Backend>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handler = McpHandler::new(backend, TransportKind::Stdio, config.tool_timeout);
    let running = handler
        .serve_with_ct(rmcp::transport::stdio(), shutdown)
        .await?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "stdio session ended");
    Ok(())
}
