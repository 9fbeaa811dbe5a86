//! The writes that go through the group-commit writer ([`super::writer`]): the token
//! endpoint's code exchanges and refresh rotations and the single steps they are made of. Each
//! runs on the writer's connection inside its group's transaction (in a savepoint of its own),
//! so it sees the writes before it in the group exactly as if they had committed separately.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::writer::{conflict_or, sqlite_err};
use super::{CODE_COLUMNS, FAMILY_COLUMNS, REFRESH_COLUMNS};
use crate::ScopeSet;
use crate::store::{
    AuthorizationCode, CodeExchange, CodeGrant, CodeRedemption, RefreshCheck, RefreshRedemption,
    RefreshRotation, RefreshToken, StoreResult, Timestamp, TokenFamily, successor_of,
};

/// [`crate::store::Store::exchange_code`]: one read, the grant's check, then at most three
/// writes (the family, its first refresh token, and the code spent and linked to the family in
/// one update).
///
/// The writer runs one write at a time in a transaction that holds the database's write lock,
/// so what the read finds stays true until the writes: no other exchange or replay of the code
/// can come in between. That is why this needs neither [`redeem_code`]'s conditional update nor
/// [`create_family`]'s path for a replay landing while the first exchange is in flight.
pub(super) fn exchange_code(
    conn: &Connection,
    code_hash: &str,
    now: Timestamp,
    grant: CodeGrant,
) -> StoreResult<CodeExchange> {
    let found = conn
        .prepare_cached(&CODE_TO_EXCHANGE)
        .and_then(|mut statement| {
            statement
                .query_row([code_hash], |row| {
                    Ok((
                        code_from(row)?,
                        row.get::<_, Option<Timestamp>>("used_at")?,
                        row.get::<_, Option<String>>("username")?,
                    ))
                })
                .optional()
        })
        .map_err(sqlite_err)?;
    let Some((code, used_at, username)) = found else {
        return Ok(CodeExchange::Unknown);
    };
    if used_at.is_some() {
        mark_replayed(conn, code_hash, now)?;
        if let Some(family_id) = &code.family_id {
            revoke_family(conn, family_id, now)?;
        }
        return Ok(CodeExchange::Replayed(code));
    }
    if code.expires_at <= now {
        // Expired before its first use: as if it had never been issued.
        return Ok(CodeExchange::Unknown);
    }
    let Some((family, first)) = grant(&code, username.as_deref()) else {
        // Refused or not, a presented code is spent.
        spend_code(conn, code_hash, now, None)?;
        return Ok(CodeExchange::Refused { code, username });
    };
    create_family(conn, &family, first.as_ref(), None)?;
    spend_code(conn, code_hash, now, Some(&family.family_id))?;
    Ok(CodeExchange::Issued { code, username })
}

static CODE_TO_EXCHANGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {CODE_COLUMNS}, used_at, \
         (SELECT username FROM users WHERE users.id = authorization_codes.user_id) AS username \
         FROM authorization_codes WHERE code_hash = ?1"
    )
});

/// Marks an unused code used and, when the exchange created a grant, links it to that family
/// (which a replay then revokes).
fn spend_code(
    conn: &Connection,
    code_hash: &str,
    now: Timestamp,
    family_id: Option<&str>,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE authorization_codes SET used_at = ?1, family_id = ?2 WHERE code_hash = ?3",
    )
    .and_then(|mut statement| statement.execute(params![now, family_id, code_hash]))
    .map_err(sqlite_err)?;
    Ok(())
}

/// Records a second presentation of a used code, returning the code (`None` if it is unused or
/// unknown).
fn mark_replayed(
    conn: &Connection,
    code_hash: &str,
    now: Timestamp,
) -> StoreResult<Option<AuthorizationCode>> {
    conn.prepare_cached(&MARK_REPLAYED_CODE)
        .and_then(|mut statement| {
            statement
                .query_row(params![now, code_hash], code_from)
                .optional()
        })
        .map_err(sqlite_err)
}

