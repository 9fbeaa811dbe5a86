//! One typed configuration from a TOML file, `MCP_*` environment variables and CLI flags.
//!
//! Precedence: flags > env > file > defaults. clap reads flags and env together (a flag beats its
//! env twin); [`Config::resolve`] then lays those over the file and the defaults.

mod args;
mod file;
pub mod oauth;
pub mod proxy;
mod render;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use args::ConfigArgs;
pub use file::FileConfig;
pub use oauth::{OAuthConfig, OAuthMode, ScopeErrors};

use crate::policy::PolicyConfig;

/// Which transport `mcpgate serve` speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    Stdio,
    StreamableHttp,
    Sse,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret string that never prints.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// A named static bearer token with its scopes.
#[derive(Debug, Clone)]
pub struct NamedToken {
    pub name: String,
    pub secret: Secret,
    pub scopes: Vec<String>,
}

/// The upstream MCP server mcpgate fronts, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Command(String),
    Url(String),
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub transport: Transport,
    pub host: IpAddr,
    pub port: u16,
    pub legacy_sse: bool,
    pub tokens: Vec<NamedToken>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub rate_limit_rpm: u32,
    pub allowed_hosts: Vec<String>,
    pub cors_allowed_origins: Vec<String>,
    pub dns_rebinding_protection: bool,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub tool_timeout: Duration,
    pub shutdown_grace: Duration,
    pub session_idle_timeout: Duration,
    pub notes_db: PathBuf,
    pub upstream: Option<Upstream>,
    pub metrics_enabled: bool,
    pub oauth: Option<OAuthConfig>,
    pub policy: PolicyConfig,
}

/// Name given to the principal of `MCP_AUTH_TOKEN`.
pub const DEFAULT_TOKEN_NAME: &str = "default";

