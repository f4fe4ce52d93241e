//! The ids clients name rooms and messages by, validated once where they
//! enter, and what a room's id says about who may be in it.

use std::fmt;
use std::sync::Arc;

use crate::error::{ErrorCode, ProtoError};
use crate::limits::ProtoLimits;

/// A validated room id: 1..=max characters of `[A-Za-z0-9_.:-]`.
/// Cheap to clone, since rooms are named in every delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Arc<str>);

impl RoomId {
    pub fn parse(raw: &str, limits: &ProtoLimits) -> Result<RoomId, ProtoError> {
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if raw.is_empty() || raw.len() > limits.max_room_id_chars || !valid_chars {
            return Err(ProtoError::new(
                ErrorCode::InvalidRoom,
                format!(
                    "roomId must be 1-{} characters of A-Z a-z 0-9 _ . : -",
                    limits.max_room_id_chars
                ),
            ));
        }
        Ok(RoomId(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Who may be in the room, by the prefix of its id.
    pub fn access(&self) -> RoomAccess {
        if self.0.starts_with(DM_ROOM_PREFIX) {
            RoomAccess::Direct
        } else if self.0.starts_with(PRIVATE_ROOM_PREFIX) {
            RoomAccess::Private
        } else {
            RoomAccess::Public
        }
    }

    /// A room only its members may enter, read or learn anything about.
    pub fn is_members_only(&self) -> bool {
        self.access() != RoomAccess::Public
    }
}

/// Rooms of a direct conversation: `dm:` and an opaque id.
pub const DM_ROOM_PREFIX: &str = "dm:";
/// Rooms whose members the application manages.
pub const PRIVATE_ROOM_PREFIX: &str = "private:";

/// Who may be in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomAccess {
    /// Anyone may join.
    Public,
    /// Members only; the application manages who (`private:` rooms).
    Private,
    /// The two participants of a direct conversation (`dm:` rooms).
    Direct,
}

/// Rooms are found by their text: a `RoomId` hashes and compares as it.
impl std::borrow::Borrow<str> for RoomId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest message id a client may name, in characters (ours are 36).
pub const MAX_MESSAGE_ID_CHARS: usize = 128;

/// A message id as a client names it: 1-128 characters, no control
/// characters. Whether such a message exists is the store's question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId(String);

impl MessageId {
    pub fn parse(raw: String) -> Result<MessageId, ProtoError> {
        if raw.is_empty()
            || raw.chars().count() > MAX_MESSAGE_ID_CHARS
            || raw.chars().any(char::is_control)
        {
            return Err(ProtoError::new(
                ErrorCode::InvalidFormat,
                format!("messageId must be a string of 1-{MAX_MESSAGE_ID_CHARS} characters"),
            ));
        }
        Ok(MessageId(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}
