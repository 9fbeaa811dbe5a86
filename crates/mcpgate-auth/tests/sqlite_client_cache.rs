//! The SQLite store remembers clients for a moment (`store/sqlite/client_cache.rs`): changes made
//! through the store are seen at once, a removal by another process on the same file (the CLI
//! next to `serve`) once the time to live has passed, and unknown client ids are never
//! remembered.

mod scratch_sqlite;

use std::time::Duration;

use mcpgate_auth::store::sqlite::SqliteStore;
use mcpgate_auth::store::{Client, ClientSource, Store};
use scratch_sqlite::TempDir;
use serde_json::json;

fn client(id: &str, name: &str) -> Client {
    Client {
        client_id: id.into(),
        secret_hash: None,
        metadata: json!({"client_name": name, "redirect_uris": ["http://127.0.0.1/cb"]}),
        source: ClientSource::Dynamic,
        created_at: 1_700_000_000,
    }
}

async fn name_of(store: &SqliteStore, id: &str) -> Option<String> {
    store
        .client(id)
        .await
        .unwrap()
        .map(|c| c.metadata["client_name"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn changes_through_the_store_are_seen_at_once() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.url())
        .await
        .unwrap()
        .with_client_cache_ttl(Duration::from_secs(3600));
    store.create_client(&client("c1", "first")).await.unwrap();
    assert_eq!(name_of(&store, "c1").await.as_deref(), Some("first"));
    assert_eq!(name_of(&store, "c1").await.as_deref(), Some("first"));

    assert!(store.delete_client("c1").await.unwrap());
    assert_eq!(name_of(&store, "c1").await, None);

    // Re-registered under the same id (what a configuration reload does): the new metadata.
    store.create_client(&client("c1", "second")).await.unwrap();
    assert_eq!(name_of(&store, "c1").await.as_deref(), Some("second"));

    // Clones share what they remember, and what they forget.
    let clone = store.clone();
    assert!(clone.delete_client("c1").await.unwrap());
    assert_eq!(name_of(&store, "c1").await, None);
}

#[tokio::test]
async fn another_process_s_removal_is_seen_once_the_entry_is_older_than_the_ttl() {
    let dir = TempDir::new();
    let ttl = Duration::from_millis(200);
    let serving = SqliteStore::open(&dir.url())
        .await
        .unwrap()
        .with_client_cache_ttl(ttl);
    // Another process on the same file, as `mcpgate clients remove` next to `serve`.
    let admin = SqliteStore::open(&dir.url()).await.unwrap();
    serving.create_client(&client("c1", "first")).await.unwrap();
    assert_eq!(name_of(&serving, "c1").await.as_deref(), Some("first"));

    assert!(admin.delete_client("c1").await.unwrap());
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(name_of(&serving, "c1").await, None);
}

#[tokio::test]
async fn with_a_zero_ttl_every_lookup_reads_the_database() {
    let dir = TempDir::new();
    let serving = SqliteStore::open(&dir.url())
        .await
        .unwrap()
        .with_client_cache_ttl(Duration::ZERO);
    let admin = SqliteStore::open(&dir.url()).await.unwrap();
    serving.create_client(&client("c1", "first")).await.unwrap();
    assert_eq!(name_of(&serving, "c1").await.as_deref(), Some("first"));
    assert!(admin.delete_client("c1").await.unwrap());
    assert_eq!(name_of(&serving, "c1").await, None);
}

#[tokio::test]
async fn unknown_clients_are_not_remembered() {
    let dir = TempDir::new();
    let serving = SqliteStore::open(&dir.url())
        .await
        .unwrap()
        .with_client_cache_ttl(Duration::from_secs(3600));
    let admin = SqliteStore::open(&dir.url()).await.unwrap();
    assert_eq!(name_of(&serving, "c1").await, None);
    admin.create_client(&client("c1", "first")).await.unwrap();
    assert_eq!(name_of(&serving, "c1").await.as_deref(), Some("first"));
}