static REDEEM_FRESH_CODE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE authorization_codes SET used_at = ?1 \
         WHERE code_hash = ?2 AND used_at IS NULL AND expires_at > ?1 \
         RETURNING {CODE_COLUMNS}, \
         (SELECT username FROM users WHERE users.id = authorization_codes.user_id) AS username"
    )
});

static MARK_REPLAYED_CODE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE authorization_codes SET replayed_at = COALESCE(replayed_at, ?1) \
         WHERE code_hash = ?2 AND used_at IS NOT NULL RETURNING {CODE_COLUMNS}"
    )
});

/// [`crate::store::Store::redeem_code`], also returning the username of the code's user.
pub(super) fn redeem_code(
    conn: &Connection,
    code_hash: &str,
    now: Timestamp,
) -> StoreResult<(CodeRedemption, Option<String>)> {
    // Of two first uses exactly one UPDATE matches `used_at IS NULL`; the other falls through
    // to the replay branch. A code can only go from unused to used, so no order misclassifies.
    let fresh = conn
        .prepare_cached(&REDEEM_FRESH_CODE)
        .and_then(|mut statement| {
            statement
                .query_row(params![now, code_hash], |row| {
                    Ok((code_from(row)?, row.get("username")?))
                })
                .optional()
        })
        .map_err(sqlite_err)?;
    if let Some((code, username)) = fresh {
        return Ok((CodeRedemption::Fresh(code), username));
    }
    // Used before (expired or not): a replay. Recording it lets a family still being created
    // from the first use be born revoked (see `create_family`).
    Ok(match mark_replayed(conn, code_hash, now)? {
        Some(code) => (CodeRedemption::Replayed(code), None),
        // Never issued, purged, or expired before its first use.
        None => (CodeRedemption::Unknown, None),
    })
}

/// [`crate::store::Store::create_family`].
pub(super) fn create_family(
    conn: &Connection,
    family: &TokenFamily,
    first: Option<&RefreshToken>,
    code_hash: Option<&str>,
) -> StoreResult<()> {
    let conflict = || format!("token family {} or its refresh token", family.family_id);
    conn.prepare_cached(
        "INSERT INTO token_families (family_id, client_id, user_id, scope, resource, \
         created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            family.family_id,
            family.client_id,
            family.user_id,
            family.scope.to_string(),
            family.resource,
            family.created_at,
            family.revoked_at,
        ])
    })
    .map_err(conflict_or(conflict))?;
    if let Some(first) = first {
        insert_refresh(conn, first, &family.family_id).map_err(conflict_or(conflict))?;
    }
    let Some(code_hash) = code_hash else {
        return Ok(());
    };
    let replayed_at: Option<Option<Timestamp>> = conn
        .prepare_cached(
            "UPDATE authorization_codes SET family_id = ?1 \
             WHERE code_hash = ?2 AND family_id IS NULL RETURNING replayed_at",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![family.family_id, code_hash], |row| row.get(0))
                .optional()
        })
        .map_err(sqlite_err)?;
    match replayed_at {
        // One code, one family: linking a second one would hide the first from a replay.
        None => Err(crate::store::StoreError::Conflict(
            "authorization code unknown or already exchanged".to_owned(),
        )),
        // The code was replayed while this, its first exchange, was in flight: the grant is
        // born revoked so that the replay still ends it.
        Some(Some(_)) => {
            conn.prepare_cached(
                "UPDATE token_families SET revoked_at = COALESCE(revoked_at, ?1) \
                 WHERE family_id = ?2",
            )
            .and_then(|mut statement| {
                statement.execute(params![family.created_at, family.family_id])
            })
            .map_err(sqlite_err)?;
            Ok(())
        }
        Some(None) => Ok(()),
    }
}

/// [`crate::store::Store::revoke_family`]. Keeps the first revocation time: the denylist has
/// already published it.
pub(super) fn revoke_family(conn: &Connection, family_id: &str, now: Timestamp) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE token_families SET revoked_at = ?1 WHERE family_id = ?2 AND revoked_at IS NULL",
    )
    .and_then(|mut statement| statement.execute(params![now, family_id]))
    .map_err(sqlite_err)?;
    Ok(())
}

