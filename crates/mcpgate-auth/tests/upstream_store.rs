//! Proxy mode's state in the store, one contract run against SQLite and PostgreSQL: upstream
//! sign-ins are single-use across connections (and so across instances), expire, and sealed
//! upstream tokens are replaced and go with their user; federated users are created once.
//!
//! PostgreSQL: `MCPGATE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! a user that may create databases; each test uses its own database and drops it.

use std::sync::Arc;

use mcpgate_auth::ScopeSet;
use mcpgate_auth::server::federated::federated_user;
use mcpgate_auth::store::postgres::PostgresStore;
use mcpgate_auth::store::sqlite::SqliteStore;
use mcpgate_auth::store::{PendingAuthorization, Store, UpstreamLogin, User};
use mcpgate_auth::upstream::{Identity, TokenCipher};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

const NOW: i64 = 1_700_000_000;

fn login(state_hash: &str, expires_at: i64) -> UpstreamLogin {
    UpstreamLogin {
        state_hash: state_hash.into(),
        browser_hash: "b".repeat(64),
        nonce: "nonce-1".into(),
        code_verifier: "v".repeat(43),
        pending: PendingAuthorization {
            id: "p-1".into(),
            client_id: "https://client.example/meta.json".into(),
            redirect_uri: "http://127.0.0.1:33418/callback".into(),
            state: Some("client-state".into()),
            code_challenge: "c".repeat(43),
            resource: "https://mcp.example/mcp".into(),
            scope: ScopeSet::parse("mcp:tools:read mcp:tools:write"),
            prompt: vec!["consent".into()],
            csrf_token: "csrf".into(),
            expires_at: NOW + 600,
        },
        expires_at,
    }
}

fn identity(subject: &str, email: &str) -> Identity {
    Identity {
        issuer: "https://idp.example".into(),
        subject: subject.into(),
        email: Some(email.into()),
        email_verified: true,
        username: None,
        name: None,
        groups: Vec::new(),
    }
}

async fn contract(store: Arc<dyn Store>) {
    // Single use: the second take finds nothing, and the pending request survives intact.
    let first = login("s1", NOW + 600);
    store.put_upstream_login(&first).await.unwrap();
    assert!(
        store.put_upstream_login(&first).await.is_err(),
        "state reused"
    );
    assert_eq!(
        store.take_upstream_login("s1", NOW).await.unwrap(),
        Some(first)
    );
    assert_eq!(store.take_upstream_login("s1", NOW).await.unwrap(), None);
    assert_eq!(
        store.take_upstream_login("unknown", NOW).await.unwrap(),
        None
    );

    // Expired: refused, and gone.
    store
        .put_upstream_login(&login("s2", NOW - 1))
        .await
        .unwrap();
    assert_eq!(store.take_upstream_login("s2", NOW).await.unwrap(), None);
    store
        .put_upstream_login(&login("s3", NOW - 1))
        .await
        .unwrap();
    assert!(store.purge_expired(NOW).await.unwrap() >= 1);
    assert_eq!(
        store.take_upstream_login("s3", NOW - 10).await.unwrap(),
        None
    );

    // Twenty concurrent takes of one state: exactly one wins.
    store
        .put_upstream_login(&login("race", NOW + 600))
        .await
        .unwrap();
    let takes = (0..20).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.take_upstream_login("race", NOW).await.unwrap() })
    });
    let mut winners = 0;
    for take in takes {
        winners += usize::from(take.await.unwrap().is_some());
    }
    assert_eq!(winners, 1);

    // Federated users: one per (issuer, subject), whatever the email says; a taken name gets
    // a suffix instead of the other account.
    store
        .create_user(&User {
            id: "local-1".into(),
            username: "jane@example.com".into(),
            password_hash: "$argon2id$local".into(),
            created_at: NOW,
        })
        .await
        .unwrap();
    let jane = federated_user(store.as_ref(), &identity("sub-1", "jane@example.com"))
        .await
        .unwrap();
    assert_ne!(jane.id, "local-1");
    assert!(
        jane.username.starts_with("jane@example.com ("),
        "{}",
        jane.username
    );
    let again = federated_user(store.as_ref(), &identity("sub-1", "renamed@example.com"))
        .await
        .unwrap();
    assert_eq!(again, jane);
    let other = federated_user(store.as_ref(), &identity("sub-2", "bob@example.com"))
        .await
        .unwrap();
    assert_eq!(other.username, "bob@example.com");

    // Sealed tokens: replaced on write, bound to their row, gone with the user.
    let cipher = TokenCipher::new(&[3u8; 32]).unwrap();
    let sealed = cipher
        .seal(&other.id, b"{\"access_token\":\"a1\"}")
        .unwrap();
    store
        .put_upstream_tokens(&other.id, &sealed, NOW)
        .await
        .unwrap();
    let newer = cipher
        .seal(&other.id, b"{\"access_token\":\"a2\"}")
        .unwrap();
    store
        .put_upstream_tokens(&other.id, &newer, NOW + 1)
        .await
        .unwrap();
    let stored = store.upstream_tokens(&other.id).await.unwrap().unwrap();
    assert_eq!(
        cipher.open(&other.id, &stored).unwrap(),
        b"{\"access_token\":\"a2\"}"
    );
    assert!(cipher.open(&jane.id, &stored).is_err());
    assert!(store.delete_user(&other.username).await.unwrap());
    assert_eq!(store.upstream_tokens(&other.id).await.unwrap(), None);
    assert_eq!(store.upstream_tokens("nobody").await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_keeps_the_proxy_contract() {
    let path = std::env::temp_dir().join(format!(
        "mcpgate-upstream-{}-{:08x}.db",
        std::process::id(),
        rand::random::<u32>()
    ));
    let url = format!("sqlite://{}", path.display());
    contract(Arc::new(SqliteStore::open(&url).await.unwrap())).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn postgres_keeps_the_proxy_contract() {
    let admin_url = std::env::var("MCPGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("mcpgate_test_upstream_{:08x}", rand::random::<u32>());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    let store = PostgresStore::open(url.as_str()).await.unwrap();
    // Two instances on one database: a state put by one is taken by the other, once.
    let other = PostgresStore::open(url.as_str()).await.unwrap();
    store
        .put_upstream_login(&login("cross", NOW + 600))
        .await
        .unwrap();
    assert!(
        other
            .take_upstream_login("cross", NOW)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .take_upstream_login("cross", NOW)
            .await
            .unwrap()
            .is_none()
    );
    contract(Arc::new(store)).await;
    drop(other);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}
