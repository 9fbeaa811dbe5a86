//! CLI flags and their `MCP_*` environment twins.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;

use super::{LogFormat, Transport};

/// Every setting of `mcpgate serve` / `mcpgate config check`. All optional: what is absent falls
/// through to the file, then to the defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML config file.
    #[arg(long, env = "MCP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// stdio (default), streamable-http (also serves legacy SSE) or sse (legacy SSE only).
    #[arg(long, env = "MCP_TRANSPORT", value_enum)]
    pub transport: Option<Transport>,
    #[arg(long, env = "MCP_HOST")]
    pub host: Option<IpAddr>,
    #[arg(long, env = "MCP_PORT")]
    pub port: Option<u16>,
    /// Serve the legacy HTTP+SSE endpoints beside /mcp (default true).
    #[arg(long, env = "MCP_LEGACY_SSE", value_parser = BoolishValueParser::new())]
    pub legacy_sse: Option<bool>,
    /// Static bearer token required on every MCP HTTP request (principal "default").
    #[arg(long, env = "MCP_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    #[arg(long, env = "MCP_LOG_LEVEL")]
    pub log_level: Option<String>,
    #[arg(long, env = "MCP_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Requests per minute per principal and per client IP; 0 disables.
    #[arg(long, env = "MCP_RATE_LIMIT_RPM")]
    pub rate_limit_rpm: Option<u32>,
    /// Comma-separated Host names accepted (DNS-rebinding protection).
    #[arg(long, env = "MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Comma-separated browser origins allowed by CORS and the Origin check.
    #[arg(long, env = "MCP_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Option<Vec<String>>,
    #[arg(long, env = "MCP_ENABLE_DNS_REBINDING_PROTECTION", value_parser = BoolishValueParser::new())]
    pub enable_dns_rebinding_protection: Option<bool>,
    #[arg(long, env = "MCP_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    #[arg(long, env = "MCP_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    #[arg(long, env = "MCP_TOOL_TIMEOUT_SECS")]
    pub tool_timeout_secs: Option<u64>,
    #[arg(long, env = "MCP_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    #[arg(long, env = "MCP_SESSION_IDLE_TIMEOUT_SECS")]
    pub session_idle_timeout_secs: Option<u64>,
    /// SQLite file of the built-in notes tools.
    #[arg(long, env = "MCP_NOTES_DB")]
    pub notes_db: Option<PathBuf>,
    /// Front a stdio MCP server: its whole command line.
    #[arg(long, env = "MCP_UPSTREAM_COMMAND")]
    pub upstream_command: Option<String>,
    /// Front a Streamable HTTP MCP server at this URL.
    #[arg(long, env = "MCP_UPSTREAM_URL")]
    pub upstream_url: Option<String>,
    /// Serve Prometheus metrics at /metrics (default true).
    #[arg(long, env = "MCP_METRICS", value_parser = BoolishValueParser::new())]
    pub metrics: Option<bool>,
    #[command(flatten)]
    pub oauth: super::oauth::OAuthArgs,
}
