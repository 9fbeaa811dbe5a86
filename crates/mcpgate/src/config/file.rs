//! The TOML file: every key optional, unknown keys refused.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{ConfigError, LogFormat, Transport};

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub transport: Option<Transport>,
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    pub legacy_sse: Option<bool>,
    pub auth_token: Option<String>,
    #[serde(default)]
    pub tokens: Vec<FileToken>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub rate_limit_rpm: Option<u32>,
    pub allowed_hosts: Option<Vec<String>>,
    pub cors_allowed_origins: Option<Vec<String>>,
    pub enable_dns_rebinding_protection: Option<bool>,
    pub max_body_bytes: Option<usize>,
    pub request_timeout_secs: Option<u64>,
    pub tool_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub session_idle_timeout_secs: Option<u64>,
    pub notes_db: Option<PathBuf>,
    pub upstream_command: Option<String>,
    pub upstream_url: Option<String>,
    pub metrics: Option<bool>,
    pub oauth: Option<super::oauth::OAuthFile>,
    pub policy: Option<crate::policy::PolicyConfig>,
}

/// `[[tokens]]`: a named static token; the secret inline or from an environment variable.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileToken {
    pub name: String,
    pub token: Option<String>,
    pub token_env: Option<String>,
    /// Omitted: full access (`mcp:admin`), like `MCP_AUTH_TOKEN`.
    pub scopes: Option<Vec<String>>,
}

impl FileConfig {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: path.display().to_string(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::parse(&text).map_err(|mut e| {
            e.key = format!("{}: {}", path.display(), e.key);
            e
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| format!("line {}", text[..span.start].matches('\n').count() + 1))
                .unwrap_or_else(|| "config".into());
            ConfigError {
                key: line,
                message: e.message().to_owned(),
            }
        })
    }
}
