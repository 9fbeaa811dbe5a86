//! Everything the authorization server remembers, behind one trait: SQLite by default; the
//! PostgreSQL implementation plugs into the same seam.
//!
//! Secrets (refresh tokens, codes, browser sessions, client secrets) are stored as SHA-256 or
//! argon2 hashes, never in clear. Every multi-step write is one transaction.

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ScopeSet;

/// Seconds since the Unix epoch.
pub type Timestamp = i64;

// Clone: the SQLite group-commit writer reports one failed commit to every request of the batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub created_at: Timestamp,
}

/// How a client was registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSource {
    /// RFC 7591 dynamic registration.
    Dynamic,
    /// `mcpgate clients add` or the config file.
    Admin,
}

/// A registered client. Metadata-document (CIMD) clients are fetched, not stored here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    /// SHA-256 hex of the client secret, for confidential clients.
    pub secret_hash: Option<String>,
    /// The registered metadata as RFC 7591 JSON (redirect_uris, client_name, grant_types,
    /// token_endpoint_auth_method, scope, application_type, …).
    pub metadata: serde_json::Value,
    pub source: ClientSource,
    pub created_at: Timestamp,
}

/// An authorization request validated at `/authorize`, waiting for login and consent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resource: String,
    pub scope: ScopeSet,
    /// `prompt` values asked for (`login`, `consent`, `none`).
    pub prompt: Vec<String>,
    /// Anti-CSRF token of the login and consent forms for this request.
    pub csrf_token: String,
    pub expires_at: Timestamp,
}

/// Proxy mode: a sign-in at the upstream IdP in flight, created once the user approved the MCP
/// client and taken (single use) by the callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamLogin {
    /// SHA-256 hex of the `state` sent upstream.
    pub state_hash: String,
    /// SHA-256 hex of the cookie binding the sign-in to the browser that started it.
    pub browser_hash: String,
    /// The OpenID Connect `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier of the upstream leg.
    pub code_verifier: String,
    /// The MCP client's authorization request this sign-in completes.
    pub pending: PendingAuthorization,
    pub expires_at: Timestamp,
}

/// A signed-in browser (the login cookie's server side).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrowserSession {
    pub id_hash: String,
    pub user_id: String,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorizationCode {
    pub code_hash: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub resource: String,
    pub scope: ScopeSet,
    pub expires_at: Timestamp,
    /// The token family issued from this code, once exchanged.
    pub family_id: Option<String>,
}

/// What presenting a code did.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeRedemption {
    /// First use: the code is now spent.
    Fresh(AuthorizationCode),
    /// Second use: refuse, and revoke what the first use issued.
    Replayed(AuthorizationCode),
    Unknown,
}

/// A grant: one user's authorization of one client, carried on by rotating refresh tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenFamily {
    pub family_id: String,
    pub client_id: String,
    /// `None` for client-credentials grants.
    pub user_id: Option<String>,
    pub scope: ScopeSet,
    pub resource: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub token_hash: String,
    pub family_id: String,
    pub scope: ScopeSet,
    pub resource: String,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    /// When it was exchanged for a successor (rotation).
    pub rotated_at: Option<Timestamp>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshRedemption {
    /// The token was current: it is now rotated; issue its successor in this family.
    Current {
        token: RefreshToken,
        family: TokenFamily,
    },
    /// The token was rotated less than the grace window ago (a concurrent refresh): issue another
    /// successor without revoking anything.
    WithinGrace {
        token: RefreshToken,
        family: TokenFamily,
    },
    /// Rotated longer ago than the grace window: the family has just been revoked.
    Replayed { family: TokenFamily },
    /// Unknown, expired, or of a revoked family.
    Invalid,
}

/// Decides, inside the transaction of [`Store::exchange_code`], whether a code just spent yields
/// a grant: the family (and its first refresh token) to create, or `None` to refuse (the code
/// stays spent). Gets the code and the username of its user (`None`: the user is gone). Must be
/// pure and quick: it runs while the store holds its write lock.
pub type CodeGrant = Box<
    dyn FnOnce(&AuthorizationCode, Option<&str>) -> Option<(TokenFamily, Option<RefreshToken>)>
        + Send,
>;

/// What [`Store::exchange_code`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeExchange {
    /// First use, and the grant was created as [`CodeGrant`] asked.
    Issued {
        code: AuthorizationCode,
        username: Option<String>,
    },
    /// First use, refused by the [`CodeGrant`]: the code is spent, nothing was issued.
    Refused {
        code: AuthorizationCode,
        username: Option<String>,
    },
    /// Second use: what the first use issued is revoked (in the same transaction).
    Replayed(AuthorizationCode),
    Unknown,
}

/// Checks, inside the transaction of [`Store::rotate_refresh`] and before anything changes,
/// whether the presented refresh token may be used by this request: gets the token, its family
/// and the username of the family's user (`None`: none, or gone). `false` refuses without
/// rotating or revoking anything. Must be pure and quick (it runs under the write lock).
pub type RefreshCheck = Box<dyn FnOnce(&RefreshToken, &TokenFamily, Option<&str>) -> bool + Send>;

