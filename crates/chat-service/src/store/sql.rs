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
        let (url, synchronous) = if is_sqlite {
            prepare_sqlite_url(url)?
        } else {
            (url.to_owned(), "")
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if is_sqlite {
                        // WAL lets history reads run beside the writer.
                        // busy_timeout covers a second process on the file.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute(synchronous).await?;
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
        let rooms: Vec<(&RoomId, u64)> = per_room.into_iter().collect();
        let mut tx = self.pool.begin().await?;
        let mut next_seq: BTreeMap<&RoomId, u64> = BTreeMap::new();
        // One statement reserves `seq`s for many rooms: each statement is a
        // round trip to the database (or to SQLite's worker thread).
        let mut rest = rooms.as_slice();
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(chunk_rows(rest.len()));
            let mut reserve = sqlx::query(statement(
                Statement::Reserve,
                chunk.len(),
                self.placeholders,
            ));
            for (room, count) in chunk {
                reserve = reserve.bind(room.as_str()).bind(*count as i64);
            }
            for row in reserve.fetch_all(&mut *tx).await? {
                let room: String = row.try_get(0)?;
                let last: i64 = row.try_get(1)?;
                let (room, count) = chunk
                    .iter()
                    .find(|(id, _)| id.as_str() == room)
                    .ok_or_else(|| sqlx::Error::Protocol(format!("unexpected room {room}")))?;
                next_seq.insert(room, last as u64 - count + 1);
            }
            rest = tail;
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
            let mut insert = sqlx::query(statement(Statement::Insert, rows, self.placeholders));
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

/// Rows per statement. Only these few statements ever exist, so
/// each is prepared once and then reused from the statement cache; a
/// statement per batch size would be prepared again for almost every batch.
const CHUNK_ROWS: [usize; 5] = [256, 64, 16, 4, 1];

fn chunk_rows(remaining: usize) -> usize {
    CHUNK_ROWS
        .into_iter()
        .find(|rows| *rows <= remaining)
        .unwrap_or(1)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Statement {
    /// Adds `count` to each room's `last_seq`, returning the new value.
    Reserve,
    Insert,
}

impl Statement {
    fn columns(self) -> usize {
        match self {
            Statement::Reserve => 2,
            Statement::Insert => 7,
        }
    }

    fn head(self) -> String {
        match self {
            Statement::Reserve => "INSERT INTO room_seq (room_id, last_seq) VALUES ".into(),
            Statement::Insert => format!("INSERT INTO messages ({COLUMNS}) VALUES "),
        }
    }

    fn tail(self) -> &'static str {
        match self {
            Statement::Reserve => {
                " ON CONFLICT (room_id) DO UPDATE SET last_seq = room_seq.last_seq + excluded.last_seq \
                 RETURNING room_id, last_seq"
            }
            Statement::Insert => "",
        }
    }
}

/// The statement for `rows` rows, built once per kind, size and style.
fn statement(kind: Statement, rows: usize, placeholders: Placeholders) -> &'static str {
    type Built = (Statement, usize, Placeholders, String);
    static STATEMENTS: LazyLock<Vec<Built>> = LazyLock::new(|| {
        let mut all = Vec::new();
        for kind in [Statement::Reserve, Statement::Insert] {
            for style in [Placeholders::Numbered, Placeholders::Anonymous] {
                for rows in CHUNK_ROWS {
                    all.push((kind, rows, style, build_statement(kind, rows, style)));
                }
            }
        }
        all
    });
    STATEMENTS
        .iter()
        .find(|(k, size, style, _)| *k == kind && *size == rows && *style == placeholders)
        .map(|(_, _, _, sql)| sql.as_str())
        .expect("chunk sizes come from CHUNK_ROWS")
}

fn build_statement(kind: Statement, rows: usize, placeholders: Placeholders) -> String {
    let columns = kind.columns();
    let mut sql = kind.head();
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ",(" });
        for column in 0..columns {
            if column > 0 {
                sql.push(',');
            }
            match placeholders {
                Placeholders::Numbered => {
                    let _ = write!(sql, "${}", row * columns + column + 1);
                }
                Placeholders::Anonymous => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql.push_str(kind.tail());
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
/// file itself, so a fresh checkout starts with no setup. Also takes our
/// own `synchronous` parameter out of the URL and returns its pragma:
/// `normal` (default) commits survive a killed process, which is the
/// durability promise; `full` also survives power loss, fsyncing every
/// commit.
fn prepare_sqlite_url(url: &str) -> Result<(String, &'static str), StoreError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let mut synchronous = "PRAGMA synchronous = NORMAL";
    let mut params: Vec<&str> = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        match param {
            "synchronous=normal" => synchronous = "PRAGMA synchronous = NORMAL",
            "synchronous=full" => synchronous = "PRAGMA synchronous = FULL",
            other if other.starts_with("synchronous=") => {
                return Err(StoreError::UnsupportedUrl(url.to_owned()))
            }
            other => params.push(other),
        }
    }
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    Ok((format!("sqlite://{path}?{}", params.join("&")), synchronous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_created_and_their_sync_mode_read() {
        let dir = std::env::temp_dir().join("chat-url-test");
        let base = format!("sqlite://{}/a.db", dir.display());
        let (url, sync) = prepare_sqlite_url(&base).unwrap();
        assert!(url.ends_with("/a.db?mode=rwc"), "{url}");
        assert_eq!(sync, "PRAGMA synchronous = NORMAL");
        let (url, sync) = prepare_sqlite_url(&format!("{base}?synchronous=full&mode=ro")).unwrap();
        assert!(url.ends_with("/a.db?mode=ro"), "{url}");
        assert_eq!(sync, "PRAGMA synchronous = FULL");
        assert!(prepare_sqlite_url(&format!("{base}?synchronous=off")).is_err());
        assert!(prepare_sqlite_url("sqlite://:memory:").is_err());
    }
}
