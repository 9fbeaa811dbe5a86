//! The PostgreSQL [`Store`]: the shared store of a deployment with several instances.
//!
//! A pool of connections, migrations embedded from `migrations/postgres` (sqlx serialises
//! concurrent migrators with an advisory lock, so instances may start together). Any number of
//! instances share one database, so every decision that reads a row and then acts on it holds a
//! row lock (`SELECT … FOR [NO KEY] UPDATE`) or is one `UPDATE … RETURNING` statement, in an
//! explicitly `READ COMMITTED` transaction: a statement that waited for a lock sees what the lock
//! holder committed, so concurrent redemptions queue and each one decides on fresh data. Nothing
//! is retried.
//!
//! Deadlocks are avoided by locking in one order everywhere: token families, then refresh tokens,
//! then authorization codes, then users and the rows that cascade from them (consents, sessions),
//! then pending authorizations, then clients; and, inside one table, several rows in key order
//! (see [`ordered_delete`]). A refresh takes its family's lock before its token's.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Decode, PgExecutor, Postgres, Row, Transaction, Type};

use super::{
    AuthorizationCode, BrowserSession, Client, ClientSource, CodeExchange, CodeGrant,
    CodeRedemption, PendingAuthorization, RefreshCheck, RefreshRedemption, RefreshRotation,
    RefreshToken, Revocations, SigningKey, Store, StoreError, StoreResult, Timestamp, TokenFamily,
    UpstreamLogin, User,
};
use crate::ScopeSet;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per instance. Most requests need one for a few milliseconds; a refresh race
/// holds one per waiting request.
const MAX_CONNECTIONS: u32 = 10;
/// How long opening a connection (or waiting for a free one) may take before the store is
/// reported unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A pooled connection returned this recently is lent again without a liveness round trip: under
/// load every connection is that fresh, and the ping was two of a rotation's eight round trips.
/// One idle for longer (the likely case after a server restart or a dropped idle connection) is
/// still pinged and, if dead, replaced. A connection the server drops inside the window can be
/// lent once, and that request fails like any other store error (503 with `Retry-After`).
/// The same trade as HikariCP's `aliveBypassWindowMs`, with its default.
const LIVENESS_BYPASS: Duration = Duration::from_millis(500);
/// Used codes are kept this long past their expiry so that a late replay is still recognised
/// (and revokes what the first use issued) rather than answered as an unknown code.
const USED_CODE_RETENTION_SECS: i64 = 600;
/// Default for [`PostgresStore::with_family_retention`], the same as SQLite's.
pub const DEFAULT_FAMILY_RETENTION_SECS: i64 = super::sqlite::DEFAULT_FAMILY_RETENTION_SECS;

/// Transactions that decide on what they read. Stated explicitly: a server whose
/// `default_transaction_isolation` is stricter would turn lock waits into serialization errors.
const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
/// Several reads from one snapshot.
const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// A [`Store`] on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    family_retention_secs: i64,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and brings the schema up to date.
    pub async fn open(url: &str) -> StoreResult<Self> {
        // Never echo the URL: it may carry a password.
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Unavailable(
                "not a PostgreSQL URL (postgres://user@host/database)".to_owned(),
            ));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?
            .application_name("mcpgate");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    // `false` closes the connection and the pool lends or opens another.
                    Ok(meta.idle_for < LIVENESS_BYPASS || conn.ping().await.is_ok())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
        Self::from_pool(pool).await
    }

    /// Wraps an existing pool and runs the migrations.
    pub async fn from_pool(pool: PgPool) -> StoreResult<Self> {
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the PostgreSQL store: {e}")))?;
        Ok(Self {
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

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin_with(BEGIN_WRITE).await.map_err(store_err)
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
            // Connection loss, shutdown, disk full, statement timeouts, and the deadlocks and
            // serialization failures the lock order is there to prevent.
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

/// `DELETE FROM table` of the rows matching `filter`, locked in `key` order first: two such
/// statements over overlapping rows then queue instead of deadlocking.
fn ordered_delete(table: &str, key: &str, filter: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE ({key}) IN \
         (SELECT {key} FROM {table} WHERE {filter} ORDER BY {key} FOR UPDATE)"
    ))
}

// Rows -> values. Columns are listed explicitly in the `*_COLUMNS` constants below so that a
// schema change cannot silently reorder or add what these read.

fn col<'r, T>(row: &'r PgRow, column: &str) -> StoreResult<T>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    row.try_get(column).map_err(store_err)
}

fn scope_col(row: &PgRow, column: &str) -> StoreResult<ScopeSet> {
    let text: String = col(row, column)?;
    Ok(ScopeSet::parse(&text))
}

const USER_COLUMNS: &str = "id, username, password_hash, created_at";

