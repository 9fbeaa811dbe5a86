//! A scratch PostgreSQL database per test, shared by the PostgreSQL test files of this crate and
//! (through `#[path]`) by those of `mcpgate`.
//!
//! `MCPGATE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) names a database
//! to connect to as a user that may create databases.

use std::sync::atomic::{AtomicUsize, Ordering};

use mcpgate_auth::store::postgres::PostgresStore;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub fn admin_url() -> String {
    std::env::var("MCPGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A scratch database, dropped (with whatever connections are left) when this is dropped.
pub struct TestDb {
    name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "mcpgate_test_{}_{}_{:08x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(&format!("/{name}"));
        Self {
            name,
            url: url.to_string(),
        }
    }

    pub async fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort, on a thread of its own: `drop` cannot await, and may run inside a runtime.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url()).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}
