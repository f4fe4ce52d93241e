//! The HTTP edge: the WebSocket endpoint and the internal API. Every
//! rejection is a status with a JSON body `{"error", "code"}`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chat_edge::ConnectionSlot;
use chat_proto::api::{
    valid_user_id, BlockResponse, DeletedResponse, DmListQuery, DmListResponse, HistoryQuery,
    HistoryResponse, MembersResponse, MembershipResponse, NodeStats, ReceiptsResponse,
    StatsResponse, SystemMessageRequest, SystemMessageResponse, INTERNAL_KEY_HEADER,
    USERNAME_HEADER, USER_ID_HEADER,
};
use chat_proto::ids::RoomAccess;
use chat_proto::{ErrorCode, MessageId, MessageKind, ProtoError, RoomEvent, RoomId};
use percent_encoding::percent_decode_str;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::sequencer::{Delivered, NotStored, Origin};
use crate::session::{new_id, Identity};
use crate::state::Shared;
use crate::store::{Actor, Change, NewDeletion, NewEvent, NewMessage, Refusal, MODERATOR_USER};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ws", get(websocket))
        .route("/send-system-message", post(system_message))
        .route(
            "/rooms/{room_id}/messages/{message_id}",
            axum::routing::delete(delete_message),
        )
        .route("/stats", get(stats))
        .route(
            "/rooms/{room_id}/members/{user_id}",
            axum::routing::put(add_member).delete(remove_member),
        )
        .route("/rooms/{room_id}/members", get(list_members))
        .route(
            "/blocks/{user_id}/{blocked_id}",
            axum::routing::put(block).delete(unblock),
        )
        .route("/api/rooms/{room_id}/messages", get(history))
        .route("/api/rooms/{room_id}/receipts", get(receipts))
        .route("/api/dms", get(dms))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(crate::files::routes())
        .fallback(|| async { ApiError::NotFound })
        .with_state(shared)
}

/// Why an HTTP request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("missing or invalid x-internal-api-key")]
    Unauthorized,
    #[error("missing or invalid x-user-id: a percent-encoded UTF-8 id of 1-128 characters, no control characters")]
    MissingUser,
    #[error("invalid x-username: must be percent-encoded UTF-8")]
    BadUsername,
    #[error("{0}")]
    BadBody(String),
    #[error("{}", .0.message)]
    Invalid(ProtoError),
    #[error("expected a WebSocket upgrade request")]
    NotWebSocket,
    #[error("too many connections")]
    Busy,
    #[error("shutting down")]
    ShuttingDown,
    #[error("message store unavailable")]
    Store,
    #[error("not a member of this room")]
    Forbidden,
    #[error("not found")]
    NotFound,
    /// An upload or download refused, with `chat_files`' code.
    #[error("{0}")]
    File(chat_files::FileError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::MissingUser => (StatusCode::BAD_REQUEST, "missing_user"),
            ApiError::BadUsername => (StatusCode::BAD_REQUEST, "invalid_username"),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "invalid_format"),
            ApiError::Invalid(error) => (StatusCode::BAD_REQUEST, error.code.as_str()),
            ApiError::NotWebSocket => (StatusCode::BAD_REQUEST, "not_websocket"),
            ApiError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections"),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::Store => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::File(error) => (error.status(), error.code().as_str()),
        }
    }
}

impl ApiError {
    fn body(&self) -> serde_json::Value {
        let (_, code) = self.status_and_code();
        json!({"error": self.to_string(), "code": code})
    }

    /// The body, for refusals written before HTTP is being served.
    pub(crate) fn json_body(&self) -> String {
        self.body().to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        (status, Json(self.body())).into_response()
    }
}

pub(crate) fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(INTERNAL_KEY_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let expected = shared.config.internal_api_key.as_bytes();
    if bool::from(presented.ct_eq(expected)) && !expected.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Reads a percent-encoded UTF-8 header value.
fn decoded_header(headers: &HeaderMap, name: &str) -> Option<Result<String, ()>> {
    let raw = headers.get(name)?.to_str().map_err(|_| ());
    Some(raw.and_then(|raw| {
        percent_decode_str(raw)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| ())
    }))
}

pub(crate) fn identity(
    headers: &HeaderMap,
    max_username_chars: usize,
) -> Result<Identity, ApiError> {
    let user_id = match decoded_header(headers, USER_ID_HEADER) {
        Some(Ok(id)) if valid_user_id(&id) => id,
        _ => return Err(ApiError::MissingUser),
    };
    let username = match decoded_header(headers, USERNAME_HEADER) {
        None => None,
        Some(Ok(name)) => chat_proto::client::display_name(&name, max_username_chars),
        Some(Err(())) => return Err(ApiError::BadUsername),
    };
    Ok(Identity {
        user_id: user_id.into(),
        username: username.map(Into::into),
    })
}

