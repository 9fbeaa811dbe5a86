//! Proxy mode's upstream IdP: `[oauth.upstream]` in the file, `MCP_OAUTH_UPSTREAM_*` and the
//! access rules (`MCP_OAUTH_ALLOWED_DOMAINS`, …) in the environment.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use clap::builder::BoolishValueParser;
use mcpgate_auth::upstream::{AccessRules, Provider, UpstreamSettings};

use super::{ConfigError, Secret};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct UpstreamArgs {
    /// Proxy mode: google, github, entra, okta, auth0, keycloak or oidc.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_PROVIDER")]
    pub oauth_upstream_provider: Option<String>,
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_ISSUER")]
    pub oauth_upstream_issuer: Option<String>,
    /// Entra: the tenant id or domain (`organizations`, `common` for several tenants).
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_TENANT")]
    pub oauth_upstream_tenant: Option<String>,
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_CLIENT_ID")]
    pub oauth_upstream_client_id: Option<String>,
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_CLIENT_SECRET", hide_env_values = true)]
    pub oauth_upstream_client_secret: Option<String>,
    /// Space- or comma-separated.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_SCOPES")]
    pub oauth_upstream_scopes: Option<String>,
    /// Sent as `audience` on the authorization request (Auth0).
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_AUDIENCE")]
    pub oauth_upstream_audience: Option<String>,
    /// Extra authorization-request parameters, `k=v&k2=v2`.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_AUTHORIZE_PARAMS")]
    pub oauth_upstream_authorize_params: Option<String>,
    /// Extra token-request parameters, `k=v&k2=v2`.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_TOKEN_PARAMS")]
    pub oauth_upstream_token_params: Option<String>,
    #[arg(long, env = "MCP_OAUTH_ALLOWED_DOMAINS", value_delimiter = ',')]
    pub oauth_allowed_domains: Option<Vec<String>>,
    #[arg(long, env = "MCP_OAUTH_ALLOWED_USERS", value_delimiter = ',')]
    pub oauth_allowed_users: Option<Vec<String>>,
    #[arg(long, env = "MCP_OAUTH_REQUIRED_GROUPS", value_delimiter = ',')]
    pub oauth_required_groups: Option<Vec<String>>,
    #[arg(long, env = "MCP_OAUTH_GROUPS_CLAIM")]
    pub oauth_groups_claim: Option<String>,
    /// Base64 of 32 random bytes: the AES-256-GCM key of stored upstream tokens.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_TOKEN_KEY", hide_env_values = true)]
    pub oauth_upstream_token_key: Option<String>,
    /// Send the user's upstream access token to the HTTP gateway upstream.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_PASS_TOKEN", value_parser = BoolishValueParser::new())]
    pub oauth_upstream_pass_token: Option<bool>,
}

/// `[oauth.upstream]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub provider: Option<String>,
    pub issuer: Option<String>,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub audience: Option<String>,
    pub authorize_params: Option<BTreeMap<String, String>>,
    pub token_params: Option<BTreeMap<String, String>>,
    pub allowed_domains: Option<Vec<String>>,
    pub allowed_users: Option<Vec<String>>,
    pub required_groups: Option<Vec<String>>,
    pub groups_claim: Option<String>,
    pub token_key: Option<String>,
    pub pass_token_to_gateway: Option<bool>,
}

/// The resolved proxy-mode settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The client secret inside is redacted by `config check` (see render.rs).
    pub settings: UpstreamSettings,
    pub token_key: Option<Secret>,
    pub pass_token_to_gateway: bool,
}

impl ProxyConfig {
    /// The decoded sealing key (validated at resolution).
    pub fn token_key_bytes(&self) -> Option<Vec<u8>> {
        self.token_key.as_ref().and_then(|k| decode_key(k.expose()))
    }
}

