//! The PostgreSQL store against the `Store` contract: every method (the same assertions as the
//! SQLite store's tests), restarts, several instances on one database, and concurrent
//! redemption of codes and refresh tokens across connections and instances.
//!
//! Needs a PostgreSQL server: `MCPGATE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) names a database to connect to as a user that may
//! create databases. Every test creates its own database and drops it at the end.

mod scratch_pg;

use std::sync::Arc;

use mcpgate_auth::ScopeSet;
use mcpgate_auth::store::postgres::PostgresStore;
use mcpgate_auth::store::{
    AuthorizationCode, BrowserSession, Client, ClientSource, CodeRedemption, PendingAuthorization,
    RefreshRedemption, RefreshToken, SigningKey, Store, StoreError, TokenFamily, User,
};
use scratch_pg::{TestDb, admin_url};
use serde_json::json;
use sqlx::Connection;

const NOW: i64 = 1_700_000_000;

/// A store on a database of its own.
async fn fresh() -> (TestDb, PostgresStore) {
    let db = TestDb::new().await;
    let store = db.open().await;
    (db, store)
}

fn scopes(s: &str) -> ScopeSet {
    ScopeSet::parse(s)
}

fn user(id: &str, name: &str) -> User {
    User {
        id: id.into(),
        username: name.into(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${name}"),
        created_at: NOW,
    }
}

fn client(id: &str) -> Client {
    Client {
        client_id: id.into(),
        secret_hash: None,
        metadata: json!({
            "client_name": format!("Client {id}"),
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
        }),
        source: ClientSource::Dynamic,
        created_at: NOW,
    }
}

fn code(hash: &str, user_id: &str, client_id: &str, expires_at: i64) -> AuthorizationCode {
    AuthorizationCode {
        code_hash: hash.into(),
        client_id: client_id.into(),
        user_id: user_id.into(),
        redirect_uri: "http://127.0.0.1:3000/callback".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        resource: "https://mcp.example.com/mcp".into(),
        scope: scopes("mcp:tools:read mcp:tools:call"),
        expires_at,
        family_id: None,
    }
}

fn family(id: &str, user_id: Option<&str>, client_id: &str) -> TokenFamily {
    TokenFamily {
        family_id: id.into(),
        client_id: client_id.into(),
        user_id: user_id.map(Into::into),
        scope: scopes("mcp:tools:read mcp:tools:call"),
        resource: "https://mcp.example.com/mcp".into(),
        created_at: NOW,
        revoked_at: None,
    }
}

fn refresh(hash: &str, family_id: &str, created_at: i64) -> RefreshToken {
    RefreshToken {
        token_hash: hash.into(),
        family_id: family_id.into(),
        scope: scopes("mcp:tools:read mcp:tools:call"),
        resource: "https://mcp.example.com/mcp".into(),
        expires_at: created_at + 30 * 86_400,
        created_at,
        rotated_at: None,
    }
}

fn pending(id: &str, expires_at: i64) -> PendingAuthorization {
    PendingAuthorization {
        id: id.into(),
        client_id: "c1".into(),
        redirect_uri: "http://localhost:8765/cb".into(),
        state: Some("xyz".into()),
        code_challenge: "challenge".into(),
        resource: "https://mcp.example.com/mcp".into(),
        scope: scopes("b a"),
        prompt: vec!["login".into(), "consent".into()],
        csrf_token: "csrf".into(),
        expires_at,
    }
}

fn key(kid: &str, activate_at: i64) -> SigningKey {
    SigningKey {
        kid: kid.into(),
        alg: "ES256".into(),
        private_pkcs8: vec![0x30, 0x81, 0x87, 0x00, 0xff, kid.len() as u8],
        public_jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": "x", "y": "y"}),
        created_at: NOW,
        activate_at,
        retire_at: None,
    }
}

/// A user, a client, and a family with one refresh token `rt0`.
async fn with_grant(store: &PostgresStore) {
    store.create_user(&user("u1", "alice")).await.unwrap();
    store.create_client(&client("c1")).await.unwrap();
    store
        .create_family(
            &family("f1", Some("u1"), "c1"),
            Some(&refresh("rt0", "f1", NOW)),
            None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn opens_and_pings() {
    let (_db, store) = fresh().await;
    store.ping().await.unwrap();
    assert!(store.list_users().await.unwrap().is_empty());
    store.close().await;
}

/// Connections the server dropped while they sat idle in the pool are not lent: a connection
/// idle for longer than the pool's liveness window is pinged first and replaced when dead.
#[tokio::test]
async fn connections_dropped_by_the_server_while_idle_are_replaced() {
    let (_db, store) = fresh().await;
    store.ping().await.unwrap();
    let (database,): (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    let (terminated,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()) AS t",
    )
    .bind(&database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(terminated >= 1, "the pool had no connection to drop");
    // Past the window within which a just-used connection is lent unchecked.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    for _ in 0..3 {
        assert!(store.list_users().await.unwrap().is_empty());
    }
    store.close().await;
}

#[tokio::test]
async fn open_migrates_a_fresh_database_with_native_types() {
    let (db, store) = fresh().await;
    let migrations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.path().extension().is_some_and(|e| e == "sql"))
        })
        .count();
    assert_eq!(usize::try_from(migrations).unwrap(), files);
    let types: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT \
         FROM information_schema.columns WHERE table_schema = 'public' AND \
         (table_name, column_name) IN (('refresh_tokens', 'expires_at'), \
         ('signing_keys', 'private_pkcs8'), ('signing_keys', 'public_jwk'), \
         ('clients', 'metadata'), ('consents', 'scopes'), ('mcp_sessions', 'state')) \
         ORDER BY table_name, column_name",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let types: Vec<_> = types
        .iter()
        .map(|(t, c, ty)| (t.as_str(), c.as_str(), ty.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("clients", "metadata", "jsonb"),
            ("consents", "scopes", "text"),
            ("mcp_sessions", "state", "jsonb"),
            ("refresh_tokens", "expires_at", "bigint"),
            ("signing_keys", "private_pkcs8", "bytea"),
            ("signing_keys", "public_jwk", "jsonb"),
        ]
    );
    // Opening again (another instance starting) migrates nothing.
    let again = db.open().await;
    again.ping().await.unwrap();
    store.close().await;
    again.close().await;
}

