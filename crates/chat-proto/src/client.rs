//! Parsing and validating client frames.
//!
//! Parsing happens in two steps so that every failure maps to a precise
//! error code: first the envelope (`event` + raw `data`), then the event's
//! own fields. Fields are read leniently (a wrong type is captured, not a
//! parse failure) so the error names the field at fault.

use std::str::FromStr;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::call::{CallId, CallMedia, CallRequest, Signal};
use crate::error::{ErrorCode, ProtoError};
use crate::ids::{MessageId, RoomId};
use crate::limits::ProtoLimits;

/// What a client asks for, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Join {
        room_id: RoomId,
        /// Recover every message with a greater `seq` after joining.
        since: Option<u64>,
    },
    Leave {
        room_id: RoomId,
    },
    Message {
        room_id: RoomId,
        /// Trimmed, non-empty, within the length limit, no control characters
        /// but line feeds and tabs.
        message: String,
        /// The client's display name, cleaned and shortened; `None` if blank.
        username: Option<String>,
        /// The client's own id for this message (1-64 characters): a resend
        /// with the same id is answered with the original, not stored again.
        client_id: Option<String>,
        /// Ids of files the sender uploaded to the room, in the order shown:
        /// at most [`MAX_ATTACHMENTS`], each once. With at least one, the
        /// text may be empty.
        attachments: Vec<String>,
    },
    Typing {
        room_id: RoomId,
        username: Option<String>,
        is_typing: bool,
    },
    History {
        room_id: RoomId,
        /// Only messages with a smaller `seq`; `None` means the newest.
        before: Option<u64>,
        limit: u32,
    },
    /// The user has read the room up to `seq`.
    Read {
        room_id: RoomId,
        seq: u64,
    },
    /// Every member's read marker, please.
    Receipts {
        room_id: RoomId,
    },
    /// The author replaces a message's text.
    Edit {
        room_id: RoomId,
        message_id: MessageId,
        /// Checked like a new message's text.
        message: String,
    },
    /// The author deletes a message.
    Delete {
        room_id: RoomId,
        message_id: MessageId,
    },
    /// Adds (`added`) or removes the user's reaction to a message.
    React {
        room_id: RoomId,
        message_id: MessageId,
        emoji: String,
        added: bool,
    },
    /// Joins the one conversation between the user and `user_id`.
    DmOpen {
        user_id: String,
    },
    /// The user's conversations, most recent activity first.
    DmList {
        /// Only conversations last active before this (epoch ms).
        before: Option<i64>,
        limit: u32,
    },
    /// This connection is away (the tab is hidden) or back.
    Status {
        away: bool,
    },
    /// Where these users are; with `subscribe`, keep telling (`Some(true)`)
    /// or stop (`Some(false)`).
    Presence {
        user_ids: Vec<String>,
        subscribe: Option<bool>,
    },
    /// Who is in the room.
    Members {
        room_id: RoomId,
    },
    /// A voice or video call request (`chat.call.*`).
    Call(CallRequest),
}

impl ClientEvent {
    /// The event name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        self.kind().into()
    }

    pub fn kind(&self) -> EventKind {
        match self {
            ClientEvent::Join { .. } => EventKind::Join,
            ClientEvent::Leave { .. } => EventKind::Leave,
            ClientEvent::Message { .. } => EventKind::Message,
            ClientEvent::Typing { .. } => EventKind::Typing,
            ClientEvent::History { .. } => EventKind::History,
            ClientEvent::Read { .. } => EventKind::Read,
            ClientEvent::Receipts { .. } => EventKind::Receipts,
            ClientEvent::Edit { .. } => EventKind::Edit,
            ClientEvent::Delete { .. } => EventKind::Delete,
            ClientEvent::React { added: true, .. } => EventKind::React,
            ClientEvent::React { added: false, .. } => EventKind::Unreact,
            ClientEvent::DmOpen { .. } => EventKind::DmOpen,
            ClientEvent::DmList { .. } => EventKind::DmList,
            ClientEvent::Status { .. } => EventKind::Status,
            ClientEvent::Presence { .. } => EventKind::Presence,
            ClientEvent::Members { .. } => EventKind::Members,
            ClientEvent::Call(request) => match request {
                CallRequest::Start { .. } => EventKind::CallStart,
                CallRequest::Accept { .. } => EventKind::CallAccept,
                CallRequest::Decline { .. } => EventKind::CallDecline,
                CallRequest::Hangup { .. } => EventKind::CallHangup,
                CallRequest::Signal { .. } => EventKind::CallSignal,
            },
        }
    }
}

