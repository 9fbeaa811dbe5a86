//! The token endpoint's one-transaction store operations, `exchange_code` and `rotate_refresh`,
//! on both stores (SQLite on a file, so through its group-commit writer; PostgreSQL as in
//! `postgres_store.rs`, `MCPGATE_TEST_POSTGRES_URL`): single-use codes, a replay revoking the
//! grant, one winner among concurrent exchanges and rotations, refusals that change nothing, and
//! rotations that survive a restart once answered.

mod scratch_pg;
mod scratch_sqlite;

use std::sync::Arc;

use mcpgate_auth::ScopeSet;
use mcpgate_auth::store::sqlite::SqliteStore;
use mcpgate_auth::store::{
    AuthorizationCode, Client, ClientSource, CodeExchange, CodeGrant, CodeRedemption, RefreshCheck,
    RefreshRedemption, RefreshRotation, RefreshToken, Store, StoreError, TokenFamily, User,
};
use scratch_pg::TestDb;
use scratch_sqlite::TempDir;
use serde_json::json;

const NOW: i64 = 1_700_000_000;
const RESOURCE: &str = "https://mcp.example.com/mcp";

fn scopes(s: &str) -> ScopeSet {
    ScopeSet::parse(s)
}

/// User `u1` (alice), client `c1`, and family `f1` with refresh token `rt0`.
async fn seed(store: &dyn Store) {
    store
        .create_user(&User {
            id: "u1".into(),
            username: "alice".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$x".into(),
            created_at: NOW,
        })
        .await
        .unwrap();
    store
        .create_client(&Client {
            client_id: "c1".into(),
            secret_hash: None,
            metadata: json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}),
            source: ClientSource::Dynamic,
            created_at: NOW,
        })
        .await
        .unwrap();
    store
        .create_family(&family("f1"), Some(&refresh("rt0", "f1")), None)
        .await
        .unwrap();
}

fn family(id: &str) -> TokenFamily {
    TokenFamily {
        family_id: id.into(),
        client_id: "c1".into(),
        user_id: Some("u1".into()),
        scope: scopes("mcp:tools:read"),
        resource: RESOURCE.into(),
        created_at: NOW,
        revoked_at: None,
    }
}

fn refresh(hash: &str, family_id: &str) -> RefreshToken {
    RefreshToken {
        token_hash: hash.into(),
        family_id: family_id.into(),
        scope: scopes("mcp:tools:read"),
        resource: RESOURCE.into(),
        expires_at: NOW + 86_400,
        created_at: NOW,
        rotated_at: None,
    }
}

/// A successor as the token endpoint makes it: before the store found the token, so without
/// family, scope or resource (the store fills them in from the presented token).
fn blank_successor(hash: &str) -> RefreshToken {
    RefreshToken {
        token_hash: hash.into(),
        family_id: String::new(),
        scope: ScopeSet::default(),
        resource: String::new(),
        expires_at: NOW + 86_400,
        created_at: NOW + 1,
        rotated_at: None,
    }
}

async fn put_code(store: &dyn Store, hash: &str) {
    store
        .create_code(&AuthorizationCode {
            code_hash: hash.into(),
            client_id: "c1".into(),
            user_id: "u1".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: "challenge".into(),
            resource: RESOURCE.into(),
            scope: scopes("mcp:tools:read"),
            expires_at: NOW + 60,
            family_id: None,
        })
        .await
        .unwrap();
}

/// A grant creating family `family_id` with first refresh token `rt-<family_id>`.
fn grant_to(family_id: &str) -> CodeGrant {
    let family_id = family_id.to_owned();
    Box::new(move |code: &AuthorizationCode, username: Option<&str>| {
        assert_eq!(username, Some("alice"));
        let mut f = family(&family_id);
        f.scope = code.scope.clone();
        let first = refresh(&format!("rt-{family_id}"), &family_id);
        Some((f, Some(first)))
    })
}

fn accept() -> RefreshCheck {
    Box::new(|_, _, _| true)
}

