//! Databases for the persistence suite: a fresh SQLite file, or a fresh
//! PostgreSQL database when `TEST_POSTGRES_URL` names a server.

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;

/// A database that lives as long as the value.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/chat.db", dir.path().display());
    TestDb {
        url,
        _dir: Some(dir),
    }
}

/// The memory store: nothing on disk, nothing survives a restart.
pub fn memory() -> TestDb {
    TestDb {
        url: "memory:".into(),
        _dir: None,
    }
}

/// A fresh database on the server `TEST_POSTGRES_URL` names. Tests that call
/// this are `#[ignore]`d by default; run anyway without a server, they fail
/// (never pass while doing nothing).
pub async fn postgres() -> TestDb {
    let Ok(admin_url) = std::env::var("TEST_POSTGRES_URL") else {
        panic!(
            "SKIPPED is not an option here: this PostgreSQL test was asked for, but \
             TEST_POSTGRES_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
        );
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "chat_test_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    );
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("TEST_POSTGRES_URL reachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(base, _)| base);
    TestDb {
        url: format!("{base}/{name}"),
        _dir: None,
    }
}

/// One test per store for each async `fn case(db: TestDb)` named: on a fresh
/// SQLite file always, and on a fresh PostgreSQL database when included.
#[macro_export]
macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::common::backends::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: set TEST_POSTGRES_URL and run with --include-ignored"]
                async fn $case() {
                    super::$case($crate::common::backends::postgres().await).await;
                }
            )*
        }
    };
}

/// The same on the memory store, for the cases it can run (it keeps
/// nothing across a restart).
#[macro_export]
macro_rules! on_the_memory_store {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::common::backends::memory()).await;
                }
            )*
        }
    };
}
