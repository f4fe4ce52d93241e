//! SQLite and PostgreSQL through sqlx's `Any` driver: the schema and every
//! query are written in the SQL both engines share, so there is one code
//! path to test on both.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chat_proto::{ChatMessage, RoomId};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use std::fmt::Write;

use sqlx::{AnyPool, Executor, Row};

use super::{HistoryPage, NewMessage, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    placeholders: Placeholders,
}

/// How a statement names its parameters. PostgreSQL needs `$n`. SQLite
/// accepts `$n` too, but sqlx then looks each name up, which SQLite does in
/// linear time: a 256-row insert spent most of its time there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placeholders {
    Numbered,
    Anonymous,
}

const COLUMNS: &str = "room_id, seq, id, user_id, username, message, created_at_ms";

impl SqlStore {
    pub(super) async fn open(url: &str) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let url = if is_sqlite {
            prepare_sqlite_url(url)?
        } else {
            url.to_owned()
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if is_sqlite {
                        // WAL lets history reads run beside the writer; FULL
                        // makes every commit survive power loss, not only a
                        // killed process. busy_timeout covers a second process.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let placeholders = if is_sqlite {
            Placeholders::Anonymous
        } else {
            Placeholders::Numbered
        };
        Ok(SqlStore { pool, placeholders })
    }

    pub(super) async fn append(
        &self,
        batch: &[NewMessage],
    ) -> Result<Vec<ChatMessage>, StoreError> {
        // Rooms are reserved in a fixed order so two writers locking the
        // same rooms can never deadlock each other.
        let mut per_room: BTreeMap<&RoomId, u64> = BTreeMap::new();
        for new in batch {
            *per_room.entry(&new.room_id).or_default() += 1;
        }
        let mut tx = self.pool.begin().await?;
        let mut next_seq: BTreeMap<&RoomId, u64> = BTreeMap::new();
        for (room, count) in per_room {
            let last: i64 = sqlx::query_scalar(
                "INSERT INTO room_seq (room_id, last_seq) VALUES ($1, $2) \
                 ON CONFLICT (room_id) DO UPDATE SET last_seq = room_seq.last_seq + excluded.last_seq \
                 RETURNING last_seq",
            )
            .bind(room.as_str())
            .bind(count as i64)
            .fetch_one(&mut *tx)
            .await?;
            next_seq.insert(room, last as u64 - count + 1);
        }
        let stored: Vec<ChatMessage> = batch
            .iter()
            .map(|new| {
                let seq = next_seq.get_mut(&new.room_id).expect("every room reserved");
                *seq += 1;
                new.stored(*seq - 1)
            })
            .collect();
        let mut rest = stored.as_slice();
        while !rest.is_empty() {
            let rows = chunk_rows(rest.len());
            let (chunk, tail) = rest.split_at(rows);
            let mut insert = sqlx::query(insert_sql(rows, self.placeholders));
            for m in chunk {
                insert = insert
                    .bind(m.room_id.as_str())
                    .bind(m.seq as i64)
                    .bind(m.id.as_str())
                    .bind(&*m.user_id)
                    .bind(&*m.username)
                    .bind(m.message.as_str())
                    .bind(m.timestamp_ms);
            }
            insert.execute(&mut *tx).await?;
            rest = tail;
        }
        tx.commit().await?;
        Ok(stored)
    }

    pub(super) async fn last_seq(&self, room: &RoomId) -> Result<u64, StoreError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM room_seq WHERE room_id = $1")
                .bind(room.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(last.unwrap_or(0) as u64)
    }

    pub(super) async fn after(
        &self,
        room: &RoomId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages WHERE room_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(room.as_str())
        .bind(clamp_i64(since))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    pub(super) async fn page(
        &self,
        room: &RoomId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        // One extra row tells whether an older page exists.
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages WHERE room_id = $1 AND seq < $2 \
             ORDER BY seq DESC LIMIT $3"
        ))
        .bind(room.as_str())
        .bind(before.map_or(i64::MAX, clamp_i64))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let has_more = rows.len() > limit as usize;
        let mut messages = rows
            .iter()
            .take(limit as usize)
            .map(message_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        Ok(HistoryPage { messages, has_more })
    }

    pub(super) async fn prune(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM messages WHERE created_at_ms < $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// Rows per INSERT statement. Only these few statements ever exist, so
/// each is prepared once and then reused from the statement cache; a
/// statement per batch size would be prepared again for almost every batch.
const CHUNK_ROWS: [usize; 5] = [256, 64, 16, 4, 1];

fn chunk_rows(remaining: usize) -> usize {
    CHUNK_ROWS
        .into_iter()
        .find(|rows| *rows <= remaining)
        .unwrap_or(1)
}

/// The multi-row INSERT for `rows` rows, built once per size and style.
fn insert_sql(rows: usize, placeholders: Placeholders) -> &'static str {
    static STATEMENTS: LazyLock<Vec<(usize, Placeholders, String)>> = LazyLock::new(|| {
        [Placeholders::Numbered, Placeholders::Anonymous]
            .into_iter()
            .flat_map(|style| {
                CHUNK_ROWS
                    .into_iter()
                    .map(move |rows| (rows, style, build_insert_sql(rows, style)))
            })
            .collect()
    });
    STATEMENTS
        .iter()
        .find(|(size, style, _)| *size == rows && *style == placeholders)
        .map(|(_, _, sql)| sql.as_str())
        .expect("chunk sizes come from CHUNK_ROWS")
}

fn build_insert_sql(rows: usize, placeholders: Placeholders) -> String {
    let mut sql = format!("INSERT INTO messages ({COLUMNS}) VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ",(" });
        for column in 0..7 {
            if column > 0 {
                sql.push(',');
            }
            match placeholders {
                Placeholders::Numbered => {
                    let _ = write!(sql, "${}", row * 7 + column + 1);
                }
                Placeholders::Anonymous => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn message_from_row(row: &AnyRow) -> Result<ChatMessage, StoreError> {
    Ok(ChatMessage {
        room_id: row.try_get("room_id")?,
        seq: row.try_get::<i64, _>("seq")? as u64,
        id: row.try_get("id")?,
        user_id: row.try_get::<String, _>("user_id")?.into(),
        username: row.try_get::<String, _>("username")?.into(),
        message: row.try_get("message")?,
        timestamp_ms: row.try_get("created_at_ms")?,
    })
}

/// Creates the database file's directory and asks SQLite to create the
/// file itself, so a fresh checkout starts with no setup.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    Ok(if rest.contains("mode=") {
        format!("sqlite://{rest}")
    } else if rest.contains('?') {
        format!("sqlite://{rest}&mode=rwc")
    } else {
        format!("sqlite://{rest}?mode=rwc")
    })
}
