//! The SQLite [`Store`]: the default, single-instance store.
//!
//! One file in WAL mode (readers never block the writer), a small pool, migrations embedded from
//! `migrations/sqlite`. Every write that spans several statements runs in a `BEGIN IMMEDIATE`
//! transaction: it takes the write lock up front, so two such transactions never read the same
//! row and then both act on it (the deferred default would let both read, then fail or, worse,
//! decide on stale data), and the busy timeout queues them instead of failing.
//!
//! # Durability and group commit
//!
//! `synchronous=FULL` (set explicitly): a commit returns only once the WAL is on stable storage,
//! so a token the client has been answered for survives a process crash *and* a power loss.
//! (`NORMAL` in WAL mode would survive process crashes only; we do not use it.) That costs one
//! `fsync` per commit, which, taken one request at a time, caps the token endpoint at 1/fsync
//! (a few hundred per second on ordinary disks). So the token endpoint's writes (code
//! exchanges, refresh rotations, code redemptions, family creations and revocations) go through
//! one writer ([`writer`]) that commits them in groups: it takes every write queued while the
//! previous commit was syncing, runs each in its own `SAVEPOINT` inside one `BEGIN IMMEDIATE`
//! transaction (a failing write is rolled back alone), commits once, and only then answers
//! each request — never before its write is durable. The writes of a group run one after the
//! other on one connection, so each sees the ones before it exactly as if they had committed
//! separately: two rotations of one refresh token in one group still have one winner.
//!
//! The writer is a thread with a connection of its own (rusqlite, on the same SQLite library
//! sqlx links), not a pool connection: sqlx runs each statement on its connection's worker
//! thread, and those round trips between threads cost more than the statements. The writes it
//! runs are in [`grouped`]; everything else (reads, and the rare administrative writes in their
//! own `BEGIN IMMEDIATE` transactions) goes through the sqlx pool, and waits on the same
//! write lock.

mod client_cache;
mod grouped;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteExecutor, Transaction};

use super::{
    AuthorizationCode, BrowserSession, Client, ClientSource, CodeExchange, CodeGrant,
    CodeRedemption, PendingAuthorization, RefreshCheck, RefreshRedemption, RefreshRotation,
    RefreshToken, Revocations, SigningKey, Store, StoreError, StoreResult, Timestamp, TokenFamily,
    UpstreamLogin, User,
};
use crate::ScopeSet;
use client_cache::ClientCache;
pub use client_cache::DEFAULT_CLIENT_CACHE_TTL;
use writer::{GroupWriter, Target, Work};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connections of a file database. SQLite has one writer at a time anyway; a few connections
/// let reads proceed next to it.
const MAX_CONNECTIONS: u32 = 4;
/// How long a statement waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Used codes are kept this long past their expiry so that a late replay is still recognised
/// (and revokes what the first use issued) rather than answered as an unknown code.
const USED_CODE_RETENTION_SECS: i64 = 600;
/// Default for [`SqliteStore::with_family_retention`].
pub const DEFAULT_FAMILY_RETENTION_SECS: i64 = 7 * 24 * 3600;

