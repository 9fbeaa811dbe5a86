//! Starting the built-in authorization server: its store, keys, revocation list, first admin
//! user, pre-registered clients and background upkeep.

use std::sync::Arc;
use std::time::Duration;

use mcpgate_auth::ScopeSet;
use mcpgate_auth::keys::{KeyError, KeyManager};
use mcpgate_auth::resource::RevocationList;
use mcpgate_auth::resource::claims::now_secs;
use mcpgate_auth::server::secrets;
use mcpgate_auth::server::{
    AuthServer, AuthServerConfig, MetadataDocumentPolicy, RegistrationPolicy, users,
};
use mcpgate_auth::store::postgres::PostgresStore;
use mcpgate_auth::store::sqlite::SqliteStore;
use mcpgate_auth::store::{Client, ClientSource, Store, StoreError, User};
use mcpgate_auth::upstream::Federation;
use tokio_util::sync::CancellationToken;

use crate::config::OAuthConfig;
use crate::config::oauth::BuiltinConfig;
use crate::config::proxy::ProxyConfig;
use crate::policy;

#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    #[error("cannot open the OAuth store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("{0}")]
    Setup(String),
}

/// A running built-in authorization server and what the resource side needs from it.
pub struct Builtin {
    pub server: Arc<AuthServer>,
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyManager>,
    pub revocations: Arc<RevocationList>,
    /// Set on first start: the generated admin password, to print once.
    pub first_admin_password: Option<String>,
}

/// Scopes the built-in server can grant, with the descriptions shown on the consent page.
pub fn scope_catalogue() -> Vec<(String, String)> {
    [
        (policy::TOOLS_READ, "Use read-only tools"),
        (policy::TOOLS_WRITE, "Use tools that change things"),
        (policy::RESOURCES_READ, "Read resources"),
        (policy::PROMPTS_READ, "Use prompts"),
        (
            policy::ADMIN,
            "Full access to everything this server offers",
        ),
    ]
    .into_iter()
    .map(|(s, d)| (s.to_owned(), d.to_owned()))
    .collect()
}

pub async fn open_store(settings: &BuiltinConfig) -> Result<Arc<dyn Store>, BuiltinError> {
    let url = settings.store.expose();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresStore::open(url).await?));
    }
    Ok(Arc::new(SqliteStore::open(url).await?))
}

pub async fn start(
    oauth: &OAuthConfig,
    shutdown: CancellationToken,
) -> Result<Builtin, BuiltinError> {
    let settings = oauth
        .builtin
        .as_ref()
        .ok_or_else(|| BuiltinError::Setup("not in built-in mode".into()))?;
    let store = open_store(settings).await?;
    let keys = KeyManager::load_or_create(store.clone()).await?;
    keys.spawn_reloader(Duration::from_secs(5), shutdown.clone());
    let revocations = Arc::new(RevocationList::default());
    revocations
        .reload(store.as_ref(), settings.access_token_ttl)
        .await?;
    revocations.spawn_reloader(
        store.clone(),
        settings.access_token_ttl,
        Duration::from_secs(2),
        shutdown.clone(),
    );
    // Proxy mode: users sign in upstream; a local admin password would be a back door.
    let first_admin_password = match settings.proxy {
        None => ensure_admin(store.as_ref()).await?,
        Some(_) => None,
    };
    register_config_clients(store.as_ref(), settings).await?;
    spawn_purger(store.clone(), shutdown);

    let catalogue = scope_catalogue();
    let config = AuthServerConfig {
        issuer: oauth.issuer.clone(),
        resources: vec![oauth.mcp_resource(), oauth.sse_resource()],
        scopes_supported: catalogue.iter().map(|(s, _)| s.clone()).collect(),
        scope_descriptions: catalogue,
        default_scope: oauth.scopes_supported.iter().cloned().collect::<ScopeSet>(),
        access_token_ttl: settings.access_token_ttl,
        refresh_token_ttl: settings.refresh_token_ttl,
        code_ttl: settings.code_ttl,
        refresh_grace: settings.refresh_grace,
        pending_ttl: Duration::from_secs(600),
        session_ttl: Duration::from_secs(12 * 3600),
        registration: RegistrationPolicy {
            enabled: settings.registration,
            initial_access_token: settings
                .registration_token
                .as_ref()
                .map(|s| s.expose().to_owned()),
            redirect_uri_allowlist: settings.redirect_uri_allowlist.clone(),
        },
        metadata_documents: MetadataDocumentPolicy {
            enabled: settings.client_metadata_documents,
            allow_hosts: settings.client_metadata_allow_hosts.clone(),
            deny_hosts: settings.client_metadata_deny_hosts.clone(),
        },
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuiltinError::Setup(format!("cannot build an HTTP client: {e}")))?;
    let upstream = settings
        .proxy
        .as_ref()
        .map(|proxy| federation(proxy, &http))
        .transpose()?;
    let server = AuthServer::with_upstream(config, store.clone(), keys.clone(), http, upstream);
    Ok(Builtin {
        server,
        store,
        keys,
        revocations,
        first_admin_password,
    })
}

