//! Connecting to the upstream MCP server and keeping it connected.
//!
//! A supervisor task owns the running rmcp client. When the connection ends (the child process
//! exited, the HTTP server went away, or a call hit a transport error) it marks the upstream
//! down, so new calls fail fast instead of hanging, and reconnects with exponential backoff.

#![allow(deprecated)] // resources/subscribe is legacy-only in rmcp but still what 2025 servers speak

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use process_wrap::tokio::{CommandWrap, ProcessGroup};
use rmcp::model::{ServerPeerInfo, SubscribeRequestParams};
use rmcp::service::{Peer, RunningService, serve_client_with_ct};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ErrorData, RoleClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::ChildStderr;
use tokio_util::sync::CancellationToken;

use super::GatewayError;
use super::client_handler::UpstreamClient;
use super::downstream::Hub;

/// First delay before restarting a failed upstream; doubled on each quick failure.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that stayed up this long counts as healthy: the next restart is quick again.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Bound on `initialize`; generous because `npx`/`uvx` may download the server first.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest stderr line logged in one piece; longer output is split, never buffered unbounded.
const MAX_STDERR_LINE: u64 = 8 * 1024;

/// The MCP server mcpgate fronts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// A stdio MCP server: the whole command line, split like a POSIX shell would (no expansion).
    Command(String),
    /// A Streamable HTTP MCP endpoint.
    Url(String),
}

impl UpstreamTarget {
    fn is_command(&self) -> bool {
        matches!(self, Self::Command(_))
    }

    /// For logs: the program, or the URL without credentials and query. Arguments and query
    /// strings often carry secrets, and secrets never reach the logs.
    fn describe(&self) -> String {
        match self {
            Self::Command(line) => shlex::split(line)
                .and_then(|argv| argv.into_iter().next())
                .unwrap_or_default(),
            Self::Url(url) => redact_url(url),
        }
    }
}

type Running = RunningService<RoleClient, UpstreamClient>;

/// A live upstream connection, as handed to a forwarded call.
#[derive(Clone)]
pub(super) struct Connection {
    pub peer: Peer<RoleClient>,
    /// Cancelling it closes this connection; the supervisor then reconnects.
    ct: CancellationToken,
    /// Tells connections apart, so a late failure report cannot take down a newer one.
    generation: u64,
}

enum Link {
    Up(Connection),
    Down(String),
}