async fn exchanges_spend_codes_and_replays_revoke(store: Arc<dyn Store>) {
    seed(&*store).await;
    put_code(&*store, "k1").await;
    match store
        .exchange_code("k1", NOW, grant_to("g1"))
        .await
        .unwrap()
    {
        CodeExchange::Issued { code, username } => {
            assert_eq!(code.code_hash, "k1");
            assert_eq!(username.as_deref(), Some("alice"));
        }
        other => panic!("first use: {other:?}"),
    }
    let issued = store.refresh_token("rt-g1").await.unwrap().unwrap();
    assert_eq!(issued.family_id, "g1");
    assert_eq!(store.family("g1").await.unwrap().unwrap().revoked_at, None);
    // The replay names the grant and revokes it, in the same step.
    match store
        .exchange_code("k1", NOW + 1, grant_to("g2"))
        .await
        .unwrap()
    {
        CodeExchange::Replayed(code) => assert_eq!(code.family_id.as_deref(), Some("g1")),
        other => panic!("replay: {other:?}"),
    }
    assert_eq!(
        store.family("g1").await.unwrap().unwrap().revoked_at,
        Some(NOW + 1)
    );
    assert!(store.family("g2").await.unwrap().is_none());

    // A refused first use issues nothing, and the code is spent all the same.
    put_code(&*store, "k2").await;
    let refuse: CodeGrant = Box::new(|_, _| None);
    assert!(matches!(
        store.exchange_code("k2", NOW, refuse).await.unwrap(),
        CodeExchange::Refused { .. }
    ));
    match store.redeem_code("k2", NOW + 1).await.unwrap() {
        CodeRedemption::Replayed(code) => assert_eq!(code.family_id, None),
        other => panic!("after a refusal: {other:?}"),
    }
    assert!(matches!(
        store
            .exchange_code("nope", NOW, grant_to("g3"))
            .await
            .unwrap(),
        CodeExchange::Unknown
    ));

    // An expired code is unknown, issues nothing, and is not spent: presenting it again is not
    // a replay (there is no grant to end).
    put_code(&*store, "k3").await;
    for _ in 0..2 {
        assert!(matches!(
            store
                .exchange_code("k3", NOW + 60, grant_to("g4"))
                .await
                .unwrap(),
            CodeExchange::Unknown
        ));
    }
    assert!(store.family("g4").await.unwrap().is_none());
}

async fn concurrent_exchanges_have_one_winner(store: Arc<dyn Store>) {
    seed(&*store).await;
    put_code(&*store, "k1").await;
    let tasks = (0..10).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .exchange_code("k1", NOW, grant_to(&format!("g{i}")))
                .await
                .unwrap()
        })
    });
    let outcomes: Vec<CodeExchange> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let issued: Vec<String> = (0..10)
        .filter(|i| matches!(outcomes[*i], CodeExchange::Issued { .. }))
        .map(|i| format!("g{i}"))
        .collect();
    assert_eq!(issued.len(), 1, "{outcomes:?}");
    let replays = outcomes
        .iter()
        .filter(|o| matches!(o, CodeExchange::Replayed(_)))
        .count();
    assert_eq!(replays, 9, "{outcomes:?}");
    // Only the winner's grant exists, and the replays ended it.
    for i in 0..10 {
        let exists = store.family(&format!("g{i}")).await.unwrap();
        assert_eq!(exists.is_some(), issued[0] == format!("g{i}"));
    }
    assert!(
        store
            .family(&issued[0])
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
}

async fn refused_rotations_change_nothing(store: Arc<dyn Store>) {
    seed(&*store).await;
    let refuse: RefreshCheck = Box::new(|token, family, username| {
        assert_eq!(token.token_hash, "rt0");
        assert_eq!(family.client_id, "c1");
        assert_eq!(username, Some("alice"));
        false
    });
    assert!(matches!(
        store
            .rotate_refresh("rt0", &blank_successor("s0"), NOW + 1, 0, refuse)
            .await
            .unwrap(),
        RefreshRotation::Refused { .. }
    ));
    assert_eq!(
        store
            .refresh_token("rt0")
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        None
    );
    assert!(store.refresh_token("s0").await.unwrap().is_none());
    // Then a rotation that passes: the successor joins the grant with its scope and resource.
    match store
        .rotate_refresh("rt0", &blank_successor("s1"), NOW + 1, 0, accept())
        .await
        .unwrap()
    {
        RefreshRotation::Redeemed {
            redemption: RefreshRedemption::Current { token, family },
            username,
        } => {
            assert_eq!(token.rotated_at, Some(NOW + 1));
            assert_eq!(family.family_id, "f1");
            assert_eq!(username.as_deref(), Some("alice"));
        }
        other => panic!("rotation: {other:?}"),
    }
    let successor = store.refresh_token("s1").await.unwrap().unwrap();
    assert_eq!(successor.family_id, "f1");
    assert_eq!(successor.scope, scopes("mcp:tools:read"));
    assert_eq!(successor.resource, RESOURCE);
    // Unknown tokens are invalid without asking the check.
    let never: RefreshCheck = Box::new(|_, _, _| panic!("checked an unknown token"));
    assert!(matches!(
        store
            .rotate_refresh("nope", &blank_successor("s2"), NOW + 1, 0, never)
            .await
            .unwrap(),
        RefreshRotation::Redeemed {
            redemption: RefreshRedemption::Invalid,
            ..
        }
    ));
}

