//! Bodies of the service's HTTP API (the history response has the same
//! shape as the `chat.history` event's data) and of the gateway's own
//! `/chat/api/rtc/ice-servers`.

use serde::{Deserialize, Serialize};

use crate::server::HistoryItem;

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

/// Answer of `POST /send-system-message`: stored with `id` and `seq`, and
/// how many connections it reached.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SystemMessageResponse {
    pub delivered: usize,
    pub id: String,
    pub seq: u64,
}

/// Answer of `DELETE /rooms/{roomId}/messages/{messageId}` (moderation):
/// the deletion's `seq` in the room.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeletedResponse {
    pub room_id: String,
    pub message_id: String,
    pub seq: u64,
    pub delivered: usize,
}

/// Answer of `PUT` and `DELETE /rooms/{roomId}/members/{userId}`: whether
/// the user is now a member, and whether that changed anything.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MembershipResponse {
    pub room_id: String,
    pub user_id: String,
    pub member: bool,
    pub changed: bool,
}

/// Answer of `GET /rooms/{roomId}/members`: user ids in the order added.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MembersResponse {
    pub room_id: String,
    pub members: Vec<String>,
}

/// Answer of `PUT` and `DELETE /blocks/{userId}/{blockedId}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlockResponse {
    pub user_id: String,
    pub blocked_id: String,
    pub blocked: bool,
    pub changed: bool,
}

/// Query of `GET /api/dms` (and the gateway's `/chat/api/dms`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DmListQuery {
    /// An ISO timestamp: conversations last active before it.
    pub before: Option<String>,
    pub limit: Option<u64>,
}

/// Response of `GET /api/dms`: the data of a `chat.dm.list` event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DmListResponse {
    pub conversations: Vec<crate::server::DmConversation>,
    pub has_more: bool,
}

/// `GET /stats`: over every node in cluster mode, with this node's own
/// counts in `node`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StatsResponse {
    /// Distinct users with at least one connection.
    pub connected_users: usize,
    pub connections: usize,
    pub rooms: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeStats>,
}

/// One node's counts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
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
    pub messages: Vec<HistoryItem>,
    pub has_more: bool,
}

/// Where browsers download files, through the gateway: `FILES_PATH/{id}`
/// and `FILES_PATH/{id}/thumbnail`. The gateway forwards them to the
/// service's `SERVICE_FILES_PATH/{id}[/thumbnail]`, and uploads from
/// `/chat/api/rooms/{roomId}/files` to the service's
/// `/api/rooms/{roomId}/files`.
pub const FILES_PATH: &str = "/chat/api/files";
/// The service's side of [`FILES_PATH`].
pub const SERVICE_FILES_PATH: &str = "/api/files";

/// The download URL of a file (ids are ours: URL-safe as they are).
pub fn file_url(id: &str) -> String {
    format!("{FILES_PATH}/{id}")
}

/// The URL of an image's thumbnail.
pub fn thumbnail_url(id: &str) -> String {
    format!("{FILES_PATH}/{id}/thumbnail")
}

/// Answer (201) of `POST /chat/api/rooms/{roomId}/files`: a stored file.
/// `size` and `sha256` are those of the bytes as stored and served (for
/// images, after their metadata was removed); `contentType` is the type
/// found in the bytes. `width`, `height` and `thumbnailUrl` are there for
/// images only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_info_json() {
        let image = FileInfo {
            id: "019a".into(),
            name: "cat.png".into(),
            size: 1234,
            content_type: "image/png".into(),
            sha256: "ab".repeat(32),
            width: Some(640),
            height: Some(480),
            url: "/chat/api/files/019a".into(),
            thumbnail_url: Some("/chat/api/files/019a/thumbnail".into()),
        };
        let json = serde_json::to_value(&image).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "019a",
                "name": "cat.png",
                "size": 1234,
                "contentType": "image/png",
                "sha256": "ab".repeat(32),
                "width": 640,
                "height": 480,
                "url": "/chat/api/files/019a",
                "thumbnailUrl": "/chat/api/files/019a/thumbnail",
            })
        );
        assert_eq!(serde_json::from_value::<FileInfo>(json).unwrap(), image);

        let pdf = FileInfo {
            content_type: "application/pdf".into(),
            name: "report.pdf".into(),
            width: None,
            height: None,
            thumbnail_url: None,
            ..image
        };
        let text = serde_json::to_string(&pdf).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"id":"019a","name":"report.pdf","size":1234,"contentType":"application/pdf","sha256":"{}","url":"/chat/api/files/019a"}}"#,
                "ab".repeat(32)
            )
        );
    }
}
