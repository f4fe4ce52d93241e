//! Bodies of the service's HTTP API (the history response has the same
//! shape as the `chat.history` event's data) and of the gateway's own
//! `/chat/api/rtc/ice-servers`.

use serde::{Deserialize, Serialize};

use crate::server::ChatMessage;

/// The key the gateway presents to the service on every request.
pub const INTERNAL_KEY_HEADER: &str = "x-internal-api-key";
/// Who the gateway vouches the user is: percent-encoded UTF-8.
pub const USER_ID_HEADER: &str = "x-user-id";
/// The display name from the user's token, if it has one: percent-encoded UTF-8.
pub const USERNAME_HEADER: &str = "x-username";
/// Longest user id either side accepts, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;

/// Whether a user id is one both sides accept: 1-128 characters, not blank,
/// no control characters (ids reach logs, headers and the database).
pub fn valid_user_id(id: &str) -> bool {
    !id.trim().is_empty()
        && id.chars().count() <= MAX_USER_ID_CHARS
        && !id.chars().any(char::is_control)
}

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

/// Response of `GET /api/rooms/{roomId}/receipts`: every member's marker.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptsResponse {
    pub room_id: String,
    pub receipts: Vec<crate::server::Receipt>,
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

/// Response of the gateway's `GET /chat/api/rtc/ice-servers`: the
/// `iceServers` of a WebRTC `RTCConfiguration`, ready to pass to
/// `new RTCPeerConnection({iceServers})`. Empty when none are configured
/// (calls on one host or LAN still connect).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServersResponse {
    pub ice_servers: Vec<IceServer>,
}

/// One entry of `iceServers`, in the shape of WebRTC's `RTCIceServer`:
/// `{urls}` for STUN, `{urls, username, credential}` for TURN.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}