/// Twenty rotations of one token at once without a grace window: one winner, one replay that
/// revokes the grant, the rest refused; only the winner's successor is stored.
async fn concurrent_rotations_have_one_winner(store: Arc<dyn Store>) {
    seed(&*store).await;
    let tasks = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .rotate_refresh(
                    "rt0",
                    &blank_successor(&format!("succ{i}")),
                    NOW + 1,
                    0,
                    accept(),
                )
                .await
                .unwrap()
        })
    });
    let outcomes: Vec<RefreshRedemption> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|o| match o.unwrap() {
            RefreshRotation::Redeemed { redemption, .. } => redemption,
            refused => panic!("refused: {refused:?}"),
        })
        .collect();
    let count = |pick: fn(&RefreshRedemption) -> bool| outcomes.iter().filter(|o| pick(o)).count();
    assert_eq!(count(|o| matches!(o, RefreshRedemption::Current { .. })), 1);
    assert_eq!(
        count(|o| matches!(o, RefreshRedemption::Replayed { .. })),
        1
    );
    assert_eq!(count(|o| matches!(o, RefreshRedemption::Invalid)), 18);
    let mut stored = 0;
    for i in 0..20 {
        if store
            .refresh_token(&format!("succ{i}"))
            .await
            .unwrap()
            .is_some()
        {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(
        store.family("f1").await.unwrap().unwrap().revoked_at,
        Some(NOW + 1)
    );
}

// SQLite, on a file (the group-commit writer is in use).

async fn sqlite() -> (TempDir, Arc<dyn Store>) {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.url()).await.unwrap();
    (dir, Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_exchanges_spend_codes_and_replays_revoke() {
    let (_dir, store) = sqlite().await;
    exchanges_spend_codes_and_replays_revoke(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_exchanges_have_one_winner() {
    let (_dir, store) = sqlite().await;
    concurrent_exchanges_have_one_winner(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_refused_rotations_change_nothing() {
    let (_dir, store) = sqlite().await;
    refused_rotations_change_nothing(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_rotations_have_one_winner() {
    let (_dir, store) = sqlite().await;
    concurrent_rotations_have_one_winner(store).await;
}

#[tokio::test]
async fn sqlite_in_memory_goes_through_the_writer_too() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
    refused_rotations_change_nothing(store).await;
}

/// The writer joins an in-memory database by its shared-cache name (`sqlite::memory:`); a private
/// one it could not see is refused when the store is made, not on the first write.
#[tokio::test]
async fn sqlite_private_in_memory_pools_are_refused() {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new())
        .await
        .unwrap();
    assert!(matches!(
        SqliteStore::from_pool(pool).await,
        Err(StoreError::Unavailable(_))
    ));
}

/// A closed store's writer answers what was queued and refuses what comes after.
#[tokio::test]
async fn sqlite_writes_after_close_are_refused() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.url()).await.unwrap();
    seed(&store).await;
    store.close().await;
    assert!(matches!(
        store.revoke_family("f1", NOW).await,
        Err(StoreError::Unavailable(_))
    ));
}

/// Once `rotate_refresh` has answered, the rotation is on disk: a new store on the same file
/// (a restarted process) sees the old token rotated and the successor valid.
#[tokio::test]
async fn sqlite_answered_rotations_survive_a_restart() {
    let dir = TempDir::new();
    {
        let store = SqliteStore::open(&dir.url()).await.unwrap();
        seed(&store).await;
        let rotated = store
            .rotate_refresh("rt0", &blank_successor("s1"), NOW + 1, 0, accept())
            .await
            .unwrap();
        assert!(matches!(
            rotated,
            RefreshRotation::Redeemed {
                redemption: RefreshRedemption::Current { .. },
                ..
            }
        ));
        // Not closed (a clean close would checkpoint the WAL): the answer alone must mean the
        // rotation is committed, so a second store on the file, like a restarted process, sees it.
        std::mem::forget(store);
    }
    let reopened = SqliteStore::open(&dir.url()).await.unwrap();
    assert_eq!(
        reopened
            .refresh_token("rt0")
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        Some(NOW + 1)
    );
    assert_eq!(
        reopened
            .refresh_token("s1")
            .await
            .unwrap()
            .unwrap()
            .family_id,
        "f1"
    );
}

// PostgreSQL.

async fn postgres() -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::new().await;
    let store = db.open().await;
    (db, Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_exchanges_spend_codes_and_replays_revoke() {
    let (_db, store) = postgres().await;
    exchanges_spend_codes_and_replays_revoke(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_exchanges_have_one_winner() {
    let (_db, store) = postgres().await;
    concurrent_exchanges_have_one_winner(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_refused_rotations_change_nothing() {
    let (_db, store) = postgres().await;
    refused_rotations_change_nothing(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_rotations_have_one_winner() {
    let (_db, store) = postgres().await;
    concurrent_rotations_have_one_winner(store).await;
}
