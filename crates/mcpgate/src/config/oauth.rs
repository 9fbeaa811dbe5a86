//! The OAuth section: `[oauth]` in the file, `MCP_OAUTH_*` in the environment.

use std::time::Duration;

use clap::builder::BoolishValueParser;

use super::proxy::{ProxyConfig, UpstreamArgs, UpstreamFile};
use super::{ConfigError, Secret};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OAuthMode {
    /// mcpgate is its own authorization server.
    Builtin,
    /// Tokens come from an external authorization server (resource-server only).
    External,
    /// mcpgate is the authorization server; users log in at an upstream IdP.
    Proxy,
}

/// How a call beyond the token's scopes is refused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ScopeErrors {
    /// HTTP 403 with an `insufficient_scope` challenge, so clients step up.
    Http,
    /// An in-band MCP error (a tool error result or a JSON-RPC error).
    Mcp,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct OAuthArgs {
    #[arg(long, env = "MCP_OAUTH_ENABLED", value_parser = BoolishValueParser::new())]
    pub oauth_enabled: Option<bool>,
    #[arg(long, env = "MCP_OAUTH_MODE", value_enum)]
    pub oauth_mode: Option<OAuthMode>,
    /// The authorization server's issuer, exactly as its metadata publishes it.
    #[arg(long, env = "MCP_OAUTH_ISSUER")]
    pub oauth_issuer: Option<String>,
    /// The public base URL of this server (resource = `{public_url}/mcp`).
    #[arg(long, env = "MCP_OAUTH_PUBLIC_URL")]
    pub oauth_public_url: Option<String>,
    #[arg(long, env = "MCP_OAUTH_JWKS_URI")]
    pub oauth_jwks_uri: Option<String>,
    /// Extra accepted audiences for IdPs that cannot mint URL audiences (comma-separated).
    #[arg(long, env = "MCP_OAUTH_AUDIENCES", value_delimiter = ',')]
    pub oauth_audiences: Option<Vec<String>>,
    #[arg(long, env = "MCP_OAUTH_INTROSPECTION_URL")]
    pub oauth_introspection_url: Option<String>,
    #[arg(long, env = "MCP_OAUTH_INTROSPECTION_CLIENT_ID")]
    pub oauth_introspection_client_id: Option<String>,
    #[arg(
        long,
        env = "MCP_OAUTH_INTROSPECTION_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub oauth_introspection_client_secret: Option<String>,
    /// Scopes required to use the server at all (comma-separated).
    #[arg(long, env = "MCP_OAUTH_REQUIRED_SCOPES", value_delimiter = ',')]
    pub oauth_required_scopes: Option<Vec<String>>,
    /// `scopes_supported` of the resource metadata: the minimal set for basic use.
    #[arg(long, env = "MCP_OAUTH_SCOPES_SUPPORTED", value_delimiter = ',')]
    pub oauth_scopes_supported: Option<Vec<String>>,
    #[arg(long, env = "MCP_OAUTH_LEEWAY_SECS")]
    pub oauth_leeway_secs: Option<u64>,
    #[arg(long, env = "MCP_OAUTH_ALLOW_PLAIN_JWT", value_parser = BoolishValueParser::new())]
    pub oauth_allow_plain_jwt: Option<bool>,
    /// Allow a plain-HTTP public URL or issuer on a non-loopback host (development only).
    #[arg(long, env = "MCP_OAUTH_ALLOW_INSECURE_HTTP", value_parser = BoolishValueParser::new())]
    pub oauth_allow_insecure_http: Option<bool>,
    #[arg(long, env = "MCP_OAUTH_SCOPE_ERRORS", value_enum)]
    pub oauth_scope_errors: Option<ScopeErrors>,
    #[arg(long, env = "MCP_OAUTH_JWKS_MIN_REFRESH_SECS")]
    pub oauth_jwks_min_refresh_secs: Option<u64>,
    #[arg(long, env = "MCP_OAUTH_JWKS_MAX_AGE_SECS")]
    pub oauth_jwks_max_age_secs: Option<u64>,
    #[arg(long, env = "MCP_OAUTH_INTROSPECTION_CACHE_SECS")]
    pub oauth_introspection_cache_secs: Option<u64>,
    #[arg(long, env = "MCP_OAUTH_INTROSPECTION_CACHE_MAX")]
    pub oauth_introspection_cache_max: Option<usize>,
    #[arg(long, env = "MCP_OAUTH_RESOURCE_NAME")]
    pub oauth_resource_name: Option<String>,
    #[arg(long, env = "MCP_OAUTH_RESOURCE_DOCUMENTATION")]
    pub oauth_resource_documentation: Option<String>,
    /// Built-in mode: where clients, users, grants and keys live (`sqlite://FILE`).
    #[arg(long, env = "MCP_OAUTH_STORE", hide_env_values = true)]
    pub oauth_store: Option<String>,
    /// Refuse to start unless the store is shared by every instance (PostgreSQL).
    #[arg(long, env = "MCP_OAUTH_REQUIRE_SHARED_STORE", value_parser = BoolishValueParser::new())]
    pub oauth_require_shared_store: Option<bool>,
    #[arg(long, env = "MCP_OAUTH_ACCESS_TOKEN_TTL_SECS")]
    pub oauth_access_token_ttl_secs: Option<u64>,
    #[arg(long, env = "MCP_OAUTH_REFRESH_TOKEN_TTL_SECS")]
    pub oauth_refresh_token_ttl_secs: Option<u64>,
    #[arg(long, env = "MCP_OAUTH_CODE_TTL_SECS")]
    pub oauth_code_ttl_secs: Option<u64>,
    /// A rotated refresh token replayed within this window (concurrent refreshes) is not treated
    /// as theft. At most 10.
    #[arg(long, env = "MCP_OAUTH_REFRESH_GRACE_SECS")]
    pub oauth_refresh_grace_secs: Option<u64>,
    /// Dynamic client registration (RFC 7591).
    #[arg(long, env = "MCP_OAUTH_REGISTRATION", value_parser = BoolishValueParser::new())]
    pub oauth_registration: Option<bool>,
    #[arg(long, env = "MCP_OAUTH_REGISTRATION_TOKEN", hide_env_values = true)]
    pub oauth_registration_token: Option<String>,
    /// Glob patterns of hosted clients' redirect URIs accepted at registration (comma-separated).
    #[arg(long, env = "MCP_OAUTH_REDIRECT_URI_ALLOWLIST", value_delimiter = ',')]
    pub oauth_redirect_uri_allowlist: Option<Vec<String>>,
    /// Client ID metadata documents (https client ids).
    #[arg(long, env = "MCP_OAUTH_CLIENT_METADATA_DOCUMENTS", value_parser = BoolishValueParser::new())]
    pub oauth_client_metadata_documents: Option<bool>,
    #[arg(
        long,
        env = "MCP_OAUTH_CLIENT_METADATA_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    pub oauth_client_metadata_allow_hosts: Option<Vec<String>>,
    #[arg(
        long,
        env = "MCP_OAUTH_CLIENT_METADATA_DENY_HOSTS",
        value_delimiter = ','
    )]
    pub oauth_client_metadata_deny_hosts: Option<Vec<String>>,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthFile {
    pub enabled: Option<bool>,
    pub mode: Option<OAuthMode>,
    pub issuer: Option<String>,
    pub public_url: Option<String>,
    pub jwks_uri: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub introspection_url: Option<String>,
    pub introspection_client_id: Option<String>,
    pub introspection_client_secret: Option<String>,
    pub required_scopes: Option<Vec<String>>,
    pub scopes_supported: Option<Vec<String>>,
    pub leeway_secs: Option<u64>,
    pub allow_plain_jwt: Option<bool>,
    pub allow_insecure_http: Option<bool>,
    pub scope_errors: Option<ScopeErrors>,
    pub jwks_min_refresh_secs: Option<u64>,
    pub jwks_max_age_secs: Option<u64>,
    pub introspection_cache_secs: Option<u64>,
    pub introspection_cache_max: Option<usize>,
    pub resource_name: Option<String>,
    pub resource_documentation: Option<String>,
    pub exposed_claims: Option<Vec<String>>,
    pub store: Option<String>,
    pub require_shared_store: Option<bool>,
    pub access_token_ttl_secs: Option<u64>,
    pub refresh_token_ttl_secs: Option<u64>,
    pub code_ttl_secs: Option<u64>,
    pub refresh_grace_secs: Option<u64>,
    pub registration: Option<bool>,
    pub registration_token: Option<String>,
    pub redirect_uri_allowlist: Option<Vec<String>>,
    pub client_metadata_documents: Option<bool>,
    pub client_metadata_allow_hosts: Option<Vec<String>>,
    pub client_metadata_deny_hosts: Option<Vec<String>>,
    /// Clients registered from the config file (headless automation, hosted clients).
    #[serde(default)]
    pub clients: Vec<FileClient>,
    /// Proxy mode's upstream IdP.
    pub upstream: Option<UpstreamFile>,
}