/// A [`Store`] on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    family_retention_secs: i64,
    writer: Arc<GroupWriter>,
    clients: Arc<ClientCache>,
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database at `url` —
    /// `sqlite://path/to/file.db` or `sqlite::memory:` — and brings its schema up to date.
    pub async fn open(url: &str) -> StoreResult<Self> {
        // sqlx would take anything else for a file name (`postgres://…` included).
        if !url.starts_with("sqlite:") {
            return Err(StoreError::Unavailable(format!(
                "not a SQLite URL (sqlite://path or sqlite::memory:): {url}"
            )));
        }
        let in_memory = is_in_memory(url);
        let mut options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let mut pool = SqlitePoolOptions::new();
        if in_memory {
            // An in-memory database lives as long as one connection to it: keep exactly one,
            // forever. (The group-commit writer joins it by its shared-cache name as a second
            // connection; shared-cache table locks, which the busy timeout does not cover, are
            // waited out through SQLite's unlock notification by sqlx and rusqlite alike.)
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            // FULL, not NORMAL: see "Durability and group commit" above.
            options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full);
            create_parent_dir(&options).await?;
            pool = pool.max_connections(MAX_CONNECTIONS);
        }
        let pool = pool.connect_with(options).await.map_err(store_err)?;
        Self::from_pool(pool).await
    }

    /// Wraps an existing pool (which should have foreign keys on) and runs the migrations.
    pub async fn from_pool(pool: SqlitePool) -> StoreResult<Self> {
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the SQLite store: {e}")))?;
        let writer = GroupWriter::start(writer_target(&pool).await?).await?;
        Ok(Self {
            writer: Arc::new(writer),
            pool,
            family_retention_secs: DEFAULT_FAMILY_RETENTION_SECS,
            clients: Arc::new(ClientCache::new(DEFAULT_CLIENT_CACHE_TTL)),
        })
    }

    /// How long [`Store::purge_expired`] keeps a family once it has no refresh token left,
    /// counted from its last use (or revocation). Families are what the resource server's
    /// denylist names, so this must outlast the longest access-token lifetime.
    pub fn with_family_retention(mut self, secs: i64) -> Self {
        self.family_retention_secs = secs;
        self
    }

    /// How long a client read from the database is trusted without reading it again (see
    /// `client_cache.rs`): changes through this store are seen at once, changes by another
    /// process on the same file after at most this long. Zero reads every time.
    pub fn with_client_cache_ttl(mut self, ttl: Duration) -> Self {
        self.clients = Arc::new(ClientCache::new(ttl));
        self
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection (a clean shutdown checkpoints the WAL), the group-commit
    /// writer's once the writes queued so far are answered.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Starts a transaction holding the write lock from its first statement.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_err)
    }

    /// Runs `work` in the next group commit and returns its outcome once that is durable.
    async fn grouped<T: Send + 'static>(&self, work: Work<T>) -> StoreResult<T> {
        self.writer.run(work).await
    }
}

/// Where the group-commit writer opens its connection: the database the pool uses, as SQLite
/// itself names it (an absolute path; empty for an in-memory database, which the writer joins
/// by the pool's shared-cache name).
async fn writer_target(pool: &SqlitePool) -> StoreResult<Target> {
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(pool)
            .await
            .map_err(store_err)?;
    let in_memory = file.is_empty();
    let path = if in_memory {
        pool.connect_options().get_filename().to_owned()
    } else {
        file.into()
    };
    Ok(Target {
        path,
        in_memory,
        busy_timeout: BUSY_TIMEOUT,
    })
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

async fn create_parent_dir(options: &SqliteConnectOptions) -> StoreResult<()> {
    match options.get_filename().parent() {
        Some(dir) if !dir.as_os_str().is_empty() => tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display()))),
        _ => Ok(()),
    }
}

/// Seconds since the epoch, for the few writes whose trait method takes no `now`.
fn unix_now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Maps a driver error; unique violations become [`StoreError::Conflict`] naming `what`.
fn conflict_or(what: impl FnOnce() -> String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
        _ => store_err(e),
    }
}

fn store_err(e: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    match e {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => StoreError::Conflict(db.message().to_owned()),
            // A write naming a row that is not there (a session for an unknown user, …) is a
            // conflict with the store's state, not an outage.
            ErrorKind::ForeignKeyViolation => {
                StoreError::Conflict(format!("refers to a missing row: {}", db.message()))
            }
            ErrorKind::NotNullViolation | ErrorKind::CheckViolation => {
                StoreError::Corrupt(db.message().to_owned())
            }
            // Busy past the timeout, disk full, I/O errors reported by SQLite, …
            _ => StoreError::Unavailable(db.message().to_owned()),
        },
        sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

// Rows -> values. Columns are listed explicitly in the `*_COLUMNS` constants below so that a
// schema change cannot silently reorder or add what these read.

const USER_COLUMNS: &str = "id, username, password_hash, created_at";

fn user_from(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id").map_err(store_err)?,
        username: row.try_get("username").map_err(store_err)?,
        password_hash: row.try_get("password_hash").map_err(store_err)?,
        created_at: row.try_get("created_at").map_err(store_err)?,
    })
}

const CLIENT_COLUMNS: &str = "client_id, secret_hash, metadata, source, created_at";

