//! The built-in OAuth 2.1 authorization server: metadata, authorize (with login and consent
//! pages), token, registration, client ID metadata documents, revocation, introspection, JWKS.
//!
//! Modules, one endpoint each: [`metadata`], [`authorize`], [`pages`], [`token`], [`register`],
//! [`cimd`], [`revoke`], [`introspect`], [`federated`] (proxy mode's upstream sign-in); shared
//! pieces: [`error`], [`client_auth`], [`users`],
//! [`secrets`].

pub mod authorize;
pub mod cimd;
pub mod client_auth;
pub mod clients;
pub mod error;
pub mod federated;
pub mod introspect;
pub mod metadata;
pub mod pages;
pub mod register;
pub mod revoke;
pub mod secrets;
pub mod token;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::ScopeSet;
use crate::keys::KeyManager;
use crate::store::Store;
use crate::upstream::Federation;

/// What the authorization server is configured to do.
#[derive(Debug, Clone)]
pub struct AuthServerConfig {
    /// The issuer: this server's public URL, without a trailing slash.
    pub issuer: String,
    /// Canonical resource URLs this server issues tokens for; the first is the default audience.
    pub resources: Vec<String>,
    /// Scopes clients may ask for (published in the metadata).
    pub scopes_supported: Vec<String>,
    /// Human descriptions shown on the consent page.
    pub scope_descriptions: Vec<(String, String)>,
    /// Granted when a request names no scope.
    pub default_scope: ScopeSet,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub code_ttl: Duration,
    /// A rotated refresh token presented again within this window gets a sibling, not a
    /// family revocation (concurrent refreshes).
    pub refresh_grace: Duration,
    /// How long a login and consent may take.
    pub pending_ttl: Duration,
    /// How long a browser stays signed in.
    pub session_ttl: Duration,
    pub registration: RegistrationPolicy,
    pub metadata_documents: MetadataDocumentPolicy,
}

#[derive(Debug, Clone, Default)]
pub struct RegistrationPolicy {
    pub enabled: bool,
    /// When set, registration requires `Authorization: Bearer <this>`.
    pub initial_access_token: Option<String>,
    /// Glob patterns of redirect URIs allowed for hosted (non-loopback) clients; empty: any https.
    pub redirect_uri_allowlist: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct MetadataDocumentPolicy {
    pub enabled: bool,
    /// Hosts (globs) whose documents are accepted; empty: any public host.
    pub allow_hosts: Vec<String>,
    pub deny_hosts: Vec<String>,
}

impl AuthServerConfig {
    pub fn default_resource(&self) -> &str {
        self.resources
            .first()
            .map(String::as_str)
            .unwrap_or(&self.issuer)
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

/// The authorization server's shared state.
pub struct AuthServer {
    pub config: AuthServerConfig,
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyManager>,
    /// For fetching client ID metadata documents.
    pub http: reqwest::Client,
    /// Proxy mode: users sign in at this upstream IdP instead of with a local password.
    pub upstream: Option<Arc<Federation>>,
}

impl AuthServer {
    pub fn new(
        config: AuthServerConfig,
        store: Arc<dyn Store>,
        keys: Arc<KeyManager>,
        http: reqwest::Client,
    ) -> Arc<Self> {
        Self::with_upstream(config, store, keys, http, None)
    }

    /// A server whose users sign in at `upstream` (proxy mode) when it is set.
    pub fn with_upstream(
        config: AuthServerConfig,
        store: Arc<dyn Store>,
        keys: Arc<KeyManager>,
        http: reqwest::Client,
        upstream: Option<Arc<Federation>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            store,
            keys,
            http,
            upstream,
        })
    }

    /// All endpoints. Mount at the root of the public URL.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .merge(metadata::router())
            .merge(authorize::router())
            .merge(token::router())
            .merge(register::router())
            .merge(revoke::router())
            .merge(introspect::router())
            .merge(federated::router())
            .with_state(self.clone())
    }
}