/// `[[oauth.clients]]`: a pre-registered client.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileClient {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_name: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub grant_types: Option<Vec<String>>,
    pub scope: Option<String>,
}

/// Settings of the built-in authorization server.
#[derive(Debug, Clone)]
pub struct BuiltinConfig {
    pub store: Secret,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub code_ttl: Duration,
    pub refresh_grace: Duration,
    pub registration: bool,
    pub registration_token: Option<Secret>,
    pub redirect_uri_allowlist: Vec<String>,
    pub client_metadata_documents: bool,
    pub client_metadata_allow_hosts: Vec<String>,
    pub client_metadata_deny_hosts: Vec<String>,
    pub clients: Vec<FileClient>,
    /// Proxy mode: users sign in at this upstream IdP.
    pub proxy: Option<ProxyConfig>,
}

#[derive(Debug, Clone)]
pub struct Introspection {
    pub url: String,
    pub client_id: String,
    pub client_secret: Secret,
}

/// The resolved OAuth configuration (present only when OAuth is enabled).
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub mode: OAuthMode,
    pub issuer: String,
    /// Without a trailing slash.
    pub public_url: String,
    pub jwks_uri: Option<String>,
    pub audiences: Vec<String>,
    pub introspection: Option<Introspection>,
    pub required_scopes: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub leeway: Duration,
    pub allow_plain_jwt: bool,
    pub allow_insecure_http: bool,
    pub scope_errors: ScopeErrors,
    pub jwks_min_refresh: Duration,
    pub jwks_max_age: Duration,
    pub introspection_cache: Duration,
    pub introspection_cache_max: usize,
    pub resource_name: String,
    pub resource_documentation: Option<String>,
    pub exposed_claims: Vec<String>,
    /// Present in built-in mode.
    pub builtin: Option<BuiltinConfig>,
    /// Several instances serve this deployment: the store must be PostgreSQL.
    pub require_shared_store: bool,
}

