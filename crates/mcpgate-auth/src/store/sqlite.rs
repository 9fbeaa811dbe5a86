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
//! one writer task that commits them in groups: it takes every write queued while the
//! previous commit was syncing, runs each in its own `SAVEPOINT` inside one `BEGIN IMMEDIATE`
//! transaction (a failing write is rolled back alone), commits once, and only then answers
//! each request — never before its write is durable. The writes of a group run one after the
//! other on one connection, so each sees the ones before it exactly as if they had committed
//! separately: two rotations of one refresh token in one group still have one winner.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteExecutor, Transaction};
use tokio::sync::mpsc;

use super::{
    AuthorizationCode, BrowserSession, Client, ClientSource, CodeExchange, CodeGrant,
    CodeRedemption, PendingAuthorization, RefreshCheck, RefreshRedemption, RefreshRotation,
    RefreshToken, Revocations, SigningKey, Store, StoreError, StoreResult, Timestamp, TokenFamily,
    UpstreamLogin, User,
};
use crate::ScopeSet;

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

/// Most writes one group commit carries (a bound on how long one transaction holds the lock).
const MAX_GROUP: usize = 64;

/// A [`Store`] on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    family_retention_secs: i64,
    writer: Arc<GroupWriter>,
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
            // forever. One connection also avoids shared-cache table locks, which the busy
            // timeout does not cover.
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
        Ok(Self {
            writer: Arc::new(GroupWriter::new(pool.clone())),
            pool,
            family_retention_secs: DEFAULT_FAMILY_RETENTION_SECS,
        })
    }

    /// How long [`Store::purge_expired`] keeps a family once it has no refresh token left,
    /// counted from its last use (or revocation). Families are what the resource server's
    /// denylist names, so this must outlast the longest access-token lifetime.
    pub fn with_family_retention(mut self, secs: i64) -> Self {
        self.family_retention_secs = secs;
        self
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection (a clean shutdown checkpoints the WAL).
    pub async fn close(&self) {
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
        let (reply, answer) = oneshot::channel();
        self.writer.submit(Box::new(Job { work, reply }));
        answer.await.map_err(|_| {
            StoreError::Unavailable("the SQLite writer stopped before committing".to_owned())
        })?
    }
}

// Group commit (see the module documentation).

/// One write of a group: runs on the group's connection inside its transaction. `Err` rolls
/// back this write alone.
type Work<T> =
    Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>> + Send>;

/// Boxes a write (pins down the closure's higher-ranked signature for type inference).
fn work<T, F>(f: F) -> Work<T>
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
{
    Box::new(f)
}

/// A queued write, its result type erased.
trait GroupJob: Send {
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Box<dyn Reply>>;
    fn fail(self: Box<Self>, error: StoreError);
}

/// A write that has run, waiting for its group's commit to be answered.
trait Reply: Send {
    fn succeeded(&self) -> bool;
    fn send(self: Box<Self>, commit: &StoreResult<()>);
}

struct Job<T> {
    work: Work<T>,
    reply: oneshot::Sender<StoreResult<T>>,
}

struct Ran<T> {
    outcome: StoreResult<T>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send + 'static> GroupJob for Job<T> {
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Box<dyn Reply>> {
        let Job { work, reply } = *self;
        async move {
            let outcome = work(conn).await;
            Box::new(Ran { outcome, reply }) as Box<dyn Reply>
        }
        .boxed()
    }

    fn fail(self: Box<Self>, error: StoreError) {
        // The requester may be gone (its client hung up): nobody left to tell.
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send + 'static> Reply for Ran<T> {
    fn succeeded(&self) -> bool {
        self.outcome.is_ok()
    }

    fn send(self: Box<Self>, commit: &StoreResult<()>) {
        let outcome = match (self.outcome, commit) {
            (Ok(value), Ok(())) => Ok(value),
            // Its writes were part of a group that did not commit: nothing happened.
            (Ok(_), Err(e)) => Err(e.clone()),
            (Err(e), _) => Err(e),
        };
        let _ = self.reply.send(outcome);
    }
}

/// The queue of the writer task. The task belongs to the runtime that started it; if that
/// runtime is gone (a store kept across runtimes), the next write starts a new one.
struct GroupWriter {
    pool: SqlitePool,
    queue: Mutex<mpsc::UnboundedSender<Box<dyn GroupJob>>>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter").finish_non_exhaustive()
    }
}

impl GroupWriter {
    /// Must be called inside a Tokio runtime (the store is opened from async code).
    fn new(pool: SqlitePool) -> Self {
        let queue = Mutex::new(spawn_writer(pool.clone()));
        Self { pool, queue }
    }