static REFRESH_BY_HASH: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = ?1"));

static FAMILY_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {FAMILY_COLUMNS} FROM token_families WHERE family_id = ?1"));

/// [`crate::store::Store::redeem_refresh`].
pub(super) fn redeem_refresh(
    conn: &Connection,
    token_hash: &str,
    successor: &RefreshToken,
    now: Timestamp,
    grace_secs: i64,
) -> StoreResult<RefreshRedemption> {
    let token = conn
        .prepare_cached(&REFRESH_BY_HASH)
        .and_then(|mut statement| statement.query_row([token_hash], refresh_from).optional())
        .map_err(sqlite_err)?;
    let Some(token) = token else {
        return Ok(RefreshRedemption::Invalid);
    };
    let family = conn
        .prepare_cached(&FAMILY_BY_ID)
        .and_then(|mut statement| {
            statement
                .query_row([&token.family_id], |row| family_from(row, PLAIN_FAMILY))
                .optional()
        })
        .map_err(sqlite_err)?;
    let Some(family) = family else {
        return Ok(RefreshRedemption::Invalid);
    };
    redeem_found(conn, token, family, successor, now, grace_secs)
}

/// A refresh token, its family and the username of the family's user, in one read.
const FOUND_REFRESH: &str = "SELECT r.token_hash, r.family_id, r.scope, r.resource, \
     r.expires_at, r.created_at, r.rotated_at, f.client_id AS f_client_id, \
     f.user_id AS f_user_id, f.scope AS f_scope, f.resource AS f_resource, \
     f.created_at AS f_created_at, f.revoked_at AS f_revoked_at, u.username AS username \
     FROM refresh_tokens r JOIN token_families f ON f.family_id = r.family_id \
     LEFT JOIN users u ON u.id = f.user_id WHERE r.token_hash = ?1";

/// [`crate::store::Store::rotate_refresh`]: one read, the check, then the redemption's writes.
pub(super) fn rotate_refresh(
    conn: &Connection,
    token_hash: &str,
    successor: &RefreshToken,
    now: Timestamp,
    grace_secs: i64,
    check: RefreshCheck,
) -> StoreResult<RefreshRotation> {
    let found = conn
        .prepare_cached(FOUND_REFRESH)
        .and_then(|mut statement| {
            statement
                .query_row([token_hash], |row| {
                    Ok((
                        refresh_from(row)?,
                        family_from(row, JOINED_FAMILY)?,
                        row.get::<_, Option<String>>("username")?,
                    ))
                })
                .optional()
        })
        .map_err(sqlite_err)?;
    let Some((token, family, username)) = found else {
        return Ok(RefreshRotation::Redeemed {
            redemption: RefreshRedemption::Invalid,
            username: None,
        });
    };
    if !check(&token, &family, username.as_deref()) {
        return Ok(RefreshRotation::Refused {
            token,
            family,
            username,
        });
    }
    let successor = successor_of(&token, successor);
    let redemption = redeem_found(conn, token, family, &successor, now, grace_secs)?;
    Ok(RefreshRotation::Redeemed {
        redemption,
        username,
    })
}