#[tokio::test]
async fn unusable_locations_are_unavailable() {
    assert!(matches!(
        PostgresStore::open("sqlite://auth.db").await,
        Err(StoreError::Unavailable(_))
    ));
    // Nothing listens on port 1; the message never repeats the password.
    match PostgresStore::open("postgres://mcpgate:hunter2@127.0.0.1:1/test").await {
        Err(StoreError::Unavailable(message)) => assert!(!message.contains("hunter2"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let mut missing = url::Url::parse(&admin_url()).unwrap();
    missing.set_path("/mcpgate_no_such_database");
    assert!(matches!(
        PostgresStore::open(missing.as_str()).await,
        Err(StoreError::Unavailable(_))
    ));

    let (_db, store) = fresh().await;
    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn from_pool_migrates_an_existing_pool() {
    let db = TestDb::new().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .unwrap();
    let store = PostgresStore::from_pool(pool).await.unwrap();
    store.create_user(&user("u1", "alice")).await.unwrap();
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    // Migrating again is a no-op.
    let again = PostgresStore::from_pool(store.pool().clone())
        .await
        .unwrap();
    assert_eq!(again.list_users().await.unwrap().len(), 1);
    store.close().await;
}

/// Two instances on one database, as two mcpgate processes would have.
async fn two_instances() -> (TestDb, PostgresStore, PostgresStore) {
    let db = TestDb::new().await;
    let a = db.open().await;
    let b = db.open().await;
    (db, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_code_redemptions_have_one_winner() {
    let (_db, a, b) = two_instances().await;
    a.create_user(&user("u1", "alice")).await.unwrap();
    a.create_code(&code("k1", "u1", "c1", NOW + 60))
        .await
        .unwrap();
    let stores = [Arc::new(a), Arc::new(b)];
    let start = Arc::new(tokio::sync::Barrier::new(10));
    let outcomes = futures::future::join_all((0..10).map(|i| {
        let store = stores[i % 2].clone();
        let start = start.clone();
        tokio::spawn(async move {
            start.wait().await;
            store.redeem_code("k1", NOW).await.unwrap()
        })
    }))
    .await;
    let fresh = outcomes
        .iter()
        .filter(|o| matches!(o.as_ref().unwrap(), CodeRedemption::Fresh(_)))
        .count();
    let replayed = outcomes
        .iter()
        .filter(|o| matches!(o.as_ref().unwrap(), CodeRedemption::Replayed(_)))
        .count();
    assert_eq!((fresh, replayed), (1, 9));
    for store in &stores {
        store.close().await;
    }
}

/// Twenty refreshes of one token at once, from two instances with ten connections each: every
/// redemption runs on a connection of its own.
async fn race_refreshes(grace_secs: i64) -> (Vec<RefreshRedemption>, PostgresStore, TestDb) {
    let (db, a, b) = two_instances().await;
    with_grant(&a).await;
    let stores = [Arc::new(a.clone()), Arc::new(b)];
    let start = Arc::new(tokio::sync::Barrier::new(20));
    let tasks = (0..20).map(|i| {
        let store = stores[i % 2].clone();
        let start = start.clone();
        tokio::spawn(async move {
            let successor = refresh(&format!("succ{i}"), "f1", NOW + 1);
            start.wait().await;
            store
                .redeem_refresh("rt0", &successor, NOW + 1, grace_secs)
                .await
                .unwrap()
        })
    });
    let outcomes = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    stores[1].close().await;
    (outcomes, a, db)
}

fn count(outcomes: &[RefreshRedemption], pick: fn(&RefreshRedemption) -> bool) -> usize {
    outcomes.iter().filter(|o| pick(o)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_within_grace_keep_the_family() {
    let (outcomes, store, _db) = race_refreshes(3600).await;
    assert_eq!(
        count(&outcomes, |o| matches!(
            o,
            RefreshRedemption::Current { .. }
        )),
        1
    );
    assert_eq!(
        count(&outcomes, |o| matches!(
            o,
            RefreshRedemption::WithinGrace { .. }
        )),
        19
    );
    let family = store.family("f1").await.unwrap().unwrap();
    assert_eq!(family.revoked_at, None);
    for i in 0..20 {
        let successor = store
            .refresh_token(&format!("succ{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(successor.family_id, "f1");
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_without_grace_revoke_the_family() {
    let (outcomes, store, _db) = race_refreshes(0).await;
    assert_eq!(
        count(&outcomes, |o| matches!(
            o,
            RefreshRedemption::Current { .. }
        )),
        1
    );
    assert_eq!(
        count(&outcomes, |o| matches!(
            o,
            RefreshRedemption::WithinGrace { .. }
        )),
        0
    );
    assert_eq!(
        count(&outcomes, |o| matches!(
            o,
            RefreshRedemption::Replayed { .. }
        )),
        1
    );
    assert_eq!(
        count(&outcomes, |o| matches!(o, RefreshRedemption::Invalid)),
        18
    );
    // The family is still there, revoked, and only the winner's successor was stored.
    let family = store.family("f1").await.unwrap().unwrap();
    assert_eq!(family.revoked_at, Some(NOW + 1));
    let successors: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens WHERE token_hash LIKE 'succ%'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(successors, 1);
    store.close().await;
}

/// Refreshes of every token of a family race the deletion of its user and client, a purge and
/// revocations, across two instances: each writer queues behind the others in the store's lock
/// order, so none fails (no deadlock), and the family ends revoked with no live token. A few
/// rounds, as the interleavings vary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refreshes_racing_deletions_and_purges_never_fail() {
    for _ in 0..4 {
        race_refreshes_against_writers().await;
    }
}

async fn race_refreshes_against_writers() {
    let (_db, a, b) = two_instances().await;
    with_grant(&a).await;
    a.create_code(&code("k1", "u1", "c1", NOW - 1))
        .await
        .unwrap();
    // More tokens in the family, and an expired one for the purge.
    for i in 0..5 {
        let mut token = refresh(&format!("rt{}", i + 1), "f1", NOW);
        if i == 0 {
            token.expires_at = NOW;
        }
        a.create_family(&family(&format!("g{i}"), Some("u1"), "c1"), None, None)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, scope, resource, expires_at, \
             created_at) VALUES ($1, 'f1', '', '', $2, $3)",
        )
        .bind(&token.token_hash)
        .bind(token.expires_at)
        .bind(token.created_at)
        .execute(a.pool())
        .await
        .unwrap();
    }
    let stores = [Arc::new(a.clone()), Arc::new(b)];
    let start = Arc::new(tokio::sync::Barrier::new(24));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = stores[i % 2].clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let successor = refresh(&format!("succ{i}"), "f1", NOW + 1);
            start.wait().await;
            match i {
                20 => store.delete_user("alice").await.map(drop),
                21 => store.delete_client("c1").await.map(drop),
                22 => store.purge_expired(NOW + 1).await.map(drop),
                23 => store
                    .revoke_grants(Some("u1"), None, NOW + 1)
                    .await
                    .map(drop),
                _ => store
                    .redeem_refresh(&format!("rt{}", i % 6), &successor, NOW + 1, 3600)
                    .await
                    .map(drop),
            }
        }));
    }
    for outcome in futures::future::join_all(tasks).await {
        outcome.unwrap().unwrap();
    }
    assert!(a.family("f1").await.unwrap().unwrap().revoked_at.is_some());
    let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(live, 0);
    for store in &stores {
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_replay_racing_the_first_exchange_always_ends_the_grant() {
    let (_db, a, b) = two_instances().await;
    a.create_user(&user("u1", "alice")).await.unwrap();
    for round in 0..20 {
        let (k, f) = (format!("k{round}"), format!("f{round}"));
        a.create_code(&code(&k, "u1", "c1", NOW + 60))
            .await
            .unwrap();
        assert!(matches!(
            a.redeem_code(&k, NOW).await.unwrap(),
            CodeRedemption::Fresh(_)
        ));
        // The first exchange stores its family on one instance while the replay arrives at the
        // other: either the replay names the family (and the caller revokes it), or the family
        // is born revoked.
        let (family, first) = (family(&f, Some("u1"), "c1"), refresh(&f, &f, NOW));
        let (created, replay) = tokio::join!(
            a.create_family(&family, Some(&first), Some(&k)),
            b.redeem_code(&k, NOW + 1),
        );
        created.unwrap();
        let CodeRedemption::Replayed(replayed) = replay.unwrap() else {
            panic!("round {round}: expected a replay");
        };
        let revoked = a.family(&f).await.unwrap().unwrap().revoked_at.is_some();
        assert!(
            replayed.family_id.as_deref() == Some(f.as_str()) || revoked,
            "round {round}: the replay saw no family and the family is live"
        );
    }
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn two_instances_see_each_others_writes() {
    let (_db, a, b) = two_instances().await;
    with_grant(&a).await;
    assert_eq!(
        b.user_by_name("alice").await.unwrap(),
        Some(user("u1", "alice"))
    );
    assert_eq!(b.client("c1").await.unwrap(), Some(client("c1")));

    // Authorization started on one instance completes on the other.
    a.put_pending(&pending("p1", NOW + 600)).await.unwrap();
    assert_eq!(
        b.pending("p1", NOW).await.unwrap(),
        Some(pending("p1", NOW + 600))
    );
    assert!(b.delete_pending("p1").await.unwrap());
    assert!(!a.delete_pending("p1").await.unwrap());
    b.grant_consent("u1", "c1", &scopes("a"), NOW)
        .await
        .unwrap();
    assert_eq!(a.consent("u1", "c1").await.unwrap(), Some(scopes("a")));
    a.create_code(&code("k1", "u1", "c1", NOW + 60))
        .await
        .unwrap();
    assert!(matches!(
        b.redeem_code("k1", NOW).await.unwrap(),
        CodeRedemption::Fresh(_)
    ));
    assert!(matches!(
        a.redeem_code("k1", NOW).await.unwrap(),
        CodeRedemption::Replayed(_)
    ));

    // A refresh token rotated on one instance is rotated for the other.
    assert!(matches!(
        a.redeem_refresh("rt0", &refresh("rt1", "f1", NOW + 1), NOW + 1, 0)
            .await
            .unwrap(),
        RefreshRedemption::Current { .. }
    ));
    assert!(matches!(
        b.redeem_refresh("rt1", &refresh("rt2", "f1", NOW + 2), NOW + 2, 0)
            .await
            .unwrap(),
        RefreshRedemption::Current { .. }
    ));
    assert!(matches!(
        a.redeem_refresh("rt1", &refresh("rt3", "f1", NOW + 3), NOW + 3, 0)
            .await
            .unwrap(),
        RefreshRedemption::Replayed { .. }
    ));
    assert_eq!(
        b.revocations(NOW, NOW).await.unwrap().families,
        ["f1".to_owned()]
    );

    // Key rotation and revocations on one are seen by the other.
    a.create_key(&key("k1", NOW)).await.unwrap();
    assert_eq!(b.keys().await.unwrap(), vec![key("k1", NOW)]);
    assert!(b.set_key_retirement("k1", NOW + 60).await.unwrap());
    assert_eq!(a.keys().await.unwrap()[0].retire_at, Some(NOW + 60));
    b.revoke_jti("j1", NOW + 60).await.unwrap();
    assert_eq!(
        a.revocations(NOW, NOW).await.unwrap().jtis,
        vec![("j1".to_owned(), NOW + 60)]
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_conflict_or_merge_instead_of_failing() {
    let (_db, a, b) = two_instances().await;
    a.create_user(&user("u0", "owner")).await.unwrap();
    let stores = [Arc::new(a.clone()), Arc::new(b)];
    let start = Arc::new(tokio::sync::Barrier::new(30));
    let tasks = (0..30).map(|i| {
        let store = stores[i % 2].clone();
        let start = start.clone();
        tokio::spawn(async move {
            start.wait().await;
            match i % 3 {
                // The same username under ten ids: one wins, the rest conflict.
                0 => store
                    .create_user(&user(&format!("u{}", i + 1), "alice"))
                    .await
                    .map(|()| "user"),
                // The same client id ten times.
                1 => store.create_client(&client("c1")).await.map(|()| "client"),
                // Ten first approvals of different scopes: all kept.
                _ => store
                    .grant_consent("u0", "c1", &scopes(&format!("s{i}")), NOW)
                    .await
                    .map(|()| "consent"),
            }
        })
    });
    let mut created = Vec::new();
    for outcome in futures::future::join_all(tasks).await {
        match outcome.unwrap() {
            Ok(what) => created.push(what),
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("expected a conflict, got {other:?}"),
        }
    }
    created.sort_unstable();
    assert_eq!(created.iter().filter(|w| **w == "user").count(), 1);
    assert_eq!(created.iter().filter(|w| **w == "client").count(), 1);
    assert_eq!(created.iter().filter(|w| **w == "consent").count(), 10);
    let expected = scopes(
        &(0..30)
            .filter(|i| i % 3 == 2)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    assert_eq!(a.consent("u0", "c1").await.unwrap(), Some(expected));
    for store in &stores {
        store.close().await;
    }
}

#[tokio::test]
async fn data_survives_a_restart() {
    let db = TestDb::new().await;
    {
        let store = db.open().await;
        with_grant(&store).await;
        store
            .grant_consent("u1", "c1", &scopes("b a"), NOW)
            .await
            .unwrap();
        store.create_key(&key("k1", NOW)).await.unwrap();
        store.put_pending(&pending("p1", NOW + 600)).await.unwrap();
        store
            .create_session(&BrowserSession {
                id_hash: "s1".into(),
                user_id: "u1".into(),
                expires_at: NOW + 3600,
            })
            .await
            .unwrap();
        store
            .create_code(&code("k1", "u1", "c1", NOW + 60))
            .await
            .unwrap();
        store.redeem_code("k1", NOW).await.unwrap();
        store
            .redeem_refresh("rt0", &refresh("rt1", "f1", NOW + 1), NOW + 1, 10)
            .await
            .unwrap();
        store.revoke_jti("j1", NOW + 3600).await.unwrap();
        store.close().await;
    }

    let store = db.open().await;
    assert_eq!(
        store.user_by_name("alice").await.unwrap(),
        Some(user("u1", "alice"))
    );
    assert_eq!(store.client("c1").await.unwrap(), Some(client("c1")));
    assert_eq!(
        store.consent("u1", "c1").await.unwrap(),
        Some(scopes("a b"))
    );
    assert_eq!(store.keys().await.unwrap(), vec![key("k1", NOW)]);
    assert_eq!(
        store.pending("p1", NOW).await.unwrap(),
        Some(pending("p1", NOW + 600))
    );
    assert!(store.session("s1", NOW).await.unwrap().is_some());
    assert!(matches!(
        store.redeem_code("k1", NOW).await.unwrap(),
        CodeRedemption::Replayed(_)
    ));
    assert_eq!(
        store
            .refresh_token("rt0")
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        Some(NOW + 1)
    );
    assert!(matches!(
        store
            .redeem_refresh("rt1", &refresh("rt2", "f1", NOW + 2), NOW + 2, 10)
            .await
            .unwrap(),
        RefreshRedemption::Current { .. }
    ));
    assert_eq!(
        store.revocations(NOW, NOW).await.unwrap().jtis,
        vec![("j1".to_owned(), NOW + 3600)]
    );
    store.close().await;
}

#[tokio::test]
async fn users() {
    let (_db, store) = fresh().await;
    store.create_user(&user("u2", "bob")).await.unwrap();
    store.create_user(&user("u1", "alice")).await.unwrap();

    let err = store.create_user(&user("u3", "alice")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref what) if what.contains("alice")),
        "{err:?}"
    );
    assert!(matches!(
        store.create_user(&user("u1", "carol")).await,
        Err(StoreError::Conflict(_))
    ));

    assert_eq!(
        store.user_by_name("alice").await.unwrap(),
        Some(user("u1", "alice"))
    );
    assert_eq!(
        store.user_by_id("u2").await.unwrap(),
        Some(user("u2", "bob"))
    );
    assert_eq!(store.user_by_name("nobody").await.unwrap(), None);
    assert_eq!(store.user_by_id("nobody").await.unwrap(), None);
    let names: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    assert!(store.set_password("alice", "$argon2id$new").await.unwrap());
    assert!(!store.set_password("nobody", "$argon2id$new").await.unwrap());
    assert_eq!(
        store
            .user_by_name("alice")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$new"
    );

    assert!(store.delete_user("bob").await.unwrap());
    assert!(!store.delete_user("bob").await.unwrap());
    assert_eq!(store.user_by_id("u2").await.unwrap(), None);
}

#[tokio::test]
async fn clients() {
    let (_db, store) = fresh().await;
    let mut admin = client("admin-cli");
    admin.source = ClientSource::Admin;
    admin.secret_hash = Some("ab".repeat(32));
    admin.created_at = NOW + 1;
    store.create_client(&client("c1")).await.unwrap();
    store.create_client(&admin).await.unwrap();
    assert!(matches!(
        store.create_client(&client("c1")).await,
        Err(StoreError::Conflict(ref what)) if what.contains("c1")
    ));

    assert_eq!(store.client("c1").await.unwrap(), Some(client("c1")));
    assert_eq!(
        store.client("admin-cli").await.unwrap(),
        Some(admin.clone())
    );
    assert_eq!(store.client("nope").await.unwrap(), None);
    assert_eq!(
        store.list_clients().await.unwrap(),
        vec![client("c1"), admin]
    );

    assert!(store.delete_client("c1").await.unwrap());
    assert!(!store.delete_client("c1").await.unwrap());
    assert_eq!(store.list_clients().await.unwrap().len(), 1);
}

#[tokio::test]
async fn consents_accumulate_and_can_be_revoked() {
    let (_db, store) = fresh().await;
    store.create_user(&user("u1", "alice")).await.unwrap();
    // Metadata-document clients are not in `clients`, and still get consents.
    let cimd = "https://app.example.com/oauth/client.json";
    assert_eq!(store.consent("u1", cimd).await.unwrap(), None);

    store
        .grant_consent("u1", cimd, &scopes("b a"), NOW)
        .await
        .unwrap();
    assert_eq!(
        store.consent("u1", cimd).await.unwrap(),
        Some(scopes("a b"))
    );
    store
        .grant_consent("u1", cimd, &scopes("c a"), NOW + 1)
        .await
        .unwrap();
    assert_eq!(
        store.consent("u1", cimd).await.unwrap(),
        Some(scopes("a b c"))
    );
    let stored: String = sqlx::query_scalar("SELECT scopes FROM consents")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, "a b c");
    assert_eq!(store.consent("u1", "other").await.unwrap(), None);

    assert!(store.revoke_consent("u1", cimd).await.unwrap());
    assert!(!store.revoke_consent("u1", cimd).await.unwrap());
    assert_eq!(store.consent("u1", cimd).await.unwrap(), None);

    // Consent for a user that does not exist is refused.
    assert!(
        store
            .grant_consent("ghost", cimd, &scopes("a"), NOW)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn pending_authorizations() {
    let (_db, store) = fresh().await;
    let mut p = pending("p1", NOW + 600);
    store.put_pending(&p).await.unwrap();
    assert_eq!(store.pending("p1", NOW).await.unwrap(), Some(p.clone()));
    assert_eq!(
        store.pending("p1", NOW + 600).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(store.pending("p2", NOW).await.unwrap(), None);

    // Putting again replaces (e.g. a new CSRF token), including empty optional parts.
    p.state = None;
    p.prompt = Vec::new();
    p.csrf_token = "csrf2".into();
    store.put_pending(&p).await.unwrap();
    assert_eq!(store.pending("p1", NOW).await.unwrap(), Some(p));

    assert!(
        store.delete_pending("p1").await.unwrap(),
        "the first delete removes it"
    );
    assert!(
        !store.delete_pending("p1").await.unwrap(),
        "a second delete finds nothing"
    );
    assert_eq!(store.pending("p1", NOW).await.unwrap(), None);
}

#[tokio::test]
async fn browser_sessions() {
    let (_db, store) = fresh().await;
    store.create_user(&user("u1", "alice")).await.unwrap();
    let s = BrowserSession {
        id_hash: "sh1".into(),
        user_id: "u1".into(),
        expires_at: NOW + 3600,
    };
    store.create_session(&s).await.unwrap();
    assert!(matches!(
        store.create_session(&s).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.session("sh1", NOW).await.unwrap(), Some(s.clone()));
    assert_eq!(
        store.session("sh1", NOW + 3600).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(store.session("nope", NOW).await.unwrap(), None);

    let orphan = BrowserSession {
        id_hash: "sh2".into(),
        user_id: "ghost".into(),
        expires_at: NOW + 3600,
    };
    assert!(matches!(
        store.create_session(&orphan).await,
        Err(StoreError::Conflict(_))
    ));

    store.delete_session("sh1").await.unwrap();
    assert_eq!(store.session("sh1", NOW).await.unwrap(), None);
}

#[tokio::test]
async fn codes_are_single_use() {
    let (_db, store) = fresh().await;
    store.create_user(&user("u1", "alice")).await.unwrap();
    store
        .create_code(&code("k1", "u1", "c1", NOW + 60))
        .await
        .unwrap();
    assert!(matches!(
        store.create_code(&code("k1", "u1", "c1", NOW + 60)).await,
        Err(StoreError::Conflict(_))
    ));

    assert_eq!(
        store.redeem_code("k1", NOW).await.unwrap(),
        CodeRedemption::Fresh(code("k1", "u1", "c1", NOW + 60))
    );
    store
        .create_family(
            &family("f1", Some("u1"), "c1"),
            Some(&refresh("rt0", "f1", NOW)),
            Some("k1"),
        )
        .await
        .unwrap();
    // The replay names the family the first use created, so the caller can revoke it; still
    // a replay once expired.
    for at in [NOW + 1, NOW + 120] {
        match store.redeem_code("k1", at).await.unwrap() {
            CodeRedemption::Replayed(c) => assert_eq!(c.family_id.as_deref(), Some("f1")),
            other => panic!("expected a replay, got {other:?}"),
        }
    }

    store
        .create_code(&code("k2", "u1", "c1", NOW + 60))
        .await
        .unwrap();
    assert_eq!(
        store.redeem_code("k2", NOW + 60).await.unwrap(),
        CodeRedemption::Unknown
    );
    assert_eq!(
        store.redeem_code("k2", NOW + 61).await.unwrap(),
        CodeRedemption::Unknown
    );
    assert_eq!(
        store.redeem_code("never", NOW).await.unwrap(),
        CodeRedemption::Unknown
    );
}

#[tokio::test]
async fn families_link_their_code() {
    let (_db, store) = fresh().await;
    store.create_user(&user("u1", "alice")).await.unwrap();
    store
        .create_code(&code("k1", "u1", "c1", NOW + 60))
        .await
        .unwrap();
    store.redeem_code("k1", NOW).await.unwrap();

    // The first token's `family_id` is the family's, whatever the caller wrote in it.
    store
        .create_family(
            &family("f1", Some("u1"), "c1"),
            Some(&refresh("rt0", "placeholder", NOW)),
            Some("k1"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.family("f1").await.unwrap(),
        Some(family("f1", Some("u1"), "c1"))
    );
    assert_eq!(
        store.refresh_token("rt0").await.unwrap(),
        Some(refresh("rt0", "f1", NOW))
    );
    assert_eq!(store.family("nope").await.unwrap(), None);
    assert_eq!(store.refresh_token("nope").await.unwrap(), None);

    // A second family from the same code is refused, and nothing of it is left behind.
    let err = store
        .create_family(
            &family("f2", Some("u1"), "c1"),
            Some(&refresh("rt9", "f2", NOW)),
            Some("k1"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.family("f2").await.unwrap(), None);
    assert_eq!(store.refresh_token("rt9").await.unwrap(), None);

    // Duplicate family ids conflict; client-credentials families have no user and no token.
    assert!(matches!(
        store
            .create_family(&family("f1", None, "c1"), None, None)
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .create_family(&family("cc", None, "svc"), None, None)
        .await
        .unwrap();
    assert_eq!(store.family("cc").await.unwrap().unwrap().user_id, None);
}

#[tokio::test]
async fn a_family_created_after_its_code_was_replayed_is_born_revoked() {
    let (_db, store) = fresh().await;
    store.create_user(&user("u1", "alice")).await.unwrap();
    store
        .create_code(&code("k1", "u1", "c1", NOW + 60))
        .await
        .unwrap();
    assert!(matches!(
        store.redeem_code("k1", NOW).await.unwrap(),
        CodeRedemption::Fresh(_)
    ));
    // The replay arrives while the first exchange has not stored its family yet.
    match store.redeem_code("k1", NOW).await.unwrap() {
        CodeRedemption::Replayed(c) => assert_eq!(c.family_id, None),
        other => panic!("expected a replay, got {other:?}"),
    }
    store
        .create_family(
            &family("f1", Some("u1"), "c1"),
            Some(&refresh("rt0", "f1", NOW)),
            Some("k1"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.family("f1").await.unwrap().unwrap().revoked_at,
        Some(NOW)
    );
    let outcome = store
        .redeem_refresh("rt0", &refresh("rt1", "f1", NOW + 5), NOW + 5, 10)
        .await
        .unwrap();
    assert_eq!(outcome, RefreshRedemption::Invalid);
}

#[tokio::test]
async fn refresh_rotation_grace_and_replay() {
    let (_db, store) = fresh().await;
    with_grant(&store).await;

    // Current: rotated, successor stored in the same family.
    let t1 = NOW + 100;
    match store
        .redeem_refresh("rt0", &refresh("rt1", "unknown-to-caller", t1), t1, 10)
        .await
        .unwrap()
    {
        RefreshRedemption::Current { token, family } => {
            assert_eq!(token.token_hash, "rt0");
            assert_eq!(token.rotated_at, Some(t1));
            assert_eq!(family.family_id, "f1");
            assert_eq!(family.revoked_at, None);
        }
        other => panic!("expected Current, got {other:?}"),
    }
    assert_eq!(
        store
            .refresh_token("rt0")
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        Some(t1)
    );
    assert_eq!(
        store.refresh_token("rt1").await.unwrap(),
        Some(refresh("rt1", "f1", t1))
    );

    // Within grace: another successor, nothing revoked.
    match store
        .redeem_refresh("rt0", &refresh("rt1b", "f1", t1 + 9), t1 + 9, 10)
        .await
        .unwrap()
    {
        RefreshRedemption::WithinGrace { token, family } => {
            assert_eq!(token.rotated_at, Some(t1));
            assert_eq!(family.family_id, "f1");
        }
        other => panic!("expected WithinGrace, got {other:?}"),
    }
    assert!(store.refresh_token("rt1b").await.unwrap().is_some());
    assert_eq!(store.family("f1").await.unwrap().unwrap().revoked_at, None);

    // The successor rotates normally.
    let t2 = t1 + 20;
    assert!(matches!(
        store
            .redeem_refresh("rt1", &refresh("rt2", "f1", t2), t2, 10)
            .await
            .unwrap(),
        RefreshRedemption::Current { .. }
    ));

    // After the grace window: the family is revoked, no successor stored.
    match store
        .redeem_refresh("rt0", &refresh("rtX", "f1", t2), t2, 10)
        .await
        .unwrap()
    {
        RefreshRedemption::Replayed { family } => {
            assert_eq!(family.family_id, "f1");
            assert_eq!(family.revoked_at, Some(t2));
        }
        other => panic!("expected Replayed, got {other:?}"),
    }
    assert_eq!(store.refresh_token("rtX").await.unwrap(), None);
    assert_eq!(
        store.family("f1").await.unwrap().unwrap().revoked_at,
        Some(t2)
    );

    // The whole family is now dead, current token included.
    assert_eq!(
        store
            .redeem_refresh("rt2", &refresh("rtY", "f1", t2), t2, 10)
            .await
            .unwrap(),
        RefreshRedemption::Invalid
    );
    assert_eq!(
        store
            .redeem_refresh("nope", &refresh("rtZ", "f1", t2), t2, 10)
            .await
            .unwrap(),
        RefreshRedemption::Invalid
    );
    assert_eq!(store.refresh_token("rtY").await.unwrap(), None);
}

#[tokio::test]
async fn expired_refresh_tokens_are_invalid() {
    let (_db, store) = fresh().await;
    with_grant(&store).await;
    let expiry = refresh("rt0", "f1", NOW).expires_at;
    assert_eq!(
        store
            .redeem_refresh("rt0", &refresh("rt1", "f1", expiry), expiry, 10)
            .await
            .unwrap(),
        RefreshRedemption::Invalid
    );
    assert_eq!(
        store
            .refresh_token("rt0")
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        None
    );
    assert_eq!(store.family("f1").await.unwrap().unwrap().revoked_at, None);
}

#[tokio::test]
async fn revoking_families_and_grants() {
    let (_db, store) = fresh().await;
    store.create_user(&user("u1", "alice")).await.unwrap();
    store.create_user(&user("u2", "bob")).await.unwrap();
    for (id, u, c) in [
        ("a1", Some("u1"), "c1"),
        ("a2", Some("u1"), "c2"),
        ("b1", Some("u2"), "c1"),
        ("s1", None, "c1"),
    ] {
        store
            .create_family(&family(id, u, c), None, None)
            .await
            .unwrap();
    }

    store.revoke_family("a1", NOW + 1).await.unwrap();
    store.revoke_family("a1", NOW + 2).await.unwrap();
    store.revoke_family("missing", NOW).await.unwrap();
    assert_eq!(
        store.family("a1").await.unwrap().unwrap().revoked_at,
        Some(NOW + 1)
    );

    assert!(
        store
            .revoke_grants(None, None, NOW + 3)
            .await
            .unwrap()
            .is_empty()
    );
    let mut both = store
        .revoke_grants(Some("u1"), Some("c2"), NOW + 3)
        .await
        .unwrap();
    both.sort();
    assert_eq!(both, ["a2"]);
    // Already-revoked families are not reported again.
    assert!(
        store
            .revoke_grants(Some("u1"), None, NOW + 4)
            .await
            .unwrap()
            .is_empty()
    );
    let mut by_client = store
        .revoke_grants(None, Some("c1"), NOW + 5)
        .await
        .unwrap();
    by_client.sort();
    assert_eq!(by_client, ["b1", "s1"]);
    assert_eq!(
        store.family("b1").await.unwrap().unwrap().revoked_at,
        Some(NOW + 5)
    );
    assert_eq!(
        store.family("a2").await.unwrap().unwrap().revoked_at,
        Some(NOW + 3)
    );
}

#[tokio::test]
async fn revocations_since() {
    let (_db, store) = fresh().await;
    store.revoke_jti("j1", NOW + 100).await.unwrap();
    store.revoke_jti("j2", NOW + 10).await.unwrap();
    // Revoking again keeps the later expiry.
    store.revoke_jti("j2", NOW + 5).await.unwrap();
    store.revoke_jti("j3", NOW - 1).await.unwrap();
    store
        .create_family(&family("f1", None, "c1"), None, None)
        .await
        .unwrap();
    store
        .create_family(&family("f2", None, "c1"), None, None)
        .await
        .unwrap();
    store
        .create_family(&family("f3", None, "c1"), None, None)
        .await
        .unwrap();
    store.revoke_family("f1", NOW - 50).await.unwrap();
    store.revoke_family("f2", NOW).await.unwrap();

    let r = store.revocations(NOW, NOW).await.unwrap();
    assert_eq!(
        r.jtis,
        vec![("j2".to_owned(), NOW + 10), ("j1".to_owned(), NOW + 100)]
    );
    assert_eq!(r.families, ["f2"]);
    let r = store.revocations(NOW - 50, NOW + 10).await.unwrap();
    assert_eq!(r.jtis, vec![("j1".to_owned(), NOW + 100)]);
    assert_eq!(r.families, ["f1", "f2"]);
}

#[tokio::test]
async fn signing_keys() {
    let (_db, store) = fresh().await;
    store.create_key(&key("k2", NOW + 60)).await.unwrap();
    store.create_key(&key("k1", NOW)).await.unwrap();
    assert!(matches!(
        store.create_key(&key("k1", NOW)).await,
        Err(StoreError::Conflict(_))
    ));
    // Creation order, whatever the activation times.
    assert_eq!(
        store.keys().await.unwrap(),
        vec![key("k2", NOW + 60), key("k1", NOW)]
    );

    assert!(store.set_key_retirement("k1", NOW + 3600).await.unwrap());
    assert!(!store.set_key_retirement("nope", NOW).await.unwrap());
    assert_eq!(store.keys().await.unwrap()[1].retire_at, Some(NOW + 3600));

    assert_eq!(store.purge_expired(NOW + 3599).await.unwrap(), 0);
    assert_eq!(store.purge_expired(NOW + 3600).await.unwrap(), 1);
    assert_eq!(store.keys().await.unwrap(), vec![key("k2", NOW + 60)]);
}

#[tokio::test]
async fn purge_removes_what_expired_and_never_registrations() {
    let (_db, store) = fresh().await;
    let store = store.with_family_retention(1000);
    with_grant(&store).await;
    let mut admin = client("admin");
    admin.source = ClientSource::Admin;
    store.create_client(&admin).await.unwrap();
    store
        .grant_consent("u1", "c1", &scopes("a"), NOW)
        .await
        .unwrap();
    store.put_pending(&pending("p1", NOW + 10)).await.unwrap();
    store
        .put_pending(&pending("p2", NOW + 10_000))
        .await
        .unwrap();
    store
        .create_session(&BrowserSession {
            id_hash: "s1".into(),
            user_id: "u1".into(),
            expires_at: NOW + 10,
        })
        .await
        .unwrap();
    store
        .create_code(&code("unused", "u1", "c1", NOW + 10))
        .await
        .unwrap();
    store
        .create_code(&code("used", "u1", "c1", NOW + 10))
        .await
        .unwrap();
    store.redeem_code("used", NOW).await.unwrap();
    store.revoke_jti("j1", NOW + 10).await.unwrap();
    // Client credentials: no refresh token, purged once past retention.
    store
        .create_family(&family("cc", None, "admin"), None, None)
        .await
        .unwrap();

    let purged = store.purge_expired(NOW + 20).await.unwrap();
    // p1, s1, the unused code and j1; the used code is kept for replay detection.
    assert_eq!(purged, 4);
    assert!(matches!(
        store.redeem_code("used", NOW + 20).await.unwrap(),
        CodeRedemption::Replayed(_)
    ));
    assert_eq!(
        store
            .pending("p2", NOW + 20)
            .await
            .unwrap()
            .map(|p| p.id)
            .as_deref(),
        Some("p2")
    );
    assert_eq!(
        store.redeem_code("unused", NOW).await.unwrap(),
        CodeRedemption::Unknown
    );

    // Past the replay window the used code goes; past retention the token-less family goes.
    assert_eq!(store.purge_expired(NOW + 1000).await.unwrap(), 2);
    assert_eq!(store.family("cc").await.unwrap(), None);
    assert!(
        store.family("f1").await.unwrap().is_some(),
        "still has its refresh token"
    );

    // Once the refresh token expires, its family goes too, after retention.
    let expiry = refresh("rt0", "f1", NOW).expires_at;
    assert_eq!(
        store.purge_expired(expiry).await.unwrap(),
        3,
        "rt0, p2 and f1"
    );
    assert_eq!(store.family("f1").await.unwrap(), None);

    // Registrations, users and consents stay, whatever the time.
    assert_eq!(store.purge_expired(i64::MAX / 2).await.unwrap(), 0);
    assert_eq!(store.list_clients().await.unwrap().len(), 2);
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    assert_eq!(store.consent("u1", "c1").await.unwrap(), Some(scopes("a")));
}

#[tokio::test]
async fn deleting_a_user_removes_their_data_and_revokes_their_grants() {
    let (_db, store) = fresh().await;
    with_grant(&store).await;
    store.create_user(&user("u2", "bob")).await.unwrap();
    store
        .create_family(&family("fb", Some("u2"), "c1"), None, None)
        .await
        .unwrap();
    store
        .grant_consent("u1", "c1", &scopes("a"), NOW)
        .await
        .unwrap();
    store
        .grant_consent("u2", "c1", &scopes("a"), NOW)
        .await
        .unwrap();
    store
        .create_session(&BrowserSession {
            id_hash: "s1".into(),
            user_id: "u1".into(),
            expires_at: NOW + 3600,
        })
        .await
        .unwrap();
    store
        .create_code(&code("k1", "u1", "c1", NOW + 60))
        .await
        .unwrap();

    assert!(store.delete_user("alice").await.unwrap());
    assert_eq!(store.user_by_id("u1").await.unwrap(), None);
    assert_eq!(store.consent("u1", "c1").await.unwrap(), None);
    assert_eq!(store.session("s1", NOW).await.unwrap(), None);
    assert_eq!(
        store.redeem_code("k1", NOW).await.unwrap(),
        CodeRedemption::Unknown
    );
    // The family stays, revoked, so the denylist keeps refusing its access tokens.
    let f1 = store.family("f1").await.unwrap().unwrap();
    let revoked_at = f1.revoked_at.expect("revoked");
    assert!(
        store
            .revocations(revoked_at, NOW)
            .await
            .unwrap()
            .families
            .contains(&"f1".to_owned())
    );
    assert_eq!(store.refresh_token("rt0").await.unwrap(), None);
    assert_eq!(
        store
            .redeem_refresh("rt0", &refresh("rt1", "f1", NOW), NOW, 10)
            .await
            .unwrap(),
        RefreshRedemption::Invalid
    );
    // Bob is untouched.
    assert_eq!(store.family("fb").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(store.consent("u2", "c1").await.unwrap(), Some(scopes("a")));
    assert_eq!(store.list_clients().await.unwrap().len(), 1);
}

#[tokio::test]
async fn deleting_a_client_removes_its_consents_and_revokes_its_grants() {
    let (_db, store) = fresh().await;
    with_grant(&store).await;
    store.create_client(&client("c2")).await.unwrap();
    store
        .create_family(&family("f2", Some("u1"), "c2"), None, None)
        .await
        .unwrap();
    store
        .grant_consent("u1", "c1", &scopes("a"), NOW)
        .await
        .unwrap();
    store
        .grant_consent("u1", "c2", &scopes("a"), NOW)
        .await
        .unwrap();
    store.put_pending(&pending("p1", NOW + 600)).await.unwrap();
    store
        .create_code(&code("k1", "u1", "c1", NOW + 60))
        .await
        .unwrap();

    assert!(store.delete_client("c1").await.unwrap());
    assert_eq!(store.client("c1").await.unwrap(), None);
    assert_eq!(store.consent("u1", "c1").await.unwrap(), None);
    assert_eq!(store.pending("p1", NOW).await.unwrap(), None);
    assert_eq!(
        store.redeem_code("k1", NOW).await.unwrap(),
        CodeRedemption::Unknown
    );
    assert!(
        store
            .family("f1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert_eq!(store.refresh_token("rt0").await.unwrap(), None);
    // The user and the other client's grant are untouched.
    assert!(store.user_by_id("u1").await.unwrap().is_some());
    assert_eq!(store.family("f2").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(store.consent("u1", "c2").await.unwrap(), Some(scopes("a")));
}

#[tokio::test]
async fn a_successor_hash_collision_rolls_the_rotation_back() {
    let (_db, store) = fresh().await;
    with_grant(&store).await;
    let err = store
        .redeem_refresh("rt0", &refresh("rt0", "f1", NOW + 1), NOW + 1, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store
            .refresh_token("rt0")
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        None
    );
}

fn mcp_session(id_hash: &str, client_id: Option<&str>) -> mcpgate_auth::store::McpSession {
    mcpgate_auth::store::McpSession {
        id_hash: id_hash.into(),
        state: json!({ "initialize_params": { "protocolVersion": "2025-11-25" } }),
        issuer: "https://as.example".into(),
        subject: "alice".into(),
        client_id: client_id.map(str::to_owned),
        grant_id: Some("fam1".into()),
        created_at: NOW,
        last_seen_at: NOW,
        expires_at: NOW + 600,
    }
}

async fn check_mcp_sessions(store: &dyn Store, other: &dyn Store) {
    let s = mcp_session("mh1", Some("c1"));
    store.save_mcp_session(&s).await.unwrap();
    assert_eq!(
        store.mcp_session("mh1", NOW).await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(
        other.mcp_session("mh1", NOW).await.unwrap(),
        Some(s.clone()),
        "another instance sees it"
    );
    assert_eq!(
        store.mcp_session("mh1", NOW + 600).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(store.mcp_session("nope", NOW).await.unwrap(), None);

    // Saving again for the same principal updates the state and expiry, never the binding.
    let mut again = s.clone();
    again.state = json!({ "v": 2 });
    again.created_at = NOW + 10;
    again.last_seen_at = NOW + 10;
    again.expires_at = NOW + 900;
    again.grant_id = Some("fam2".into());
    store.save_mcp_session(&again).await.unwrap();
    let stored = store.mcp_session("mh1", NOW).await.unwrap().unwrap();
    assert_eq!(stored.state, json!({ "v": 2 }));
    assert_eq!(
        (stored.last_seen_at, stored.expires_at),
        (NOW + 10, NOW + 900)
    );
    assert_eq!(stored.created_at, NOW);
    assert_eq!(stored.grant_id.as_deref(), Some("fam1"));

    // Nobody else can take the id over.
    let thieves = [
        mcpgate_auth::store::McpSession {
            subject: "mallory".into(),
            ..s.clone()
        },
        mcpgate_auth::store::McpSession {
            issuer: "https://evil.example".into(),
            ..s.clone()
        },
        mcp_session("mh1", Some("c2")),
        mcp_session("mh1", None),
    ];
    for thief in thieves {
        assert!(
            matches!(
                other.save_mcp_session(&thief).await,
                Err(StoreError::Conflict(_))
            ),
            "{thief:?}"
        );
    }
    assert_eq!(store.mcp_session("mh1", NOW).await.unwrap(), Some(stored));

    // Touching moves the expiry forward, never back, and never revives an expired session.
    assert!(
        other
            .touch_mcp_session("mh1", NOW + 100, NOW + 2000)
            .await
            .unwrap()
    );
    assert!(
        store
            .touch_mcp_session("mh1", NOW + 101, NOW + 1000)
            .await
            .unwrap()
    );
    let touched = store.mcp_session("mh1", NOW).await.unwrap().unwrap();
    assert_eq!(
        (touched.last_seen_at, touched.expires_at),
        (NOW + 101, NOW + 2000)
    );
    assert!(
        !store
            .touch_mcp_session("nope", NOW + 100, NOW + 2000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .touch_mcp_session("mh1", NOW + 2000, NOW + 3000)
            .await
            .unwrap(),
        "expired"
    );

    // A session without a client id saves again like any other.
    let anonymous = mcp_session("mh2", None);
    store.save_mcp_session(&anonymous).await.unwrap();
    store.save_mcp_session(&anonymous).await.unwrap();

    // Purged once expired.
    assert_eq!(store.purge_expired(NOW + 599).await.unwrap(), 0);
    assert_eq!(store.purge_expired(NOW + 600).await.unwrap(), 1);
    assert_eq!(store.mcp_session("mh2", NOW).await.unwrap(), None);
    assert!(store.mcp_session("mh1", NOW).await.unwrap().is_some());

    // Deleting on one instance ends it for all.
    assert!(other.delete_mcp_session("mh1").await.unwrap());
    assert!(!store.delete_mcp_session("mh1").await.unwrap());
    assert_eq!(store.mcp_session("mh1", NOW).await.unwrap(), None);
}

#[tokio::test]
async fn mcp_sessions() {
    let (db, store) = fresh().await;
    let other = db.open().await;
    check_mcp_sessions(&store, &other).await;
}