    fn submit(&self, job: Box<dyn GroupJob>) {
        // A poisoned lock only means another submit panicked; the sender is still sound.
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(mpsc::error::SendError(job)) = queue.send(job) {
            *queue = spawn_writer(self.pool.clone());
            if let Err(mpsc::error::SendError(job)) = queue.send(job) {
                job.fail(StoreError::Unavailable(
                    "the SQLite writer could not be started".to_owned(),
                ));
            }
        }
    }
}

fn spawn_writer(pool: SqlitePool) -> mpsc::UnboundedSender<Box<dyn GroupJob>> {
    let (queue, jobs) = mpsc::unbounded_channel();
    tokio::spawn(write_groups(pool, jobs));
    queue
}

/// The writer task: ends when every handle of the store is gone.
async fn write_groups(pool: SqlitePool, mut jobs: mpsc::UnboundedReceiver<Box<dyn GroupJob>>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    // Everything queued while the previous group was committing forms the next group.
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        commit_group(&pool, std::mem::take(&mut group)).await;
    }
}

async fn commit_group(pool: &SqlitePool, group: Vec<Box<dyn GroupJob>>) {
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            let e = store_err(e);
            for job in group {
                job.fail(e.clone());
            }
            return;
        }
    };
    let mut ran = Vec::with_capacity(group.len());
    let mut jobs = group.into_iter().peekable();
    // Each write runs in a savepoint. Closing one and opening the next is a single query, and
    // the last one is closed by the commit: per write, one round trip to SQLite's thread.
    let mut broken = statement(&mut tx, "SAVEPOINT grouped").await.err();
    while broken.is_none() {
        let Some(job) = jobs.next() else { break };
        let reply = job.run(&mut tx).await;
        let last = jobs.peek().is_none();
        let end = match (reply.succeeded(), last) {
            (true, true) => Ok(()),
            (true, false) => statement(&mut tx, "RELEASE grouped; SAVEPOINT grouped").await,
            (false, true) => statement(&mut tx, "ROLLBACK TO grouped; RELEASE grouped").await,
            (false, false) => {
                statement(
                    &mut tx,
                    "ROLLBACK TO grouped; RELEASE grouped; SAVEPOINT grouped",
                )
                .await
            }
        };
        ran.push(reply);
        broken = end.err();
    }
    let commit = match broken {
        // The transaction's state is unknown: undo all of it.
        Some(e) => {
            for job in jobs {
                job.fail(e.clone());
            }
            let _ = tx.rollback().await;
            Err(e)
        }
        None => tx.commit().await.map_err(store_err),
    };
    for reply in ran {
        reply.send(&commit);
    }
}