fn user_from(row: &PgRow) -> StoreResult<User> {
    Ok(User {
        id: col(row, "id")?,
        username: col(row, "username")?,
        password_hash: col(row, "password_hash")?,
        created_at: col(row, "created_at")?,
    })
}

const CLIENT_COLUMNS: &str = "client_id, secret_hash, metadata, source, created_at";

fn client_from(row: &PgRow) -> StoreResult<Client> {
    let source: String = col(row, "source")?;
    Ok(Client {
        client_id: col(row, "client_id")?,
        secret_hash: col(row, "secret_hash")?,
        metadata: col(row, "metadata")?,
        source: source_from(&source)?,
        created_at: col(row, "created_at")?,
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

const PENDING_COLUMNS: &str = "id, client_id, redirect_uri, state, code_challenge, resource, \
                               scope, prompt, csrf_token, expires_at";

fn upstream_login_from(state_hash: &str, row: &PgRow) -> StoreResult<UpstreamLogin> {
    let pending: serde_json::Value = row.try_get("pending").map_err(store_err)?;
    Ok(UpstreamLogin {
        state_hash: state_hash.to_owned(),
        browser_hash: row.try_get("browser_hash").map_err(store_err)?,
        nonce: row.try_get("nonce").map_err(store_err)?,
        code_verifier: row.try_get("code_verifier").map_err(store_err)?,
        pending: serde_json::from_value(pending)
            .map_err(|e| StoreError::Corrupt(format!("upstream sign-in: {e}")))?,
        expires_at: row.try_get("expires_at").map_err(store_err)?,
    })
}

fn pending_from(row: &PgRow) -> StoreResult<PendingAuthorization> {
    let prompt: String = col(row, "prompt")?;
    Ok(PendingAuthorization {
        id: col(row, "id")?,
        client_id: col(row, "client_id")?,
        redirect_uri: col(row, "redirect_uri")?,
        state: col(row, "state")?,
        code_challenge: col(row, "code_challenge")?,
        resource: col(row, "resource")?,
        scope: scope_col(row, "scope")?,
        prompt: prompt
            .split(' ')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        csrf_token: col(row, "csrf_token")?,
        expires_at: col(row, "expires_at")?,
    })
}

const SESSION_COLUMNS: &str = "id_hash, user_id, expires_at";

fn session_from(row: &PgRow) -> StoreResult<BrowserSession> {
    Ok(BrowserSession {
        id_hash: col(row, "id_hash")?,
        user_id: col(row, "user_id")?,
        expires_at: col(row, "expires_at")?,
    })
}

const CODE_COLUMNS: &str = "code_hash, client_id, user_id, redirect_uri, code_challenge, \
                            resource, scope, expires_at, family_id";

fn code_from(row: &PgRow) -> StoreResult<AuthorizationCode> {
    Ok(AuthorizationCode {
        code_hash: col(row, "code_hash")?,
        client_id: col(row, "client_id")?,
        user_id: col(row, "user_id")?,
        redirect_uri: col(row, "redirect_uri")?,
        code_challenge: col(row, "code_challenge")?,
        resource: col(row, "resource")?,
        scope: scope_col(row, "scope")?,
        expires_at: col(row, "expires_at")?,
        family_id: col(row, "family_id")?,
    })
}

const FAMILY_COLUMNS: &str =
    "family_id, client_id, user_id, scope, resource, created_at, revoked_at";

fn family_from(row: &PgRow) -> StoreResult<TokenFamily> {
    Ok(TokenFamily {
        family_id: col(row, "family_id")?,
        client_id: col(row, "client_id")?,
        user_id: col(row, "user_id")?,
        scope: scope_col(row, "scope")?,
        resource: col(row, "resource")?,
        created_at: col(row, "created_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

const REFRESH_COLUMNS: &str =
    "token_hash, family_id, scope, resource, expires_at, created_at, rotated_at";

fn refresh_from(row: &PgRow) -> StoreResult<RefreshToken> {
    Ok(RefreshToken {
        token_hash: col(row, "token_hash")?,
        family_id: col(row, "family_id")?,
        scope: scope_col(row, "scope")?,
        resource: col(row, "resource")?,
        expires_at: col(row, "expires_at")?,
        created_at: col(row, "created_at")?,
        rotated_at: col(row, "rotated_at")?,
    })
}

const KEY_COLUMNS: &str = "kid, alg, private_pkcs8, public_jwk, created_at, activate_at, retire_at";

fn key_from(row: &PgRow) -> StoreResult<SigningKey> {
    Ok(SigningKey {
        kid: col(row, "kid")?,
        alg: col(row, "alg")?,
        private_pkcs8: col(row, "private_pkcs8")?,
        public_jwk: col(row, "public_jwk")?,
        created_at: col(row, "created_at")?,
        activate_at: col(row, "activate_at")?,
        retire_at: col(row, "retire_at")?,
    })
}

// Statements shared between pool reads and transactions.

/// Reads one row by key: `sql` selects with one `$1` parameter (and may lock).
async fn fetch_one_by<'c, T>(
    ex: impl PgExecutor<'c>,
    sql: String,
    key: &str,
    from: fn(&PgRow) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(ex)
        .await
        .map_err(store_err)?
        .as_ref()
        .map(from)
        .transpose()
}

async fn fetch_all_of<'c, T>(
    ex: impl PgExecutor<'c>,
    sql: String,
    from: fn(&PgRow) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(ex)
        .await
        .map_err(store_err)?
        .iter()
        .map(from)
        .collect()
}

/// Reads a family; `lock` is a locking clause (`""` for a plain read).
async fn fetch_family<'c>(
    ex: impl PgExecutor<'c>,
    family_id: &str,
    lock: &str,
) -> StoreResult<Option<TokenFamily>> {
    let sql = format!("SELECT {FAMILY_COLUMNS} FROM token_families WHERE family_id = $1 {lock}");
    fetch_one_by(ex, sql, family_id, family_from).await
}

/// Reads a refresh token; `lock` is a locking clause (`""` for a plain read).
async fn fetch_refresh<'c>(
    ex: impl PgExecutor<'c>,
    token_hash: &str,
    lock: &str,
) -> StoreResult<Option<RefreshToken>> {
    let sql = format!("SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = $1 {lock}");
    fetch_one_by(ex, sql, token_hash, refresh_from).await
}

/// Inserts a refresh token into `family_id`, whatever family the caller put in it: at refresh
/// time the caller cannot know the family before the store has found the presented token.
async fn insert_refresh(
    conn: &mut PgConnection,
    token: &RefreshToken,
    family_id: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, scope, resource, expires_at, \
         created_at, rotated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&token.token_hash)
    .bind(family_id)
    .bind(token.scope.to_string())
    .bind(&token.resource)
    .bind(token.expires_at)
    .bind(token.created_at)
    .bind(token.rotated_at)
    .execute(conn)
    .await
    .map_err(conflict_or(|| "refresh token".to_owned()))?;
    Ok(())
}

/// Revokes the families whose `column` (`user_id` or `client_id`) is `value` that are not
/// revoked yet, and deletes their refresh tokens: they are dead, and the family rows stay as the
/// denylist entries. Families are locked in key order, then their tokens. Returns the revoked
/// family ids.
async fn revoke_families_where(
    conn: &mut PgConnection,
    column: &'static str,
    value: &str,
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    let sql = format!(
        "UPDATE token_families SET revoked_at = $1 WHERE revoked_at IS NULL AND family_id IN \
         (SELECT family_id FROM token_families WHERE revoked_at IS NULL AND {column} = $2 \
         ORDER BY family_id FOR NO KEY UPDATE) \
         RETURNING family_id"
    );
    let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(value)
        .fetch_all(&mut *conn)
        .await
        .map_err(store_err)?;
    let tokens = format!("family_id IN (SELECT family_id FROM token_families WHERE {column} = $1)");
    sqlx::query(ordered_delete("refresh_tokens", "token_hash", &tokens))
        .bind(value)
        .execute(&mut *conn)
        .await
        .map_err(store_err)?;
    Ok(ids)
}

/// The body of [`Store::redeem_refresh`], inside its transaction.
///
/// The family's row lock is what concurrent redemptions (of this token or any other of the
/// family) queue on; the token's own lock follows, in the store's lock order. Whoever gets the
/// lock second reads the token as the first left it: rotated.
async fn redeem_refresh_in(
    conn: &mut PgConnection,
    token_hash: &str,
    successor: &RefreshToken,
    now: Timestamp,
    grace_secs: i64,
) -> StoreResult<RefreshRedemption> {
    // A token's family and expiry never change: reading them unlocked is safe, and refusing an
    // expired token here means no lock is ever taken on a row `purge_expired` may be deleting.
    let Some(unlocked) = fetch_refresh(&mut *conn, token_hash, "").await? else {
        return Ok(RefreshRedemption::Invalid);
    };
    if unlocked.expires_at <= now {
        return Ok(RefreshRedemption::Invalid);
    }
    redeem_locked(
        conn,
        token_hash,
        &unlocked.family_id,
        successor,
        now,
        grace_secs,
    )
    .await
}

/// The rest of [`redeem_refresh_in`] once the token was read unlocked and found unexpired:
/// lock the family, then the token, decide on what they hold now, write.
async fn redeem_locked(
    conn: &mut PgConnection,
    token_hash: &str,
    family_id: &str,
    successor: &RefreshToken,
    now: Timestamp,
    grace_secs: i64,
) -> StoreResult<RefreshRedemption> {
    let Some(mut family) = fetch_family(&mut *conn, family_id, "FOR NO KEY UPDATE").await? else {
        return Ok(RefreshRedemption::Invalid);
    };
    if family.revoked_at.is_some() {
        return Ok(RefreshRedemption::Invalid);
    }
    // Gone if the family was revoked (its tokens deleted) while this waited for the lock.
    let Some(mut token) = fetch_refresh(&mut *conn, token_hash, "FOR UPDATE").await? else {
        return Ok(RefreshRedemption::Invalid);
    };
    match token.rotated_at {
        None => {
            issue_successor(conn, successor, &family.family_id, now, Some(token_hash)).await?;
            token.rotated_at = Some(now);
            Ok(RefreshRedemption::Current { token, family })
        }
        // Strictly less: with a zero grace window every second presentation is a replay.
        Some(rotated_at) if now - rotated_at < grace_secs => {
            issue_successor(conn, successor, &family.family_id, now, None).await?;
            Ok(RefreshRedemption::WithinGrace { token, family })
        }
        Some(_) => {
            sqlx::query("UPDATE token_families SET revoked_at = $1 WHERE family_id = $2")
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

/// Stores `successor` in the (locked) family and records the family's use, and with `rotated`
/// marks that (locked) token rotated into it: one statement, one round trip.
async fn issue_successor(
    conn: &mut PgConnection,
    successor: &RefreshToken,
    family_id: &str,
    now: Timestamp,
    rotated: Option<&str>,
) -> StoreResult<()> {
    const INSERT: &str = "INSERT INTO refresh_tokens (token_hash, family_id, scope, resource, \
                          expires_at, created_at, rotated_at) VALUES ($2, $3, $4, $5, $6, $7, $8)";
    let sql = match rotated {
        Some(_) => format!(
            "WITH used AS (UPDATE token_families SET last_used_at = $1 WHERE family_id = $3), \
             rotated AS (UPDATE refresh_tokens SET rotated_at = $1, successor = $2 \
             WHERE token_hash = $9) {INSERT}"
        ),
        None => format!(
            "WITH used AS (UPDATE token_families SET last_used_at = $1 WHERE family_id = $3) \
             {INSERT}"
        ),
    };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(&successor.token_hash)
        .bind(family_id)
        .bind(successor.scope.to_string())
        .bind(&successor.resource)
        .bind(successor.expires_at)
        .bind(successor.created_at)
        .bind(successor.rotated_at);
    if let Some(rotated) = rotated {
        query = query.bind(rotated);
    }
    query
        .execute(conn)
        .await
        .map_err(conflict_or(|| "refresh token".to_owned()))?;
    Ok(())
}

/// A refresh token, its family and the username of the family's user, in one unlocked read.
const FOUND_REFRESH_SQL: &str = "SELECT r.token_hash, r.family_id, r.scope, r.resource, \
     r.expires_at, r.created_at, r.rotated_at, f.client_id AS f_client_id, \
     f.user_id AS f_user_id, f.scope AS f_scope, f.resource AS f_resource, \
     f.created_at AS f_created_at, f.revoked_at AS f_revoked_at, u.username AS username \
     FROM refresh_tokens r JOIN token_families f ON f.family_id = r.family_id \
     LEFT JOIN users u ON u.id = f.user_id WHERE r.token_hash = $1";

/// The family columns of [`FOUND_REFRESH_SQL`].
fn found_family_from(row: &PgRow) -> StoreResult<TokenFamily> {
    Ok(TokenFamily {
        family_id: col(row, "family_id")?,
        client_id: col(row, "f_client_id")?,
        user_id: col(row, "f_user_id")?,
        scope: scope_col(row, "f_scope")?,
        resource: col(row, "f_resource")?,
        created_at: col(row, "f_created_at")?,
        revoked_at: col(row, "f_revoked_at")?,
    })
}

/// The first use of a code, with the username of its user: `None` if the code is not fresh
/// (unknown, expired, or used before). Locks the code's row until the transaction ends.
async fn spend_code(
    conn: &mut PgConnection,
    code_hash: &str,
    now: Timestamp,
) -> StoreResult<Option<(AuthorizationCode, Option<String>)>> {
    let sql = format!(
        "UPDATE authorization_codes SET used_at = $1 \
         WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1 \
         RETURNING {CODE_COLUMNS}, \
         (SELECT username FROM users WHERE users.id = authorization_codes.user_id) AS username"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(code_hash)
        .fetch_optional(conn)
        .await
        .map_err(store_err)?;
    row.map(|row| Ok((code_from(&row)?, col(&row, "username")?)))
        .transpose()
}

/// The body of [`Store::create_family`], inside its transaction.
async fn create_family_in(
    conn: &mut PgConnection,
    family: &TokenFamily,
    first: Option<&RefreshToken>,
    code_hash: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO token_families (family_id, client_id, user_id, scope, resource, \
         created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&family.family_id)
    .bind(&family.client_id)
    .bind(&family.user_id)
    .bind(family.scope.to_string())
    .bind(&family.resource)
    .bind(family.created_at)
    .bind(family.revoked_at)
    .execute(&mut *conn)
    .await
    .map_err(conflict_or(|| format!("token family {}", family.family_id)))?;
    if let Some(first) = first {
        insert_refresh(&mut *conn, first, &family.family_id).await?;
    }
    let Some(code_hash) = code_hash else {
        return Ok(());
    };
    // One statement on the code's row: a concurrent replay (`redeem_code`) either committed
    // before it (`replayed_at` is seen) or waits for this transaction and then names the family.
    let replayed_at: Option<Option<Timestamp>> = sqlx::query_scalar(
        "UPDATE authorization_codes SET family_id = $1 \
         WHERE code_hash = $2 AND family_id IS NULL \
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
                "UPDATE token_families SET revoked_at = COALESCE(revoked_at, $1) \
                 WHERE family_id = $2",
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

/// The body of [`Store::grant_consent`], inside its transaction: read-merge-write on the locked
/// row, so two approvals cannot lose each other's scopes.
async fn grant_consent_in(
    conn: &mut PgConnection,
    user_id: &str,
    client_id: &str,
    scopes: &ScopeSet,
    now: Timestamp,
) -> StoreResult<()> {
    // First approval: insert. A concurrent first approval makes this wait for its commit and
    // then do nothing, and the row is merged into below.
    let inserted = sqlx::query(
        "INSERT INTO consents (user_id, client_id, scopes, granted_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, client_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(client_id)
    .bind(scopes.to_string())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(store_err)?;
    if inserted.rows_affected() > 0 {
        return Ok(());
    }
    let before: Option<String> = sqlx::query_scalar(
        "SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2 FOR UPDATE",
    )
    .bind(user_id)
    .bind(client_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(store_err)?;
    let mut all = before.as_deref().map(ScopeSet::parse).unwrap_or_default();
    for scope in scopes.iter() {
        all.insert(scope);
    }
    // An upsert: the row may have been revoked in between.
    sqlx::query(
        "INSERT INTO consents (user_id, client_id, scopes, granted_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = EXCLUDED.scopes, \
         granted_at = EXCLUDED.granted_at",
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

async fn delete_user_in(conn: &mut PgConnection, username: &str) -> StoreResult<bool> {
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
        .bind(username)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_err)?;
    let Some(id) = id else {
        return Ok(false);
    };
    revoke_families_where(&mut *conn, "user_id", &id, unix_now()).await?;
    // Codes would go with the row too; deleting them first keeps them in the lock order.
    sqlx::query(ordered_delete(
        "authorization_codes",
        "code_hash",
        "user_id = $1",
    ))
    .bind(&id)
    .execute(&mut *conn)
    .await
    .map_err(store_err)?;
    // Consents and browser sessions go with the row (ON DELETE CASCADE).
    let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(&id)
        .execute(conn)
        .await
        .map_err(store_err)?;
    Ok(deleted.rows_affected() > 0)
}

async fn delete_client_in(conn: &mut PgConnection, client_id: &str) -> StoreResult<bool> {
    revoke_families_where(&mut *conn, "client_id", client_id, unix_now()).await?;
    // Everything below is keyed by client_id without a foreign key (metadata-document clients
    // are not in `clients`), so it is deleted by hand, in the lock order.
    for (table, key) in [
        ("authorization_codes", "code_hash"),
        ("consents", "user_id, client_id"),
        ("pending_authorizations", "id"),
    ] {
        sqlx::query(ordered_delete(table, key, "client_id = $1"))
            .bind(client_id)
            .execute(&mut *conn)
            .await
            .map_err(store_err)?;
    }
    let deleted = sqlx::query("DELETE FROM clients WHERE client_id = $1")
        .bind(client_id)
        .execute(conn)
        .await
        .map_err(store_err)?;
    Ok(deleted.rows_affected() > 0)
}

/// One statement of [`Store::purge_expired`]; returns how many rows it deleted.
async fn purge_statement(
    pool: &PgPool,
    sql: sqlx::AssertSqlSafe<String>,
    now: Timestamp,
    retention: Option<i64>,
) -> StoreResult<u64> {
    let mut query = sqlx::query(sql).bind(now);
    if let Some(retention) = retention {
        query = query.bind(retention);
    }
    Ok(query
        .execute(pool)
        .await
        .map_err(store_err)?
        .rows_affected())
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4)",
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
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
        fetch_one_by(&self.pool, sql, username, user_from).await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        fetch_one_by(&self.pool, sql, id, user_from).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        // Byte order, as SQLite sorts, whatever the database's collation.
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username COLLATE \"C\"");
        fetch_all_of(&self.pool, sql, user_from).await
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE username = $2")
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
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&client.client_id)
        .bind(&client.secret_hash)
        .bind(&client.metadata)
        .bind(source_str(client.source))
        .bind(client.created_at)
        .execute(&self.pool)
        .await
        .map_err(conflict_or(|| format!("client {:?}", client.client_id)))?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1");
        fetch_one_by(&self.pool, sql, client_id, client_from).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        let sql = format!(
            "SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, client_id COLLATE \"C\""
        );
        fetch_all_of(&self.pool, sql, client_from).await
    }

    async fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = delete_client_in(&mut tx, client_id).await?;
        tx.commit().await.map_err(store_err)?;
        Ok(deleted)
    }

    async fn consent(&self, user_id: &str, client_id: &str) -> StoreResult<Option<ScopeSet>> {
        let scopes: Option<String> =
            sqlx::query_scalar("SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2")
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
        let mut tx = self.begin_write().await?;
        grant_consent_in(&mut tx, user_id, client_id, scopes, now).await?;
        tx.commit().await.map_err(store_err)
    }

    async fn revoke_consent(&self, user_id: &str, client_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2")
            .bind(user_id)
            .bind(client_id)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_pending(&self, pending: &PendingAuthorization) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO pending_authorizations (id, client_id, redirect_uri, state, \
             code_challenge, resource, scope, prompt, csrf_token, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET client_id = EXCLUDED.client_id, \
             redirect_uri = EXCLUDED.redirect_uri, state = EXCLUDED.state, \
             code_challenge = EXCLUDED.code_challenge, resource = EXCLUDED.resource, \
             scope = EXCLUDED.scope, prompt = EXCLUDED.prompt, \
             csrf_token = EXCLUDED.csrf_token, expires_at = EXCLUDED.expires_at",
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
            "SELECT {PENDING_COLUMNS} FROM pending_authorizations \
             WHERE id = $1 AND expires_at > $2"
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
        let done = sqlx::query("DELETE FROM pending_authorizations WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_session(&self, session: &BrowserSession) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO browser_sessions (id_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        )
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
            "SELECT {SESSION_COLUMNS} FROM browser_sessions WHERE id_hash = $1 AND expires_at > $2"
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
        sqlx::query("DELETE FROM browser_sessions WHERE id_hash = $1")
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        // Each step is a single statement on the code's row. Of two concurrent first uses, the
        // second UPDATE waits for the first's row lock, then re-checks `used_at IS NULL` on the
        // committed row and matches nothing; it falls through to the replay branch. A code can
        // only go from unused to used, so no interleaving misclassifies.
        let sql = format!(
            "UPDATE authorization_codes SET used_at = $1 \
             WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1 \
             RETURNING {CODE_COLUMNS}"
        );
        let fresh = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(code_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        if let Some(row) = fresh {
            return Ok(CodeRedemption::Fresh(code_from(&row)?));
        }
        // Used before (expired or not): a replay. Recording it lets a family still being
        // created from the first use be born revoked (see `create_family_in`).
        let sql = format!(
            "UPDATE authorization_codes SET replayed_at = COALESCE(replayed_at, $1) \
             WHERE code_hash = $2 AND used_at IS NOT NULL \
             RETURNING {CODE_COLUMNS}"
        );
        let replayed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(code_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        match replayed {
            Some(row) => Ok(CodeRedemption::Replayed(code_from(&row)?)),
            // Never issued, purged, or expired before its first use.
            None => Ok(CodeRedemption::Unknown),
        }
    }

    async fn create_family(
        &self,
        family: &TokenFamily,
        first: Option<&RefreshToken>,
        code_hash: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        create_family_in(&mut tx, family, first, code_hash).await?;
        tx.commit().await.map_err(store_err)
    }

    async fn family(&self, family_id: &str) -> StoreResult<Option<TokenFamily>> {
        fetch_family(&self.pool, family_id, "").await
    }

    async fn redeem_refresh(
        &self,
        token_hash: &str,
        successor: &RefreshToken,
        now: Timestamp,
        grace_secs: i64,
    ) -> StoreResult<RefreshRedemption> {
        let mut tx = self.begin_write().await?;
        let outcome = redeem_refresh_in(&mut tx, token_hash, successor, now, grace_secs).await?;
        tx.commit().await.map_err(store_err)?;
        Ok(outcome)
    }

    async fn exchange_code(
        &self,
        code_hash: &str,
        now: Timestamp,
        grant: CodeGrant,
    ) -> StoreResult<CodeExchange> {
        // The first use spends the code and creates the grant in one transaction (one commit).
        // The only existing row it locks is the code's (the family and token are new, invisible
        // to everyone else until the commit), so it cannot take part in a deadlock.
        let mut tx = self.begin_write().await?;
        if let Some((code, username)) = spend_code(&mut tx, code_hash, now).await? {
            let Some((family, first)) = grant(&code, username.as_deref()) else {
                tx.commit().await.map_err(store_err)?;
                return Ok(CodeExchange::Refused { code, username });
            };
            create_family_in(&mut tx, &family, first.as_ref(), Some(code_hash)).await?;
            tx.commit().await.map_err(store_err)?;
            return Ok(CodeExchange::Issued { code, username });
        }
        tx.rollback().await.map_err(store_err)?;
        // Not fresh (rare): the single steps, each its own statement, as before — the code's
        // row lock is never held while the family's is taken (the store's lock order).
        match self.redeem_code(code_hash, now).await? {
            CodeRedemption::Replayed(code) => {
                if let Some(family_id) = &code.family_id {
                    self.revoke_family(family_id, now).await?;
                }
                Ok(CodeExchange::Replayed(code))
            }
            // A code never becomes fresh again; `Fresh` here would be a code created between
            // the two reads with this very hash, which is as good as unknown to this request.
            CodeRedemption::Fresh(_) | CodeRedemption::Unknown => Ok(CodeExchange::Unknown),
        }
    }

    async fn rotate_refresh(
        &self,
        token_hash: &str,
        successor: &RefreshToken,
        now: Timestamp,
        grace_secs: i64,
        check: RefreshCheck,
    ) -> StoreResult<RefreshRotation> {
        let invalid = |username| RefreshRotation::Redeemed {
            redemption: RefreshRedemption::Invalid,
            username,
        };
        // Unlocked: a token's family, scope, resource and expiry never change, and neither do a
        // family's client and user, so the check may decide on this read. Whether it is rotated
        // or revoked is read again under the locks.
        let row = sqlx::query(FOUND_REFRESH_SQL)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        let Some(row) = row else {
            return Ok(invalid(None));
        };
        let token = refresh_from(&row)?;
        let family = found_family_from(&row)?;
        let username: Option<String> = col(&row, "username")?;
        if !check(&token, &family, username.as_deref()) {
            return Ok(RefreshRotation::Refused {
                token,
                family,
                username,
            });
        }
        // As in `redeem_refresh_in`: never lock a row `purge_expired` may be deleting.
        if token.expires_at <= now {
            return Ok(invalid(username));
        }
        let successor = super::successor_of(&token, successor);
        let mut tx = self.begin_write().await?;
        let redemption = redeem_locked(
            &mut tx,
            token_hash,
            &token.family_id,
            &successor,
            now,
            grace_secs,
        )
        .await?;
        tx.commit().await.map_err(store_err)?;
        Ok(RefreshRotation::Redeemed {
            redemption,
            username,
        })
    }

    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshToken>> {
        fetch_refresh(&self.pool, token_hash, "").await
    }

    async fn revoke_family(&self, family_id: &str, now: Timestamp) -> StoreResult<()> {
        // Keeps the first revocation time: the denylist has already published it.
        sqlx::query(
            "UPDATE token_families SET revoked_at = $1 \
             WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(family_id)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
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
            "UPDATE token_families SET revoked_at = $1 WHERE revoked_at IS NULL AND family_id IN \
             (SELECT family_id FROM token_families WHERE revoked_at IS NULL \
             AND ($2::TEXT IS NULL OR user_id = $2) AND ($3::TEXT IS NULL OR client_id = $3) \
             ORDER BY family_id FOR NO KEY UPDATE) \
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
            "INSERT INTO revoked_jtis (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) \
             DO UPDATE SET expires_at = GREATEST(revoked_jtis.expires_at, EXCLUDED.expires_at)",
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
        let mut tx = self
            .pool
            .begin_with(BEGIN_SNAPSHOT)
            .await
            .map_err(store_err)?;
        let jtis: Vec<(String, Timestamp)> = sqlx::query_as(
            "SELECT jti, expires_at FROM revoked_jtis WHERE expires_at > $1 \
             ORDER BY expires_at, jti COLLATE \"C\"",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_err)?;
        let families: Vec<String> = sqlx::query_scalar(
            "SELECT family_id FROM token_families WHERE revoked_at >= $1 \
             ORDER BY revoked_at, family_id COLLATE \"C\"",
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
             activate_at, retire_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_pkcs8)
        .bind(&key.public_jwk)
        .bind(key.created_at)
        .bind(key.activate_at)
        .bind(key.retire_at)
        .execute(&self.pool)
        .await
        .map_err(conflict_or(|| format!("signing key {:?}", key.kid)))?;
        Ok(())
    }

    async fn keys(&self) -> StoreResult<Vec<SigningKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at, seq");
        fetch_all_of(&self.pool, sql, key_from).await
    }

    async fn set_key_retirement(&self, kid: &str, retire_at: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE signing_keys SET retire_at = $1 WHERE kid = $2")
            .bind(retire_at)
            .bind(kid)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_upstream_login(&self, login: &UpstreamLogin) -> StoreResult<()> {
        let pending = serde_json::to_value(&login.pending)
            .map_err(|e| StoreError::Corrupt(format!("pending authorization: {e}")))?;
        sqlx::query(
            "INSERT INTO upstream_logins (state_hash, browser_hash, nonce, code_verifier, \
             pending, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
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
        // One statement: of two instances taking the same state, exactly one gets the row.
        let row = sqlx::query(
            "DELETE FROM upstream_logins WHERE state_hash = $1 \
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
            "INSERT INTO upstream_tokens (user_id, sealed, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET sealed = EXCLUDED.sealed, \
             updated_at = EXCLUDED.updated_at",
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
        sqlx::query_scalar("SELECT sealed FROM upstream_tokens WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)
    }

    async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        // One statement per table, each committed on its own: every one leaves a consistent
        // store, and holding the refresh tokens' locks while taking the families' (to delete
        // the ones left empty) would invert the lock order a refresh follows.
        let pool = &self.pool;
        // Used codes outlive their expiry a little, for replay detection.
        let codes = ordered_delete(
            "authorization_codes",
            "code_hash",
            "expires_at <= $1 AND (used_at IS NULL OR expires_at <= $1 - $2)",
        );
        let mut purged = purge_statement(pool, codes, now, Some(USED_CODE_RETENTION_SECS)).await?;
        for (table, key, filter) in [
            ("pending_authorizations", "id", "expires_at <= $1"),
            ("upstream_logins", "state_hash", "expires_at <= $1"),
            ("browser_sessions", "id_hash", "expires_at <= $1"),
            ("refresh_tokens", "token_hash", "expires_at <= $1"),
            ("revoked_jtis", "jti", "expires_at <= $1"),
            (
                "signing_keys",
                "kid",
                "retire_at IS NOT NULL AND retire_at <= $1",
            ),
        ] {
            purged += purge_statement(pool, ordered_delete(table, key, filter), now, None).await?;
        }
        // A family with no refresh token left can issue nothing more; once the access tokens it
        // issued have surely expired, its row (the denylist entry) has no use either.
        let families = ordered_delete(
            "token_families",
            "family_id",
            "NOT EXISTS (SELECT 1 FROM refresh_tokens r \
             WHERE r.family_id = token_families.family_id) \
             AND GREATEST(created_at, COALESCE(last_used_at, 0), COALESCE(revoked_at, 0)) \
             <= $1 - $2",
        );
        purged += purge_statement(pool, families, now, Some(self.family_retention_secs)).await?;
        let mcp_sessions = ordered_delete("mcp_sessions", "id_hash", "expires_at <= $1");
        purged += purge_statement(pool, mcp_sessions, now, None).await?;
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
             created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id_hash) DO UPDATE SET state = excluded.state, \
             last_seen_at = excluded.last_seen_at, expires_at = excluded.expires_at \
             WHERE mcp_sessions.issuer = excluded.issuer \
             AND mcp_sessions.subject = excluded.subject \
             AND mcp_sessions.client_id IS NOT DISTINCT FROM excluded.client_id",
        )
        .bind(&session.id_hash)
        .bind(&session.state)
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
            "SELECT {MCP_SESSION_COLUMNS} FROM mcp_sessions WHERE id_hash = $1 AND expires_at > $2"
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
            "UPDATE mcp_sessions SET last_seen_at = $1, expires_at = GREATEST(expires_at, $2) \
             WHERE id_hash = $3 AND expires_at > $1",
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
        let done = sqlx::query("DELETE FROM mcp_sessions WHERE id_hash = $1")
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

fn mcp_session_from(row: &PgRow) -> StoreResult<super::McpSession> {
    Ok(super::McpSession {
        id_hash: col(row, "id_hash")?,
        state: col(row, "state")?,
        issuer: col(row, "issuer")?,
        subject: col(row, "subject")?,
        client_id: col(row, "client_id")?,
        grant_id: col(row, "grant_id")?,
        created_at: col(row, "created_at")?,
        last_seen_at: col(row, "last_seen_at")?,
        expires_at: col(row, "expires_at")?,
    })
}