fn client_from(row: &SqliteRow) -> StoreResult<Client> {
    let metadata: String = row.try_get("metadata").map_err(store_err)?;
    let source: String = row.try_get("source").map_err(store_err)?;
    Ok(Client {
        client_id: row.try_get("client_id").map_err(store_err)?,
        secret_hash: row.try_get("secret_hash").map_err(store_err)?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("client metadata", e))?,
        source: source_from(&source)?,
        created_at: row.try_get("created_at").map_err(store_err)?,
    })
}

fn source_str(source: ClientSource) -> &'static str {
    match source {
        ClientSource::Dynamic => "dynamic",
        ClientSource::Admin => "admin",
    }
}

fn source_from(value: &str) -> StoreResult<ClientSource> {
    match value {
        "dynamic" => Ok(ClientSource::Dynamic),
        "admin" => Ok(ClientSource::Admin),
        other => Err(corrupt("client source", other)),
    }
}

fn scope_from(row: &SqliteRow, column: &str) -> StoreResult<ScopeSet> {
    let text: String = row.try_get(column).map_err(store_err)?;
    Ok(ScopeSet::parse(&text))
}

const PENDING_COLUMNS: &str = "id, client_id, redirect_uri, state, code_challenge, resource, \
                               scope, prompt, csrf_token, expires_at";

fn pending_from(row: &SqliteRow) -> StoreResult<PendingAuthorization> {
    let prompt: String = row.try_get("prompt").map_err(store_err)?;
    Ok(PendingAuthorization {
        id: row.try_get("id").map_err(store_err)?,
        client_id: row.try_get("client_id").map_err(store_err)?,
        redirect_uri: row.try_get("redirect_uri").map_err(store_err)?,
        state: row.try_get("state").map_err(store_err)?,
        code_challenge: row.try_get("code_challenge").map_err(store_err)?,
        resource: row.try_get("resource").map_err(store_err)?,
        scope: scope_from(row, "scope")?,
        prompt: prompt
            .split(' ')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        csrf_token: row.try_get("csrf_token").map_err(store_err)?,
        expires_at: row.try_get("expires_at").map_err(store_err)?,
    })
}

fn upstream_login_from(state_hash: &str, row: &SqliteRow) -> StoreResult<UpstreamLogin> {
    let pending: String = row.try_get("pending").map_err(store_err)?;
    Ok(UpstreamLogin {
        state_hash: state_hash.to_owned(),
        browser_hash: row.try_get("browser_hash").map_err(store_err)?,
        nonce: row.try_get("nonce").map_err(store_err)?,
        code_verifier: row.try_get("code_verifier").map_err(store_err)?,
        pending: serde_json::from_str(&pending)
            .map_err(|e| StoreError::Corrupt(format!("upstream sign-in: {e}")))?,
        expires_at: row.try_get("expires_at").map_err(store_err)?,
    })
}

const SESSION_COLUMNS: &str = "id_hash, user_id, expires_at";

fn session_from(row: &SqliteRow) -> StoreResult<BrowserSession> {
    Ok(BrowserSession {
        id_hash: row.try_get("id_hash").map_err(store_err)?,
        user_id: row.try_get("user_id").map_err(store_err)?,
        expires_at: row.try_get("expires_at").map_err(store_err)?,
    })
}

/// Read by the group-commit writer ([`grouped`]).
const CODE_COLUMNS: &str = "code_hash, client_id, user_id, redirect_uri, code_challenge, \
                            resource, scope, expires_at, family_id";

const FAMILY_COLUMNS: &str =
    "family_id, client_id, user_id, scope, resource, created_at, revoked_at";

fn family_from(row: &SqliteRow) -> StoreResult<TokenFamily> {
    Ok(TokenFamily {
        family_id: row.try_get("family_id").map_err(store_err)?,
        client_id: row.try_get("client_id").map_err(store_err)?,
        user_id: row.try_get("user_id").map_err(store_err)?,
        scope: scope_from(row, "scope")?,
        resource: row.try_get("resource").map_err(store_err)?,
        created_at: row.try_get("created_at").map_err(store_err)?,
        revoked_at: row.try_get("revoked_at").map_err(store_err)?,
    })
}

const REFRESH_COLUMNS: &str =
    "token_hash, family_id, scope, resource, expires_at, created_at, rotated_at";