impl OAuthConfig {
    pub fn mcp_resource(&self) -> String {
        format!("{}/mcp", self.public_url)
    }
    pub fn sse_resource(&self) -> String {
        format!("{}/sse", self.public_url)
    }
}

/// The public URL of a server listening on loopback, when none is configured.
fn local_public_url(listen: (std::net::IpAddr, u16)) -> Option<String> {
    let (host, port) = listen;
    (host.is_loopback() && port != 0).then(|| format!("http://{host}:{port}"))
}

pub fn resolve(
    args: &OAuthArgs,
    file: OAuthFile,
    listen: (std::net::IpAddr, u16),
    errors: &mut Vec<ConfigError>,
) -> Option<OAuthConfig> {
    if !args.oauth_enabled.or(file.enabled).unwrap_or(false) {
        return None;
    }
    let err = |errors: &mut Vec<ConfigError>, key: &str, m: String| {
        errors.push(ConfigError::new(format!("oauth.{key}"), m))
    };
    // Naming an issuer means tokens come from it: external mode, unless a mode is given.
    let configured_issuer = args.oauth_issuer.clone().or(file.issuer.clone());
    let default_mode = if configured_issuer.is_some() {
        OAuthMode::External
    } else {
        OAuthMode::Builtin
    };
    let mode = args.oauth_mode.or(file.mode).unwrap_or(default_mode);
    // Built-in and proxy modes: mcpgate is the authorization server its clients see.
    let is_authorization_server = mode != OAuthMode::External;
    if is_authorization_server && configured_issuer.is_some() {
        err(
            errors,
            "issuer",
            "the built-in authorization server's issuer is its public URL: remove MCP_OAUTH_ISSUER (proxy mode: the IdP's issuer is MCP_OAUTH_UPSTREAM_ISSUER), or set MCP_OAUTH_MODE=external to accept an external IdP's tokens".into(),
        );
    }
    let mut builtin = is_authorization_server.then(|| resolve_builtin(args, &file, errors));
    let allow_insecure_http = args
        .oauth_allow_insecure_http
        .or(file.allow_insecure_http)
        .unwrap_or(false);
    let public_url = args
        .oauth_public_url
        .clone()
        .or(file.public_url)
        .or_else(|| local_public_url(listen));
    let issuer = if is_authorization_server {
        // The built-in server is its own issuer: its public URL, exactly.
        public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_owned())
    } else {
        args.oauth_issuer.clone().or(file.issuer.clone())
    };
    let (Some(issuer), Some(public_url)) = (issuer, public_url) else {
        let needs = if is_authorization_server {
            "the built-in authorization server needs MCP_OAUTH_PUBLIC_URL (the URL clients use to reach this server)"
        } else {
            "external mode needs both MCP_OAUTH_ISSUER and MCP_OAUTH_PUBLIC_URL"
        };
        err(errors, "public_url", needs.into());
        return None;
    };
    let urls: &[(&str, &String)] = if is_authorization_server {
        &[("public_url", &public_url)]
    } else {
        &[("issuer", &issuer), ("public_url", &public_url)]
    };
    for &(key, value) in urls {
        if let Err(m) = check_secure_url(value, allow_insecure_http) {
            err(errors, key, m);
        }
    }
    let jwks_uri = args.oauth_jwks_uri.clone().or(file.jwks_uri);
    if let Some(uri) = &jwks_uri
        && let Err(m) = check_secure_url(uri, allow_insecure_http)
    {
        err(errors, "jwks_uri", m);
    }
    let introspection = match (
        args.oauth_introspection_url
            .clone()
            .or(file.introspection_url),
        args.oauth_introspection_client_id
            .clone()
            .or(file.introspection_client_id),
        args.oauth_introspection_client_secret
            .clone()
            .or(file.introspection_client_secret),
    ) {
        (None, None, None) => None,
        (Some(url), Some(client_id), Some(secret)) => {
            if let Err(m) = check_secure_url(&url, allow_insecure_http) {
                err(errors, "introspection_url", m);
            }
            Some(Introspection {
                url,
                client_id,
                client_secret: Secret::new(secret),
            })
        }
        _ => {
            err(
                errors,
                "introspection_url",
                "introspection needs the URL, a client id and a client secret".into(),
            );
            None
        }
    };
    let required_scopes = args
        .oauth_required_scopes
        .clone()
        .or(file.required_scopes)
        .unwrap_or_default();
    let scopes_supported = args
        .oauth_scopes_supported
        .clone()
        .or(file.scopes_supported)
        .unwrap_or_else(|| {
            let mut minimal = required_scopes.clone();
            minimal.push(crate::policy::TOOLS_READ.to_owned());
            minimal.dedup();
            minimal
        });
    let secs = |flag: Option<u64>, file: Option<u64>, default: u64| {
        Duration::from_secs(flag.or(file).unwrap_or(default))
    };
    let leeway = secs(args.oauth_leeway_secs, file.leeway_secs, 60);
    if mode == OAuthMode::Proxy
        && let Some(builtin) = builtin.as_mut()
    {
        builtin.proxy = super::proxy::resolve(
            &args.upstream,
            file.upstream.clone(),
            &public_url,
            leeway,
            allow_insecure_http,
            errors,
        );
    } else if file.upstream.is_some() || args.upstream.oauth_upstream_provider.is_some() {
        err(
            errors,
            "upstream",
            "an upstream IdP is used in proxy mode only: set MCP_OAUTH_MODE=proxy".into(),
        );
    }
    let require_shared_store = args
        .oauth_require_shared_store
        .or(file.require_shared_store)
        .unwrap_or(false);
    if require_shared_store
        && !builtin
            .as_ref()
            .is_some_and(|b| crate::session_store::is_shared_store_url(b.store.expose()))
    {
        err(
            errors,
            "require_shared_store",
            "several instances need one shared store: set MCP_OAUTH_STORE=postgres://… (SQLite, and external mode, keep sessions in each process)".into(),
        );
    }
    Some(OAuthConfig {
        mode,
        issuer,
        public_url: public_url.trim_end_matches('/').to_owned(),
        jwks_uri,
        audiences: args
            .oauth_audiences
            .clone()
            .or(file.audiences)
            .unwrap_or_default(),
        introspection,
        required_scopes,
        scopes_supported,
        leeway,
        allow_plain_jwt: args
            .oauth_allow_plain_jwt
            .or(file.allow_plain_jwt)
            .unwrap_or(false),
        allow_insecure_http,
        scope_errors: args
            .oauth_scope_errors
            .or(file.scope_errors)
            .unwrap_or(ScopeErrors::Http),
        jwks_min_refresh: secs(
            args.oauth_jwks_min_refresh_secs,
            file.jwks_min_refresh_secs,
            30,
        ),
        jwks_max_age: secs(
            args.oauth_jwks_max_age_secs,
            file.jwks_max_age_secs,
            24 * 3600,
        ),
        introspection_cache: secs(
            args.oauth_introspection_cache_secs,
            file.introspection_cache_secs,
            300,
        ),
        introspection_cache_max: args
            .oauth_introspection_cache_max
            .or(file.introspection_cache_max)
            .unwrap_or(10_000),
        resource_name: args
            .oauth_resource_name
            .clone()
            .or(file.resource_name)
            .unwrap_or_else(|| "mcpgate".into()),
        resource_documentation: args
            .oauth_resource_documentation
            .clone()
            .or(file.resource_documentation),
        exposed_claims: file.exposed_claims.clone().unwrap_or_else(|| {
            ["email", "name", "preferred_username"]
                .map(str::to_owned)
                .to_vec()
        }),
        builtin,
        require_shared_store,
    })
}