async fn statement(conn: &mut SqliteConnection, sql: &'static str) -> StoreResult<()> {
    sqlx::query(sql)
        .execute(conn)
        .await
        .map_err(store_err)
        .map(|_| ())
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

const CODE_COLUMNS: &str = "code_hash, client_id, user_id, redirect_uri, code_challenge, \
                            resource, scope, expires_at, family_id";

fn code_from(row: &SqliteRow) -> StoreResult<AuthorizationCode> {
    Ok(AuthorizationCode {
        code_hash: row.try_get("code_hash").map_err(store_err)?,
        client_id: row.try_get("client_id").map_err(store_err)?,
        user_id: row.try_get("user_id").map_err(store_err)?,
        redirect_uri: row.try_get("redirect_uri").map_err(store_err)?,
        code_challenge: row.try_get("code_challenge").map_err(store_err)?,
        resource: row.try_get("resource").map_err(store_err)?,
        scope: scope_from(row, "scope")?,
        expires_at: row.try_get("expires_at").map_err(store_err)?,
        family_id: row.try_get("family_id").map_err(store_err)?,
    })
}

const FAMILY_COLUMNS: &str =
    "family_id, client_id, user_id, scope, resource, created_at, revoked_at";

/// Where a row keeps a family's columns after `family_id`: client, user, scope, resource,
/// created, revoked.
type FamilyColumns = [&'static str; 6];

fn family_from(row: &SqliteRow) -> StoreResult<TokenFamily> {
    family_in(
        row,
        [
            "client_id",
            "user_id",
            "scope",
            "resource",
            "created_at",
            "revoked_at",
        ],
    )
}

fn family_in(
    row: &SqliteRow,
    [client, user, scope, resource, created, revoked]: FamilyColumns,
) -> StoreResult<TokenFamily> {
    Ok(TokenFamily {
        family_id: row.try_get("family_id").map_err(store_err)?,
        client_id: row.try_get(client).map_err(store_err)?,
        user_id: row.try_get(user).map_err(store_err)?,
        scope: scope_from(row, scope)?,
        resource: row.try_get(resource).map_err(store_err)?,
        created_at: row.try_get(created).map_err(store_err)?,
        revoked_at: row.try_get(revoked).map_err(store_err)?,
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

/// The body of [`Store::redeem_refresh`], inside its write transaction.
async fn redeem_refresh_in(
    conn: &mut SqliteConnection,
    token_hash: &str,
    successor: &RefreshToken,
    now: Timestamp,
    grace_secs: i64,
) -> StoreResult<RefreshRedemption> {
    let Some(token) = fetch_refresh(&mut *conn, token_hash).await? else {
        return Ok(RefreshRedemption::Invalid);
    };
    let Some(family) = fetch_family(&mut *conn, &token.family_id).await? else {
        return Ok(RefreshRedemption::Invalid);
    };
    redeem_found(conn, token, family, successor, now, grace_secs).await
}

/// A refresh token, its family and the username of the family's user, in one read.
const FOUND_REFRESH_SQL: &str = "SELECT r.token_hash, r.family_id, r.scope, r.resource, \
     r.expires_at, r.created_at, r.rotated_at, f.client_id AS f_client_id, \
     f.user_id AS f_user_id, f.scope AS f_scope, f.resource AS f_resource, \
     f.created_at AS f_created_at, f.revoked_at AS f_revoked_at, u.username AS username \
     FROM refresh_tokens r JOIN token_families f ON f.family_id = r.family_id \
     LEFT JOIN users u ON u.id = f.user_id WHERE r.token_hash = ?";

/// The family columns of [`FOUND_REFRESH_SQL`].
fn found_family_from(row: &SqliteRow) -> StoreResult<TokenFamily> {
    family_in(
        row,
        [
            "f_client_id",
            "f_user_id",
            "f_scope",
            "f_resource",
            "f_created_at",
            "f_revoked_at",
        ],
    )
}

/// The body of [`Store::rotate_refresh`], inside its write transaction: one read, the check,
/// then the redemption's writes.
async fn rotate_refresh_in(
    conn: &mut SqliteConnection,
    token_hash: &str,
    successor: &RefreshToken,
    now: Timestamp,
    grace_secs: i64,
    check: RefreshCheck,
) -> StoreResult<RefreshRotation> {
    let row = sqlx::query(FOUND_REFRESH_SQL)
        .bind(token_hash)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_err)?;
    let Some(row) = row else {
        return Ok(RefreshRotation::Redeemed {
            redemption: RefreshRedemption::Invalid,
            username: None,
        });
    };
    let token = refresh_from(&row)?;
    let family = found_family_from(&row)?;
    let username: Option<String> = row.try_get("username").map_err(store_err)?;
    if !check(&token, &family, username.as_deref()) {
        return Ok(RefreshRotation::Refused {
            token,
            family,
            username,
        });
    }
    let successor = super::successor_of(&token, successor);
    let redemption = redeem_found(conn, token, family, &successor, now, grace_secs).await?;
    Ok(RefreshRotation::Redeemed {
        redemption,
        username,
    })
}

/// Redeems a refresh token found with its family (same transaction).
async fn redeem_found(
    conn: &mut SqliteConnection,
    mut token: RefreshToken,
    mut family: TokenFamily,
    successor: &RefreshToken,
    now: Timestamp,
    grace_secs: i64,
) -> StoreResult<RefreshRedemption> {
    let token_hash = token.token_hash.clone();
    if family.revoked_at.is_some() || token.expires_at <= now {
        return Ok(RefreshRedemption::Invalid);
    }
    match token.rotated_at {
        None => {
            issue_successor(conn, successor, &family.family_id, now, Some(&token_hash)).await?;
            token.rotated_at = Some(now);
            Ok(RefreshRedemption::Current { token, family })
        }
        // Strictly less: with a zero grace window every second presentation is a replay.
        Some(rotated_at) if now - rotated_at < grace_secs => {
            issue_successor(conn, successor, &family.family_id, now, None).await?;
            Ok(RefreshRedemption::WithinGrace { token, family })
        }
        Some(_) => {
            sqlx::query("UPDATE token_families SET revoked_at = ? WHERE family_id = ?")
                .bind(now)
                .bind(&family.family_id)
                .execute(&mut *conn)
                .await
                .map_err(store_err)?;
            family.revoked_at = Some(now);
            Ok(RefreshRedemption::Replayed { family })
        }
    }
}

/// Stores `successor` in the family and records the family's use, and with `rotated` marks that
/// token rotated into it. One query of several statements (numbered parameters, shared by all):
/// sqlx runs each query on its connection's worker thread, and the round trip to that thread,
/// not SQLite, is what a statement costs most. A failing statement stops the rest; the caller's
/// transaction (or savepoint) undoes the ones before. Beware when writing such queries: sqlx
/// binds a statement's unused lower-numbered slots from a running count over the whole query
/// and stops binding once that count passes the number of arguments, so the total of such gaps
/// must stay below it (here at most 8 gaps for 9 arguments; the rotation tests check the values).
async fn issue_successor(
    conn: &mut SqliteConnection,
    successor: &RefreshToken,
    family_id: &str,
    now: Timestamp,
    rotated: Option<&str>,
) -> StoreResult<()> {
    const INSERT_AND_USE: &str = "INSERT INTO refresh_tokens (token_hash, family_id, scope, \
         resource, expires_at, created_at, rotated_at) VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8); \
         UPDATE token_families SET last_used_at = ?1 WHERE family_id = ?3";
    const ROTATE_INSERT_AND_USE: &str = "UPDATE refresh_tokens SET rotated_at = ?1, \
         successor = ?2 WHERE token_hash = ?9; \
         INSERT INTO refresh_tokens (token_hash, family_id, scope, \
         resource, expires_at, created_at, rotated_at) VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8); \
         UPDATE token_families SET last_used_at = ?1 WHERE family_id = ?3";
    let query = sqlx::query(if rotated.is_some() {
        ROTATE_INSERT_AND_USE
    } else {
        INSERT_AND_USE
    })
    .bind(now)
    .bind(&successor.token_hash)
    .bind(family_id)
    .bind(successor.scope.to_string())
    .bind(&successor.resource)
    .bind(successor.expires_at)
    .bind(successor.created_at)
    .bind(successor.rotated_at)
    .bind(rotated);
    query
        .execute(conn)
        .await
        .map_err(conflict_or(|| "refresh token".to_owned()))?;
    Ok(())
}

/// The body of [`Store::create_family`], inside its write transaction: the inserts in one query
/// (see [`issue_successor`] for why), then the code's link.
async fn create_family_in(
    conn: &mut SqliteConnection,
    family: &TokenFamily,
    first: Option<&RefreshToken>,
    code_hash: Option<&str>,
) -> StoreResult<()> {
    const FAMILY: &str = "INSERT INTO token_families (family_id, client_id, user_id, scope, \
         resource, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    const FAMILY_AND_FIRST: &str = "INSERT INTO token_families (family_id, client_id, user_id, \
         scope, resource, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7); \
         INSERT INTO refresh_tokens (token_hash, family_id, scope, resource, \
         expires_at, created_at, rotated_at) VALUES (?8, ?1, ?9, ?10, ?11, ?12, ?13)";
    sqlx::query(if first.is_some() {
        FAMILY_AND_FIRST
    } else {
        FAMILY
    })
    .bind(&family.family_id)
    .bind(&family.client_id)
    .bind(&family.user_id)
    .bind(family.scope.to_string())
    .bind(&family.resource)
    .bind(family.created_at)
    .bind(family.revoked_at)
    .bind(first.map(|t| t.token_hash.as_str()))
    .bind(first.map(|t| t.scope.to_string()))
    .bind(first.map(|t| t.resource.as_str()))
    .bind(first.map(|t| t.expires_at))
    .bind(first.map(|t| t.created_at))
    .bind(first.and_then(|t| t.rotated_at))
    .execute(&mut *conn)
    .await
    .map_err(conflict_or(|| {
        format!("token family {} or its refresh token", family.family_id)
    }))?;
    let Some(code_hash) = code_hash else {
        return Ok(());
    };
    let replayed_at: Option<Option<Timestamp>> = sqlx::query_scalar(
        "UPDATE authorization_codes SET family_id = ? WHERE code_hash = ? AND family_id IS NULL \
         RETURNING replayed_at",
    )
    .bind(&family.family_id)
    .bind(code_hash)
    .fetch_optional(&mut *conn)
    .await
    .map_err(store_err)?;
    match replayed_at {
        // One code, one family: linking a second one would hide the first from a replay.
        None => Err(StoreError::Conflict(
            "authorization code unknown or already exchanged".to_owned(),
        )),
        // The code was replayed while this, its first exchange, was in flight: the grant is
        // born revoked so that the replay still ends it.
        Some(Some(_)) => {
            sqlx::query(
                "UPDATE token_families SET revoked_at = COALESCE(revoked_at, ?) \
                 WHERE family_id = ?",
            )
            .bind(family.created_at)
            .bind(&family.family_id)
            .execute(&mut *conn)
            .await
            .map_err(store_err)?;
            Ok(())
        }
        Some(None) => Ok(()),
    }
}

/// The body of [`Store::redeem_code`] (two single-row statements; see there), also returning the
/// username of the code's user.
async fn redeem_code_in(
    conn: &mut SqliteConnection,
    code_hash: &str,
    now: Timestamp,
) -> StoreResult<(CodeRedemption, Option<String>)> {
    // Of two concurrent first uses exactly one UPDATE matches `used_at IS NULL`; the other falls
    // through to the replay branch. A code can only go from unused to used, so no interleaving
    // misclassifies.
    let sql = format!(
        "UPDATE authorization_codes SET used_at = ?1 \
         WHERE code_hash = ?2 AND used_at IS NULL AND expires_at > ?1 \
         RETURNING {CODE_COLUMNS}, \
         (SELECT username FROM users WHERE users.id = authorization_codes.user_id) AS username"
    );
    let fresh = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(code_hash)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_err)?;
    if let Some(row) = fresh {
        let username = row.try_get("username").map_err(store_err)?;
        return Ok((CodeRedemption::Fresh(code_from(&row)?), username));
    }
    // Used before (expired or not): a replay. Recording it lets a family still being
    // created from the first use be born revoked (see `create_family_in`).
    let sql = format!(
        "UPDATE authorization_codes SET replayed_at = COALESCE(replayed_at, ?1) \
         WHERE code_hash = ?2 AND used_at IS NOT NULL \
         RETURNING {CODE_COLUMNS}"
    );
    let replayed = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(code_hash)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_err)?;
    match replayed {
        Some(row) => Ok((CodeRedemption::Replayed(code_from(&row)?), None)),
        // Never issued, purged, or expired before its first use.
        None => Ok((CodeRedemption::Unknown, None)),
    }
}

/// The body of [`Store::exchange_code`], inside its write transaction.
async fn exchange_code_in(
    conn: &mut SqliteConnection,
    code_hash: &str,
    now: Timestamp,
    grant: CodeGrant,
) -> StoreResult<CodeExchange> {
    match redeem_code_in(&mut *conn, code_hash, now).await? {
        (CodeRedemption::Fresh(code), username) => {
            let Some((family, first)) = grant(&code, username.as_deref()) else {
                return Ok(CodeExchange::Refused { code, username });
            };
            create_family_in(conn, &family, first.as_ref(), Some(code_hash)).await?;
            Ok(CodeExchange::Issued { code, username })
        }
        (CodeRedemption::Replayed(code), _) => {
            if let Some(family_id) = &code.family_id {
                revoke_family_in(conn, family_id, now).await?;
            }
            Ok(CodeExchange::Replayed(code))
        }
        (CodeRedemption::Unknown, _) => Ok(CodeExchange::Unknown),
    }
}

async fn revoke_family_in(
    conn: &mut SqliteConnection,
    family_id: &str,
    now: Timestamp,
) -> StoreResult<()> {
    // Keeps the first revocation time: the denylist has already published it.
    sqlx::query(
        "UPDATE token_families SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(family_id)
    .execute(conn)
    .await
    .map_err(store_err)?;
    Ok(())
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
        Ok(())
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .as_ref()
            .map(client_from)
            .transpose()
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
        self.grouped(work(move |conn| {
            async move { Ok(redeem_code_in(conn, &code_hash, now).await?.0) }.boxed()
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
        self.grouped(work(move |conn| {
            async move { create_family_in(conn, &family, first.as_ref(), code_hash.as_deref()).await }
                .boxed()
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
        self.grouped(work(move |conn| {
            async move { redeem_refresh_in(conn, &token_hash, &successor, now, grace_secs).await }
                .boxed()
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
        self.grouped(work(move |conn| {
            async move { exchange_code_in(conn, &code_hash, now, grant).await }.boxed()
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
        self.grouped(work(move |conn| {
            async move {
                rotate_refresh_in(conn, &token_hash, &successor, now, grace_secs, check).await
            }
            .boxed()
        }))
        .await
    }

    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshToken>> {
        fetch_refresh(&self.pool, token_hash).await
    }

    async fn revoke_family(&self, family_id: &str, now: Timestamp) -> StoreResult<()> {
        let family_id = family_id.to_owned();
        self.grouped(work(move |conn| {
            async move { revoke_family_in(conn, &family_id, now).await }.boxed()
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