fn decode_key(value: &str) -> Option<Vec<u8>> {
    let value = value.trim();
    STANDARD
        .decode(value)
        .or_else(|_| URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')))
        .ok()
        .filter(|k| k.len() == 32)
}

fn params(raw: Option<&str>, file: Option<&BTreeMap<String, String>>) -> Vec<(String, String)> {
    match raw {
        Some(raw) => url::form_urlencoded::parse(raw.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        None => file
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    }
}

/// Authorization-request parameters mcpgate sets itself; configuration may not override them.
const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "scope",
    "code",
    "code_verifier",
    "grant_type",
    "client_secret",
];

pub fn resolve(
    args: &UpstreamArgs,
    file: Option<UpstreamFile>,
    public_url: &str,
    leeway: std::time::Duration,
    allow_insecure_http: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<ProxyConfig> {
    let file = file.unwrap_or_default();
    let err = |errors: &mut Vec<ConfigError>, key: &str, m: String| {
        errors.push(ConfigError::new(format!("oauth.upstream.{key}"), m))
    };
    let Some(provider_name) = args
        .oauth_upstream_provider
        .clone()
        .or(file.provider.clone())
    else {
        err(
            errors,
            "provider",
            "proxy mode needs the upstream IdP: MCP_OAUTH_UPSTREAM_PROVIDER = google, github, entra, okta, auth0, keycloak or oidc".into(),
        );
        return None;
    };
    let Some(provider) = Provider::parse(&provider_name) else {
        err(
            errors,
            "provider",
            format!(
                "{provider_name:?} is not one of google, github, entra, okta, auth0, keycloak, oidc"
            ),
        );
        return None;
    };
    let configured_issuer = args.oauth_upstream_issuer.clone().or(file.issuer.clone());
    if let Some(issuer) = &configured_issuer
        && let Err(m) = super::oauth::check_secure_url(issuer, allow_insecure_http)
    {
        err(errors, "issuer", m);
    }
    let tenant = args.oauth_upstream_tenant.clone().or(file.tenant.clone());
    let issuer = match provider.issuer(configured_issuer.as_deref(), tenant.as_deref()) {
        Ok(issuer) => issuer,
        Err(e) => {
            err(errors, "issuer", e.to_string());
            return None;
        }
    };
    let client_id = args.oauth_upstream_client_id.clone().or(file.client_id);
    let client_secret = args
        .oauth_upstream_client_secret
        .clone()
        .or(file.client_secret);
    let (Some(client_id), Some(client_secret)) = (client_id, client_secret) else {
        err(
            errors,
            "client_id",
            "proxy mode needs the app registered at the IdP: MCP_OAUTH_UPSTREAM_CLIENT_ID and MCP_OAUTH_UPSTREAM_CLIENT_SECRET".into(),
        );
        return None;
    };
    let access = AccessRules {
        allowed_domains: args
            .oauth_allowed_domains
            .clone()
            .or(file.allowed_domains)
            .unwrap_or_default(),
        allowed_users: args
            .oauth_allowed_users
            .clone()
            .or(file.allowed_users)
            .unwrap_or_default(),
        required_groups: args
            .oauth_required_groups
            .clone()
            .or(file.required_groups)
            .unwrap_or_default(),
    };
    let mut scopes: Vec<String> = match args.oauth_upstream_scopes.as_deref() {
        Some(raw) => raw
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None => file.scopes.unwrap_or_else(|| provider.default_scopes()),
    };
    if provider == Provider::Github
        && !access.required_groups.is_empty()
        && !scopes.iter().any(|s| s == "read:org")
    {
        // Organisations are GitHub's groups; listing them needs this scope.
        scopes.push("read:org".into());
    }
    let mut authorize_params = params(
        args.oauth_upstream_authorize_params.as_deref(),
        file.authorize_params.as_ref(),
    );
    if let Some(audience) = args.oauth_upstream_audience.clone().or(file.audience) {
        authorize_params.push(("audience".into(), audience));
    }
    let token_params = params(
        args.oauth_upstream_token_params.as_deref(),
        file.token_params.as_ref(),
    );
    for (name, _) in authorize_params.iter().chain(&token_params) {
        if RESERVED_PARAMS.contains(&name.as_str()) {
            err(
                errors,
                "authorize_params",
                format!("{name} is set by mcpgate itself and cannot be configured"),
            );
        }
        if provider == Provider::Entra && name == "resource" {
            err(
                errors,
                "authorize_params",
                "Entra's v2 endpoints take scopes, not `resource`: remove it".into(),
            );
        }
    }
    let token_key = args
        .oauth_upstream_token_key
        .clone()
        .or(file.token_key)
        .map(Secret::new);
    if let Some(key) = &token_key
        && decode_key(key.expose()).is_none()
    {
        err(
            errors,
            "token_key",
            "must be base64 of 32 random bytes (openssl rand -base64 32)".into(),
        );
    }
    let pass_token_to_gateway = args
        .oauth_upstream_pass_token
        .or(file.pass_token_to_gateway)
        .unwrap_or(false);
    if pass_token_to_gateway && token_key.is_none() {
        err(
            errors,
            "pass_token_to_gateway",
            "needs MCP_OAUTH_UPSTREAM_TOKEN_KEY: upstream tokens are kept only sealed".into(),
        );
    }
    let group_claims = match args.oauth_groups_claim.clone().or(file.groups_claim) {
        Some(claim) => vec![claim],
        None => provider.default_group_claims(),
    };
    Some(ProxyConfig {
        settings: UpstreamSettings {
            provider,
            issuer,
            client_id,
            client_secret,
            scopes,
            authorize_params,
            token_params,
            access,
            group_claims,
            callback_url: format!("{}/oauth/callback", public_url.trim_end_matches('/')),
            leeway,
        },
        token_key,
        pass_token_to_gateway,
    })
}

/// `pass_token_to_gateway` needs a gateway whose requests can carry a token: an HTTP upstream,
/// reached from an HTTP transport where users sign in.
pub(super) fn check_gateway(config: &super::Config, errors: &mut Vec<ConfigError>) {
    let proxy = config
        .oauth
        .as_ref()
        .and_then(|oauth| oauth.builtin.as_ref())
        .and_then(|builtin| builtin.proxy.as_ref());
    if !proxy.is_some_and(|proxy| proxy.pass_token_to_gateway) {
        return;
    }
    let key = "oauth.upstream.pass_token_to_gateway";
    match &config.upstream {
        Some(super::Upstream::Url(_)) => {}
        Some(super::Upstream::Command(_)) => errors.push(ConfigError::new(
            key,
            "a stdio upstream (upstream_command) has no HTTP request to carry the user's token: use upstream_url or turn the option off",
        )),
        None => errors.push(ConfigError::new(
            key,
            "there is no gateway upstream to pass the token to: set upstream_url (MCP_UPSTREAM_URL) or turn the option off",
        )),
    }
    if config.transport == super::Transport::Stdio {
        errors.push(ConfigError::new(
            key,
            "needs an HTTP transport (MCP_TRANSPORT=streamable-http or sse): over stdio nobody signs in",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_with(args: UpstreamArgs) -> (Option<ProxyConfig>, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let config = resolve(
            &args,
            None,
            "https://mcp.example.com/",
            std::time::Duration::from_secs(60),
            false,
            &mut errors,
        );
        (config, errors)
    }

    fn google() -> UpstreamArgs {
        UpstreamArgs {
            oauth_upstream_provider: Some("google".into()),
            oauth_upstream_client_id: Some("cid".into()),
            oauth_upstream_client_secret: Some("csecret".into()),
            ..Default::default()
        }
    }

    #[test]
    fn presets_resolve_with_defaults() {
        let (config, errors) = resolve_with(google());
        assert!(errors.is_empty(), "{errors:?}");
        let config = config.expect("config");
        assert_eq!(config.settings.issuer, "https://accounts.google.com");
        assert_eq!(config.settings.scopes, ["openid", "email", "profile"]);
        assert_eq!(
            config.settings.callback_url,
            "https://mcp.example.com/oauth/callback"
        );
        assert!(config.token_key.is_none());
    }

    #[test]
    fn bad_settings_are_explained() {
        let (_, errors) = resolve_with(UpstreamArgs {
            oauth_upstream_provider: Some("saml".into()),
            ..google()
        });
        assert!(errors[0].to_string().contains("not one of"), "{errors:?}");
        let (_, errors) = resolve_with(UpstreamArgs {
            oauth_upstream_provider: Some("okta".into()),
            ..google()
        });
        assert!(errors[0].to_string().contains("MCP_OAUTH_UPSTREAM_ISSUER"));
        let (_, errors) = resolve_with(UpstreamArgs {
            oauth_upstream_token_key: Some("c2hvcnQ=".into()),
            oauth_upstream_authorize_params: Some("state=x".into()),
            ..google()
        });
        assert_eq!(errors.len(), 2, "{errors:?}");
        let (_, errors) = resolve_with(UpstreamArgs {
            oauth_upstream_pass_token: Some(true),
            ..google()
        });
        assert!(errors[0].to_string().contains("TOKEN_KEY"));
        let (_, errors) = resolve_with(UpstreamArgs {
            oauth_upstream_provider: Some("entra".into()),
            oauth_upstream_tenant: Some("contoso.onmicrosoft.com".into()),
            oauth_upstream_authorize_params: Some("resource=https://x".into()),
            ..google()
        });
        assert!(errors[0].to_string().contains("resource"), "{errors:?}");
    }

    #[test]
    fn github_groups_need_read_org_and_auth0_gets_its_audience() {
        let (config, _) = resolve_with(UpstreamArgs {
            oauth_upstream_provider: Some("github".into()),
            oauth_required_groups: Some(vec!["acme".into()]),
            ..google()
        });
        let config = config.expect("github");
        assert_eq!(
            config.settings.scopes,
            ["read:user", "user:email", "read:org"]
        );
        let (config, errors) = resolve_with(UpstreamArgs {
            oauth_upstream_provider: Some("auth0".into()),
            oauth_upstream_issuer: Some("https://t.eu.auth0.com/".into()),
            oauth_upstream_audience: Some("https://api.example.com".into()),
            oauth_upstream_token_key: Some(STANDARD.encode([9u8; 32])),
            ..google()
        });
        assert!(errors.is_empty(), "{errors:?}");
        let config = config.expect("auth0");
        assert_eq!(
            config.settings.authorize_params,
            [("audience".to_owned(), "https://api.example.com".to_owned())]
        );
        assert_eq!(config.token_key_bytes().map(|k| k.len()), Some(32));
    }
}
