//! Federation to an upstream OpenID Connect or OAuth identity provider (proxy mode).
//!
//! mcpgate stays the authorization server its MCP clients see; users prove who they are at the
//! upstream IdP with the code flow (PKCE, `state`, `nonce`), through one fixed callback. What
//! comes back is an [`Identity`], checked against the [`access::AccessRules`]. The upstream's
//! tokens never reach MCP clients: they are sealed ([`cipher`]) and kept per user, or dropped.
//!
//! Modules: [`provider`] (presets, discovery), [`exchange`] (token endpoint), [`id_token`]
//! (OIDC validation), [`github`] (GitHub's user API), [`access`], [`cipher`].

pub mod access;
pub mod cipher;
pub mod exchange;
pub mod github;
pub mod id_token;
pub mod provider;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

pub use access::{AccessRules, Refusal};
pub use cipher::{CipherError, TokenCipher};
pub use provider::{Endpoints, Provider};

use crate::resource::claims::now_secs;
use crate::store::{Store, StoreError, Timestamp};
use exchange::{ClientCredentials, TokenResponse};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The IdP could not be reached or answered with a server error: try again later.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The IdP refused a grant (a bad or spent code, a revoked refresh token…).
    #[error("the identity provider refused: {0}")]
    Refused(String),
    /// What came back does not prove an identity (bad signature, nonce, audience…).
    #[error("the sign-in could not be verified: {0}")]
    InvalidIdentity(String),
    #[error("the identity provider is misconfigured: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cipher(#[from] CipherError),
}

/// Proxy-mode settings.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub provider: Provider,
    /// The issuer (OIDC) or web base (GitHub); presets fill it in.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    /// Extra parameters of the authorization request (Auth0's `audience` goes here).
    pub authorize_params: Vec<(String, String)>,
    pub token_params: Vec<(String, String)>,
    pub access: AccessRules,
    /// Claims (dotted paths) read as groups.
    pub group_claims: Vec<String>,
    /// `{public_url}/oauth/callback`.
    pub callback_url: String,
    /// Clock skew tolerated on ID tokens.
    pub leeway: Duration,
}

/// Who signed in upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// `preferred_username`, or the GitHub login.
    pub username: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn verified_email(&self) -> Option<&str> {
        self.email.as_deref().filter(|_| self.email_verified)
    }

    /// The name mcpgate shows and puts in `preferred_username`.
    pub fn label(&self) -> String {
        self.verified_email()
            .or(self.username.as_deref())
            .unwrap_or(&self.subject)
            .to_owned()
    }

    /// mcpgate's user id for this identity: stable, and the same on every instance.
    pub fn user_id(&self) -> String {
        let digest = Sha256::digest(format!("{}\n{}", self.issuer, self.subject).as_bytes());
        format!("idp-{}", URL_SAFE_NO_PAD.encode(&digest[..18]))
    }

    /// The identity in OIDC claims (an ID token's, or the userinfo response's).
    pub fn from_claims(issuer: &str, claims: &Map<String, Value>, group_claims: &[String]) -> Self {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        // Some IdPs (Cognito, older Okta) send the boolean as a string.
        let email_verified = match claims.get("email_verified") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        let mut groups = Vec::new();
        for path in group_claims {
            collect_strings(lookup(claims, path), &mut groups);
        }
        groups.dedup();
        Identity {
            issuer: issuer.to_owned(),
            subject: text("sub").unwrap_or_default(),
            email: text("email"),
            email_verified,
            username: text("preferred_username"),
            name: text("name"),
            groups,
        }
    }
}

/// A dotted path into nested claims (`realm_access.roles`).
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn collect_strings(value: Option<&Value>, into: &mut Vec<String>) {
    match value {
        Some(Value::String(s)) => into.push(s.clone()),
        Some(Value::Array(items)) => {
            into.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        _ => {}
    }
}

/// A user's upstream tokens, as sealed in the store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UpstreamTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: Option<Timestamp>,
}

/// The secrets of one sign-in's upstream leg.
pub struct LoginSecrets {
    pub state: String,
    pub nonce: String,
    pub code_verifier: String,
}

impl LoginSecrets {
    pub fn generate() -> Self {
        use crate::server::secrets::random_token;
        Self {
            state: random_token(),
            nonce: random_token(),
            code_verifier: random_token(),
        }
    }
}

/// The upstream IdP as one object: settings, endpoints (discovered on first use), the sealing key.
pub struct Federation {
    settings: UpstreamSettings,
    http: reqwest::Client,
    endpoints: OnceCell<Arc<Endpoints>>,
    cipher: Option<TokenCipher>,
}

impl Federation {
    pub fn new(
        settings: UpstreamSettings,
        http: reqwest::Client,
        token_key: Option<&[u8]>,
    ) -> Result<Self, UpstreamError> {
        let cipher = token_key.map(TokenCipher::new).transpose()?;
        Ok(Self {
            settings,
            http,
            endpoints: OnceCell::new(),
            cipher,
        })
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    pub fn display_name(&self) -> &'static str {
        self.settings.provider.display_name()
    }