async fn websocket(
    State(shared): State<Arc<Shared>>,
    Extension(slot): Extension<ConnectionSlot>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    authorize(&shared, &headers)?;
    let identity = identity(&headers, shared.config.limits.proto.max_username_chars)?;
    let upgrade = upgrade.map_err(|_| ApiError::NotWebSocket)?;
    if shared.shutdown.is_cancelled() {
        return Err(ApiError::ShuttingDown);
    }
    let limits = &shared.config.limits;
    let task_shared = shared.clone();
    let response = upgrade
        // Small buffers: most connections are idle most of the time, and
        // frames are at most `max_frame_bytes` anyway.
        .read_buffer_size(512)
        // Flushes go out in pieces of about this size: fewer, larger writes
        // are what fan-out capacity depends on (2 KiB gave 55% of the
        // capacity 8 KiB gives); an idle client keeps only what its
        // largest burst needed.
        .write_buffer_size(8 * 1024)
        // No cap on the write buffer: a cap is a frame size the server
        // could build (a history page, a long system message) and then fail
        // to write, losing the connection. What the writer feeds it comes
        // from the outbound queue, which is bounded in bytes.
        .max_frame_size(limits.max_frame_bytes)
        .max_message_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| {
            // The connection gets a task of its own, sized for its own
            // future: the task that performed the upgrade ends here and
            // frees its larger state, which idle connections would
            // otherwise carry for their whole life.
            // Debug-formatted: ids are user-controlled, and escaping keeps a
            // `\n` in one from forging log lines.
            let span = tracing::info_span!("conn", user = ?identity.user_id);
            let tracker = task_shared.connections.clone();
            tracker.spawn(tracing::Instrument::instrument(
                async move {
                    crate::connection::serve(socket, identity, task_shared).await;
                    // The socket counted under the connection cap until now.
                    drop(slot);
                },
                span,
            ));
            std::future::ready(())
        });
    Ok(response)
}

async fn system_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<SystemMessageRequest>, JsonRejection>,
) -> Result<Json<SystemMessageResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let Json(body) = body.map_err(|rejection| ApiError::BadBody(rejection.body_text()))?;
    let limits = &shared.config.limits.proto;
    let room_id = RoomId::parse(&body.room_id, limits).map_err(ApiError::Invalid)?;
    let message =
        chat_proto::client::message_text(body.message, limits).map_err(ApiError::Invalid)?;
    // Stored like a user's message, taking the room's next seq: members
    // who were away get it in recovery and history.
    let new = NewMessage {
        id: new_id(),
        room_id,
        user_id: MODERATOR_USER.into(),
        username: MODERATOR_USER.into(),
        message,
        timestamp_ms: chat_proto::time::now_millis(),
        client_id: None,
        kind: MessageKind::System,
        attachments: Vec::new(),
    };
    let Delivered { event, reached } = submit(&shared, NewEvent::Message(new)).await?;
    let RoomEvent::Message(message) = event else {
        unreachable!("a message is stored as a message");
    };
    Ok(Json(SystemMessageResponse {
        delivered: reached,
        id: message.id,
        seq: message.seq,
    }))
}

/// Moderation: deletes any message, shown to the room as deleted by
/// `system`.
async fn delete_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((room_id, message_id)): Path<(String, String)>,
) -> Result<Json<DeletedResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let room_id =
        RoomId::parse(&room_id, &shared.config.limits.proto).map_err(ApiError::Invalid)?;
    let message_id = MessageId::parse(message_id).map_err(ApiError::Invalid)?;
    let deletion = NewDeletion {
        id: new_id(),
        room_id,
        message_id: message_id.into_string(),
        by: Actor::Moderator,
        at_ms: chat_proto::time::now_millis(),
    };
    let Delivered { event, reached } = submit(&shared, NewEvent::Delete(deletion)).await?;
    let RoomEvent::Deleted(deletion) = event else {
        unreachable!("a deletion is stored as a deletion");
    };
    Ok(Json(DeletedResponse {
        room_id: deletion.room_id,
        message_id: deletion.message_id,
        seq: deletion.seq,
        delivered: reached,
    }))
}

/// Commits an event from the internal API and waits for the outcome.
async fn submit(shared: &Shared, event: NewEvent) -> Result<Delivered, ApiError> {
    let (reply, outcome) = tokio::sync::oneshot::channel();
    if !shared
        .sequencer
        .submit(event, Origin::Api(reply), None)
        .await
    {
        return Err(ApiError::ShuttingDown);
    }
    match outcome.await {
        Ok(Ok(delivered)) => Ok(delivered),
        Ok(Err(NotStored::Refused(Refusal::Rejected(_)))) => Err(ApiError::Invalid(
            ProtoError::new(ErrorCode::InvalidMessage, "the message store refused it"),
        )),
        Ok(Err(NotStored::Refused(_))) => Err(ApiError::NotFound),
        Ok(Err(NotStored::Unavailable)) => Err(ApiError::Store),
        Err(_) => Err(ApiError::ShuttingDown),
    }
}

