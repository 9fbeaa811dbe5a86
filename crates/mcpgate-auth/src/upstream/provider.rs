//! Provider presets and endpoint discovery.
//!
//! Every OpenID Connect provider is configured by its issuer and discovered
//! (`{issuer}/.well-known/openid-configuration`); presets only fill in the issuer and defaults.
//! GitHub is plain OAuth 2.0: fixed endpoints and its user API instead of an ID token.

use std::sync::Arc;

use crate::resource::jwks::{JwksCache, JwksSettings};

use super::UpstreamError;

/// Largest discovery document accepted.
const MAX_DISCOVERY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Google,
    Github,
    Entra,
    Okta,
    Auth0,
    Keycloak,
    /// Any OpenID Connect provider, by issuer.
    Oidc,
}

impl Provider {
    pub const ALL: [Provider; 7] = [
        Provider::Google,
        Provider::Github,
        Provider::Entra,
        Provider::Okta,
        Provider::Auth0,
        Provider::Keycloak,
        Provider::Oidc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Github => "github",
            Provider::Entra => "entra",
            Provider::Okta => "okta",
            Provider::Auth0 => "auth0",
            Provider::Keycloak => "keycloak",
            Provider::Oidc => "oidc",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }

    /// What the sign-in page calls the provider.
    pub fn display_name(self) -> &'static str {
        match self {
            Provider::Google => "Google",
            Provider::Github => "GitHub",
            Provider::Entra => "Microsoft",
            Provider::Okta => "Okta",
            Provider::Auth0 => "Auth0",
            Provider::Keycloak => "Keycloak",
            Provider::Oidc => "your identity provider",
        }
    }

    pub fn is_oidc(self) -> bool {
        self != Provider::Github
    }

    /// Does the preset need `issuer` from the configuration?
    pub fn needs_issuer(self) -> bool {
        matches!(
            self,
            Provider::Okta | Provider::Auth0 | Provider::Keycloak | Provider::Oidc
        )
    }

    pub fn default_scopes(self) -> Vec<String> {
        let scopes: &[&str] = match self {
            Provider::Github => &["read:user", "user:email"],
            _ => &["openid", "email", "profile"],
        };
        scopes.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Claims read as groups, in order, when the configuration names none.
    pub fn default_group_claims(self) -> Vec<String> {
        let claims: &[&str] = match self {
            Provider::Entra => &["groups", "roles"],
            Provider::Keycloak => &["groups", "realm_access.roles"],
            _ => &["groups"],
        };
        claims.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The issuer a preset implies, or the configured one.
    pub fn issuer(
        self,
        configured: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<String, UpstreamError> {
        let config = |m: &str| UpstreamError::Config(m.to_owned());
        match self {
            Provider::Google => Ok(configured
                .unwrap_or("https://accounts.google.com")
                .to_owned()),
            Provider::Github => Ok(configured
                .unwrap_or("https://github.com")
                .trim_end_matches('/')
                .to_owned()),
            Provider::Entra => {
                if let Some(issuer) = configured {
                    return Ok(issuer.to_owned());
                }
                let tenant = tenant
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| config("entra needs the tenant (MCP_OAUTH_UPSTREAM_TENANT)"))?;
                if !tenant
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
                {
                    return Err(config("the entra tenant is an id or a domain name"));
                }
                Ok(format!("https://login.microsoftonline.com/{tenant}/v2.0"))
            }
            _ => configured.map(str::to_owned).ok_or_else(|| {
                config("this provider needs its issuer URL (MCP_OAUTH_UPSTREAM_ISSUER)")
            }),
        }
    }
}

/// How the token endpoint wants the client to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

/// How the ID token's `iss` is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerCheck {
    Exact(String),
    /// Entra's multi-tenant endpoints publish `…/{tenantid}/v2.0`: the token's `tid` fills it in.
    TenantTemplate(String),
}

impl IssuerCheck {
    pub fn accepts(&self, iss: &str, tid: Option<&str>) -> bool {
        match self {
            IssuerCheck::Exact(expected) => iss == expected,
            IssuerCheck::TenantTemplate(template) => tid
                .filter(|t| !t.is_empty() && !t.contains('/'))
                .is_some_and(|tid| template.replace("{tenantid}", tid) == iss),
        }
    }
}

/// The upstream's endpoints, once resolved.
#[derive(Debug)]
pub struct Endpoints {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: Option<String>,
    pub client_auth: ClientAuth,
    pub oidc: Option<OidcEndpoints>,
    /// GitHub's REST API base (`https://api.github.com`).
    pub github_api: Option<String>,
}

pub struct OidcEndpoints {
    pub issuer: IssuerCheck,
    pub jwks: Arc<JwksCache>,
}

impl std::fmt::Debug for OidcEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcEndpoints")
            .field("issuer", &self.issuer)
            .field("jwks", &self.jwks.uri())
            .finish()
    }
}

