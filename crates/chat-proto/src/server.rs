//! Events the server sends. Each is encoded once into a frame whose bytes
//! are shared by every recipient.

use std::sync::Arc;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::call::{CallRecord, CallRing, CallStateEvent, RelayedSignal};
use crate::error::ErrorCode;
use crate::time::iso_millis;

/// A chat message as stored and delivered. Its JSON form is the `data` of a
/// `chat.message` event and the items of a `chat.history` page; it shows
/// the message's current state (edited, deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: String,
    pub seq: u64,
    pub room_id: String,
    pub user_id: Arc<str>,
    pub username: Arc<str>,
    /// Empty once deleted: a deleted message's text is erased.
    pub message: String,
    pub timestamp_ms: i64,
    /// The sender's own id for the message, when it gave one.
    pub client_id: Option<String>,
    pub kind: MessageKind,
    /// When its text was last replaced.
    pub edited_at_ms: Option<i64>,
    pub deleted: bool,
    /// Who reacted how; history items carry it (an empty list included),
    /// live messages do not (they have none yet).
    pub reactions: Option<Vec<ReactionSummary>>,
    /// Files sent with the message, in the order the sender gave; left out
    /// of its JSON when there are none (and once it is deleted).
    pub attachments: Vec<Attachment>,
}

/// A file attached to a message, as its room sees it: what to show and
/// where to fetch it (through the gateway, by a member of the room).
/// `width`, `height` and `thumbnailUrl` are there for images only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

/// Who a stored message is from: a user, or the application (the internal
/// API's system messages, which have no user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum MessageKind {
    #[default]
    User,
    System,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One emoji's reactions to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionSummary {
    pub emoji: String,
    pub count: u64,
    /// The first [`MAX_REACTION_USERS`] who reacted so, in order.
    pub user_ids: Vec<String>,
}

/// Most user ids a [`ReactionSummary`] lists.
pub const MAX_REACTION_USERS: usize = 50;

impl Serialize for ChatMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.deleted {
            // What remains of a deleted message: where it was, and whose.
            let mut data = serializer.serialize_struct("DeletedMessage", 6)?;
            data.serialize_field("id", &self.id)?;
            data.serialize_field("seq", &self.seq)?;
            data.serialize_field("roomId", &self.room_id)?;
            if self.kind == MessageKind::System {
                data.serialize_field("type", "system")?;
            } else {
                data.serialize_field("userId", &*self.user_id)?;
            }
            data.serialize_field("deleted", &true)?;
            return data.end();
        }
        if self.kind == MessageKind::System {
            // As `chat.system` has it, with what makes it durable.
            let mut data = serializer.serialize_struct("SystemMessage", 7)?;
            data.serialize_field("roomId", &self.room_id)?;
            data.serialize_field("message", &self.message)?;
            data.serialize_field("timestamp", &iso_millis(self.timestamp_ms))?;
            data.serialize_field("id", &self.id)?;
            data.serialize_field("seq", &self.seq)?;
            data.serialize_field("type", "system")?;
            if let Some(reactions) = &self.reactions {
                data.serialize_field("reactions", reactions)?;
            }
            return data.end();
        }
        // The seed's field order first, additions after it.
        let fields = 7
            + usize::from(self.client_id.is_some())
            + usize::from(self.edited_at_ms.is_some())
            + usize::from(self.reactions.is_some())
            + usize::from(!self.attachments.is_empty());
        let mut data = serializer.serialize_struct("ChatMessage", fields)?;
        data.serialize_field("roomId", &self.room_id)?;
        data.serialize_field("userId", &*self.user_id)?;
        data.serialize_field("username", &*self.username)?;
        data.serialize_field("message", &self.message)?;
        data.serialize_field("timestamp", &iso_millis(self.timestamp_ms))?;
        data.serialize_field("id", &self.id)?;
        data.serialize_field("seq", &self.seq)?;
        if let Some(client_id) = &self.client_id {
            data.serialize_field("clientId", client_id)?;
        }
        if let Some(edited_at_ms) = self.edited_at_ms {
            data.serialize_field("editedAt", &iso_millis(edited_at_ms))?;
        }
        if let Some(reactions) = &self.reactions {
            data.serialize_field("reactions", reactions)?;
        }
        if !self.attachments.is_empty() {
            data.serialize_field("attachments", &self.attachments)?;
        }
        data.end()
    }
}