async fn stats(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<StatsResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let here = shared.hub.stats();
    let node = NodeStats {
        connected_users: here.connected_users,
        connections: here.connections,
        rooms: here.rooms,
    };
    let Some(cluster) = &shared.cluster else {
        return Ok(Json(StatsResponse {
            connected_users: node.connected_users,
            connections: node.connections,
            rooms: node.rooms,
            node: None,
        }));
    };
    // Over every node; this node's own when Redis cannot say.
    let (connected_users, connections, rooms) =
        cluster
            .stats()
            .await
            .unwrap_or((node.connected_users, node.connections, node.rooms));
    Ok(Json(StatsResponse {
        connected_users,
        connections,
        rooms,
        node: Some(node),
    }))
}

async fn history(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let who = identity(&headers, shared.config.limits.proto.max_username_chars)?;
    let limits = &shared.config.limits.proto;
    let room_id = RoomId::parse(&room_id, limits).map_err(ApiError::Invalid)?;
    admit(&shared, &room_id, &who).await?;
    let Query(query) = query
        .map_err(|_| ApiError::BadBody("before and limit must be non-negative integers".into()))?;
    let limit =
        chat_proto::client::history_limit_value(query.limit, limits).map_err(ApiError::Invalid)?;
    let page = shared
        .history_page(&room_id, query.before, limit)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "history request failed");
            ApiError::Store
        })?;
    Ok(Json(HistoryResponse {
        room_id: room_id.as_str().to_owned(),
        messages: page.messages,
        has_more: page.has_more,
    }))
}

async fn receipts(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
) -> Result<Json<ReceiptsResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let who = identity(&headers, shared.config.limits.proto.max_username_chars)?;
    let room_id =
        RoomId::parse(&room_id, &shared.config.limits.proto).map_err(ApiError::Invalid)?;
    admit(&shared, &room_id, &who).await?;
    let receipts = shared.store.receipts(&room_id).await.map_err(|error| {
        tracing::warn!(%error, "receipts request failed");
        ApiError::Store
    })?;
    Ok(Json(ReceiptsResponse {
        room_id: room_id.as_str().to_owned(),
        receipts,
    }))
}

/// Members-only rooms answer their members only, and say nothing else to
/// anyone else (not even whether the room exists).
pub(crate) async fn admit(
    shared: &Shared,
    room_id: &RoomId,
    who: &Identity,
) -> Result<(), ApiError> {
    if !room_id.is_members_only() {
        return Ok(());
    }
    match shared.store.is_member(room_id, &who.user_id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::Forbidden),
        Err(error) => Err(store_error(error)),
    }
}

pub(crate) fn store_error(error: crate::store::StoreError) -> ApiError {
    tracing::warn!(%error, "store request failed");
    ApiError::Store
}

/// A room whose members the application manages (`private:`), and a user
/// id from the path.
fn private_room(shared: &Shared, room_id: &str, user_id: &str) -> Result<RoomId, ApiError> {
    let room_id = RoomId::parse(room_id, &shared.config.limits.proto).map_err(ApiError::Invalid)?;
    if room_id.access() != RoomAccess::Private {
        return Err(ApiError::Invalid(ProtoError::new(
            ErrorCode::InvalidRoom,
            "only private: rooms have members to manage (a dm: room's are its two participants)",
        )));
    }
    check_user_id(user_id)?;
    Ok(room_id)
}

fn check_user_id(user_id: &str) -> Result<(), ApiError> {
    if valid_user_id(user_id) {
        Ok(())
    } else {
        Err(ApiError::Invalid(ProtoError::new(
            ErrorCode::InvalidUser,
            "user ids are 1-128 characters, not blank, without control characters",
        )))
    }
}

async fn add_member(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((room_id, user_id)): Path<(String, String)>,
) -> Result<Json<MembershipResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let room_id = private_room(&shared, &room_id, &user_id)?;
    let change = Change::AddMember {
        room: room_id.clone(),
        user: user_id.clone(),
        at_ms: chat_proto::time::now_millis(),
    };
    let changed = shared.store.change(change).await.map_err(store_error)?;
    Ok(Json(MembershipResponse {
        room_id: room_id.as_str().to_owned(),
        user_id,
        member: true,
        changed,
    }))
}