fn refresh_from(row: &SqliteRow) -> StoreResult<RefreshToken> {
    Ok(RefreshToken {
        token_hash: row.try_get("token_hash").map_err(store_err)?,
        family_id: row.try_get("family_id").map_err(store_err)?,
        scope: scope_from(row, "scope")?,
        resource: row.try_get("resource").map_err(store_err)?,
        expires_at: row.try_get("expires_at").map_err(store_err)?,
        created_at: row.try_get("created_at").map_err(store_err)?,
        rotated_at: row.try_get("rotated_at").map_err(store_err)?,
    })
}

const KEY_COLUMNS: &str = "kid, alg, private_pkcs8, public_jwk, created_at, activate_at, retire_at";

fn key_from(row: &SqliteRow) -> StoreResult<SigningKey> {
    let jwk: String = row.try_get("public_jwk").map_err(store_err)?;
    Ok(SigningKey {
        kid: row.try_get("kid").map_err(store_err)?,
        alg: row.try_get("alg").map_err(store_err)?,
        private_pkcs8: row.try_get("private_pkcs8").map_err(store_err)?,
        public_jwk: serde_json::from_str(&jwk).map_err(|e| corrupt("public JWK", e))?,
        created_at: row.try_get("created_at").map_err(store_err)?,
        activate_at: row.try_get("activate_at").map_err(store_err)?,
        retire_at: row.try_get("retire_at").map_err(store_err)?,
    })
}

// Statements shared between pool reads and transactions.

async fn fetch_family<'c>(
    ex: impl SqliteExecutor<'c>,
    family_id: &str,
) -> StoreResult<Option<TokenFamily>> {
    let sql = format!("SELECT {FAMILY_COLUMNS} FROM token_families WHERE family_id = ?");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(family_id)
        .fetch_optional(ex)
        .await
        .map_err(store_err)?
        .as_ref()
        .map(family_from)
        .transpose()
}

async fn fetch_refresh<'c>(
    ex: impl SqliteExecutor<'c>,
    token_hash: &str,
) -> StoreResult<Option<RefreshToken>> {
    let sql = format!("SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = ?");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(token_hash)
        .fetch_optional(ex)
        .await
        .map_err(store_err)?
        .as_ref()
        .map(refresh_from)
        .transpose()
}