/// An author replaced a message's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEdit {
    pub room_id: String,
    pub message_id: String,
    /// Empty in a replay once the message was deleted.
    pub message: String,
    #[serde(rename = "editedAt", serialize_with = "iso_field")]
    pub edited_at_ms: i64,
    pub user_id: Arc<str>,
    pub seq: u64,
}

/// A message was deleted, by its author or (`userId` "system") a moderator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageDeletion {
    pub room_id: String,
    pub message_id: String,
    pub user_id: Arc<str>,
    pub seq: u64,
}

/// A user added or removed a reaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionChange {
    pub room_id: String,
    pub message_id: String,
    pub emoji: String,
    pub user_id: Arc<str>,
    pub added: bool,
    pub seq: u64,
}

fn iso_field<S: Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&iso_millis(*ms))
}

fn optional_iso_field<S: Serializer>(ms: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => serializer.serialize_str(&iso_millis(*ms)),
        None => serializer.serialize_none(),
    }
}

/// Where a user is: `online` while a connection is open and not away,
/// `away` when every open connection said so, `offline` with none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Away,
    Offline,
}

/// A user's presence; `lastSeen` is when their last connection closed
/// (`null` if never seen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    pub user_id: String,
    pub status: PresenceStatus,
    #[serde(rename = "lastSeen", serialize_with = "optional_iso_field")]
    pub last_seen_ms: Option<i64>,
}

/// Someone in a room, as `chat.members` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user_id: String,
    pub username: String,
    pub status: PresenceStatus,
}

/// The other side of a direct conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DmPeer<'a> {
    pub user_id: &'a str,
}

/// One of a user's direct conversations, as `chat.dm.list` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DmConversation {
    pub room_id: String,
    /// The other participant.
    pub user_id: String,
    pub last_seq: u64,
    pub read_seq: u64,
    pub unread: u64,
    pub last_message: Option<ChatMessage>,
    /// When the conversation was last written to (or opened): what the
    /// list is ordered by, and what `before` pages by.
    #[serde(rename = "lastActivity", serialize_with = "iso_field")]
    pub last_activity_ms: i64,
}

/// Everything a room's members see happen in it. Durable events are
/// stored in the room's log and carry its next `seq`; passing ones
/// (typing, arrivals and departures, read markers) are not stored and
/// take no `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A user's message, or the application's system message.
    Message(ChatMessage),
    Edited(MessageEdit),
    Deleted(MessageDeletion),
    Reaction(ReactionChange),
    /// A call ended: its record.
    CallEnded(CallRecord),
    Typing {
        room_id: String,
        user_id: Arc<str>,
        username: Arc<str>,
        is_typing: bool,
    },
    UserJoined {
        room_id: String,
        user_id: Arc<str>,
    },
    UserLeft {
        room_id: String,
        user_id: Arc<str>,
    },
    Read {
        room_id: String,
        user_id: Arc<str>,
        seq: u64,
    },
}

