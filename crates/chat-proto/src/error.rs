use serde::Serialize;

/// Machine-readable reason carried in every `error` event as `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
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
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidFormat,
        ErrorCode::UnknownEvent,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidMessage,
        ErrorCode::MessageTooLong,
        ErrorCode::NotInRoom,
        ErrorCode::TooManyRooms,
        ErrorCode::StoreUnavailable,
        ErrorCode::Unavailable,
        ErrorCode::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidFormat => "invalid_format",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::MessageTooLong => "message_too_long",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RateLimited => "rate_limited",
        }
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