/// One problem with the configuration, worded for a one-line report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Loads the file named by `--config`/`MCP_CONFIG` (if any) and resolves it with the flags.
    pub fn load(args: &ConfigArgs) -> Result<Self, Vec<ConfigError>> {
        let file = match &args.config {
            Some(path) => FileConfig::read(path).map_err(|e| vec![e])?,
            None => FileConfig::default(),
        };
        Self::resolve(args, file)
    }

    pub fn resolve(args: &ConfigArgs, file: FileConfig) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let tokens = resolve_tokens(args, &file, &mut errors);
        let upstream = match (
            args.upstream_command.clone().or(file.upstream_command),
            args.upstream_url.clone().or(file.upstream_url),
        ) {
            (Some(_), Some(_)) => {
                errors.push(ConfigError::new(
                    "upstream_command",
                    "set either upstream_command or upstream_url, not both",
                ));
                None
            }
            (Some(cmd), None) if cmd.trim().is_empty() => {
                errors.push(ConfigError::new("upstream_command", "must not be empty"));
                None
            }
            (Some(cmd), None) => Some(Upstream::Command(cmd)),
            (None, Some(url)) => match url::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Some(Upstream::Url(url)),
                _ => {
                    errors.push(ConfigError::new(
                        "upstream_url",
                        format!("not an http(s) URL: {url:?}"),
                    ));
                    None
                }
            },
            (None, None) => None,
        };
        let config = Config {
            transport: args
                .transport
                .or(file.transport)
                .unwrap_or(Transport::Stdio),
            host: args
                .host
                .or(file.host)
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            port: args.port.or(file.port).unwrap_or(8080),
            legacy_sse: args.legacy_sse.or(file.legacy_sse).unwrap_or(true),
            tokens,
            log_level: args
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            rate_limit_rpm: args.rate_limit_rpm.or(file.rate_limit_rpm).unwrap_or(120),
            allowed_hosts: args
                .allowed_hosts
                .clone()
                .or(file.allowed_hosts)
                .unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]),
            cors_allowed_origins: args
                .cors_allowed_origins
                .clone()
                .or(file.cors_allowed_origins)
                .unwrap_or_default(),
            dns_rebinding_protection: args
                .enable_dns_rebinding_protection
                .or(file.enable_dns_rebinding_protection)
                .unwrap_or(true),
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(4 * 1024 * 1024),
            request_timeout: secs(
                args.request_timeout_secs
                    .or(file.request_timeout_secs)
                    .unwrap_or(60),
            ),
            tool_timeout: secs(
                args.tool_timeout_secs
                    .or(file.tool_timeout_secs)
                    .unwrap_or(120),
            ),
            shutdown_grace: secs(
                args.shutdown_grace_secs
                    .or(file.shutdown_grace_secs)
                    .unwrap_or(10),
            ),
            session_idle_timeout: secs(
                args.session_idle_timeout_secs
                    .or(file.session_idle_timeout_secs)
                    .unwrap_or(1800),
            ),
            notes_db: args
                .notes_db
                .clone()
                .or(file.notes_db)
                .unwrap_or_else(|| PathBuf::from("mcpgate-notes.db")),
            upstream,
            metrics_enabled: args.metrics.or(file.metrics).unwrap_or(true),
            oauth: oauth::resolve(
                &args.oauth,
                file.oauth.unwrap_or_default(),
                (
                    args.host
                        .or(file.host)
                        .unwrap_or(IpAddr::from([127, 0, 0, 1])),
                    args.port.or(file.port).unwrap_or(8080),
                ),
                &mut errors,
            ),
            policy: file.policy.unwrap_or_default(),
        };
        config.validate(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    fn validate(&self, errors: &mut Vec<ConfigError>) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            errors.push(ConfigError::new(
                "log_level",
                format!("not a valid filter: {e}"),
            ));
        }
        if self.max_body_bytes < 1024 {
            errors.push(ConfigError::new("max_body_bytes", "must be at least 1024"));
        }
        for (key, value) in [
            ("request_timeout_secs", self.request_timeout),
            ("tool_timeout_secs", self.tool_timeout),
            ("session_idle_timeout_secs", self.session_idle_timeout),
        ] {
            if value.is_zero() {
                errors.push(ConfigError::new(key, "must be greater than 0"));
            }
        }
        for origin in &self.cors_allowed_origins {
            if origin != "*" && url::Url::parse(origin).map(|u| u.origin().is_tuple()) != Ok(true) {
                errors.push(ConfigError::new(
                    "cors_allowed_origins",
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        if self.allowed_hosts.iter().any(|h| h.trim().is_empty()) {
            errors.push(ConfigError::new(
                "allowed_hosts",
                "entries must not be empty",
            ));
        }
        proxy::check_gateway(self, errors);
    }

    /// Whether HTTP requests must present a bearer token.
    pub fn auth_required(&self) -> bool {
        !self.tokens.is_empty() || self.oauth.is_some()
    }

    /// The effective configuration as TOML, with every secret redacted.
    pub fn render_redacted(&self) -> String {
        render::redacted_toml(self)
    }
}

/// Scopes of a static token whose config lists none.
pub fn full_access() -> Vec<String> {
    vec![crate::policy::ADMIN.to_owned()]
}

fn secs(value: u64) -> Duration {
    Duration::from_secs(value)
}

fn resolve_tokens(
    args: &ConfigArgs,
    file: &FileConfig,
    errors: &mut Vec<ConfigError>,
) -> Vec<NamedToken> {
    let mut tokens = Vec::new();
    if let Some(secret) = args.auth_token.clone().or_else(|| file.auth_token.clone()) {
        if secret.is_empty() {
            errors.push(ConfigError::new("auth_token", "must not be empty"));
        } else {
            tokens.push(NamedToken {
                name: DEFAULT_TOKEN_NAME.into(),
                secret: Secret(secret),
                // The old server's single token had every right; it keeps them.
                scopes: full_access(),
            });
        }
    }
    for (i, entry) in file.tokens.iter().enumerate() {
        let key = format!("tokens[{i}]");
        let secret = match (&entry.token, &entry.token_env) {
            (Some(t), None) => Some(t.clone()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(v),
                _ => {
                    errors.push(ConfigError::new(
                        &key,
                        format!("environment variable {var} is not set"),
                    ));
                    None
                }
            },
            _ => {
                errors.push(ConfigError::new(
                    &key,
                    "set exactly one of `token` or `token_env`",
                ));
                None
            }
        };
        if entry.name.trim().is_empty() {
            errors.push(ConfigError::new(&key, "`name` must not be empty"));
            continue;
        }
        if tokens.iter().any(|t: &NamedToken| t.name == entry.name) {
            errors.push(ConfigError::new(
                &key,
                format!("duplicate token name {:?}", entry.name),
            ));
            continue;
        }
        if let Some(secret) = secret {
            if secret.is_empty() {
                errors.push(ConfigError::new(&key, "the token must not be empty"));
            } else if tokens.iter().any(|t| t.secret.expose() == secret) {
                errors.push(ConfigError::new(&key, "two tokens have the same secret"));
            } else {
                tokens.push(NamedToken {
                    name: entry.name.clone(),
                    secret: Secret(secret),
                    scopes: entry.scopes.clone().unwrap_or_else(full_access),
                });
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests;