impl RoomEvent {
    /// The room's `seq` of a durable event; `None` for a passing one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            RoomEvent::Message(message) => Some(message.seq),
            RoomEvent::Edited(edit) => Some(edit.seq),
            RoomEvent::Deleted(deletion) => Some(deletion.seq),
            RoomEvent::Reaction(change) => Some(change.seq),
            RoomEvent::CallEnded(call) => Some(call.seq),
            RoomEvent::Typing { .. }
            | RoomEvent::UserJoined { .. }
            | RoomEvent::UserLeft { .. }
            | RoomEvent::Read { .. } => None,
        }
    }

    pub fn room_id(&self) -> &str {
        match self {
            RoomEvent::Message(message) => &message.room_id,
            RoomEvent::Edited(edit) => &edit.room_id,
            RoomEvent::Deleted(deletion) => &deletion.room_id,
            RoomEvent::Reaction(change) => &change.room_id,
            RoomEvent::CallEnded(call) => &call.room_id,
            RoomEvent::Typing { room_id, .. }
            | RoomEvent::UserJoined { room_id, .. }
            | RoomEvent::UserLeft { room_id, .. }
            | RoomEvent::Read { room_id, .. } => room_id,
        }
    }

    /// The event as it goes on the wire.
    pub fn as_server_event(&self) -> ServerEvent<'_> {
        match self {
            RoomEvent::Message(message) => ServerEvent::stored(message),
            RoomEvent::Edited(edit) => ServerEvent::Edited(edit),
            RoomEvent::Deleted(deletion) => ServerEvent::Deleted(deletion),
            RoomEvent::Reaction(change) => ServerEvent::Reaction(change),
            RoomEvent::CallEnded(call) => ServerEvent::CallEnded(call),
            RoomEvent::Typing {
                room_id,
                user_id,
                username,
                is_typing,
            } => ServerEvent::Typing {
                user_id,
                username,
                is_typing: *is_typing,
                room_id,
            },
            RoomEvent::UserJoined { room_id, user_id } => {
                ServerEvent::UserJoined { user_id, room_id }
            }
            RoomEvent::UserLeft { room_id, user_id } => ServerEvent::UserLeft { user_id, room_id },
            RoomEvent::Read {
                room_id,
                user_id,
                seq,
            } => ServerEvent::Read {
                room_id,
                user_id,
                seq: *seq,
            },
        }
    }

    /// The frame's text, encoded once for every recipient.
    pub fn to_frame(&self) -> String {
        self.as_server_event().to_frame()
    }
}

/// One item of a room's history: a message (in its current state), or a
/// call's record (`type: "call"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum HistoryItem {
    Message(ChatMessage),
    Call(CallRecord),
}

impl HistoryItem {
    pub fn seq(&self) -> u64 {
        match self {
            HistoryItem::Message(message) => message.seq,
            HistoryItem::Call(call) => call.seq,
        }
    }

    /// The message, if this item is one.
    pub fn as_message(&self) -> Option<&ChatMessage> {
        match self {
            HistoryItem::Message(message) => Some(message),
            HistoryItem::Call(_) => None,
        }
    }
}

impl From<ChatMessage> for HistoryItem {
    fn from(message: ChatMessage) -> HistoryItem {
        HistoryItem::Message(message)
    }
}

impl ChatMessage {
    /// Bytes this message takes in a frame (its JSON object).
    pub fn encoded_len(&self) -> usize {
        encoded_len(self)
    }
}

/// Bytes a value takes in a frame.
fn encoded_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("history items always serialize");
    count.0
}

/// Drops the oldest messages of an ascending page until the rest encode in
/// at most `max_bytes` (the newest one always stays, whatever its size).
/// Returns whether any were dropped: the page then has more before it.
pub fn keep_newest_within<T: Serialize>(messages: &mut Vec<T>, max_bytes: usize) -> bool {
    let mut total = 0;
    let mut keep = 0;
    for message in messages.iter().rev() {
        // +1 for the comma between array items.
        total += encoded_len(message) + 1;
        if keep > 0 && total > max_bytes {
            break;
        }
        keep += 1;
    }
    let dropped = messages.len() - keep;
    messages.drain(..dropped);
    dropped > 0
}

/// One member's read marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub user_id: String,
    pub seq: u64,
}

