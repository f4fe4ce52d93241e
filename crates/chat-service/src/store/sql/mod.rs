//! SQLite and PostgreSQL through sqlx's `Any` driver: the schema and every
//! query are written in the SQL both engines share, so there is one code
//! path to test on both.

mod calls;
mod files;
mod statements;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;

use chat_proto::server::MAX_REACTION_USERS;
use chat_proto::{
    ChatMessage, DmConversation, HistoryItem, MessageDeletion, MessageEdit, MessageKind,
    ReactionChange, ReactionSummary, Receipt, RoomEvent, RoomId,
};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use self::statements::{Placeholders, EVENT_COLUMNS};
use self::writer::Writer;
use super::{Appended, Change, DmPage, HistoryPage, NewEvent, ReadState, StoreError, MAX_UNREAD};

/// What a row of the log is, in its `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub(super) enum LogKind {
    User,
    System,
    Edit,
    Delete,
    Reaction,
    Call,
}

impl LogKind {
    fn of(event: &NewEvent) -> LogKind {
        match event {
            NewEvent::Message(new) => match new.kind {
                MessageKind::User => LogKind::User,
                MessageKind::System => LogKind::System,
            },
            NewEvent::Edit(_) => LogKind::Edit,
            NewEvent::Delete(_) => LogKind::Delete,
            NewEvent::React(_) => LogKind::Reaction,
            NewEvent::CallEnded(_) => LogKind::Call,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The rows that are messages, for SQL: `kind IN ('user', 'system')`.
const MESSAGE_KINDS: &str = "kind IN ('user', 'system')";
/// The rows history lists: messages and calls.
const HISTORY_KINDS: &str = "kind IN ('user', 'system', 'call')";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Reads go through a small pool; every write goes through the [`Writer`].
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    writer: Writer,
    settings: PoolSettings,
    /// Holds the sole-use lock while the store is open; told to let go.
    sole_use: Arc<std::sync::Mutex<Option<SoleUse>>>,
    blobs_released: std::sync::Arc<tokio::sync::Notify>,
}

/// Tells the holder of the sole-use lock to let go, and hears it did.
struct SoleUse {
    release: tokio::sync::oneshot::Sender<()>,
    released: tokio::sync::oneshot::Receiver<()>,
}

/// The session lock a lone service holds on its PostgreSQL database.
const SOLE_USE_LOCK: i64 = 0x6368_6174_5f73_7663; // "chat_svc"

/// What it takes to open a connection to the store, for the read pool and
/// for the writer alike.
#[derive(Clone)]
struct PoolSettings {
    url: String,
    is_sqlite: bool,
    synchronous: &'static str,
}

impl PoolSettings {
    fn new(url: &str) -> Result<PoolSettings, StoreError> {
        let is_sqlite = url.starts_with("sqlite:");
        let (url, synchronous) = if is_sqlite {
            prepare_sqlite_url(url)?
        } else {
            (url.to_owned(), "")
        };
        Ok(PoolSettings {
            url,
            is_sqlite,
            synchronous,
        })
    }

    fn placeholders(&self) -> Placeholders {
        if self.is_sqlite {
            Placeholders::Anonymous
        } else {
            Placeholders::Numbered
        }
    }

    async fn connect(&self, max_connections: u32) -> Result<AnyPool, StoreError> {
        let options = AnyConnectOptions::from_str(&self.url)?;
        let (is_sqlite, synchronous) = (self.is_sqlite, self.synchronous);
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
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
        Ok(pool)
    }
}

impl SqlStore {
    pub(super) async fn open(url: &str) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let settings = PoolSettings::new(url)?;
        let pool = settings
            .connect(if settings.is_sqlite { 4 } else { 8 })
            .await?;
        MIGRATOR.run(&pool).await?;
        let writer = Writer::start(settings.clone()).await?;
        Ok(SqlStore {
            pool,
            writer,
            settings,
            sole_use: Arc::default(),
            blobs_released: Default::default(),
        })
    }

    pub(super) async fn claim_sole_use(&self) -> Result<(), StoreError> {
        if self.settings.is_sqlite {
            return Ok(());
        }
        use sqlx::Connection;
        let url = self.settings.url.clone();
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        let claimed: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SOLE_USE_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if !claimed {
            return Err(StoreError::InUse);
        }
        // The lock lives as long as this connection: keep it (until the
        // store closes), and say so loudly if it is lost and cannot be
        // taken again.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (done, let_go) = tokio::sync::oneshot::channel::<()>();
        *self.sole_use.lock().unwrap_or_else(|p| p.into_inner()) = Some(SoleUse {
            release,
            released: let_go,
        });
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(30));
            tokio::pin!(released);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = &mut released => {
                        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                            .bind(SOLE_USE_LOCK)
                            .execute(&mut conn)
                            .await;
                        let _ = conn.close().await;
                        let _ = done.send(());
                        return;
                    }
                }
                if sqlx::query("SELECT 1").execute(&mut conn).await.is_ok() {
                    continue;
                }
                match sqlx::PgConnection::connect(&url).await {
                    Ok(mut fresh) => {
                        let again: Result<bool, _> =
                            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                                .bind(SOLE_USE_LOCK)
                                .fetch_one(&mut fresh)
                                .await;
                        if !matches!(again, Ok(true)) {
                            tracing::error!("another chat-service took this database meanwhile; deliveries between them are incomplete");
                        }
                        conn = fresh;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the database lock's connection is down; retrying")
                    }
                }
            }
        });
        Ok(())
    }

    /// Commits the batch in one transaction on the writer's connection.
    pub(super) async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        let answers = self.writer.append(batch).await?;
        // A deletion may have condemned its message's files' blobs.
        if answers
            .iter()
            .any(|answer| matches!(answer.event(), Some(RoomEvent::Deleted(_))))
        {
            self.blobs_released.notify_one();
        }
        Ok(answers)
    }

    pub(super) fn blobs_released(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.blobs_released.clone()
    }

    pub(super) async fn file(&self, id: &str) -> Result<Option<super::FileRecord>, StoreError> {
        files::file(&self.pool, id).await
    }

    pub(super) async fn condemned_blobs(
        &self,
        limit: usize,
    ) -> Result<Vec<chat_files::ContentHash>, StoreError> {
        files::condemned_blobs(&self.pool, limit).await
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
    ) -> Result<Vec<RoomEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM room_events WHERE room_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        ))
        .bind(room.as_str())
        .bind(clamp_i64(since))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            events.push(match log_kind(row)? {
                LogKind::Call => RoomEvent::CallEnded(calls::record(&self.pool, row).await?),
                _ => event_from_row(row)?,
            });
        }
        let mut messages: Vec<&mut ChatMessage> = events
            .iter_mut()
            .filter_map(|event| match event {
                RoomEvent::Message(message) => Some(message),
                _ => None,
            })
            .collect();
        files::fill_attachments(&self.pool, &mut messages).await?;
        Ok(events)
    }

    pub(super) async fn page(
        &self,
        room: &RoomId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        // One extra row tells whether an older page exists.
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM room_events WHERE room_id = $1 AND seq < $2 \
             AND {HISTORY_KINDS} ORDER BY seq DESC LIMIT $3"
        ))
        .bind(room.as_str())
        .bind(before.map_or(i64::MAX, clamp_i64))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let has_more = rows.len() > limit as usize;
        let mut messages = Vec::with_capacity(rows.len());
        let mut calls = Vec::new();
        for row in rows.iter().take(limit as usize) {
            match log_kind(row)? {
                LogKind::Call => calls.push(calls::record(&self.pool, row).await?),
                _ => messages.push(message_from_row(row)?),
            }
        }
        messages.reverse();
        self.attach_reactions(room, &mut messages).await?;
        files::fill_attachments(&self.pool, &mut messages.iter_mut().collect::<Vec<_>>()).await?;
        let mut items: Vec<HistoryItem> = messages
            .into_iter()
            .map(HistoryItem::Message)
            .chain(calls.into_iter().map(HistoryItem::Call))
            .collect();
        items.sort_by_key(HistoryItem::seq);
        Ok(HistoryPage {
            messages: items,
            has_more,
        })
    }

    /// Gives each message of a page its reactions: per emoji (in the order
    /// they first appeared) the count and the first users.
    async fn attach_reactions(
        &self,
        room: &RoomId,
        messages: &mut [ChatMessage],
    ) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
            return Ok(());
        };
        let rows = sqlx::query(
            "SELECT message_id, emoji, user_id, n FROM ( \
               SELECT message_id, emoji, user_id, seq, \
                 ROW_NUMBER() OVER (PARTITION BY message_id, emoji ORDER BY seq) AS rn, \
                 COUNT(*) OVER (PARTITION BY message_id, emoji) AS n, \
                 MIN(seq) OVER (PARTITION BY message_id, emoji) AS first_seq \
               FROM reactions WHERE room_id = $1 AND message_seq BETWEEN $2 AND $3 \
             ) ranked WHERE rn <= $4 ORDER BY message_id, first_seq, rn",
        )
        .bind(room.as_str())
        .bind(clamp_i64(first.seq))
        .bind(clamp_i64(last.seq))
        .bind(MAX_REACTION_USERS as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut by_message: HashMap<String, Vec<ReactionSummary>> = HashMap::new();
        for row in &rows {
            let message_id: String = row.try_get("message_id")?;
            let emoji: String = row.try_get("emoji")?;
            let user_id: String = row.try_get("user_id")?;
            let count = row.try_get::<i64, _>("n")? as u64;
            let summaries = by_message.entry(message_id).or_default();
            match summaries.last_mut() {
                Some(summary) if summary.emoji == emoji => summary.user_ids.push(user_id),
                _ => summaries.push(ReactionSummary {
                    emoji,
                    count,
                    user_ids: vec![user_id],
                }),
            }
        }
        for message in messages.iter_mut().filter(|m| !m.deleted) {
            message.reactions = Some(by_message.remove(&message.id).unwrap_or_default());
        }
        Ok(())
    }

    pub(super) async fn change(&self, change: Change) -> Result<bool, StoreError> {
        self.writer.change(change).await
    }

    pub(super) async fn is_member(&self, room: &RoomId, user: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2")
                .bind(room.as_str())
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    pub(super) async fn members(&self, room: &RoomId) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM room_members WHERE room_id = $1 ORDER BY added_at_ms, user_id",
        )
        .bind(room.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    pub(super) async fn dm_peer(
        &self,
        room: &RoomId,
        user: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT peer_id FROM direct_messages WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room.as_str())
        .bind(user)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(super) async fn dm_page(
        &self,
        user: &str,
        before_ms: Option<i64>,
        limit: u32,
    ) -> Result<DmPage, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id, peer_id, last_activity_ms FROM direct_messages \
             WHERE user_id = $1 AND last_activity_ms < $2 \
             ORDER BY last_activity_ms DESC, room_id DESC LIMIT $3",
        )
        .bind(user)
        .bind(before_ms.unwrap_or(i64::MAX))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let has_more = rows.len() > limit as usize;
        let mut conversations = Vec::with_capacity(rows.len().min(limit as usize));
        for row in rows.iter().take(limit as usize) {
            let room_id: String = row.try_get("room_id")?;
            let room = RoomId::parse(&room_id, &chat_proto::ProtoLimits::default())
                .map_err(|_| decode_error("a stored conversation's room id"))?;
            let read = self.read_state(&room, user).await?;
            let last = sqlx::query(&format!(
                "SELECT {EVENT_COLUMNS} FROM room_events WHERE room_id = $1 AND {MESSAGE_KINDS} \
                 ORDER BY seq DESC LIMIT 1"
            ))
            .bind(room.as_str())
            .fetch_optional(&self.pool)
            .await?;
            let mut last_message = last.as_ref().map(message_from_row).transpose()?;
            if let Some(message) = last_message.as_mut() {
                files::fill_attachments(&self.pool, &mut [message]).await?;
            }
            conversations.push(DmConversation {
                last_seq: self.last_seq(&room).await?,
                room_id,
                user_id: row.try_get("peer_id")?,
                read_seq: read.read_seq,
                unread: read.unread,
                last_message,
                last_activity_ms: row.try_get("last_activity_ms")?,
            });
        }
        Ok(DmPage {
            conversations,
            has_more,
        })
    }

    pub(super) async fn is_blocked(&self, user: &str, by: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM blocks WHERE user_id = $1 AND blocked_id = $2")
                .bind(by)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    pub(super) async fn last_seen(
        &self,
        users: &[&str],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let mut seen = HashMap::new();
        for user in users {
            let at: Option<i64> =
                sqlx::query_scalar("SELECT last_seen_ms FROM presence WHERE user_id = $1")
                    .bind(*user)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(at) = at {
                seen.insert((*user).to_owned(), at);
            }
        }
        Ok(seen)
    }

    pub(super) async fn read_state(
        &self,
        room: &RoomId,
        user: &str,
    ) -> Result<ReadState, StoreError> {
        let read_seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM read_markers WHERE room_id = $1 AND user_id = $2")
                .bind(room.as_str())
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        let read_seq = read_seq.unwrap_or(0);
        // Counted up to a bound: a join must not scan a huge room's whole
        // log for a user who never read it.
        let unread: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM room_events \
             WHERE room_id = $1 AND seq > $2 AND {MESSAGE_KINDS} AND deleted = 0 \
             AND user_id <> $3 LIMIT $4) AS unread"
        ))
        .bind(room.as_str())
        .bind(read_seq)
        .bind(user)
        .bind(MAX_UNREAD as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(ReadState {
            read_seq: read_seq as u64,
            unread: unread as u64,
        })
    }

    pub(super) async fn receipts(&self, room: &RoomId) -> Result<Vec<Receipt>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, seq FROM read_markers WHERE room_id = $1 ORDER BY user_id",
        )
        .bind(room.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Receipt {
                    user_id: row.try_get("user_id")?,
                    seq: row.try_get::<i64, _>("seq")? as u64,
                })
            })
            .collect()
    }

    pub(super) async fn prune(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM room_events WHERE created_at_ms < $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "DELETE FROM reactions WHERE NOT EXISTS \
             (SELECT 1 FROM room_events e WHERE e.id = reactions.message_id)",
        )
        .execute(&self.pool)
        .await?;
        calls::prune(&self.pool).await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn close(&self) {
        let sole_use = self
            .sole_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(SoleUse { release, released }) = sole_use {
            let _ = release.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), released).await;
        }
        self.writer.close().await;
        self.pool.close().await;
    }
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn decode_error(what: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(what.to_owned().into()))
}