/// Takes effect at once: the user's connections leave the room.
async fn remove_member(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((room_id, user_id)): Path<(String, String)>,
) -> Result<Json<MembershipResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let room_id = private_room(&shared, &room_id, &user_id)?;
    let change = Change::RemoveMember {
        room: room_id.clone(),
        user: user_id.clone(),
    };
    let changed = shared.store.change(change).await.map_err(store_error)?;
    shared.bus.remove_member(&room_id, &user_id);
    Ok(Json(MembershipResponse {
        room_id: room_id.as_str().to_owned(),
        user_id,
        member: false,
        changed,
    }))
}

async fn list_members(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
) -> Result<Json<MembersResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let room_id =
        RoomId::parse(&room_id, &shared.config.limits.proto).map_err(ApiError::Invalid)?;
    if !room_id.is_members_only() {
        return Err(ApiError::Invalid(ProtoError::new(
            ErrorCode::InvalidRoom,
            "public rooms have no member list (chat.members lists who is connected)",
        )));
    }
    let members = shared.store.members(&room_id).await.map_err(store_error)?;
    Ok(Json(MembersResponse {
        room_id: room_id.as_str().to_owned(),
        members,
    }))
}

async fn block(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((user_id, blocked_id)): Path<(String, String)>,
) -> Result<Json<BlockResponse>, ApiError> {
    set_block(&shared, &headers, user_id, blocked_id, true).await
}

async fn unblock(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((user_id, blocked_id)): Path<(String, String)>,
) -> Result<Json<BlockResponse>, ApiError> {
    set_block(&shared, &headers, user_id, blocked_id, false).await
}

/// `user_id` takes no direct messages from `blocked_id` (or again does).
async fn set_block(
    shared: &Shared,
    headers: &HeaderMap,
    user_id: String,
    blocked_id: String,
    blocked: bool,
) -> Result<Json<BlockResponse>, ApiError> {
    authorize(shared, headers)?;
    check_user_id(&user_id)?;
    check_user_id(&blocked_id)?;
    let change = if blocked {
        Change::Block {
            user: user_id.clone(),
            blocked: blocked_id.clone(),
            at_ms: chat_proto::time::now_millis(),
        }
    } else {
        Change::Unblock {
            user: user_id.clone(),
            blocked: blocked_id.clone(),
        }
    };
    let changed = shared.store.change(change).await.map_err(store_error)?;
    Ok(Json(BlockResponse {
        user_id,
        blocked_id,
        blocked,
        changed,
    }))
}

/// The user's direct conversations, as `chat.dm.list`.
async fn dms(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<DmListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DmListResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let who = identity(&headers, shared.config.limits.proto.max_username_chars)?;
    let Query(query) = query.map_err(|_| {
        ApiError::BadBody("before must be an ISO timestamp, limit an integer".into())
    })?;
    let before = match query.before.as_deref() {
        None => None,
        Some(text) => Some(
            chat_proto::time::parse_iso_millis(text)
                .ok_or_else(|| ApiError::BadBody("before must be an ISO timestamp".into()))?,
        ),
    };
    let limit = chat_proto::client::dm_list_limit(query.limit).map_err(ApiError::Invalid)?;
    let page = shared
        .store
        .dm_page(&who.user_id, before, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(DmListResponse {
        conversations: page.conversations,
        has_more: page.has_more,
    }))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&shared, &headers)?;
    Ok((
        [("content-type", "text/plain; version=0.0.4")],
        shared.prometheus.render(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_are_percent_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", "u%201".parse().unwrap());
        headers.insert("x-username", "Jos%C3%A9".parse().unwrap());
        let who = identity(&headers, 64).unwrap();
        assert_eq!(&*who.user_id, "u 1");
        assert_eq!(who.username.as_deref(), Some("José"));
    }

    #[test]
    fn identity_requires_a_sane_user() {
        let mut headers = HeaderMap::new();
        assert!(matches!(identity(&headers, 64), Err(ApiError::MissingUser)));
        headers.insert("x-user-id", "".parse().unwrap());
        assert!(matches!(identity(&headers, 64), Err(ApiError::MissingUser)));
        headers.insert("x-user-id", "a".repeat(129).parse().unwrap());
        assert!(matches!(identity(&headers, 64), Err(ApiError::MissingUser)));
        headers.insert("x-user-id", "%FF".parse().unwrap());
        assert!(matches!(identity(&headers, 64), Err(ApiError::MissingUser)));
        headers.insert("x-user-id", "a%0Aforged".parse().unwrap());
        assert!(matches!(identity(&headers, 64), Err(ApiError::MissingUser)));
        headers.insert("x-user-id", "%00".parse().unwrap());
        assert!(matches!(identity(&headers, 64), Err(ApiError::MissingUser)));
    }
}