/// Redeems a refresh token found with its family.
fn redeem_found(
    conn: &Connection,
    mut token: RefreshToken,
    mut family: TokenFamily,
    successor: &RefreshToken,
    now: Timestamp,
    grace_secs: i64,
) -> StoreResult<RefreshRedemption> {
    if family.revoked_at.is_some() || token.expires_at <= now {
        return Ok(RefreshRedemption::Invalid);
    }
    match token.rotated_at {
        None => {
            conn.prepare_cached(
                "UPDATE refresh_tokens SET rotated_at = ?1, successor = ?2 WHERE token_hash = ?3",
            )
            .and_then(|mut statement| {
                statement.execute(params![now, successor.token_hash, token.token_hash])
            })
            .map_err(sqlite_err)?;
            issue_successor(conn, successor, &family.family_id, now)?;
            token.rotated_at = Some(now);
            Ok(RefreshRedemption::Current { token, family })
        }
        // Strictly less: with a zero grace window every second presentation is a replay.
        Some(rotated_at) if now - rotated_at < grace_secs => {
            issue_successor(conn, successor, &family.family_id, now)?;
            Ok(RefreshRedemption::WithinGrace { token, family })
        }
        Some(_) => {
            conn.prepare_cached("UPDATE token_families SET revoked_at = ?1 WHERE family_id = ?2")
                .and_then(|mut statement| statement.execute(params![now, family.family_id]))
                .map_err(sqlite_err)?;
            family.revoked_at = Some(now);
            Ok(RefreshRedemption::Replayed { family })
        }
    }
}

/// Stores `successor` in the family and records the family's use.
fn issue_successor(
    conn: &Connection,
    successor: &RefreshToken,
    family_id: &str,
    now: Timestamp,
) -> StoreResult<()> {
    insert_refresh(conn, successor, family_id)
        .map_err(conflict_or(|| "refresh token".to_owned()))?;
    conn.prepare_cached("UPDATE token_families SET last_used_at = ?1 WHERE family_id = ?2")
        .and_then(|mut statement| statement.execute(params![now, family_id]))
        .map_err(sqlite_err)?;
    Ok(())
}

fn insert_refresh(
    conn: &Connection,
    token: &RefreshToken,
    family_id: &str,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (token_hash, family_id, scope, resource, expires_at, \
         created_at, rotated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        token.token_hash,
        family_id,
        token.scope.to_string(),
        token.resource,
        token.expires_at,
        token.created_at,
        token.rotated_at,
    ])
}

// Rows -> values, by column name (see the `*_COLUMNS` constants of the parent module).

fn code_from(row: &Row<'_>) -> rusqlite::Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        code_hash: row.get("code_hash")?,
        client_id: row.get("client_id")?,
        user_id: row.get("user_id")?,
        redirect_uri: row.get("redirect_uri")?,
        code_challenge: row.get("code_challenge")?,
        resource: row.get("resource")?,
        scope: scope_from(row, "scope")?,
        expires_at: row.get("expires_at")?,
        family_id: row.get("family_id")?,
    })
}

fn refresh_from(row: &Row<'_>) -> rusqlite::Result<RefreshToken> {
    Ok(RefreshToken {
        token_hash: row.get("token_hash")?,
        family_id: row.get("family_id")?,
        scope: scope_from(row, "scope")?,
        resource: row.get("resource")?,
        expires_at: row.get("expires_at")?,
        created_at: row.get("created_at")?,
        rotated_at: row.get("rotated_at")?,
    })
}

/// Where a row keeps a family's columns after `family_id`: client, user, scope, resource,
/// created, revoked.
type FamilyColumns = [&'static str; 6];

/// A `token_families` row.
const PLAIN_FAMILY: FamilyColumns = [
    "client_id",
    "user_id",
    "scope",
    "resource",
    "created_at",
    "revoked_at",
];

/// The family half of [`FOUND_REFRESH`].
const JOINED_FAMILY: FamilyColumns = [
    "f_client_id",
    "f_user_id",
    "f_scope",
    "f_resource",
    "f_created_at",
    "f_revoked_at",
];

fn family_from(
    row: &Row<'_>,
    [client, user, scope, resource, created, revoked]: FamilyColumns,
) -> rusqlite::Result<TokenFamily> {
    Ok(TokenFamily {
        family_id: row.get("family_id")?,
        client_id: row.get(client)?,
        user_id: row.get(user)?,
        scope: scope_from(row, scope)?,
        resource: row.get(resource)?,
        created_at: row.get(created)?,
        revoked_at: row.get(revoked)?,
    })
}

fn scope_from(row: &Row<'_>, column: &str) -> rusqlite::Result<ScopeSet> {
    Ok(ScopeSet::parse(&row.get::<_, String>(column)?))
}
