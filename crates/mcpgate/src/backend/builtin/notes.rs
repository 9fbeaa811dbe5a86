//! The per-principal notes store of the built-in tools (SQLite).

use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use mcpgate_auth::Principal;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub const MAX_ID_LEN: usize = 128;
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
pub const MAX_NOTES_PER_OWNER: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum NotesError {
    #[error("note ids are 1 to {MAX_ID_LEN} characters of letters, digits, '.', '_' and '-'")]
    InvalidId,
    #[error("a note holds at most {MAX_CONTENT_BYTES} bytes")]
    TooLarge,
    #[error("at most {MAX_NOTES_PER_OWNER} notes per principal")]
    TooMany,
    #[error("the notes store failed: {0}")]
    Store(#[from] sqlx::Error),
    #[error("the notes store could not be migrated: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Note {
    pub id: String,
    pub content: String,
    pub updated_at: i64,
}

#[derive(Clone)]
pub struct NotesStore {
    pool: SqlitePool,
}

impl NotesStore {
    pub async fn open(path: &Path) -> Result<Self, NotesError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/notes").run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn ping(&self) -> Result<(), NotesError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn list(&self, owner: &Principal) -> Result<Vec<Note>, NotesError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT id, content, updated_at FROM notes WHERE owner_issuer = ? AND owner_subject = ? ORDER BY id",
        )
        .bind(&owner.issuer)
        .bind(&owner.subject)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, content, updated_at)| Note {
                id,
                content,
                updated_at,
            })
            .collect())
    }

    pub async fn get(&self, owner: &Principal, id: &str) -> Result<Option<Note>, NotesError> {
        validate_id(id)?;
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT content, updated_at FROM notes WHERE owner_issuer = ? AND owner_subject = ? AND id = ?",
        )
        .bind(&owner.issuer)
        .bind(&owner.subject)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(content, updated_at)| Note {
            id: id.to_owned(),
            content,
            updated_at,
        }))
    }

    /// Creates or replaces a note; the count limit and the write are one transaction.
    pub async fn put(
        &self,
        owner: &Principal,
        id: &str,
        content: &str,
    ) -> Result<Note, NotesError> {
        validate_id(id)?;
        if content.len() > MAX_CONTENT_BYTES {
            return Err(NotesError::TooLarge);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut tx = self.pool.begin().await?;
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM notes WHERE owner_issuer = ? AND owner_subject = ? AND id <> ?",
        )
        .bind(&owner.issuer)
        .bind(&owner.subject)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if count >= MAX_NOTES_PER_OWNER {
            return Err(NotesError::TooMany);
        }
        sqlx::query(
            "INSERT INTO notes (owner_issuer, owner_subject, id, content, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (owner_issuer, owner_subject, id) DO UPDATE SET content = excluded.content, updated_at = excluded.updated_at",
        )
        .bind(&owner.issuer)
        .bind(&owner.subject)
        .bind(id)
        .bind(content)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Note {
            id: id.to_owned(),
            content: content.to_owned(),
            updated_at: now,
        })
    }

    /// `true` when a note was deleted.
    pub async fn delete(&self, owner: &Principal, id: &str) -> Result<bool, NotesError> {
        validate_id(id)?;
        let done = sqlx::query(
            "DELETE FROM notes WHERE owner_issuer = ? AND owner_subject = ? AND id = ?",
        )
        .bind(&owner.issuer)
        .bind(&owner.subject)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

pub fn validate_id(id: &str) -> Result<(), NotesError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NotesError::InvalidId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpgate_auth::ScopeSet;

    async fn store() -> (NotesStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (
            NotesStore::open(&dir.path().join("notes.db"))
                .await
                .unwrap(),
            dir,
        )
    }

    #[tokio::test]
    async fn principals_never_see_each_others_notes() {
        let (store, _dir) = store().await;
        let alice = Principal::from_static_token("alice", ScopeSet::new());
        let bob = Principal::from_static_token("bob", ScopeSet::new());
        store.put(&alice, "todo", "alice's").await.unwrap();
        assert_eq!(store.get(&bob, "todo").await.unwrap(), None);
        assert!(store.list(&bob).await.unwrap().is_empty());
        assert!(!store.delete(&bob, "todo").await.unwrap());
        assert_eq!(
            store.get(&alice, "todo").await.unwrap().unwrap().content,
            "alice's"
        );
    }

    #[tokio::test]
    async fn put_replaces_and_delete_removes() {
        let (store, _dir) = store().await;
        let p = Principal::from_static_token("p", ScopeSet::new());
        store.put(&p, "a", "1").await.unwrap();
        store.put(&p, "a", "2").await.unwrap();
        assert_eq!(store.list(&p).await.unwrap().len(), 1);
        assert_eq!(store.get(&p, "a").await.unwrap().unwrap().content, "2");
        assert!(store.delete(&p, "a").await.unwrap());
        assert_eq!(store.get(&p, "a").await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_input_is_refused_and_nothing_written() {
        let (store, _dir) = store().await;
        let p = Principal::from_static_token("p", ScopeSet::new());
        for id in ["", "a/b", "../x", "a b", &"x".repeat(129)] {
            assert!(
                matches!(store.put(&p, id, "c").await, Err(NotesError::InvalidId)),
                "{id:?}"
            );
        }
        let big = "x".repeat(MAX_CONTENT_BYTES + 1);
        assert!(matches!(
            store.put(&p, "big", &big).await,
            Err(NotesError::TooLarge)
        ));
        assert!(store.list(&p).await.unwrap().is_empty());
    }
}