/// Everything the server can say to a client, in the `{event, data}` envelope.
#[derive(Debug, Serialize)]
#[serde(tag = "event", content = "data")]
pub enum ServerEvent<'a> {
    #[serde(rename = "chat.joined", rename_all = "camelCase")]
    Joined {
        room_id: &'a str,
        /// Who this connection is, as authenticated (a page learns its
        /// own id here).
        user_id: &'a str,
        last_seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// The user's read marker in the room, 0 if none.
        read_seq: u64,
        /// Messages by others after the marker.
        unread: u64,
        /// For a direct conversation: who it is with.
        #[serde(skip_serializing_if = "Option::is_none")]
        dm: Option<DmPeer<'a>>,
    },
    /// The connection was taken out of a private room (its membership was
    /// removed).
    #[serde(rename = "chat.removed", rename_all = "camelCase")]
    Removed { room_id: &'a str },
    /// A direct message for a connection that has not joined that
    /// conversation.
    #[serde(rename = "chat.dm.incoming", rename_all = "camelCase")]
    DmIncoming {
        room_id: &'a str,
        /// The author.
        user_id: &'a str,
        username: &'a str,
        message: &'a ChatMessage,
        /// Who the conversation is with, for the connection it goes to.
        dm: DmPeer<'a>,
    },
    #[serde(rename = "chat.dm.list", rename_all = "camelCase")]
    DmList {
        conversations: &'a [DmConversation],
        has_more: bool,
    },
    #[serde(rename = "chat.presence", rename_all = "camelCase")]
    Presence { users: &'a [UserPresence] },
    #[serde(rename = "chat.presence.changed")]
    PresenceChanged(&'a UserPresence),
    #[serde(rename = "chat.members", rename_all = "camelCase")]
    Members {
        room_id: &'a str,
        members: &'a [Member],
    },
    #[serde(rename = "chat.userJoined", rename_all = "camelCase")]
    UserJoined { user_id: &'a str, room_id: &'a str },
    #[serde(rename = "chat.userLeft", rename_all = "camelCase")]
    UserLeft { user_id: &'a str, room_id: &'a str },
    #[serde(rename = "chat.message")]
    Message(&'a ChatMessage),
    #[serde(rename = "chat.typing", rename_all = "camelCase")]
    Typing {
        user_id: &'a str,
        username: &'a str,
        is_typing: bool,
        room_id: &'a str,
    },
    /// A system message: `{roomId, message, timestamp, id, seq, type}`.
    #[serde(rename = "chat.system")]
    System(&'a ChatMessage),
    #[serde(rename = "chat.edited")]
    Edited(&'a MessageEdit),
    #[serde(rename = "chat.deleted")]
    Deleted(&'a MessageDeletion),
    #[serde(rename = "chat.reaction")]
    Reaction(&'a ReactionChange),
    /// A user read the room up to `seq`. Not part of the `seq` log.
    #[serde(rename = "chat.read", rename_all = "camelCase")]
    Read {
        room_id: &'a str,
        user_id: &'a str,
        seq: u64,
    },
    #[serde(rename = "chat.receipts", rename_all = "camelCase")]
    Receipts {
        room_id: &'a str,
        receipts: &'a [Receipt],
    },
    #[serde(rename = "chat.history", rename_all = "camelCase")]
    History {
        room_id: &'a str,
        messages: &'a [HistoryItem],
        has_more: bool,
    },
    #[serde(rename = "chat.call.ring")]
    CallRing(&'a CallRing<'a>),
    #[serde(rename = "chat.call.state")]
    CallState(&'a CallStateEvent<'a>),
    #[serde(rename = "chat.call.signal")]
    CallSignal(&'a RelayedSignal<'a>),
    /// Durable: takes the room's next `seq`.
    #[serde(rename = "chat.call.ended")]
    CallEnded(&'a CallRecord),
    #[serde(rename = "error")]
    Error { message: &'a str, code: ErrorCode },
}

impl<'a> ServerEvent<'a> {
    /// The live event for a stored message: `chat.message`, or
    /// `chat.system` for the application's messages.
    pub fn stored(message: &'a ChatMessage) -> ServerEvent<'a> {
        match message.kind {
            MessageKind::User => ServerEvent::Message(message),
            MessageKind::System => ServerEvent::System(message),
        }
    }
}

impl ServerEvent<'_> {
    /// The frame's text. Serializing these types cannot fail: every map key
    /// is a string and no custom serializer returns an error.
    pub fn to_frame(&self) -> String {
        serde_json::to_string(self).expect("server events always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parsed(event: ServerEvent<'_>) -> Value {
        serde_json::from_str(&event.to_frame()).unwrap()
    }

    #[test]
    fn message_event_has_seed_fields_and_additions() {
        let message = ChatMessage {
            id: "m1".into(),
            seq: 7,
            room_id: "room123".into(),
            user_id: "123".into(),
            username: "John".into(),
            message: "Hello world!".into(),
            timestamp_ms: 1_763_373_600_000,
            client_id: None,
            kind: MessageKind::User,
            edited_at_ms: None,
            deleted: false,
            reactions: None,
            attachments: Vec::new(),
        };
        assert_eq!(
            parsed(ServerEvent::Message(&message)),
            json!({"event": "chat.message", "data": {
                "roomId": "room123", "userId": "123", "username": "John",
                "message": "Hello world!", "timestamp": "2025-11-17T10:00:00.000Z",
                "id": "m1", "seq": 7}})
        );
    }

    #[test]
    fn attachments_follow_the_message_and_go_with_its_deletion() {
        let mut message = ChatMessage {
            id: "m1".into(),
            seq: 7,
            room_id: "r".into(),
            user_id: "123".into(),
            username: "John".into(),
            message: String::new(),
            timestamp_ms: 0,
            client_id: None,
            kind: MessageKind::User,
            edited_at_ms: None,
            deleted: false,
            reactions: None,
            attachments: vec![
                Attachment {
                    id: "f1".into(),
                    name: "cat.png".into(),
                    size: 1234,
                    content_type: "image/png".into(),
                    width: Some(640),
                    height: Some(480),
                    url: "/chat/api/files/f1".into(),
                    thumbnail_url: Some("/chat/api/files/f1/thumbnail".into()),
                },
                Attachment {
                    id: "f2".into(),
                    name: "notes.txt".into(),
                    size: 5,
                    content_type: "text/plain".into(),
                    width: None,
                    height: None,
                    url: "/chat/api/files/f2".into(),
                    thumbnail_url: None,
                },
            ],
        };
        assert_eq!(
            parsed(ServerEvent::Message(&message))["data"]["attachments"],
            json!([
                {"id": "f1", "name": "cat.png", "size": 1234, "contentType": "image/png",
                 "width": 640, "height": 480, "url": "/chat/api/files/f1",
                 "thumbnailUrl": "/chat/api/files/f1/thumbnail"},
                {"id": "f2", "name": "notes.txt", "size": 5, "contentType": "text/plain",
                 "url": "/chat/api/files/f2"},
            ])
        );
        message.deleted = true;
        let deleted = parsed(ServerEvent::Message(&message));
        assert!(deleted["data"].get("attachments").is_none(), "{deleted}");
        message.deleted = false;
        message.attachments.clear();
        let plain = parsed(ServerEvent::Message(&message));
        assert!(plain["data"].get("attachments").is_none(), "{plain}");
    }

    #[test]
    fn pages_keep_the_newest_messages_within_the_budget() {
        let message = |seq: u64, text: &str| ChatMessage {
            id: format!("m{seq}"),
            seq,
            room_id: "r".into(),
            user_id: "u".into(),
            username: "U".into(),
            message: text.into(),
            timestamp_ms: 0,
            client_id: None,
            kind: MessageKind::User,
            edited_at_ms: None,
            deleted: false,
            reactions: None,
            attachments: Vec::new(),
        };
        // U+0001 encodes as six bytes.
        let heavy = "\u{1}".repeat(1000);
        let one = message(1, &heavy).encoded_len();
        assert!(one > 6000, "{one}");
        let mut page: Vec<HistoryItem> = (1..=10).map(|seq| message(seq, &heavy).into()).collect();
        assert!(keep_newest_within(&mut page, 3 * one + 10));
        assert_eq!(
            page.iter().map(HistoryItem::seq).collect::<Vec<_>>(),
            [8, 9, 10]
        );
        let encoded = ServerEvent::History {
            room_id: "r",
            messages: &page,
            has_more: true,
        }
        .to_frame();
        assert!(encoded.len() < 3 * one + 100, "{}", encoded.len());
        // The newest always stays, even alone over the budget.
        let mut page = vec![message(1, &heavy)];
        assert!(!keep_newest_within(&mut page, 10));
        assert_eq!(page.len(), 1);
        let mut page: Vec<ChatMessage> = (1..=4).map(|seq| message(seq, "x")).collect();
        assert!(!keep_newest_within(&mut page, 1 << 20));
        assert_eq!(page.len(), 4);
    }

    #[test]
    fn system_messages_are_durable_and_typed() {
        let system = ChatMessage {
            id: "s1".into(),
            seq: 4,
            room_id: "r".into(),
            user_id: "system".into(),
            username: "system".into(),
            message: "Maintenance".into(),
            timestamp_ms: 0,
            client_id: None,
            kind: MessageKind::System,
            edited_at_ms: None,
            deleted: false,
            reactions: None,
            attachments: Vec::new(),
        };
        assert_eq!(
            parsed(ServerEvent::stored(&system)),
            json!({"event": "chat.system", "data": {"roomId": "r", "message": "Maintenance",
                "timestamp": "1970-01-01T00:00:00.000Z", "id": "s1", "seq": 4, "type": "system"}})
        );
    }

    #[test]
    fn joined_omits_recovered_unless_asked() {
        let plain = ServerEvent::Joined {
            room_id: "r",
            user_id: "u",
            last_seq: 3,
            recovered: None,
            read_seq: 1,
            unread: 2,
            dm: None,
        };
        assert_eq!(
            parsed(plain),
            json!({"event": "chat.joined", "data": {"roomId": "r", "userId": "u", "lastSeq": 3, "readSeq": 1, "unread": 2}})
        );
        let recovered = ServerEvent::Joined {
            room_id: "r",
            user_id: "u",
            last_seq: 3,
            recovered: Some(true),
            read_seq: 0,
            unread: 0,
            dm: Some(DmPeer { user_id: "李雷" }),
        };
        let data = parsed(recovered)["data"].clone();
        assert_eq!(data["recovered"], json!(true));
        assert_eq!(data["dm"], json!({"userId": "李雷"}));
    }

    #[test]
    fn presence_speaks_iso_and_null() {
        let seen = UserPresence {
            user_id: "u".into(),
            status: PresenceStatus::Offline,
            last_seen_ms: Some(0),
        };
        assert_eq!(
            parsed(ServerEvent::PresenceChanged(&seen)),
            json!({"event": "chat.presence.changed", "data": {"userId": "u", "status": "offline",
                "lastSeen": "1970-01-01T00:00:00.000Z"}})
        );
        let never = UserPresence {
            last_seen_ms: None,
            status: PresenceStatus::Away,
            ..seen
        };
        assert_eq!(
            parsed(ServerEvent::Presence { users: &[never] }),
            json!({"event": "chat.presence", "data": {"users": [{"userId": "u", "status": "away", "lastSeen": null}]}})
        );
    }

    #[test]
    fn error_carries_message_and_code() {
        let frame = ServerEvent::Error {
            message: "Invalid message format",
            code: ErrorCode::InvalidFormat,
        };
        assert_eq!(
            parsed(frame),
            json!({"event": "error", "data": {"message": "Invalid message format", "code": "invalid_format"}})
        );
    }

    #[test]
    fn typing_and_presence_events() {
        let typing = ServerEvent::Typing {
            user_id: "1",
            username: "Ann",
            is_typing: true,
            room_id: "r",
        };
        assert_eq!(
            parsed(typing),
            json!({"event": "chat.typing", "data": {"userId": "1", "username": "Ann", "isTyping": true, "roomId": "r"}})
        );
        let left = ServerEvent::UserLeft {
            user_id: "1",
            room_id: "r",
        };
        assert_eq!(
            parsed(left),
            json!({"event": "chat.userLeft", "data": {"userId": "1", "roomId": "r"}})
        );
    }
}