fn resolve_builtin(
    args: &OAuthArgs,
    file: &OAuthFile,
    errors: &mut Vec<ConfigError>,
) -> BuiltinConfig {
    let secs = |flag: Option<u64>, file: Option<u64>, default: u64| {
        Duration::from_secs(flag.or(file).unwrap_or(default))
    };
    let refresh_grace = secs(args.oauth_refresh_grace_secs, file.refresh_grace_secs, 5);
    let access_token_ttl = secs(
        args.oauth_access_token_ttl_secs,
        file.access_token_ttl_secs,
        3600,
    );
    if access_token_ttl.is_zero() || access_token_ttl > Duration::from_secs(24 * 3600) {
        errors.push(ConfigError::new(
            "oauth.access_token_ttl_secs",
            "between 1 and 86400: access tokens are meant to be short-lived (refresh tokens carry the grant)",
        ));
    }
    if refresh_grace > Duration::from_secs(10) {
        errors.push(ConfigError::new(
            "oauth.refresh_grace_secs",
            "at most 10: a longer window lets a stolen refresh token be replayed unnoticed",
        ));
    }
    let store = args
        .oauth_store
        .clone()
        .or(file.store.clone())
        .unwrap_or_else(|| "sqlite://mcpgate-oauth.db".into());
    if !["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| store.starts_with(p))
    {
        errors.push(ConfigError::new(
            "oauth.store",
            "use sqlite://FILE or postgres://USER@HOST/DATABASE",
        ));
    }
    for (i, client) in file.clients.iter().enumerate() {
        if client.client_id.is_empty() || client.client_id.starts_with("https://") {
            errors.push(ConfigError::new(
                format!("oauth.clients[{i}]"),
                "client_id must be non-empty and not an https URL (those are metadata documents)",
            ));
        }
        if client.client_secret.is_some() && client.client_secret_env.is_some() {
            errors.push(ConfigError::new(
                format!("oauth.clients[{i}]"),
                "set at most one of client_secret and client_secret_env",
            ));
        }
    }
    BuiltinConfig {
        store: Secret::new(store),
        access_token_ttl,
        refresh_token_ttl: secs(
            args.oauth_refresh_token_ttl_secs,
            file.refresh_token_ttl_secs,
            30 * 24 * 3600,
        ),
        code_ttl: secs(args.oauth_code_ttl_secs, file.code_ttl_secs, 60),
        refresh_grace,
        registration: args
            .oauth_registration
            .or(file.registration)
            .unwrap_or(true),
        registration_token: args
            .oauth_registration_token
            .clone()
            .or(file.registration_token.clone())
            .map(Secret::new),
        redirect_uri_allowlist: args
            .oauth_redirect_uri_allowlist
            .clone()
            .or(file.redirect_uri_allowlist.clone())
            .unwrap_or_default(),
        client_metadata_documents: args
            .oauth_client_metadata_documents
            .or(file.client_metadata_documents)
            .unwrap_or(true),
        client_metadata_allow_hosts: args
            .oauth_client_metadata_allow_hosts
            .clone()
            .or(file.client_metadata_allow_hosts.clone())
            .unwrap_or_default(),
        client_metadata_deny_hosts: args
            .oauth_client_metadata_deny_hosts
            .clone()
            .or(file.client_metadata_deny_hosts.clone())
            .unwrap_or_default(),
        clients: file.clients.clone(),
        proxy: None,
    }
}

/// OAuth over plain HTTP is for loopback development only, unless explicitly allowed.
pub(super) fn check_secure_url(value: &str, allow_insecure_http: bool) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&url) => Ok(()),
        "http" => Err(format!(
            "{value} is plain HTTP on a non-loopback host: tokens would travel in clear; use https \
             (or set MCP_OAUTH_ALLOW_INSECURE_HTTP=true for development)"
        )),
        other => Err(format!("{value}: scheme {other} is not http(s)")),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_off_loopback() {
        assert!(check_secure_url("http://127.0.0.1:8080", false).is_ok());
        assert!(check_secure_url("http://localhost", false).is_ok());
        assert!(check_secure_url("http://[::1]:9", false).is_ok());
        assert!(check_secure_url("https://mcp.example.com", false).is_ok());
        let err = check_secure_url("http://mcp.example.com", false).unwrap_err();
        assert!(err.contains("MCP_OAUTH_ALLOW_INSECURE_HTTP"), "{err}");
        assert!(check_secure_url("http://mcp.example.com", true).is_ok());
        assert!(check_secure_url("ftp://x", true).is_err());
    }
}