#[derive(Debug, serde::Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
}

/// The discovery URL of an issuer (OpenID Connect Discovery §4).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

pub async fn resolve(
    provider: Provider,
    issuer: &str,
    http: &reqwest::Client,
) -> Result<Endpoints, UpstreamError> {
    if provider == Provider::Github {
        let api = if issuer == "https://github.com" {
            "https://api.github.com".to_owned()
        } else {
            // GitHub Enterprise Server serves its API under /api/v3.
            format!("{issuer}/api/v3")
        };
        return Ok(Endpoints {
            authorization_endpoint: format!("{issuer}/login/oauth/authorize"),
            token_endpoint: format!("{issuer}/login/oauth/access_token"),
            userinfo_endpoint: None,
            client_auth: ClientAuth::Post,
            oidc: None,
            github_api: Some(api),
        });
    }
    let url = discovery_url(issuer);
    let unavailable = |m: String| UpstreamError::Unavailable(format!("discovery at {url}: {m}"));
    let response = http
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| unavailable(e.without_url().to_string()))?;
    if !response.status().is_success() {
        return Err(unavailable(format!("HTTP {}", response.status())));
    }
    let body = super::exchange::read_capped(response, MAX_DISCOVERY_BYTES)
        .await
        .map_err(unavailable)?;
    let document: Discovery = serde_json::from_slice(&body)
        .map_err(|e| UpstreamError::Config(format!("discovery at {url}: {e}")))?;
    let issuer_check = if provider == Provider::Entra && document.issuer.contains("{tenantid}") {
        IssuerCheck::TenantTemplate(document.issuer.clone())
    } else if document.issuer == issuer {
        IssuerCheck::Exact(document.issuer.clone())
    } else {
        return Err(UpstreamError::Config(format!(
            "the discovery document at {url} names issuer {:?}, not {issuer:?}",
            document.issuer
        )));
    };
    if !document.code_challenge_methods_supported.is_empty()
        && !document
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
    {
        return Err(UpstreamError::Config(format!(
            "{issuer} does not support PKCE with S256"
        )));
    }
    let methods = &document.token_endpoint_auth_methods_supported;
    // The discovery default is client_secret_basic (OpenID Connect Discovery §3).
    let client_auth = if methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic") {
        ClientAuth::Basic
    } else if methods.iter().any(|m| m == "client_secret_post") {
        ClientAuth::Post
    } else {
        return Err(UpstreamError::Config(format!(
            "{issuer} supports neither client_secret_basic nor client_secret_post"
        )));
    };
    let jwks = JwksCache::new(document.jwks_uri, http.clone(), JwksSettings::default());
    Ok(Endpoints {
        authorization_endpoint: document.authorization_endpoint,
        token_endpoint: document.token_endpoint,
        userinfo_endpoint: document.userinfo_endpoint,
        client_auth,
        oidc: Some(OidcEndpoints {
            issuer: issuer_check,
            jwks: Arc::new(jwks),
        }),
        github_api: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_fill_in_issuers() {
        assert_eq!(
            Provider::Google.issuer(None, None).expect("google"),
            "https://accounts.google.com"
        );
        assert_eq!(
            Provider::Entra
                .issuer(None, Some("contoso.onmicrosoft.com"))
                .expect("entra"),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0"
        );
        assert!(Provider::Entra.issuer(None, None).is_err());
        assert!(Provider::Entra.issuer(None, Some("a/b")).is_err());
        assert!(Provider::Okta.issuer(None, None).is_err());
        assert_eq!(
            Provider::Auth0
                .issuer(Some("https://t.eu.auth0.com/"), None)
                .expect("auth0"),
            "https://t.eu.auth0.com/"
        );
        assert_eq!(Provider::parse("GitHub"), Some(Provider::Github));
        assert_eq!(Provider::parse("saml"), None);
    }

    #[test]
    fn tenant_templates_need_the_tokens_tid() {
        let check =
            IssuerCheck::TenantTemplate("https://login.microsoftonline.com/{tenantid}/v2.0".into());
        assert!(check.accepts("https://login.microsoftonline.com/72f9/v2.0", Some("72f9")));
        assert!(!check.accepts("https://login.microsoftonline.com/72f9/v2.0", Some("other")));
        assert!(!check.accepts("https://login.microsoftonline.com/72f9/v2.0", None));
        assert!(!check.accepts("https://evil.example/72f9/v2.0", Some("72f9")));
        let exact = IssuerCheck::Exact("https://idp.example".into());
        assert!(exact.accepts("https://idp.example", None));
        assert!(!exact.accepts("https://idp.example/", None));
    }

    #[test]
    fn discovery_urls_drop_a_trailing_slash() {
        assert_eq!(
            discovery_url("https://t.auth0.com/"),
            "https://t.auth0.com/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://kc.example/realms/r"),
            "https://kc.example/realms/r/.well-known/openid-configuration"
        );
    }
}
