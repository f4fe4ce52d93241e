use serde::Serialize;

/// Machine-readable reason carried in every `error` event as `code`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    InvalidFormat,
    UnknownEvent,
    InvalidRoom,
    InvalidMessage,
    MessageTooLong,
    NotInRoom,
    TooManyRooms,
    /// The message could not be stored; it was not delivered to anyone.
    StoreUnavailable,
    /// The service is over capacity or shutting down.
    Unavailable,
    /// The gateway dropped a frame over the sender's rate limit.
    RateLimited,
    /// Only the author (or a moderator) may do that.
    Forbidden,
    /// No such message in that room (or it was deleted).
    NotFound,
    /// The message already has the most distinct reactions it may have.
    TooManyReactions,
    /// A user id that is not one (or a conversation with oneself).
    InvalidUser,
    /// A connection watching the presence of more users than it may.
    TooManySubscriptions,
    /// The call has the most participants it may have.
    CallFull,
    /// A call signal larger than the relay takes.
    SignalTooLarge,
    /// A message's `attachments` name a file the sender may not attach
    /// there (unknown, of another room or user, attached already), or too
    /// many of them.
    InvalidAttachment,
}

impl ErrorCode {
    /// Every code, for metrics and tests.
    pub const ALL: &'static [ErrorCode] = <ErrorCode as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A rejected client frame: what to tell the client, and why in one code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtoError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtoError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtoError {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
        }
        assert_eq!(ErrorCode::TooManyReactions.as_str(), "too_many_reactions");
    }
}
