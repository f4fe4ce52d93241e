//! The room log: every durable room event (messages, system messages,
//! edits, deletions, reactions, ended calls) takes its room's next `seq`
//! here, and history shows each message's current state.
//!
//! The store never sends anything. [`Store::append`] commits a batch and
//! returns what it stored; the caller delivers it. That keeps the rule
//! "durable before echo" in one place (the sequencer) and lets the same
//! store serve a cross-process bus.
//!
//! Backends: `memory:` (no persistence; recent events per room kept in
//! RAM), `sqlite://PATH` (the embedded default) and `postgres://...`. Both
//! decide whether an edit, deletion or reaction may happen with the same
//! rules ([`rules`]).

mod files;
mod memory;
mod rules;
mod sql;

use std::sync::Arc;

use chat_proto::call::CallRecord;
use chat_proto::{
    ChatMessage, DmConversation, HistoryItem, MessageKind, Receipt, RoomEvent, RoomId,
};

pub use files::FileRecord;
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
    /// Ids of the sender's uploads to the room that the message carries.
    pub attachments: Vec<String>,
}

/// The author replaces a message's text.
#[derive(Debug, Clone)]
pub struct NewEdit {
    /// The event's own id.
    pub id: String,
    pub room_id: RoomId,
    pub message_id: String,
    pub user_id: Arc<str>,
    pub message: String,
    pub at_ms: i64,
}

/// Who deletes a message: its author, or a moderator through the internal
/// API (who may delete any message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(Arc<str>),
    Moderator,
}

/// The user id a moderator's deletions are shown under.
pub const MODERATOR_USER: &str = "system";

impl Actor {
    pub fn user_id(&self) -> Arc<str> {
        match self {
            Actor::User(user) => user.clone(),
            Actor::Moderator => MODERATOR_USER.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewDeletion {
    pub id: String,
    pub room_id: RoomId,
    pub message_id: String,
    pub by: Actor,
    pub at_ms: i64,
}

/// A user adds (`added`) or removes a reaction.
#[derive(Debug, Clone)]
pub struct NewReaction {
    pub id: String,
    pub room_id: RoomId,
    pub message_id: String,
    pub user_id: Arc<str>,
    pub emoji: String,
    pub added: bool,
    pub at_ms: i64,
}

/// A durable room event before the store gives it a `seq`.
#[derive(Debug, Clone)]
pub enum NewEvent {
    Message(NewMessage),
    Edit(NewEdit),
    Delete(NewDeletion),
    React(NewReaction),
    CallEnded(NewCall),
}

/// A call that ended, recorded in its room's log (the record's `seq` is
/// set when stored).
#[derive(Debug, Clone)]
pub struct NewCall {
    pub room_id: RoomId,
    pub record: CallRecord,
}

impl NewEvent {
    pub fn room_id(&self) -> &RoomId {
        match self {
            NewEvent::Message(new) => &new.room_id,
            NewEvent::Edit(edit) => &edit.room_id,
            NewEvent::Delete(deletion) => &deletion.room_id,
            NewEvent::React(reaction) => &reaction.room_id,
            NewEvent::CallEnded(call) => &call.room_id,
        }
    }

    /// The message an edit, deletion or reaction is about.
    fn target(&self) -> Option<&str> {
        match self {
            NewEvent::Message(_) | NewEvent::CallEnded(_) => None,
            NewEvent::Edit(edit) => Some(&edit.message_id),
            NewEvent::Delete(deletion) => Some(&deletion.message_id),
            NewEvent::React(reaction) => Some(&reaction.message_id),
        }
    }

    /// The event as stored with `seq`.
    fn stored(&self, seq: u64) -> RoomEvent {
        match self {
            NewEvent::Message(new) => RoomEvent::Message(new.stored(seq)),
            NewEvent::Edit(edit) => RoomEvent::Edited(chat_proto::MessageEdit {
                room_id: edit.room_id.as_str().to_owned(),
                message_id: edit.message_id.clone(),
                message: edit.message.clone(),
                edited_at_ms: edit.at_ms,
                user_id: edit.user_id.clone(),
                seq,
            }),
            NewEvent::Delete(deletion) => RoomEvent::Deleted(chat_proto::MessageDeletion {
                room_id: deletion.room_id.as_str().to_owned(),
                message_id: deletion.message_id.clone(),
                user_id: deletion.by.user_id(),
                seq,
            }),
            NewEvent::React(reaction) => RoomEvent::Reaction(chat_proto::ReactionChange {
                room_id: reaction.room_id.as_str().to_owned(),
                message_id: reaction.message_id.clone(),
                emoji: reaction.emoji.clone(),
                user_id: reaction.user_id.clone(),
                added: reaction.added,
                seq,
            }),
            NewEvent::CallEnded(call) => RoomEvent::CallEnded(CallRecord {
                seq,
                ..call.record.clone()
            }),
        }
    }
}

impl From<NewMessage> for NewEvent {
    fn from(message: NewMessage) -> NewEvent {
        NewEvent::Message(message)
    }
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
            edited_at_ms: None,
            deleted: false,
            reactions: None,
            attachments: Vec::new(),
        }
    }
}

/// The room of the one direct conversation between two users, the same
/// whoever asks: `dm:` and a digest of the two ids (so no id can be read
/// out of it, and any two ids, whatever they hold, give their own room).
pub fn dm_room_id(a: &str, b: &str) -> RoomId {
    use sha2::{Digest, Sha256};
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut digest = Sha256::new();
    for id in [first, second] {
        digest.update((id.len() as u64).to_be_bytes());
        digest.update(id.as_bytes());
    }
    let hex: String = digest.finalize()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    RoomId::parse(
        &format!("{}{hex}", chat_proto::ids::DM_ROOM_PREFIX),
        &chat_proto::ProtoLimits::default(),
    )
    .expect("dm: and 32 hex digits is a room id")
}

/// When a user's conversation written to at `at_ms` counts as last active:
/// then, or just after the latest of their conversations, so that no two
/// of one user's conversations share a time (the list pages by time).
fn next_activity(latest: Option<i64>, at_ms: i64) -> i64 {
    latest.map_or(at_ms, |latest| at_ms.max(latest + 1))
}

/// A write other than appending events, through the same writer.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Moves a read marker forward.
    MarkRead {
        room: RoomId,
        user: String,
        seq: u64,
    },
    AddMember {
        room: RoomId,
        user: String,
        at_ms: i64,
    },
    RemoveMember {
        room: RoomId,
        user: String,
    },
    /// Creates a direct conversation (both members) if it is new.
    OpenDm {
        room: RoomId,
        users: [String; 2],
        at_ms: i64,
    },
    Block {
        user: String,
        blocked: String,
        at_ms: i64,
    },
    Unblock {
        user: String,
        blocked: String,
    },
    /// When the user's last connection closed.
    LastSeen {
        user: String,
        at_ms: i64,
    },
    /// Records an upload (see [`Store::add_file`]).
    AddFile(Box<FileRecord>),
    /// See [`Store::sweep_files`].
    SweepFiles {
        unsent_before_ms: i64,
    },
    /// See [`Store::forget_blob`].
    ForgetBlob(chat_files::ContentHash),
}