/// Revokes the families matching `filter` (a `WHERE` fragment on `token_families` with one
/// bound parameter) that are not revoked yet, and deletes their refresh tokens: they are dead,
/// and the family rows stay as the denylist entries. Returns the revoked family ids.
async fn revoke_families_where(
    conn: &mut SqliteConnection,
    filter: &'static str,
    value: &str,
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    let sql = format!(
        "UPDATE token_families SET revoked_at = ? WHERE revoked_at IS NULL AND {filter} \
         RETURNING family_id"
    );
    let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(value)
        .fetch_all(&mut *conn)
        .await
        .map_err(store_err)?;
    let sql = format!(
        "DELETE FROM refresh_tokens WHERE family_id IN \
         (SELECT family_id FROM token_families WHERE {filter})"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .execute(&mut *conn)
        .await
        .map_err(store_err)?;
    Ok(ids)
}

async fn grant_consent_in(
    conn: &mut SqliteConnection,
    user_id: &str,
    client_id: &str,
    scopes: &ScopeSet,
    now: Timestamp,
) -> StoreResult<()> {
    let before: Option<String> =
        sqlx::query_scalar("SELECT scopes FROM consents WHERE user_id = ? AND client_id = ?")
            .bind(user_id)
            .bind(client_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(store_err)?;
    let mut all = before.as_deref().map(ScopeSet::parse).unwrap_or_default();
    for scope in scopes.iter() {
        all.insert(scope);
    }
    sqlx::query(
        "INSERT INTO consents (user_id, client_id, scopes, granted_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = excluded.scopes, \
         granted_at = excluded.granted_at",
    )
    .bind(user_id)
    .bind(client_id)
    .bind(all.to_string())
    .bind(now)
    .execute(conn)
    .await
    .map_err(store_err)?;
    Ok(())
}

async fn delete_user_in(conn: &mut SqliteConnection, username: &str) -> StoreResult<bool> {
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE username = ?")
        .bind(username)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_err)?;
    let Some(id) = id else {
        return Ok(false);
    };
    revoke_families_where(&mut *conn, "user_id = ?", &id, unix_now()).await?;
    // Consents, browser sessions and codes go with the row (ON DELETE CASCADE).
    sqlx::query("DELETE FROM users WHERE id = ?")
        .bind(&id)
        .execute(conn)
        .await
        .map_err(store_err)?;
    Ok(true)
}

async fn delete_client_in(conn: &mut SqliteConnection, client_id: &str) -> StoreResult<bool> {
    // Everything below is keyed by client_id without a foreign key (metadata-document clients
    // are not in `clients`), so it is deleted by hand.
    for sql in [
        "DELETE FROM consents WHERE client_id = ?",
        "DELETE FROM pending_authorizations WHERE client_id = ?",
        "DELETE FROM authorization_codes WHERE client_id = ?",
    ] {
        sqlx::query(sql)
            .bind(client_id)
            .execute(&mut *conn)
            .await
            .map_err(store_err)?;
    }
    revoke_families_where(&mut *conn, "client_id = ?", client_id, unix_now()).await?;
    let deleted = sqlx::query("DELETE FROM clients WHERE client_id = ?")
        .bind(client_id)
        .execute(conn)
        .await
        .map_err(store_err)?;
    Ok(deleted.rows_affected() > 0)
}

async fn purge_expired_in(
    conn: &mut SqliteConnection,
    now: Timestamp,
    family_retention_secs: i64,
) -> StoreResult<u64> {
    // Used codes outlive their expiry a little, for replay detection.
    let mut purged = sqlx::query(
        "DELETE FROM authorization_codes WHERE expires_at <= ?1 \
         AND (used_at IS NULL OR expires_at <= ?1 - ?2)",
    )
    .bind(now)
    .bind(USED_CODE_RETENTION_SECS)
    .execute(&mut *conn)
    .await
    .map_err(store_err)?
    .rows_affected();
    for sql in [
        "DELETE FROM pending_authorizations WHERE expires_at <= ?",
        "DELETE FROM upstream_logins WHERE expires_at <= ?",
        "DELETE FROM browser_sessions WHERE expires_at <= ?",
        "DELETE FROM refresh_tokens WHERE expires_at <= ?",
        "DELETE FROM revoked_jtis WHERE expires_at <= ?",
        "DELETE FROM signing_keys WHERE retire_at IS NOT NULL AND retire_at <= ?",
    ] {
        purged += sqlx::query(sql)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(store_err)?
            .rows_affected();
    }
    // A family with no refresh token left can issue nothing more; once the access tokens it
    // issued have surely expired, its row (the denylist entry) has no use either.
    purged += sqlx::query(
        "DELETE FROM token_families WHERE \
         NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family_id = token_families.family_id) \
         AND MAX(created_at, COALESCE(last_used_at, 0), COALESCE(revoked_at, 0)) <= ?1 - ?2",
    )
    .bind(now)
    .bind(family_retention_secs)
    .execute(&mut *conn)
    .await
    .map_err(store_err)?
    .rows_affected();
    purged += purge_mcp_sessions_in(&mut *conn, now).await?;
    Ok(purged)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(conflict_or(|| format!("user {:?}", user.username)))?;
        Ok(())
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?
            .iter()
            .map(user_from)
            .collect()
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE username = ?")
            .bind(password_hash)
            .bind(username)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user(&self, username: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = delete_user_in(&mut tx, username).await?;
        tx.commit().await.map_err(store_err)?;
        Ok(deleted)
    }

    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO clients (client_id, secret_hash, metadata, source, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&client.client_id)
        .bind(&client.secret_hash)
        .bind(client.metadata.to_string())
        .bind(source_str(client.source))
        .bind(client.created_at)
        .execute(&self.pool)
        .await
        .map_err(conflict_or(|| format!("client {:?}", client.client_id)))?;
        self.clients.forget(&client.client_id);
        Ok(())
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        if let Some(client) = self.clients.get(client_id) {
            return Ok(Some(client));
        }
        let generation = self.clients.generation();
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = ?");
        let client = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .as_ref()
            .map(client_from)
            .transpose()?;
        // Unknown ids are not remembered: anyone can send them.
        if let Some(client) = &client {
            self.clients.put(generation, client);
        }
        Ok(client)
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, client_id");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?
            .iter()
            .map(client_from)
            .collect()
    }

    async fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = delete_client_in(&mut tx, client_id).await?;
        tx.commit().await.map_err(store_err)?;
        self.clients.forget(client_id);
        Ok(deleted)
    }

    async fn consent(&self, user_id: &str, client_id: &str) -> StoreResult<Option<ScopeSet>> {
        let scopes: Option<String> =
            sqlx::query_scalar("SELECT scopes FROM consents WHERE user_id = ? AND client_id = ?")
                .bind(user_id)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
        Ok(scopes.as_deref().map(ScopeSet::parse))
    }

    async fn grant_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &ScopeSet,
        now: Timestamp,
    ) -> StoreResult<()> {
        // Read-merge-write: under the write lock, so two approvals cannot lose each other's scopes.
        let mut tx = self.begin_write().await?;
        grant_consent_in(&mut tx, user_id, client_id, scopes, now).await?;
        tx.commit().await.map_err(store_err)
    }

    async fn revoke_consent(&self, user_id: &str, client_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM consents WHERE user_id = ? AND client_id = ?")
            .bind(user_id)
            .bind(client_id)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_pending(&self, pending: &PendingAuthorization) -> StoreResult<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO pending_authorizations (id, client_id, redirect_uri, state, \
             code_challenge, resource, scope, prompt, csrf_token, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&pending.id)
        .bind(&pending.client_id)
        .bind(&pending.redirect_uri)
        .bind(&pending.state)
        .bind(&pending.code_challenge)
        .bind(&pending.resource)
        .bind(pending.scope.to_string())
        .bind(pending.prompt.join(" "))
        .bind(&pending.csrf_token)
        .bind(pending.expires_at)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn pending(&self, id: &str, now: Timestamp) -> StoreResult<Option<PendingAuthorization>> {
        let sql = format!(
            "SELECT {PENDING_COLUMNS} FROM pending_authorizations WHERE id = ? AND expires_at > ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .as_ref()
            .map(pending_from)
            .transpose()
    }

    async fn delete_pending(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM pending_authorizations WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_session(&self, session: &BrowserSession) -> StoreResult<()> {
        sqlx::query("INSERT INTO browser_sessions (id_hash, user_id, expires_at) VALUES (?, ?, ?)")
            .bind(&session.id_hash)
            .bind(&session.user_id)
            .bind(session.expires_at)
            .execute(&self.pool)
            .await
            .map_err(conflict_or(|| "browser session".to_owned()))?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: Timestamp) -> StoreResult<Option<BrowserSession>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM browser_sessions WHERE id_hash = ? AND expires_at > ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .as_ref()
            .map(session_from)
            .transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM browser_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn create_code(&self, code: &AuthorizationCode) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO authorization_codes (code_hash, client_id, user_id, redirect_uri, \
             code_challenge, resource, scope, expires_at, family_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&code.code_hash)
        .bind(&code.client_id)
        .bind(&code.user_id)
        .bind(&code.redirect_uri)
        .bind(&code.code_challenge)
        .bind(&code.resource)
        .bind(code.scope.to_string())
        .bind(code.expires_at)
        .bind(&code.family_id)
        .execute(&self.pool)
        .await
        .map_err(conflict_or(|| "authorization code".to_owned()))?;
        Ok(())
    }

    async fn redeem_code(&self, code_hash: &str, now: Timestamp) -> StoreResult<CodeRedemption> {
        let code_hash = code_hash.to_owned();
        self.grouped(Box::new(move |conn| {
            Ok(grouped::redeem_code(conn, &code_hash, now)?.0)
        }))
        .await
    }

    async fn create_family(
        &self,
        family: &TokenFamily,
        first: Option<&RefreshToken>,
        code_hash: Option<&str>,
    ) -> StoreResult<()> {
        let (family, first) = (family.clone(), first.cloned());
        let code_hash = code_hash.map(str::to_owned);
        self.grouped(Box::new(move |conn| {
            grouped::create_family(conn, &family, first.as_ref(), code_hash.as_deref())
        }))
        .await
    }

    async fn family(&self, family_id: &str) -> StoreResult<Option<TokenFamily>> {
        fetch_family(&self.pool, family_id).await
    }

    async fn redeem_refresh(
        &self,
        token_hash: &str,
        successor: &RefreshToken,
        now: Timestamp,
        grace_secs: i64,
    ) -> StoreResult<RefreshRedemption> {
        // One writer, one write at a time: of concurrent redeems of one token only the first
        // sees it unrotated; the others see it rotated at `now` (grace) or revoke.
        let (token_hash, successor) = (token_hash.to_owned(), successor.clone());
        self.grouped(Box::new(move |conn| {
            grouped::redeem_refresh(conn, &token_hash, &successor, now, grace_secs)
        }))
        .await
    }

    async fn exchange_code(
        &self,
        code_hash: &str,
        now: Timestamp,
        grant: CodeGrant,
    ) -> StoreResult<CodeExchange> {
        let code_hash = code_hash.to_owned();
        self.grouped(Box::new(move |conn| {
            grouped::exchange_code(conn, &code_hash, now, grant)
        }))
        .await
    }

    async fn rotate_refresh(
        &self,
        token_hash: &str,
        successor: &RefreshToken,
        now: Timestamp,
        grace_secs: i64,
        check: RefreshCheck,
    ) -> StoreResult<RefreshRotation> {
        let (token_hash, successor) = (token_hash.to_owned(), successor.clone());
        self.grouped(Box::new(move |conn| {
            grouped::rotate_refresh(conn, &token_hash, &successor, now, grace_secs, check)
        }))
        .await
    }

    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshToken>> {
        fetch_refresh(&self.pool, token_hash).await
    }

    async fn revoke_family(&self, family_id: &str, now: Timestamp) -> StoreResult<()> {
        let family_id = family_id.to_owned();
        self.grouped(Box::new(move |conn| {
            grouped::revoke_family(conn, &family_id, now)
        }))
        .await
    }

    async fn revoke_grants(
        &self,
        user_id: Option<&str>,
        client_id: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Vec<String>> {
        // Without any filter this would revoke every grant of the server: refuse to guess.
        if user_id.is_none() && client_id.is_none() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(
            "UPDATE token_families SET revoked_at = ?1 WHERE revoked_at IS NULL \
             AND (?2 IS NULL OR user_id = ?2) AND (?3 IS NULL OR client_id = ?3) \
             RETURNING family_id",
        )
        .bind(now)
        .bind(user_id)
        .bind(client_id)
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)
    }

    async fn revoke_jti(&self, jti: &str, expires_at: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO revoked_jtis (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) \
             DO UPDATE SET expires_at = MAX(expires_at, excluded.expires_at)",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn revocations(&self, since: Timestamp, now: Timestamp) -> StoreResult<Revocations> {
        // Two reads, one snapshot: a revocation committed between them is not half-seen.
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        let jtis: Vec<(String, Timestamp)> = sqlx::query_as(
            "SELECT jti, expires_at FROM revoked_jtis WHERE expires_at > ? ORDER BY expires_at, jti",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_err)?;
        let families: Vec<String> = sqlx::query_scalar(
            "SELECT family_id FROM token_families WHERE revoked_at >= ? \
             ORDER BY revoked_at, family_id",
        )
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(Revocations { jtis, families })
    }

    async fn create_key(&self, key: &SigningKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_pkcs8, public_jwk, created_at, \
             activate_at, retire_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_pkcs8)
        .bind(key.public_jwk.to_string())
        .bind(key.created_at)
        .bind(key.activate_at)
        .bind(key.retire_at)
        .execute(&self.pool)
        .await
        .map_err(conflict_or(|| format!("signing key {:?}", key.kid)))?;
        Ok(())
    }

    async fn keys(&self) -> StoreResult<Vec<SigningKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at, rowid");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?
            .iter()
            .map(key_from)
            .collect()
    }

    async fn set_key_retirement(&self, kid: &str, retire_at: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE signing_keys SET retire_at = ? WHERE kid = ?")
            .bind(retire_at)
            .bind(kid)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_upstream_login(&self, login: &UpstreamLogin) -> StoreResult<()> {
        let pending = serde_json::to_string(&login.pending)
            .map_err(|e| StoreError::Corrupt(format!("pending authorization: {e}")))?;
        sqlx::query(
            "INSERT INTO upstream_logins (state_hash, browser_hash, nonce, code_verifier, \
             pending, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&login.state_hash)
        .bind(&login.browser_hash)
        .bind(&login.nonce)
        .bind(&login.code_verifier)
        .bind(pending)
        .bind(login.expires_at)
        .execute(&self.pool)
        .await
        .map_err(conflict_or(|| "upstream sign-in".to_owned()))?;
        Ok(())
    }

    async fn take_upstream_login(
        &self,
        state_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<UpstreamLogin>> {
        let row = sqlx::query(
            "DELETE FROM upstream_logins WHERE state_hash = ? \
             RETURNING browser_hash, nonce, code_verifier, pending, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_err)?;
        let Some(row) = row else { return Ok(None) };
        let login = upstream_login_from(state_hash, &row)?;
        Ok((login.expires_at > now).then_some(login))
    }

    async fn put_upstream_tokens(
        &self,
        user_id: &str,
        sealed: &[u8],
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO upstream_tokens (user_id, sealed, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (user_id) DO UPDATE SET sealed = excluded.sealed, \
             updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(sealed)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn upstream_tokens(&self, user_id: &str) -> StoreResult<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT sealed FROM upstream_tokens WHERE user_id = ?")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)
    }

    async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let purged = purge_expired_in(&mut tx, now, self.family_retention_secs).await?;
        tx.commit().await.map_err(store_err)?;
        Ok(purged)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn save_mcp_session(&self, session: &super::McpSession) -> StoreResult<()> {
        // The binding never changes: an id already bound to another principal is a conflict.
        let done = sqlx::query(
            "INSERT INTO mcp_sessions (id_hash, state, issuer, subject, client_id, grant_id, \
             created_at, last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id_hash) DO UPDATE SET state = excluded.state, \
             last_seen_at = excluded.last_seen_at, expires_at = excluded.expires_at \
             WHERE mcp_sessions.issuer = excluded.issuer \
             AND mcp_sessions.subject = excluded.subject \
             AND mcp_sessions.client_id IS excluded.client_id",
        )
        .bind(&session.id_hash)
        .bind(session.state.to_string())
        .bind(&session.issuer)
        .bind(&session.subject)
        .bind(&session.client_id)
        .bind(&session.grant_id)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "MCP session bound to another principal".to_owned(),
            ));
        }
        Ok(())
    }

    async fn mcp_session(
        &self,
        id_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<super::McpSession>> {
        let sql = format!(
            "SELECT {MCP_SESSION_COLUMNS} FROM mcp_sessions WHERE id_hash = ? AND expires_at > ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .as_ref()
            .map(mcp_session_from)
            .transpose()
    }

    async fn touch_mcp_session(
        &self,
        id_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE mcp_sessions SET last_seen_at = ?1, expires_at = MAX(expires_at, ?2) \
             WHERE id_hash = ?3 AND expires_at > ?1",
        )
        .bind(now)
        .bind(expires_at)
        .bind(id_hash)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_mcp_session(&self, id_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM mcp_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }
}

// MCP sessions.

const MCP_SESSION_COLUMNS: &str = "id_hash, state, issuer, subject, client_id, grant_id, \
                                   created_at, last_seen_at, expires_at";

fn mcp_session_from(row: &SqliteRow) -> StoreResult<super::McpSession> {
    let state: String = row.try_get("state").map_err(store_err)?;
    Ok(super::McpSession {
        id_hash: row.try_get("id_hash").map_err(store_err)?,
        state: serde_json::from_str(&state).map_err(|e| corrupt("MCP session state", e))?,
        issuer: row.try_get("issuer").map_err(store_err)?,
        subject: row.try_get("subject").map_err(store_err)?,
        client_id: row.try_get("client_id").map_err(store_err)?,
        grant_id: row.try_get("grant_id").map_err(store_err)?,
        created_at: row.try_get("created_at").map_err(store_err)?,
        last_seen_at: row.try_get("last_seen_at").map_err(store_err)?,
        expires_at: row.try_get("expires_at").map_err(store_err)?,
    })
}

async fn purge_mcp_sessions_in(conn: &mut SqliteConnection, now: Timestamp) -> StoreResult<u64> {
    Ok(
        sqlx::query("DELETE FROM mcp_sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(conn)
            .await
            .map_err(store_err)?
            .rows_affected(),
    )
}