    /// Does it keep upstream tokens (a sealing key is configured)?
    pub fn keeps_tokens(&self) -> bool {
        self.cipher.is_some()
    }

    /// The endpoints, discovered on first use; a failed discovery is retried by the next call.
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, UpstreamError> {
        self.endpoints
            .get_or_try_init(|| async {
                provider::resolve(self.settings.provider, &self.settings.issuer, &self.http)
                    .await
                    .map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Where to send the browser to sign in upstream.
    pub async fn authorization_url(
        &self,
        secrets: &LoginSecrets,
        force_login: bool,
    ) -> Result<String, UpstreamError> {
        let endpoints = self.endpoints().await?;
        let mut url = url::Url::parse(&endpoints.authorization_endpoint)
            .map_err(|e| UpstreamError::Config(format!("authorization endpoint: {e}")))?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(secrets.code_verifier.as_bytes()));
        let mut scopes = self.settings.scopes.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.settings.client_id)
                .append_pair("redirect_uri", &self.settings.callback_url)
                .append_pair("state", &secrets.state)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if self.settings.provider.is_oidc() {
                query.append_pair("nonce", &secrets.nonce);
                if !scopes.iter().any(|s| s == "openid") {
                    scopes.insert(0, "openid".into());
                }
            }
            query.append_pair("scope", &scopes.join(" "));
            if force_login {
                query.append_pair("prompt", "login");
            }
            for (name, value) in &self.settings.authorize_params {
                query.append_pair(name, value);
            }
        }
        Ok(url.into())
    }

    /// RFC 9207: an `iss` on the callback must be the configured IdP's (a mix-up defence; Entra's
    /// multi-tenant issuers are checked on the ID token instead, where the tenant is known).
    pub async fn accepts_callback_issuer(&self, iss: &str) -> Result<bool, UpstreamError> {
        let endpoints = self.endpoints().await?;
        Ok(match endpoints.oidc.as_ref().map(|o| &o.issuer) {
            Some(provider::IssuerCheck::Exact(expected)) => iss == expected,
            _ => true,
        })
    }