/// One page of a user's direct conversations, most recent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmPage {
    pub conversations: Vec<DmConversation>,
    pub has_more: bool,
}

/// `unread` is counted up to this many.
pub const MAX_UNREAD: u64 = 10_000;

/// Where a user is in a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadState {
    pub read_seq: u64,
    pub unread: u64,
}

/// One page of history, oldest first: messages in their current state,
/// and calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<HistoryItem>,
    /// Older messages exist before the first one returned.
    pub has_more: bool,
}

/// Why an event was not stored, for what it asks (its sender is told).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such message in that room, or it was deleted.
    #[error("no such message in this room")]
    NotFound,
    /// Only the author may edit or delete a message.
    #[error("only the author may do that")]
    Forbidden,
    /// The message has the most distinct reactions it may have.
    #[error("too many distinct reactions on this message")]
    TooManyReactions,
    /// A message attaches a file that is not the sender's upload to that
    /// room waiting to be sent (unknown, another room's or user's, or
    /// attached already).
    #[error("a file this message may not carry")]
    InvalidAttachment,
    /// The database refused the row on its own (for what it holds); the
    /// rest of the batch was stored without it.
    #[error("the database refused this event: {0}")]
    Rejected(String),
}

/// One row of an appended batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored with the room's next `seq`.
    Stored(RoomEvent),
    /// A resend: an earlier message with the same `clientId` from the same
    /// user in the same room, within [`CLIENT_ID_WINDOW_MS`] (earlier, or
    /// earlier in this batch). Not stored again.
    Repeated(ChatMessage),
    /// Changes nothing (a reaction the user already has, or removing one
    /// they do not): not stored, no `seq`, nothing to tell anyone.
    Unchanged,
    Refused(Refusal),
}

impl Appended {
    /// The stored event, if this row was stored.
    pub fn event(&self) -> Option<&RoomEvent> {
        match self {
            Appended::Stored(event) => Some(event),
            _ => None,
        }
    }