/// Proxy mode's upstream IdP. Its endpoints are discovered in the background now (and again on
/// first use if that fails), so a misconfigured issuer shows in the log at start-up.
fn federation(
    proxy: &ProxyConfig,
    http: &reqwest::Client,
) -> Result<Arc<Federation>, BuiltinError> {
    let settings = &proxy.settings;
    if settings.access.is_open() {
        tracing::warn!(
            idp = settings.provider.name(),
            "proxy mode without MCP_OAUTH_ALLOWED_DOMAINS, _ALLOWED_USERS or _REQUIRED_GROUPS: \
             anyone with an account at the upstream IdP can sign in"
        );
    }
    let federation = Federation::new(
        settings.clone(),
        http.clone(),
        proxy.token_key_bytes().as_deref(),
    )
    .map(Arc::new)
    .map_err(|e| BuiltinError::Setup(format!("proxy mode: {e}")))?;
    let probe = federation.clone();
    tokio::spawn(async move {
        match probe.endpoints().await {
            Ok(_) => {
                tracing::info!(idp = probe.settings().provider.name(), issuer = %probe.settings().issuer, "upstream IdP discovered")
            }
            Err(e) => {
                tracing::error!(error = %e, "upstream IdP discovery failed; retried at the next sign-in")
            }
        }
    });
    Ok(federation)
}

/// On first start (no user at all) creates `admin` with a random password, returned to print once.
async fn ensure_admin(store: &dyn Store) -> Result<Option<String>, BuiltinError> {
    if !store.list_users().await?.is_empty() {
        return Ok(None);
    }
    let password = users::generate_password();
    let hash = users::hash_password(&password)
        .map_err(|e| BuiltinError::Setup(format!("cannot hash a password: {e}")))?;
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        username: "admin".into(),
        password_hash: hash,
        created_at: now_secs(),
    };
    match store.create_user(&user).await {
        Ok(()) => Ok(Some(password)),
        // Another instance created it first.
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Upserts the `[[oauth.clients]]` of the config file.
async fn register_config_clients(
    store: &dyn Store,
    settings: &BuiltinConfig,
) -> Result<(), BuiltinError> {
    for entry in &settings.clients {
        let secret = match (&entry.client_secret, &entry.client_secret_env) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                BuiltinError::Setup(format!(
                    "client {}: environment variable {var} is not set",
                    entry.client_id
                ))
            })?),
            (None, None) => None,
        };
        let grant_types = entry.grant_types.clone().unwrap_or_else(|| {
            if entry.redirect_uris.is_empty() {
                vec!["client_credentials".into()]
            } else {
                vec!["authorization_code".into(), "refresh_token".into()]
            }
        });
        let auth_method = if secret.is_some() {
            "client_secret_basic"
        } else {
            "none"
        };
        let mut metadata = serde_json::json!({
            "client_name": entry.client_name.clone().unwrap_or_else(|| entry.client_id.clone()),
            "redirect_uris": entry.redirect_uris,
            "grant_types": grant_types,
            "response_types": ["code"],
            "token_endpoint_auth_method": auth_method,
        });
        if let Some(scope) = &entry.scope {
            metadata["scope"] = scope.clone().into();
        }
        let client = Client {
            client_id: entry.client_id.clone(),
            secret_hash: secret.as_deref().map(secrets::hash),
            metadata,
            source: ClientSource::Admin,
            created_at: now_secs(),
        };
        // The file is the source of truth for its clients. Re-registering ends the client's
        // grants, so it happens only when the entry actually changed.
        match store.client(&client.client_id).await? {
            Some(stored)
                if stored.metadata == client.metadata
                    && stored.secret_hash == client.secret_hash => {}
            Some(_) => {
                tracing::info!(client_id = %client.client_id, "config client changed: re-registering it");
                store.delete_client(&client.client_id).await?;
                store.create_client(&client).await?;
            }
            None => store.create_client(&client).await?,
        }
    }
    Ok(())
}

/// Deletes expired codes, sessions, pending requests and refresh tokens every ten minutes.
fn spawn_purger(store: Arc<dyn Store>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match store.purge_expired(now_secs()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "purged expired authorization state"),
                Err(e) => tracing::warn!(error = %e, "purging expired authorization state failed"),
            }
        }
    });
}
