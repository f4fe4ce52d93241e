//! Databases for the persistence suite: a fresh SQLite file, or a fresh
//! PostgreSQL database when `TEST_POSTGRES_URL` names a server.

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

/// `None` (after saying so loudly) when no PostgreSQL is configured. In CI
/// a missing PostgreSQL fails the run instead: CI never skips it.
pub async fn postgres() -> Option<TestDb> {
    let Ok(admin_url) = std::env::var("TEST_POSTGRES_URL") else {
        if std::env::var_os("CI").is_some() {
            panic!("TEST_POSTGRES_URL must be set in CI: the PostgreSQL suite may not be skipped");
        }
        eprintln!("\n*** SKIPPED: PostgreSQL suite (set TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres to run it) ***\n");
        return None;
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
    Some(TestDb {
        url: format!("{base}/{name}"),
        _dir: None,
    })
}