/// What [`Store::rotate_refresh`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshRotation {
    /// The [`RefreshCheck`] refused: nothing changed.
    Refused {
        token: RefreshToken,
        family: TokenFamily,
        username: Option<String>,
    },
    /// Redeemed exactly as [`Store::redeem_refresh`] does, with the username of the family's user.
    Redeemed {
        redemption: RefreshRedemption,
        username: Option<String>,
    },
}

/// The successor [`Store::rotate_refresh`] stores for `token`: `successor` in the grant of
/// `token`.
pub fn successor_of(token: &RefreshToken, successor: &RefreshToken) -> RefreshToken {
    RefreshToken {
        family_id: token.family_id.clone(),
        scope: token.scope.clone(),
        resource: token.resource.clone(),
        ..successor.clone()
    }
}

/// A signing key. The private half is PKCS#8 DER.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    pub alg: String,
    pub private_pkcs8: Vec<u8>,
    pub public_jwk: serde_json::Value,
    pub created_at: Timestamp,
    /// Tokens are signed with the newest key whose activation time has come.
    pub activate_at: Timestamp,
    /// Published in the JWKS until then (the last token it signed has expired).
    pub retire_at: Option<Timestamp>,
}

/// Revocations the resource server must honour, since some point in time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Revocations {
    pub jtis: Vec<(String, Timestamp)>,
    pub families: Vec<String>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Users
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    async fn set_password(&self, username: &str, password_hash: &str) -> StoreResult<bool>;
    /// Removes the user with their consents, sessions and grants.
    async fn delete_user(&self, username: &str) -> StoreResult<bool>;

    // Clients
    async fn create_client(&self, client: &Client) -> StoreResult<()>;
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>>;
    async fn list_clients(&self) -> StoreResult<Vec<Client>>;
    /// Removes the client with its consents and grants.
    async fn delete_client(&self, client_id: &str) -> StoreResult<bool>;

    // Consent: the scopes a user approved for a client.
    async fn consent(&self, user_id: &str, client_id: &str) -> StoreResult<Option<ScopeSet>>;
    /// Records approval of `scopes` (added to what was approved before).
    async fn grant_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &ScopeSet,
        now: Timestamp,
    ) -> StoreResult<()>;
    async fn revoke_consent(&self, user_id: &str, client_id: &str) -> StoreResult<bool>;

    // Pending authorizations and browser sessions
    async fn put_pending(&self, pending: &PendingAuthorization) -> StoreResult<()>;
    async fn pending(&self, id: &str, now: Timestamp) -> StoreResult<Option<PendingAuthorization>>;
    /// Deletes a pending authorization; `false` if it was already gone (used by a concurrent
    /// request), so each one is acted on at most once.
    async fn delete_pending(&self, id: &str) -> StoreResult<bool>;
    async fn create_session(&self, session: &BrowserSession) -> StoreResult<()>;
    async fn session(&self, id_hash: &str, now: Timestamp) -> StoreResult<Option<BrowserSession>>;
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;

    // Codes
    async fn create_code(&self, code: &AuthorizationCode) -> StoreResult<()>;
    /// Atomically marks the code used; a second call sees `Replayed`.
    async fn redeem_code(&self, code_hash: &str, now: Timestamp) -> StoreResult<CodeRedemption>;

    // Grants
    /// Creates the family and its first refresh token (if any) in one transaction, and links
    /// the code it came from.
    async fn create_family(
        &self,
        family: &TokenFamily,
        first: Option<&RefreshToken>,
        code_hash: Option<&str>,
    ) -> StoreResult<()>;
    async fn family(&self, family_id: &str) -> StoreResult<Option<TokenFamily>>;
    /// Redeems a refresh token and stores `successor` in the same transaction when allowed.
    async fn redeem_refresh(
        &self,
        token_hash: &str,
        successor: &RefreshToken,
        now: Timestamp,
        grace_secs: i64,
    ) -> StoreResult<RefreshRedemption>;
    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshToken>>;

    /// The token endpoint's `authorization_code` grant in one transaction (one commit): spends
    /// the code; on first use creates the grant `grant` returns (linking the code to it), on a
    /// replay revokes the grant the first use created. The default composes the single steps
    /// (two commits); the stores override it.
    async fn exchange_code(
        &self,
        code_hash: &str,
        now: Timestamp,
        grant: CodeGrant,
    ) -> StoreResult<CodeExchange> {
        match self.redeem_code(code_hash, now).await? {
            CodeRedemption::Fresh(code) => {
                let username = self.user_by_id(&code.user_id).await?.map(|u| u.username);
                let Some((family, first)) = grant(&code, username.as_deref()) else {
                    return Ok(CodeExchange::Refused { code, username });
                };
                self.create_family(&family, first.as_ref(), Some(code_hash))
                    .await?;
                Ok(CodeExchange::Issued { code, username })
            }
            CodeRedemption::Replayed(code) => {
                if let Some(family_id) = &code.family_id {
                    self.revoke_family(family_id, now).await?;
                }
                Ok(CodeExchange::Replayed(code))
            }
            CodeRedemption::Unknown => Ok(CodeExchange::Unknown),
        }
    }

    /// The token endpoint's `refresh_token` grant in one transaction: finds the token and its
    /// family, lets `check` refuse without side effects, then redeems as
    /// [`Store::redeem_refresh`] does. The successor stored is `successor` with the presented
    /// token's family, scope and resource (a rotation never changes the grant, RFC 6749 §6).
    /// The default composes the single steps; the stores override it.
    async fn rotate_refresh(
        &self,
        token_hash: &str,
        successor: &RefreshToken,
        now: Timestamp,
        grace_secs: i64,
        check: RefreshCheck,
    ) -> StoreResult<RefreshRotation> {
        let invalid = RefreshRotation::Redeemed {
            redemption: RefreshRedemption::Invalid,
            username: None,
        };
        let Some(token) = self.refresh_token(token_hash).await? else {
            return Ok(invalid);
        };
        let Some(family) = self.family(&token.family_id).await? else {
            return Ok(invalid);
        };
        let username = match &family.user_id {
            Some(user_id) => self.user_by_id(user_id).await?.map(|u| u.username),
            None => None,
        };
        if !check(&token, &family, username.as_deref()) {
            return Ok(RefreshRotation::Refused {
                token,
                family,
                username,
            });
        }
        let successor = successor_of(&token, successor);
        let redemption = self
            .redeem_refresh(token_hash, &successor, now, grace_secs)
            .await?;
        Ok(RefreshRotation::Redeemed {
            redemption,
            username,
        })
    }
    async fn revoke_family(&self, family_id: &str, now: Timestamp) -> StoreResult<()>;
    /// Revokes every grant of a user and/or client; returns the revoked family ids.
    async fn revoke_grants(
        &self,
        user_id: Option<&str>,
        client_id: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Vec<String>>;

    // Access-token revocation (denylist by jti)
    async fn revoke_jti(&self, jti: &str, expires_at: Timestamp) -> StoreResult<()>;
    /// Revoked jtis still unexpired, and families revoked at or after `since`.
    async fn revocations(&self, since: Timestamp, now: Timestamp) -> StoreResult<Revocations>;

    // Keys
    async fn create_key(&self, key: &SigningKey) -> StoreResult<()>;
    /// Every key, in creation order (the order rotations happened).
    async fn keys(&self) -> StoreResult<Vec<SigningKey>>;
    async fn set_key_retirement(&self, kid: &str, retire_at: Timestamp) -> StoreResult<bool>;

    // Proxy mode
    async fn put_upstream_login(&self, login: &UpstreamLogin) -> StoreResult<()>;
    /// Deletes and returns the sign-in with this state hash if it has not expired; `None` if it
    /// is unknown, expired or already taken (by this or another instance).
    async fn take_upstream_login(
        &self,
        state_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<UpstreamLogin>>;
    /// Stores (replacing) a user's sealed upstream tokens.
    async fn put_upstream_tokens(
        &self,
        user_id: &str,
        sealed: &[u8],
        now: Timestamp,
    ) -> StoreResult<()>;
    async fn upstream_tokens(&self, user_id: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Deletes expired codes, pending authorizations, upstream sign-ins, sessions, refresh
    /// tokens, revoked jtis and retired keys. Never clients, users or consents.
    async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64>;
    async fn ping(&self) -> StoreResult<()>;

    // MCP sessions (Streamable HTTP `Mcp-Session-Id`), continued by any instance sharing the
    // store. [`Store::purge_expired`] deletes the expired ones too.
    /// Records a session, or updates the state and expiry of the one recorded under this id for
    /// the same principal; `Conflict` if the id is bound to another principal (a binding never
    /// changes).
    async fn save_mcp_session(&self, session: &McpSession) -> StoreResult<()>;
    /// The session with this id hash, if it exists and has not expired at `now`.
    async fn mcp_session(&self, id_hash: &str, now: Timestamp) -> StoreResult<Option<McpSession>>;
    /// Records a use at `now` and moves the expiry to `expires_at`; `false` if the session is
    /// gone or expired.
    async fn touch_mcp_session(
        &self,
        id_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<bool>;
    /// Ends a session for every instance; `false` if it was already gone.
    async fn delete_mcp_session(&self, id_hash: &str) -> StoreResult<bool>;
}

/// A stateful MCP session as the instances of one deployment share it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpSession {
    /// SHA-256 hex of the `Mcp-Session-Id` (a bearer-like value, never stored in clear).
    pub id_hash: String,
    /// What the MCP SDK needs to revive the session elsewhere (rmcp's `SessionState`: the
    /// client's `initialize` parameters), as JSON.
    pub state: serde_json::Value,
    /// The principal that opened the session: only it may use the session.
    pub issuer: String,
    pub subject: String,
    pub client_id: Option<String>,
    /// The grant (token family) the session was opened under, if any.
    pub grant_id: Option<String>,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub expires_at: Timestamp,
}