    /// The room's `seq` of what this row is now (stored, or the original
    /// of a resend).
    pub fn seq(&self) -> Option<u64> {
        match self {
            Appended::Stored(event) => event.seq(),
            Appended::Repeated(message) => Some(message.seq),
            Appended::Unchanged | Appended::Refused(_) => None,
        }
    }
}

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
    #[error(
        "another chat-service is using this database; run several nodes as a cluster (REDIS_URL), or one"
    )]
    InUse,
    /// Another writer changed what a row depends on between its decision
    /// and its write (a file attached meanwhile through another process):
    /// that row is refused, the rest of its batch stored.
    #[error("refused after a concurrent change: {0}")]
    Raced(Refusal),
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

    /// Commits the batch and returns each row's outcome, in the same
    /// order. Rows are decided in batch order, each seeing the ones before
    /// it (a deletion then an edit of the same message: the edit finds it
    /// deleted). A row the database refuses on its own fails alone; every
    /// other stored row takes its room's next `seq`, following batch order
    /// with no gaps. `Err` means nothing was stored (the database is
    /// unavailable).
    pub async fn append(
        &self,
        batch: Vec<impl Into<NewEvent>>,
    ) -> Result<Vec<Appended>, StoreError> {
        let batch: Vec<NewEvent> = batch.into_iter().map(Into::into).collect();
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

    /// Up to `limit` durable events with `seq > since`, oldest first:
    /// what recovery replays. Messages show their current state (a deleted
    /// one without its text); edits of a deleted message without theirs.
    pub async fn after(
        &self,
        room: &RoomId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<RoomEvent>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.after(room, since, limit)),
            Store::Sql(store) => store.after(room, since, limit).await,
        }
    }

    /// The newest `limit` messages and calls with `seq < before` (or the
    /// newest at all), messages in their current state with their reactions.
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
        self.change(Change::MarkRead {
            room: room.clone(),
            user: user.to_owned(),
            seq,
        })
        .await
    }

    /// Makes a change; true if it changed anything (a member added that was
    /// not one, a marker that moved...).
    pub(crate) async fn change(&self, change: Change) -> Result<bool, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.change(change)),
            Store::Sql(store) => store.change(change).await,
        }
    }

    /// Whether the user is a member of the (members-only) room.
    pub async fn is_member(&self, room: &RoomId, user: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.is_member(room, user)),
            Store::Sql(store) => store.is_member(room, user).await,
        }
    }

    /// The room's members, in the order they were added.
    pub async fn members(&self, room: &RoomId) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.members(room)),
            Store::Sql(store) => store.members(room).await,
        }
    }

    /// Who the user's direct conversation in `room` is with, if it is one
    /// of theirs.
    pub async fn dm_peer(&self, room: &RoomId, user: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.dm_peer(room, user)),
            Store::Sql(store) => store.dm_peer(room, user).await,
        }
    }

    /// The user's direct conversations last active before `before_ms`,
    /// most recent first.
    pub async fn dm_page(
        &self,
        user: &str,
        before_ms: Option<i64>,
        limit: u32,
    ) -> Result<DmPage, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.dm_page(user, before_ms, limit)),
            Store::Sql(store) => store.dm_page(user, before_ms, limit).await,
        }
    }

    /// Whether `by` has blocked direct messages from `user`.
    pub async fn is_blocked(&self, user: &str, by: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.is_blocked(user, by)),
            Store::Sql(store) => store.is_blocked(user, by).await,
        }
    }

    /// When each of these users' last connection closed, for those ever seen.
    pub async fn last_seen(
        &self,
        users: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.last_seen(users)),
            Store::Sql(store) => store.last_seen(users).await,
        }
    }

    /// The user's read marker in the room (0 if none) and how many messages
    /// by others come after it, deleted ones not counted.
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

    /// Deletes events older than `cutoff_ms` (and the reactions of the
    /// messages among them); returns how many events.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.prune(cutoff_ms)),
            Store::Sql(store) => store.prune(cutoff_ms).await,
        }
    }

    /// Makes sure no other service process uses this PostgreSQL database
    /// without a broker between them (each would deliver only its own
    /// commits): holds a session lock for as long as the process lives.
    /// SQLite and memory are one process's anyway.
    pub async fn claim_sole_use(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Sql(store) => store.claim_sole_use().await,
        }
    }

    /// Waits for in-flight work and closes connections to the database.
    pub async fn close(&self) {
        if let Store::Sql(store) = self {
            store.close().await;
        }
    }
}
