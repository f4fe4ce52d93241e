//! Message storage: assigns each room's `seq` and keeps history.
//!
//! The store never sends anything. [`Store::append`] commits a batch and
//! returns the stored messages; the caller delivers them. That keeps the
//! rule "durable before echo" in one place (the sequencer) and lets the
//! same store serve a future cross-process bus.
//!
//! Backends: `memory:` (no persistence; recent history per room kept in
//! RAM), `sqlite://PATH` (the embedded default) and `postgres://...`.

mod memory;
mod sql;

use std::sync::Arc;

use chat_proto::{ChatMessage, MessageKind, Receipt, RoomId};

pub(crate) use memory::MemoryStore;
pub(crate) use sql::SqlStore;

/// A message accepted from a client, before the store gives it a `seq`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub room_id: RoomId,
    pub user_id: Arc<str>,
    pub username: Arc<str>,
    pub message: String,
    pub timestamp_ms: i64,
    /// The sender's own id for the message, if it gave one.
    pub client_id: Option<String>,
    pub kind: MessageKind,
}

/// How long a `clientId` is remembered: a resend within this window is
/// answered with the original.
pub const CLIENT_ID_WINDOW_MS: i64 = 24 * 3600 * 1000;

impl NewMessage {
    fn stored(&self, seq: u64) -> ChatMessage {
        ChatMessage {
            id: self.id.clone(),
            seq,
            room_id: self.room_id.as_str().to_owned(),
            user_id: self.user_id.clone(),
            username: self.username.clone(),
            message: self.message.clone(),
            timestamp_ms: self.timestamp_ms,
            client_id: self.client_id.clone(),
            kind: self.kind,
        }
    }
}

/// `unread` is counted up to this many.
pub const MAX_UNREAD: u64 = 10_000;

/// Where a user is in a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadState {
    pub read_seq: u64,
    pub unread: u64,
}

/// One page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<ChatMessage>,
    /// Older messages exist before the first one returned.
    pub has_more: bool,
}

/// A row of a batch the database refused on its own (for what it holds);
/// the rest of the batch was stored without it and it took no `seq`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the database refused this message: {0}")]
pub struct Rejected(pub String);

/// A row the store holds: just stored, or (`repeated`) an earlier message
/// with the same `clientId` from the same user in the same room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub message: ChatMessage,
    pub repeated: bool,
}

/// One row of an appended batch: accepted, or refused.
pub type Appended = Result<Accepted, Rejected>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported DATABASE_URL {0:?}: use memory:, sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    #[error("applying migrations: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("creating the database directory or the writer thread: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store's writer has stopped")]
    WriterGone,
}

#[derive(Clone)]
pub enum Store {
    Memory(Arc<MemoryStore>),
    Sql(SqlStore),
}

impl Store {
    /// Opens (creating if needed) and migrates the store named by `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url == "memory:" || url == "memory://" {
            return Ok(Store::Memory(Arc::new(MemoryStore::new(
                memory::DEFAULT_KEEP_PER_ROOM,
            ))));
        }
        if url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
        {
            return Ok(Store::Sql(SqlStore::open(url).await?));
        }
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }

    /// Commits the batch and returns each row, in the same order, stored
    /// with its `seq` or refused. A row the database refuses on its own
    /// fails alone; every other row is stored, and within a room `seq`s
    /// follow batch order with no gaps. A row whose `clientId` the same
    /// user used in the same room within [`CLIENT_ID_WINDOW_MS`] (earlier,
    /// or earlier in this batch) is not stored again: it is answered with
    /// the original, `repeated`. `Err` means nothing was stored (the
    /// database is unavailable).
    pub async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.append(&batch)),
            Store::Sql(store) => store.append(batch).await,
        }
    }

    /// The highest `seq` in the room, 0 if it has none.
    pub async fn last_seq(&self, room: &RoomId) -> Result<u64, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.last_seq(room)),
            Store::Sql(store) => store.last_seq(room).await,
        }
    }

    /// Up to `limit` messages with `seq > since`, oldest first.
    pub async fn after(
        &self,
        room: &RoomId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.after(room, since, limit)),
            Store::Sql(store) => store.after(room, since, limit).await,
        }
    }

    /// The newest `limit` messages with `seq < before` (or the newest at all).
    pub async fn page(
        &self,
        room: &RoomId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.page(room, before, limit)),
            Store::Sql(store) => store.page(room, before, limit).await,
        }
    }

    /// Moves the user's read marker in the room forward to `seq`; false if
    /// it was there or further already.
    pub async fn mark_read(&self, room: &RoomId, user: &str, seq: u64) -> Result<bool, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.mark_read(room, user, seq)),
            Store::Sql(store) => store.mark_read(room, user, seq).await,
        }
    }

    /// The user's read marker in the room (0 if none) and how many messages
    /// by others come after it.
    pub async fn read_state(&self, room: &RoomId, user: &str) -> Result<ReadState, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.read_state(room, user)),
            Store::Sql(store) => store.read_state(room, user).await,
        }
    }

    /// Every read marker in the room.
    pub async fn receipts(&self, room: &RoomId) -> Result<Vec<Receipt>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.receipts(room)),
            Store::Sql(store) => store.receipts(room).await,
        }
    }

    /// Deletes messages older than `cutoff_ms`; returns how many.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.prune(cutoff_ms)),
            Store::Sql(store) => store.prune(cutoff_ms).await,
        }
    }

    /// Waits for in-flight work and closes connections to the database.
    pub async fn close(&self) {
        if let Store::Sql(store) = self {
            store.close().await;
        }
    }
}