/// The shared view of the upstream: current link and the last handshake seen.
pub(super) struct Upstream {
    target: UpstreamTarget,
    /// Sent as `Authorization: Bearer …` to an HTTP upstream (per-user connections only).
    bearer: Option<String>,
    link: RwLock<Link>,
    /// Kept while down, so capabilities and server info stay stable across restarts.
    info: RwLock<Option<Arc<ServerPeerInfo>>>,
    generations: AtomicU64,
    supervisor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Upstream {
    /// Connect once; the first connection must succeed so configuration errors show at start-up.
    pub(super) async fn start(
        target: UpstreamTarget,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, GatewayError> {
        Self::start_with_bearer(target, None, hub, shutdown).await
    }

    /// [`Self::start`], sending `bearer` in the `Authorization` header of every HTTP request.
    pub(super) async fn start_with_bearer(
        target: UpstreamTarget,
        bearer: Option<String>,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, GatewayError> {
        let client = UpstreamClient::new(Arc::clone(&hub));
        let ct = shutdown.child_token();
        let running = open(&target, bearer.as_deref(), client.clone(), ct.clone()).await?;
        let upstream = Arc::new(Self {
            target,
            bearer,
            link: RwLock::new(Link::Down("starting".to_owned())),
            info: RwLock::new(None),
            generations: AtomicU64::new(0),
            supervisor: std::sync::Mutex::new(None),
        });
        upstream.set_up(&running, ct);
        let supervisor =
            tokio::spawn(Arc::clone(&upstream).supervise(running, client, hub, shutdown));
        *upstream
            .supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(supervisor);
        Ok(upstream)
    }

    /// Waits (at most `limit`) for the supervisor to finish after shutdown, so the child
    /// process has been reaped before mcpgate exits.
    pub(super) async fn stopped(&self, limit: Duration) {
        let handle = self
            .supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle
            && tokio::time::timeout(limit, handle).await.is_err()
        {
            tracing::warn!(target: "mcpgate::upstream", "the upstream MCP server did not stop in time");
        }
    }

    /// The live connection, or a clear error right away when the upstream is down.
    pub(super) fn connection(&self) -> Result<Connection, ErrorData> {
        match &*self.link.read().unwrap_or_else(PoisonError::into_inner) {
            Link::Up(connection) => Ok(connection.clone()),
            Link::Down(reason) => Err(ErrorData::internal_error(
                format!("upstream MCP server is not available ({reason}); mcpgate is reconnecting"),
                Some(serde_json::json!({ "reason": "upstream_unavailable" })),
            )),
        }
    }

    pub(super) fn readiness(&self) -> Result<(), String> {
        match &*self.link.read().unwrap_or_else(PoisonError::into_inner) {
            Link::Up(_) => Ok(()),
            Link::Down(reason) => Err(format!("upstream MCP server is not connected: {reason}")),
        }
    }

    pub(super) fn info(&self) -> Option<Arc<ServerPeerInfo>> {
        self.info
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a closed transport means a dead child process (for error messages).
    pub(super) fn is_command(&self) -> bool {
        self.target.is_command()
    }

    /// Drop a connection that failed at the transport level; the supervisor reconnects.
    pub(super) fn reconnect(&self, connection: &Connection) {
        let mut link = self.link.write().unwrap_or_else(PoisonError::into_inner);
        if matches!(&*link, Link::Up(current) if current.generation == connection.generation) {
            *link = Link::Down("the connection failed".to_owned());
        }
        connection.ct.cancel();
    }

    fn set_up(&self, running: &Running, ct: CancellationToken) {
        let peer = running.peer().clone();
        if let Some(info) = peer.peer_info() {
            *self.info.write().unwrap_or_else(PoisonError::into_inner) = Some(info);
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = Link::Up(Connection {
            peer,
            ct,
            generation,
        });
    }

    fn set_down(&self, reason: String) {
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = Link::Down(reason);
    }

    async fn supervise(
        self: Arc<Self>,
        mut running: Running,
        client: UpstreamClient,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = Instant::now();
            let reason = match running.waiting().await {
                Ok(reason) => format!("{reason:?}"),
                Err(error) => format!("client task failed: {error}"),
            };
            let what = if self.target.is_command() {
                "exited"
            } else {
                "disconnected"
            };
            self.set_down(format!("upstream MCP server {what}"));
            if shutdown.is_cancelled() {
                return;
            }
            if started.elapsed() >= STABLE_AFTER {
                backoff = MIN_BACKOFF;
            }
            tracing::warn!(target: "mcpgate::upstream", upstream = %self.target.describe(), reason, "upstream MCP server {what}");
            loop {
                tracing::info!(target: "mcpgate::upstream", "reconnecting to the upstream MCP server in {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                let ct = shutdown.child_token();
                match open(
                    &self.target,
                    self.bearer.as_deref(),
                    client.clone(),
                    ct.clone(),
                )
                .await
                {
                    Ok(next) => {
                        running = next;
                        self.set_up(&running, ct);
                        tracing::info!(target: "mcpgate::upstream", "upstream MCP server reconnected");
                        // Off the supervisor task: a slow client must not delay watching the
                        // new connection.
                        tokio::spawn(Arc::clone(&self).after_reconnect(Arc::clone(&hub)));
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(target: "mcpgate::upstream", %error, "reconnecting to the upstream MCP server failed");
                        self.set_down(error.to_string());
                    }
                }
            }
        }
    }

    /// A fresh upstream knows nothing of earlier subscriptions, and its lists may differ.
    async fn after_reconnect(self: Arc<Self>, hub: Arc<Hub>) {
        let Ok(connection) = self.connection() else {
            return;
        };
        for uri in hub.subscribed_uris() {
            if let Err(error) = connection
                .peer
                .subscribe(SubscribeRequestParams::new(uri.clone()))
                .await
            {
                tracing::warn!(target: "mcpgate::upstream", %error, uri, "re-subscribing after reconnect failed");
            }
        }
        let Some(info) = self.info() else { return };
        let capabilities = &info.capabilities;
        for peer in hub.peers() {
            // Best effort: a client that went away is pruned on the next pass.
            if capabilities.tools.is_some() {
                let _ = peer.notify_tool_list_changed().await;
            }
            if capabilities.resources.is_some() {
                let _ = peer.notify_resource_list_changed().await;
            }
            if capabilities.prompts.is_some() {
                let _ = peer.notify_prompt_list_changed().await;
            }
        }
    }
}

/// Start the transport and run the MCP handshake.
async fn open(
    target: &UpstreamTarget,
    bearer: Option<&str>,
    client: UpstreamClient,
    ct: CancellationToken,
) -> Result<Running, GatewayError> {
    let handshake = async {
        match target {
            UpstreamTarget::Command(line) => {
                let transport = spawn_child(line)?;
                serve_client_with_ct(client, transport, ct).await
            }
            UpstreamTarget::Url(url) => {
                let parsed = url::Url::parse(url).map_err(|error| GatewayError::InvalidUrl {
                    url: redact_url(url),
                    reason: error.to_string(),
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(GatewayError::InvalidUrl {
                        url: redact_url(url),
                        reason: "not an http(s) URL".to_owned(),
                    });
                }
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                config.auth_header = bearer.map(str::to_owned);
                let transport = StreamableHttpClientTransport::from_config(config);
                serve_client_with_ct(client, transport, ct).await
            }
        }
        .map_err(|error| GatewayError::Handshake(error.to_string()))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            GatewayError::Handshake(format!(
                "no initialize response within {HANDSHAKE_TIMEOUT:?}"
            ))
        })?
}

/// `url` without user info, query or fragment.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "<invalid URL>".to_owned(),
    }
}

/// Spawn the stdio server in its own process group (so helpers it starts, like `npx`'s node,
/// die with it) and pipe its stderr into our log.
fn spawn_child(line: &str) -> Result<TokioChildProcess, GatewayError> {
    let argv = shlex::split(line)
        .ok_or_else(|| GatewayError::InvalidCommand("unbalanced quotes".to_owned()))?;
    let Some((program, args)) = argv.split_first() else {
        return Err(GatewayError::InvalidCommand(
            "the command line is empty".to_owned(),
        ));
    };
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    // The upstream gets mcpgate's environment (its own credentials usually live there), but not
    // mcpgate's secrets: there is no token passthrough, not even by inheritance.
    for (name, _) in std::env::vars_os() {
        let secret = name
            .to_str()
            .is_some_and(|name| name == "MCP_AUTH_TOKEN" || name.starts_with("MCP_OAUTH_"));
        if secret {
            command.env_remove(name);
        }
    }
    let mut command = CommandWrap::from(command);
    command.wrap(ProcessGroup::leader());
    let (child, stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| GatewayError::Spawn {
            program: program.clone(),
            source,
        })?;
    let pid = child.id();
    if let Some(stderr) = stderr {
        tokio::spawn(log_stderr(stderr, pid));
    }
    tracing::info!(target: "mcpgate::upstream", pid, program, "started upstream MCP server");
    Ok(child)
}

async fn log_stderr(stderr: ChildStderr, pid: Option<u32>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_STDERR_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if !text.is_empty() {
                    tracing::info!(target: "mcpgate::upstream", pid, "{text}");
                }
            }
            Err(error) => {
                tracing::debug!(target: "mcpgate::upstream", %error, "reading upstream stderr failed");
                return;
            }
        }
    }
}
