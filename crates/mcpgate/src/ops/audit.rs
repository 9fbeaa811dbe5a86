//! The audit log: one structured record per authentication outcome and per tool call.
//!
//! Records go to the `mcpgate::audit` tracing target, so operators can route them separately
//! (`MCP_LOG_LEVEL=info,mcpgate::audit=info`). They name principals, never secrets.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::Counter;

use mcpgate_auth::Principal;
use mcpgate_auth::resource::{AuthEvent, AuthObserver, AuthOutcome};

use crate::backend::TransportKind;

/// Reports every authentication decision to the audit log and the metrics.
#[derive(Default)]
pub struct AuditObserver {
    /// `mcpgate_auth_total` by outcome. Looking a labelled counter up in the registry hashes its
    /// key on every request; the handles are taken on the first request instead (not at
    /// construction: the server is built before `http::build` has waited for the recorder).
    counters: OnceLock<OutcomeCounters>,
}

struct OutcomeCounters {
    accepted: Counter,
    missing: Counter,
    malformed: Counter,
    rejected: Counter,
    unavailable: Counter,
}

impl OutcomeCounters {
    fn new() -> Self {
        let counter =
            |outcome: &'static str| metrics::counter!("mcpgate_auth_total", "outcome" => outcome);
        Self {
            accepted: counter("accepted"),
            missing: counter("missing"),
            malformed: counter("malformed"),
            rejected: counter("rejected"),
            unavailable: counter("unavailable"),
        }
    }

    fn of(&self, outcome: &AuthOutcome) -> &Counter {
        match outcome {
            AuthOutcome::Accepted(_) => &self.accepted,
            AuthOutcome::Missing => &self.missing,
            AuthOutcome::Malformed(_) => &self.malformed,
            AuthOutcome::Rejected(_) => &self.rejected,
            AuthOutcome::Unavailable(_) => &self.unavailable,
        }
    }
}

impl AuthObserver for AuditObserver {
    fn on_auth(&self, event: &AuthEvent<'_>) {
        let outcome = event.outcome.label();
        self.counters
            .get_or_init(OutcomeCounters::new)
            .of(event.outcome)
            .increment(1);
        // Formatted only if the record is written: this runs on every authenticated request.
        let peer = tracing::field::display(PeerIp(event.peer));
        match event.outcome {
            AuthOutcome::Accepted(principal) => tracing::info!(
                target: "mcpgate::audit",
                event = "auth",
                outcome,
                principal = principal.display_name(),
                issuer = %principal.issuer,
                client_id = principal.client_id.as_deref().unwrap_or(""),
                method = %event.method,
                path = event.path,
                peer,
            ),
            AuthOutcome::Rejected(reason) | AuthOutcome::Unavailable(reason) => tracing::warn!(
                target: "mcpgate::audit",
                event = "auth",
                outcome,
                reason = reason.as_str(),
                method = %event.method,
                path = event.path,
                peer,
            ),
            AuthOutcome::Missing | AuthOutcome::Malformed(_) => tracing::info!(
                target: "mcpgate::audit",
                event = "auth",
                outcome,
                method = %event.method,
                path = event.path,
                peer,
            ),
        }
    }
}

/// The caller's IP address, or nothing when the transport has none (stdio, tests).
struct PeerIp(Option<SocketAddr>);

impl std::fmt::Display for PeerIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(peer) => peer.ip().fmt(f),
            None => Ok(()),
        }
    }
}

/// Records one tool call.
pub fn tool_call(
    principal: &Principal,
    transport: TransportKind,
    tool: &str,
    outcome: &'static str,
    took: Duration,
) {
    metrics::counter!("mcpgate_tool_calls_total", "outcome" => outcome).increment(1);
    metrics::histogram!("mcpgate_tool_call_seconds").record(took.as_secs_f64());
    tracing::info!(
        target: "mcpgate::audit",
        event = "tool_call",
        principal = principal.display_name(),
        issuer = %principal.issuer,
        client_id = principal.client_id.as_deref().unwrap_or(""),
        transport = transport.as_str(),
        tool,
        outcome,
        took_ms = took.as_millis() as u64,
    );
}
