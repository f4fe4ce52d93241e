//! Every way the gateway refuses a request, as `{"error", "code"}` JSON.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{CONNECTION, RETRY_AFTER};
use http::StatusCode;

use crate::auth::AuthFailure;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Client side: the caller could not be authenticated.
    #[error(transparent)]
    Unauthorized(AuthFailure),
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// An upload authenticated by cookie without an `Origin` (browsers
    /// always send one): a program uses a bearer token instead.
    #[error("an upload authenticated by the cookie must carry an Origin header; programs send Authorization: Bearer")]
    OriginRequired,
    /// An upload whose declared or actual length cannot fit the limit.
    #[error("the file is larger than the limit of {limit} bytes")]
    FileTooLarge { limit: u64 },
    #[error("the upload stalled: nothing arrived for too long")]
    UploadStalled,
    #[error("too many new connections from this address")]
    ConnectRateLimited { retry_after_secs: u64 },
    #[error("too many requests: slow down")]
    RequestRateLimited { retry_after_secs: u64 },
    #[error("too many open connections for this user")]
    TooManyUserConnections,
    #[error("this endpoint needs a WebSocket upgrade (GET with Upgrade: websocket, version 13)")]
    NotWebSocket,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("not found")]
    NotFound,
    /// Upstream side: the chat service could not serve the request.
    #[error(transparent)]
    Upstream(UpstreamError),
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("the gateway is at its connection limit, try again shortly")]
    AtCapacity,
}

impl Rejection {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Rejection::Unauthorized(failure) => (StatusCode::UNAUTHORIZED, failure.code()),
            Rejection::OriginNotAllowed => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            Rejection::OriginRequired => (StatusCode::FORBIDDEN, "origin_required"),
            Rejection::FileTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "file_too_large"),
            Rejection::UploadStalled => (StatusCode::REQUEST_TIMEOUT, "upload_stalled"),
            Rejection::ConnectRateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "connect_rate_limited")
            }
            Rejection::RequestRateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Rejection::TooManyUserConnections => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_connections")
            }
            Rejection::NotWebSocket => (StatusCode::BAD_REQUEST, "websocket_upgrade_required"),
            Rejection::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Rejection::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Rejection::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            Rejection::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Rejection::AtCapacity => (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections"),
        }
    }
}

impl Rejection {
    fn body(&self) -> serde_json::Value {
        let (_, code) = self.status_and_code();
        serde_json::json!({ "error": self.to_string(), "code": code })
    }

    /// The body, for the few refusals written before HTTP is being served.
    pub fn json_body(&self) -> String {
        self.body().to_string()
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        let body = Json(self.body());
        match self {
            Rejection::ConnectRateLimited { retry_after_secs }
            | Rejection::RequestRateLimited { retry_after_secs } => {
                (status, [(RETRY_AFTER, retry_after_secs.to_string())], body).into_response()
            }
            // The rest of the body is not read: the connection ends with this.
            Rejection::FileTooLarge { .. } | Rejection::UploadStalled => {
                (status, [(CONNECTION, "close")], body).into_response()
            }
            _ => (status, body).into_response(),
        }
    }
}