/// A message row (kind `user` or `system`) in its current state.
pub(super) fn message_from_row(row: &AnyRow) -> Result<ChatMessage, StoreError> {
    let kind = match log_kind(row)? {
        LogKind::User => MessageKind::User,
        LogKind::System => MessageKind::System,
        _ => return Err(decode_error("expected a message row")),
    };
    Ok(ChatMessage {
        room_id: row.try_get("room_id")?,
        seq: row.try_get::<i64, _>("seq")? as u64,
        id: row.try_get("id")?,
        user_id: row.try_get::<String, _>("user_id")?.into(),
        username: row.try_get::<String, _>("username")?.into(),
        message: row.try_get("body")?,
        timestamp_ms: row.try_get("created_at_ms")?,
        client_id: row.try_get("client_id")?,
        kind,
        edited_at_ms: row.try_get("edited_at_ms")?,
        deleted: row.try_get::<i64, _>("deleted")? != 0,
        reactions: None,
        attachments: Vec::new(),
    })
}

fn log_kind(row: &AnyRow) -> Result<LogKind, StoreError> {
    row.try_get::<String, _>("kind")?
        .parse()
        .map_err(|_| decode_error("unknown event kind"))
}

/// Any row of the log, as the event it records.
fn event_from_row(row: &AnyRow) -> Result<RoomEvent, StoreError> {
    let kind = log_kind(row)?;
    if matches!(kind, LogKind::User | LogKind::System) {
        return Ok(RoomEvent::Message(message_from_row(row)?));
    }
    let room_id: String = row.try_get("room_id")?;
    let seq = row.try_get::<i64, _>("seq")? as u64;
    let message_id: String = row
        .try_get::<Option<String>, _>("target_id")?
        .ok_or_else(|| decode_error("an event row without its message"))?;
    let user_id: std::sync::Arc<str> = row.try_get::<String, _>("user_id")?.into();
    Ok(match kind {
        LogKind::Edit => RoomEvent::Edited(MessageEdit {
            room_id,
            message_id,
            message: row.try_get("body")?,
            edited_at_ms: row.try_get("created_at_ms")?,
            user_id,
            seq,
        }),
        LogKind::Delete => RoomEvent::Deleted(MessageDeletion {
            room_id,
            message_id,
            user_id,
            seq,
        }),
        LogKind::Reaction => RoomEvent::Reaction(ReactionChange {
            room_id,
            message_id,
            emoji: row.try_get("body")?,
            user_id,
            added: row.try_get::<Option<i64>, _>("added")? == Some(1),
            seq,
        }),
        LogKind::User | LogKind::System => unreachable!("messages are decoded above"),
        LogKind::Call => return Err(decode_error("a call is read with its record")),
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