/// The events a client may send, by their wire names: the one list of names.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
pub enum EventKind {
    #[strum(serialize = "chat.join")]
    Join,
    #[strum(serialize = "chat.leave")]
    Leave,
    #[strum(serialize = "chat.message")]
    Message,
    #[strum(serialize = "chat.typing")]
    Typing,
    #[strum(serialize = "chat.history")]
    History,
    #[strum(serialize = "chat.read")]
    Read,
    #[strum(serialize = "chat.receipts")]
    Receipts,
    #[strum(serialize = "chat.edit")]
    Edit,
    #[strum(serialize = "chat.delete")]
    Delete,
    #[strum(serialize = "chat.react")]
    React,
    #[strum(serialize = "chat.unreact")]
    Unreact,
    #[strum(serialize = "chat.dm.open")]
    DmOpen,
    #[strum(serialize = "chat.dm.list")]
    DmList,
    #[strum(serialize = "chat.status")]
    Status,
    #[strum(serialize = "chat.presence")]
    Presence,
    #[strum(serialize = "chat.members")]
    Members,
    #[strum(serialize = "chat.call.start")]
    CallStart,
    #[strum(serialize = "chat.call.accept")]
    CallAccept,
    #[strum(serialize = "chat.call.decline")]
    CallDecline,
    #[strum(serialize = "chat.call.hangup")]
    CallHangup,
    /// Named by [`crate::rate::CALL_SIGNAL_EVENT`], which the gateway's rate
    /// limit reads.
    #[strum(serialize = "chat.call.signal")]
    CallSignal,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// A field that may hold a value of the wrong type; we want to say which
/// field is wrong instead of failing the whole frame with serde's message.
#[derive(Deserialize)]
#[serde(untagged)]
enum Loose<T> {
    Valid(T),
    Invalid(IgnoredAny),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    event: Option<Loose<String>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Each event's `data`, as sent. Fields are loose so that validation can
/// name the field at fault; unknown fields are ignored.
trait EventData: for<'de> Deserialize<'de> {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError>;
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinData {
    room_id: Option<Loose<String>>,
    since: Option<Loose<u64>>,
}

impl EventData for JoinData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::Join {
            room_id: room_id(self.room_id, limits)?,
            since: optional_u64(self.since, "since")?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaveData {
    room_id: Option<Loose<String>>,
}

impl EventData for LeaveData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::Leave {
            room_id: room_id(self.room_id, limits)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageData {
    room_id: Option<Loose<String>>,
    message: Option<Loose<String>>,
    username: Option<Loose<String>>,
    client_id: Option<Loose<String>>,
    attachments: Option<Loose<Vec<Loose<String>>>>,
}

impl EventData for MessageData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        let room_id = room_id(self.room_id, limits)?;
        let attachments = attachment_ids(self.attachments)?;
        // Files alone make a message: its text may then be missing or blank.
        let message = match self.message {
            None if !attachments.is_empty() => String::new(),
            Some(Loose::Valid(raw)) if !attachments.is_empty() && raw.trim().is_empty() => {
                String::new()
            }
            field => message_field(field, limits)?,
        };
        Ok(ClientEvent::Message {
            room_id,
            message,
            username: username(self.username, limits)?,
            client_id: client_id(self.client_id)?,
            attachments,
        })
    }
}

/// Most files one message may carry.
pub const MAX_ATTACHMENTS: usize = 10;
/// Longest file id a client may name, in characters (ours are 36).
pub const MAX_FILE_ID_CHARS: usize = 128;

/// The `attachments` of a message: a list of distinct file ids. Whether
/// the sender may attach them is the store's question.
fn attachment_ids(field: Option<Loose<Vec<Loose<String>>>>) -> Result<Vec<String>, ProtoError> {
    let ids = match field {
        None => return Ok(Vec::new()),
        Some(Loose::Valid(ids)) => ids,
        Some(Loose::Invalid(_)) => {
            return Err(invalid_format("attachments must be a list of file ids"))
        }
    };
    if ids.len() > MAX_ATTACHMENTS {
        return Err(ProtoError::new(
            ErrorCode::InvalidAttachment,
            format!("a message may carry at most {MAX_ATTACHMENTS} attachments"),
        ));
    }
    let mut valid: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let Loose::Valid(id) = id else {
            return Err(invalid_format("attachments must be a list of file ids"));
        };
        if id.is_empty()
            || id.chars().count() > MAX_FILE_ID_CHARS
            || id.chars().any(char::is_control)
        {
            return Err(ProtoError::new(
                ErrorCode::InvalidAttachment,
                format!("each attachment is a file id of 1-{MAX_FILE_ID_CHARS} characters"),
            ));
        }
        if valid.contains(&id) {
            return Err(ProtoError::new(
                ErrorCode::InvalidAttachment,
                "a file may be attached to a message once",
            ));
        }
        valid.push(id);
    }
    Ok(valid)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypingData {
    room_id: Option<Loose<String>>,
    username: Option<Loose<String>>,
    is_typing: Option<Loose<bool>>,
}

impl EventData for TypingData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::Typing {
            room_id: room_id(self.room_id, limits)?,
            username: username(self.username, limits)?,
            is_typing: match self.is_typing {
                Some(Loose::Valid(flag)) => flag,
                _ => return Err(invalid_format("isTyping must be true or false")),
            },
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryData {
    room_id: Option<Loose<String>>,
    before: Option<Loose<u64>>,
    limit: Option<Loose<u64>>,
}

impl EventData for HistoryData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::History {
            room_id: room_id(self.room_id, limits)?,
            before: optional_u64(self.before, "before")?,
            limit: history_limit(self.limit, limits)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadData {
    room_id: Option<Loose<String>>,
    seq: Option<Loose<u64>>,
}

impl EventData for ReadData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::Read {
            room_id: room_id(self.room_id, limits)?,
            seq: optional_u64(self.seq, "seq")?
                .ok_or_else(|| invalid_format("seq is required: the last seq you have read"))?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptsData {
    room_id: Option<Loose<String>>,
}

impl EventData for ReceiptsData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::Receipts {
            room_id: room_id(self.room_id, limits)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EditData {
    room_id: Option<Loose<String>>,
    message_id: Option<Loose<String>>,
    message: Option<Loose<String>>,
}

impl EventData for EditData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::Edit {
            room_id: room_id(self.room_id, limits)?,
            message_id: message_id(self.message_id)?,
            message: message_field(self.message, limits)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteData {
    room_id: Option<Loose<String>>,
    message_id: Option<Loose<String>>,
}

impl EventData for DeleteData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::Delete {
            room_id: room_id(self.room_id, limits)?,
            message_id: message_id(self.message_id)?,
        })
    }
}

/// `chat.react` (`ADDED`) and `chat.unreact` share their data.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReactData<const ADDED: bool> {
    room_id: Option<Loose<String>>,
    message_id: Option<Loose<String>>,
    emoji: Option<Loose<String>>,
}

impl<const ADDED: bool> EventData for ReactData<ADDED> {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::React {
            room_id: room_id(self.room_id, limits)?,
            message_id: message_id(self.message_id)?,
            emoji: emoji(self.emoji)?,
            added: ADDED,
        })
    }
}

fn message_id(field: Option<Loose<String>>) -> Result<MessageId, ProtoError> {
    match field {
        Some(Loose::Valid(raw)) => MessageId::parse(raw),
        _ => Err(invalid_format("messageId is required and must be a string")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DmOpenData {
    user_id: Option<Loose<String>>,
}

impl EventData for DmOpenData {
    fn validate(self, _: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::DmOpen {
            user_id: user_id(self.user_id)?,
        })
    }
}

/// Conversations listed by `chat.dm.list` when it gives no `limit`, and
/// the most it may ask for.
pub const DM_LIST_DEFAULT: u32 = 20;
pub const DM_LIST_MAX: u32 = 100;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DmListData {
    before: Option<Loose<String>>,
    limit: Option<Loose<u64>>,
}

impl EventData for DmListData {
    fn validate(self, _: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::DmList {
            before: match self.before {
                None => None,
                Some(Loose::Valid(time)) => Some(
                    crate::time::parse_iso_millis(&time)
                        .ok_or_else(|| invalid_format("before must be an ISO timestamp"))?,
                ),
                Some(Loose::Invalid(_)) => {
                    return Err(invalid_format("before must be an ISO timestamp"))
                }
            },
            limit: dm_list_limit(match self.limit {
                None => None,
                Some(Loose::Valid(n)) => Some(n),
                Some(Loose::Invalid(_)) => Some(0),
            })?,
        })
    }
}

/// A page size of conversations: the default when absent, else 1..=max.
pub fn dm_list_limit(limit: Option<u64>) -> Result<u32, ProtoError> {
    match limit {
        None => Ok(DM_LIST_DEFAULT),
        Some(n) if (1..=u64::from(DM_LIST_MAX)).contains(&n) => Ok(n as u32),
        Some(_) => Err(invalid_format(format!(
            "limit must be an integer from 1 to {DM_LIST_MAX}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusData {
    status: Option<Loose<String>>,
}

impl EventData for StatusData {
    fn validate(self, _: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        let away = match self.status {
            Some(Loose::Valid(status)) if status == "away" => true,
            Some(Loose::Valid(status)) if status == "online" => false,
            _ => return Err(invalid_format("status must be \"online\" or \"away\"")),
        };
        Ok(ClientEvent::Status { away })
    }
}

/// Most users one `chat.presence` may name.
pub const MAX_PRESENCE_USERS: usize = 100;
/// Most users one connection may watch.
pub const MAX_PRESENCE_SUBSCRIPTIONS: usize = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresenceData {
    user_ids: Option<Loose<Vec<Loose<String>>>>,
    subscribe: Option<Loose<bool>>,
}

impl EventData for PresenceData {
    fn validate(self, _: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        let Some(Loose::Valid(ids)) = self.user_ids else {
            return Err(invalid_format("userIds must be a list of user ids"));
        };
        if ids.len() > MAX_PRESENCE_USERS {
            return Err(invalid_format(format!(
                "userIds may name at most {MAX_PRESENCE_USERS} users"
            )));
        }
        let user_ids = ids
            .into_iter()
            .map(|id| user_id(Some(id)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClientEvent::Presence {
            user_ids,
            subscribe: match self.subscribe {
                None => None,
                Some(Loose::Valid(flag)) => Some(flag),
                Some(Loose::Invalid(_)) => {
                    return Err(invalid_format("subscribe must be true or false"))
                }
            },
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MembersData {
    room_id: Option<Loose<String>>,
}

impl EventData for MembersData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::Members {
            room_id: room_id(self.room_id, limits)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallStartData {
    room_id: Option<Loose<String>>,
    media: Option<Loose<String>>,
}

impl EventData for CallStartData {
    fn validate(self, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        let media = match self.media {
            Some(Loose::Valid(media)) => CallMedia::from_str(&media).ok(),
            _ => None,
        }
        .ok_or_else(|| invalid_format("media must be \"audio\" or \"video\""))?;
        Ok(ClientEvent::Call(CallRequest::Start {
            room_id: room_id(self.room_id, limits)?,
            media,
        }))
    }
}

/// `chat.call.accept`, `chat.call.decline` and `chat.call.hangup` share
/// their data; `ANSWER` says which it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallIdData<const ANSWER: u8> {
    call_id: Option<Loose<String>>,
}

const ACCEPT: u8 = 0;
const DECLINE: u8 = 1;
const HANGUP: u8 = 2;

impl<const ANSWER: u8> EventData for CallIdData<ANSWER> {
    fn validate(self, _: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        let call_id = call_id(self.call_id)?;
        Ok(ClientEvent::Call(match ANSWER {
            ACCEPT => CallRequest::Accept { call_id },
            DECLINE => CallRequest::Decline { call_id },
            _ => CallRequest::Hangup { call_id },
        }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallSignalData {
    call_id: Option<Loose<String>>,
    to_user_id: Option<Loose<String>>,
    signal: Option<Box<RawValue>>,
}

impl EventData for CallSignalData {
    fn validate(self, _: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
        Ok(ClientEvent::Call(CallRequest::Signal {
            call_id: call_id(self.call_id)?,
            to_user_id: user_id(self.to_user_id)?,
            signal: Signal::parse(
                self.signal
                    .ok_or_else(|| invalid_format("signal is required and must be an object"))?,
            )?,
        }))
    }
}

fn call_id(field: Option<Loose<String>>) -> Result<CallId, ProtoError> {
    match field {
        Some(Loose::Valid(raw)) => CallId::parse(&raw),
        _ => Err(invalid_format("callId is required and must be a string")),
    }
}

fn user_id(field: Option<Loose<String>>) -> Result<String, ProtoError> {
    match field {
        Some(Loose::Valid(id)) if crate::api::valid_user_id(&id) => Ok(id),
        _ => Err(ProtoError::new(
            ErrorCode::InvalidUser,
            format!(
                "userId must be a string of 1-{} characters, not blank, without control characters",
                crate::api::MAX_USER_ID_CHARS
            ),
        )),
    }
}

/// Most distinct emoji one message may carry.
pub const MAX_DISTINCT_REACTIONS: usize = 20;

/// Longest reaction, in bytes of UTF-8 (a family emoji with skin tones
/// is 25).
pub const MAX_EMOJI_BYTES: usize = 32;

fn emoji(field: Option<Loose<String>>) -> Result<String, ProtoError> {
    match field {
        Some(Loose::Valid(emoji))
            if !emoji.is_empty()
                && emoji.len() <= MAX_EMOJI_BYTES
                && !emoji.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(emoji)
        }
        _ => Err(invalid_format(format!(
            "emoji must be a string of 1-{MAX_EMOJI_BYTES} bytes without whitespace or control characters"
        ))),
    }
}

fn invalid_format(message: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorCode::InvalidFormat, message)
}

/// Parses one text frame into a validated event.
pub fn parse_client_frame(text: &str, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|_| {
        invalid_format("Invalid message format: expected a JSON object {\"event\", \"data\"}")
    })?;
    let name = match envelope.event {
        Some(Loose::Valid(name)) => name,
        _ => return Err(invalid_format("event must be a string")),
    };
    let kind = EventKind::from_str(&name).map_err(|_| {
        ProtoError::new(
            ErrorCode::UnknownEvent,
            format!("Unknown event: {}", truncate_chars(&name, 64)),
        )
    })?;
    let data = match envelope.data {
        Some(raw) if raw.get().trim_start().starts_with('{') => raw.get(),
        _ => return Err(invalid_format("data must be a JSON object")),
    };
    // Exhaustive on purpose: a new kind does not compile until it has its own data.
    match kind {
        EventKind::Join => validated::<JoinData>(data, limits),
        EventKind::Leave => validated::<LeaveData>(data, limits),
        EventKind::Message => validated::<MessageData>(data, limits),
        EventKind::Typing => validated::<TypingData>(data, limits),
        EventKind::History => validated::<HistoryData>(data, limits),
        EventKind::Read => validated::<ReadData>(data, limits),
        EventKind::Receipts => validated::<ReceiptsData>(data, limits),
        EventKind::Edit => validated::<EditData>(data, limits),
        EventKind::Delete => validated::<DeleteData>(data, limits),
        EventKind::React => validated::<ReactData<true>>(data, limits),
        EventKind::Unreact => validated::<ReactData<false>>(data, limits),
        EventKind::DmOpen => validated::<DmOpenData>(data, limits),
        EventKind::DmList => validated::<DmListData>(data, limits),
        EventKind::Status => validated::<StatusData>(data, limits),
        EventKind::Presence => validated::<PresenceData>(data, limits),
        EventKind::Members => validated::<MembersData>(data, limits),
        EventKind::CallStart => validated::<CallStartData>(data, limits),
        EventKind::CallAccept => validated::<CallIdData<ACCEPT>>(data, limits),
        EventKind::CallDecline => validated::<CallIdData<DECLINE>>(data, limits),
        EventKind::CallHangup => validated::<CallIdData<HANGUP>>(data, limits),
        EventKind::CallSignal => validated::<CallSignalData>(data, limits),
    }
}

fn validated<D: EventData>(data: &str, limits: &ProtoLimits) -> Result<ClientEvent, ProtoError> {
    serde_json::from_str::<D>(data)
        .map_err(|_| invalid_format("data must be a JSON object"))?
        .validate(limits)
}

fn room_id(field: Option<Loose<String>>, limits: &ProtoLimits) -> Result<RoomId, ProtoError> {
    match field {
        Some(Loose::Valid(raw)) => RoomId::parse(&raw, limits),
        _ => Err(ProtoError::new(
            ErrorCode::InvalidRoom,
            "roomId is required and must be a string",
        )),
    }
}

fn message_field(field: Option<Loose<String>>, limits: &ProtoLimits) -> Result<String, ProtoError> {
    match field {
        Some(Loose::Valid(raw)) => message_text(raw, limits),
        _ => Err(ProtoError::new(
            ErrorCode::InvalidMessage,
            "message is required and must be a string",
        )),
    }
}

/// Validates message text: trimmed, non-empty, within the length limit,
/// and free of control characters other than line feed and tab (NUL and
/// friends are refused by some databases, and garble terminals and logs).
pub fn message_text(raw: String, limits: &ProtoLimits) -> Result<String, ProtoError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ProtoError::new(
            ErrorCode::InvalidMessage,
            "message must not be empty",
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ProtoError::new(
            ErrorCode::InvalidMessage,
            "message must not contain control characters (line feeds and tabs are allowed)",
        ));
    }
    if trimmed.chars().count() > limits.max_message_chars {
        return Err(ProtoError::new(
            ErrorCode::MessageTooLong,
            format!(
                "message must be at most {} characters",
                limits.max_message_chars
            ),
        ));
    }
    Ok(if trimmed.len() == raw.len() {
        raw
    } else {
        trimmed.to_owned()
    })
}

/// Longest `clientId`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

fn client_id(field: Option<Loose<String>>) -> Result<Option<String>, ProtoError> {
    match field {
        None => Ok(None),
        Some(Loose::Valid(id))
            if !id.is_empty()
                && id.chars().count() <= MAX_CLIENT_ID_CHARS
                && !id.chars().any(char::is_control) =>
        {
            Ok(Some(id))
        }
        Some(_) => Err(invalid_format(format!(
            "clientId must be a string of 1-{MAX_CLIENT_ID_CHARS} characters without control characters"
        ))),
    }
}

fn username(
    field: Option<Loose<String>>,
    limits: &ProtoLimits,
) -> Result<Option<String>, ProtoError> {
    match field {
        None => Ok(None),
        Some(Loose::Valid(raw)) if raw.chars().any(char::is_control) => Err(ProtoError::new(
            ErrorCode::InvalidMessage,
            "username must not contain control characters",
        )),
        Some(Loose::Valid(raw)) => Ok(display_name(&raw, limits.max_username_chars)),
        Some(Loose::Invalid(_)) => Err(invalid_format("username must be a string")),
    }
}

/// Cleans a display name: drops characters that are invisible or that
/// change how the text around them is shown (controls, bidirectional
/// overrides such as U+202E, zero-width and other format characters, line
/// and paragraph separators), trims, and shortens it to `max_chars`. Blank
/// means none. Names come from clients and tokens alike and are shown to
/// everyone in a room, so they must read as what they are.
pub fn display_name(raw: &str, max_chars: usize) -> Option<String> {
    let cleaned: String = raw.chars().filter(|&c| !hides_or_reorders(c)).collect();
    let trimmed = cleaned.trim();
    // Cut, then trimmed again: the cut may end on a space.
    (!trimmed.is_empty()).then(|| truncate_chars(trimmed, max_chars).trim_end().to_owned())
}

fn hides_or_reorders(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

fn truncate_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

fn optional_u64(field: Option<Loose<u64>>, name: &str) -> Result<Option<u64>, ProtoError> {
    match field {
        None => Ok(None),
        Some(Loose::Valid(value)) => Ok(Some(value)),
        Some(Loose::Invalid(_)) => Err(invalid_format(format!(
            "{name} must be a non-negative integer"
        ))),
    }
}

fn history_limit(field: Option<Loose<u64>>, limits: &ProtoLimits) -> Result<u32, ProtoError> {
    match field {
        None => history_limit_value(None, limits),
        Some(Loose::Valid(n)) => history_limit_value(Some(n), limits),
        Some(Loose::Invalid(_)) => history_limit_value(Some(0), limits),
    }
}

/// A history page size: the default when absent, else 1..=max.
pub fn history_limit_value(limit: Option<u64>, limits: &ProtoLimits) -> Result<u32, ProtoError> {
    let max = limits.max_history_limit;
    match limit {
        None => Ok(limits.default_history_limit.min(max)),
        Some(n) if (1..=u64::from(max)).contains(&n) => Ok(n as u32),
        Some(_) => Err(invalid_format(format!(
            "limit must be an integer from 1 to {max}"
        ))),
    }
}