    /// Exchanges the callback's code and proves who signed in.
    pub async fn complete(
        &self,
        code: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<(Identity, UpstreamTokens), UpstreamError> {
        let endpoints = self.endpoints().await?;
        let response = exchange::token_request(
            &self.http,
            &endpoints,
            &self.credentials(),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.settings.callback_url),
                ("code_verifier", code_verifier),
            ],
            &self.settings.token_params,
        )
        .await?;
        // The clock is read once the provider has answered: its `iat` is the moment it issued the
        // ID token, which can be a second past the moment the callback arrived. With no leeway,
        // a clock read before the exchange would refuse a fresh token as issued in the future.
        let now = now_secs();
        let tokens = tokens_from(&response, None, now);
        let identity = match (&endpoints.oidc, &endpoints.github_api) {
            (Some(oidc), _) => {
                let id_token = response.id_token.as_deref().ok_or_else(|| {
                    UpstreamError::InvalidIdentity("the token response has no id_token".into())
                })?;
                let claims = id_token::verify(
                    id_token,
                    &oidc.jwks,
                    &id_token::Expectations {
                        issuer: &oidc.issuer,
                        client_id: &self.settings.client_id,
                        nonce,
                        now,
                        leeway: self.settings.leeway,
                    },
                )
                .await?;
                let iss = claims
                    .get("iss")
                    .and_then(Value::as_str)
                    .unwrap_or(&self.settings.issuer)
                    .to_owned();
                let mut identity =
                    Identity::from_claims(&iss, &claims, &self.settings.group_claims);
                if identity.email.is_none()
                    && let Some(userinfo) = &endpoints.userinfo_endpoint
                {
                    self.merge_userinfo(&mut identity, userinfo, &tokens.access_token)
                        .await?;
                }
                identity
            }
            (None, Some(api)) => {
                github::identity(
                    &self.http,
                    &self.settings.issuer,
                    api,
                    &tokens.access_token,
                    !self.settings.access.required_groups.is_empty(),
                )
                .await?
            }
            (None, None) => {
                return Err(UpstreamError::Config(
                    "the provider has neither ID tokens nor a user API".into(),
                ));
            }
        };
        Ok((identity, tokens))
    }

    /// Claims the ID token left out (OIDC Core §5.3), for the same subject only (§5.3.2).
    async fn merge_userinfo(
        &self,
        identity: &mut Identity,
        endpoint: &str,
        access_token: &str,
    ) -> Result<(), UpstreamError> {
        let response = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("userinfo: {}", e.without_url())))?;
        if !response.status().is_success() {
            // The ID token stands; only the extra claims are missing.
            tracing::warn!(status = %response.status(), "the upstream userinfo endpoint refused");
            return Ok(());
        }
        let body = exchange::read_capped(response, exchange::MAX_RESPONSE_BYTES)
            .await
            .map_err(|m| UpstreamError::Unavailable(format!("userinfo: {m}")))?;
        let claims: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
            UpstreamError::InvalidIdentity(format!("userinfo is not a JSON object: {e}"))
        })?;
        let info = Identity::from_claims(&identity.issuer, &claims, &self.settings.group_claims);
        if info.subject != identity.subject {
            return Err(UpstreamError::InvalidIdentity(
                "userinfo describes another subject than the ID token".into(),
            ));
        }
        identity.email = info.email;
        identity.email_verified = info.email_verified;
        identity.username = identity.username.take().or(info.username);
        identity.name = identity.name.take().or(info.name);
        if identity.groups.is_empty() {
            identity.groups = info.groups;
        }
        Ok(())
    }

    fn credentials(&self) -> ClientCredentials<'_> {
        ClientCredentials {
            client_id: &self.settings.client_id,
            client_secret: &self.settings.client_secret,
        }
    }

    /// Seals and stores a user's upstream tokens, if a key is configured.
    pub async fn keep_tokens(
        &self,
        store: &dyn Store,
        user_id: &str,
        tokens: &UpstreamTokens,
        now: Timestamp,
    ) -> Result<bool, UpstreamError> {
        let Some(cipher) = &self.cipher else {
            return Ok(false);
        };
        let plain = serde_json::to_vec(tokens)
            .map_err(|e| UpstreamError::Config(format!("cannot serialise tokens: {e}")))?;
        let sealed = cipher.seal(user_id, &plain)?;
        store.put_upstream_tokens(user_id, &sealed, now).await?;
        Ok(true)
    }

    /// The user's current upstream access token, refreshed when it has (nearly) expired.
    /// `None` when none is kept (no key, never signed in through this instance's IdP, or the
    /// refresh was refused: the user must sign in again).
    pub async fn access_token_for(
        &self,
        store: &dyn Store,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Option<String>, UpstreamError> {
        let Some(cipher) = &self.cipher else {
            return Ok(None);
        };
        let Some(sealed) = store.upstream_tokens(user_id).await? else {
            return Ok(None);
        };
        let tokens: UpstreamTokens = serde_json::from_slice(&cipher.open(user_id, &sealed)?)
            .map_err(|e| {
                UpstreamError::Store(StoreError::Corrupt(format!("upstream tokens: {e}")))
            })?;
        if tokens.expires_at.is_none_or(|at| at > now + 30) {
            return Ok(Some(tokens.access_token));
        }
        let Some(refresh_token) = tokens.refresh_token.as_deref() else {
            return Ok(None);
        };
        let endpoints = self.endpoints().await?;
        let response = match exchange::token_request(
            &self.http,
            &endpoints,
            &self.credentials(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            &self.settings.token_params,
        )
        .await
        {
            Ok(response) => response,
            Err(UpstreamError::Refused(reason)) => {
                tracing::info!(user = %user_id, %reason, "the upstream refused to refresh");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let renewed = tokens_from(&response, tokens.refresh_token.as_deref(), now);
        self.keep_tokens(store, user_id, &renewed, now).await?;
        Ok(Some(renewed.access_token))
    }
}

/// The tokens of a response; a refresh that returns no new refresh token keeps the old one.
fn tokens_from(
    response: &TokenResponse,
    previous_refresh: Option<&str>,
    now: Timestamp,
) -> UpstreamTokens {
    UpstreamTokens {
        access_token: response.access_token.clone().unwrap_or_default(),
        refresh_token: response
            .refresh_token
            .clone()
            .or_else(|| previous_refresh.map(str::to_owned)),
        expires_at: response
            .expires_in
            .filter(|s| *s > 0)
            .map(|s| now.saturating_add(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identities_from_claims() {
        let claims = json!({
            "sub": "248289761001", "email": "jane@example.com", "email_verified": "true",
            "preferred_username": "jane", "groups": ["eng", "ops"],
            "realm_access": {"roles": ["mcp-user"]}
        });
        let map = claims.as_object().cloned().unwrap_or_default();
        let id = Identity::from_claims(
            "https://kc.example/realms/r",
            &map,
            &["groups".into(), "realm_access.roles".into()],
        );
        assert_eq!(id.verified_email(), Some("jane@example.com"));
        assert_eq!(id.groups, ["eng", "ops", "mcp-user"]);
        assert_eq!(id.label(), "jane@example.com");
        // The id is stable and depends on issuer and subject only.
        let again = Identity::from_claims("https://kc.example/realms/r", &map, &[]);
        assert_eq!(id.user_id(), again.user_id());
        let elsewhere = Identity::from_claims("https://other.example", &map, &[]);
        assert_ne!(id.user_id(), elsewhere.user_id());
    }

    #[test]
    fn an_unverified_email_is_not_the_label() {
        let map = json!({"sub": "s", "email": "x@example.com", "preferred_username": "x"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let id = Identity::from_claims("https://idp", &map, &[]);
        assert_eq!(id.verified_email(), None);
        assert_eq!(id.label(), "x");
    }
}
