//! Assembling the verifier chain from the configuration: static tokens first, then OAuth (JWT
//! via JWKS, then introspection for opaque tokens).

use std::sync::Arc;
use std::time::Duration;

use mcpgate_auth::resource::discovery;
use mcpgate_auth::resource::jwks::{JwksCache, JwksSettings};
use mcpgate_auth::resource::metadata::{ProtectedResourceMetadata, well_known_url};
use mcpgate_auth::resource::{
    AudiencePolicy, Authenticator, ClaimRules, IntrospectionSettings, IntrospectionVerifier,
    JwtVerifier, LocalJwtVerifier, StaticToken, StaticTokenVerifier, Verifier, VerifierChain,
};

use super::auth_server::Builtin;
use crate::config::{Config, OAuthConfig};
use crate::ops::audit::AuditObserver;

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(
        "cannot discover the authorization server {issuer}: {reason} (set MCP_OAUTH_JWKS_URI to skip discovery)"
    )]
    Discovery { issuer: String, reason: String },
    #[error(
        "the authorization server {0} publishes no jwks_uri and no introspection endpoint is configured"
    )]
    NoVerifier(String),
    #[error("cannot build an HTTP client: {0}")]
    Http(String),
}

/// The authenticator for the MCP endpoints, or `None` when authentication is off.
pub async fn authenticator(
    config: &Config,
    builtin: Option<&Builtin>,
) -> Result<Option<Arc<Authenticator>>, AuthSetupError> {
    if !config.auth_required() {
        return Ok(None);
    }
    let mut chain = VerifierChain::default();
    if !config.tokens.is_empty() {
        let tokens = config
            .tokens
            .iter()
            .map(|t| StaticToken::new(t.name.clone(), t.secret.expose(), t.scopes.iter().cloned()))
            .collect();
        chain.push(Arc::new(StaticTokenVerifier::new(tokens)));
    }
    let mut authenticator = None;
    if let Some(oauth) = &config.oauth {
        match builtin {
            Some(builtin) => {
                // Our own tokens come from our own clock: no leeway for skew.
                let mut rules = claim_rules(oauth);
                rules.leeway = Duration::ZERO;
                chain.push(Arc::new(LocalJwtVerifier::new(
                    builtin.keys.clone(),
                    builtin.revocations.clone(),
                    rules,
                )));
            }
            None => {
                for verifier in oauth_verifiers(oauth).await? {
                    chain.push(verifier);
                }
            }
        }
        authenticator = Some(
            Authenticator::new(chain.clone())
                .with_resource_metadata("/mcp", well_known_url(&oauth.mcp_resource()))
                .with_resource_metadata("/sse", well_known_url(&oauth.sse_resource()))
                .with_resource_metadata("/messages", well_known_url(&oauth.sse_resource()))
                .with_challenge_scope(oauth.scopes_supported.join(" ")),
        );
    }
    let authenticator =
        authenticator.unwrap_or_else(|| Authenticator::new(chain).with_realm("mcpgate"));
    Ok(Some(Arc::new(
        authenticator.with_observer(Arc::new(AuditObserver::default())),
    )))
}

fn http_client() -> Result<reqwest::Client, AuthSetupError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| AuthSetupError::Http(e.to_string()))
}

async fn oauth_verifiers(oauth: &OAuthConfig) -> Result<Vec<Arc<dyn Verifier>>, AuthSetupError> {
    let http = http_client()?;
    let rules = claim_rules(oauth);
    let jwks_uri = match &oauth.jwks_uri {
        Some(uri) => Some(uri.clone()),
        None => discover_with_retries(&http, &oauth.issuer).await?.jwks_uri,
    };
    let mut verifiers: Vec<Arc<dyn Verifier>> = Vec::new();
    if let Some(uri) = jwks_uri {
        let settings = JwksSettings {
            min_refresh_interval: oauth.jwks_min_refresh,
            max_age: oauth.jwks_max_age,
            ..JwksSettings::default()
        };
        let jwks = Arc::new(JwksCache::new(uri, http.clone(), settings));
        // Fetch the keys now, so the first request does not wait for them. A failure is not
        // fatal: the IdP may come up later, and verification retries (503 until it does).
        if let Err(e) = jwks.keys_for(None).await {
            tracing::warn!(error = %e, "the JWKS could not be fetched at start-up");
        }
        verifiers.push(Arc::new(JwtVerifier::new(
            jwks,
            rules.clone(),
            oauth.allow_plain_jwt,
        )));
    }
    if let Some(introspection) = &oauth.introspection {
        let settings = IntrospectionSettings {
            endpoint: introspection.url.clone(),
            client_id: introspection.client_id.clone(),
            client_secret: introspection.client_secret.expose().to_owned(),
            cache_ceiling: oauth.introspection_cache,
            cache_capacity: oauth.introspection_cache_max,
        };
        verifiers.push(Arc::new(IntrospectionVerifier::new(http, settings, rules)));
    }
    if verifiers.is_empty() {
        return Err(AuthSetupError::NoVerifier(oauth.issuer.clone()));
    }
    Ok(verifiers)
}

fn claim_rules(oauth: &OAuthConfig) -> ClaimRules {
    ClaimRules {
        issuer: oauth.issuer.clone(),
        audiences: AudiencePolicy::new(
            [oauth.mcp_resource(), oauth.sse_resource()],
            oauth.audiences.iter().cloned(),
        ),
        leeway: oauth.leeway,
        exposed_claims: oauth.exposed_claims.clone(),
    }
}

/// The IdP may start after us (compose, tests): retry discovery for a little while.
async fn discover_with_retries(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<discovery::AuthorizationServerMetadata, AuthSetupError> {
    let mut delay = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        match discovery::discover(http, issuer).await {
            Ok(metadata) => return Ok(metadata),
            Err(mcpgate_auth::resource::VerifyError::Unavailable(reason)) if attempts < 6 => {
                tracing::warn!(%issuer, %reason, "authorization server metadata not reachable yet; retrying");
                attempts += 1;
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                return Err(AuthSetupError::Discovery {
                    issuer: issuer.to_owned(),
                    reason: e.to_string(),
                });
            }
        }
    }
}

/// The protected-resource metadata documents: `/mcp` (also at the root) and `/sse`.
pub fn resource_metadata(oauth: &OAuthConfig) -> Vec<ProtectedResourceMetadata> {
    [oauth.mcp_resource(), oauth.sse_resource()]
        .into_iter()
        .map(|resource| {
            let mut doc = ProtectedResourceMetadata::new(
                resource,
                oauth.issuer.clone(),
                &oauth.scopes_supported,
            );
            doc.resource_name = Some(oauth.resource_name.clone());
            doc.resource_documentation = oauth.resource_documentation.clone();
            doc
        })
        .collect()
}
