//! Bodies of the service's HTTP API. The history response has the same
//! shape as the `chat.history` event's data.

use serde::{Deserialize, Serialize};

use crate::server::ChatMessage;

/// The payload of the Ping a gateway sends a service socket when it is
/// shutting down: "answer what you owe, then close". The service sends the
/// echoes of every message it accepted on that socket and then closes it
/// with 1001; a Close frame instead would end the socket at once, and the
/// echoes with it.
pub const DRAIN_PING: &[u8] = b"chat:drain";

/// `POST /send-system-message`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemMessageRequest {
    pub room_id: String,
    pub message: String,
}

/// `GET /stats`
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StatsResponse {
    /// Distinct users with at least one connection.
    pub connected_users: usize,
    pub connections: usize,
    pub rooms: usize,
}

/// Query of `GET /api/rooms/{roomId}/messages`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HistoryQuery {
    pub before: Option<u64>,
    pub limit: Option<u64>,
}

/// Response of `GET /api/rooms/{roomId}/messages`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryResponse {
    pub room_id: String,
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
}
