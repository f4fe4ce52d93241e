//! HTTP surface. Only these routes exist: nothing else reaches the service.
//! Metrics are not among them: the binaries serve those on a loopback
//! listener of their own (`METRICS_ADDR`).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, Query, RawQuery, Request, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chat_edge::ConnectionSlot;
use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_TYPE, LOCATION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, SET_COOKIE, UPGRADE,
};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use hyper::upgrade::OnUpgrade;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::admission::{origin_allowed, ClientView};
use crate::auth::{mint_hs256_token, Identity, ACCESS_TOKEN_COOKIE};
use crate::config::JwtKey;
use crate::metrics::rejected;
use crate::rejection::Rejection;
use crate::relay::{serve, RelayContext};
use crate::state::Gateway;
use crate::upstream::RoomResource;

const CHAT_PAGE: &str = include_str!("../../../tests/webSocket/chat-test.html");

pub fn router(gateway: Gateway) -> Router {
    let mut router = Router::new()
        .route("/chat/ws", get(chat_ws))
        .route("/chat/api/rooms/{room_id}/{resource}", get(room_api))
        // Static beats the parameter: GET here is still the room API's 404.
        .route(
            "/chat/api/rooms/{room_id}/files",
            post(crate::files::upload).get(room_api),
        )
        .route("/chat/api/files/{file_id}", get(crate::files::download))
        .route(
            "/chat/api/files/{file_id}/thumbnail",
            get(crate::files::thumbnail),
        )
        .route("/chat/api/dms", get(dms))
        .route("/chat/api/rtc/ice-servers", get(crate::rtc::ice_servers))
        .route("/healthz", get(healthz))
        .route("/", get(chat_page))
        .route("/chat-test.html", get(chat_page));
    if gateway.config.dev_login {
        router = router.route("/dev/login", get(dev_login));
    }
    router.fallback(not_found).with_state(gateway)
}

/// The WebSocket entry: admission phases in order of cost, the upstream
/// socket opened before the client's 101, then one relay task.
async fn chat_ws(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(connection): Extension<ConnectionSlot>,
    request: Request,
) -> Result<Response, Rejection> {
    let (mut parts, _body) = request.into_parts();
    let accept_key = websocket_accept_key(&parts)?;
    if *gateway.shutdown.borrow() {
        return Err(Rejection::ShuttingDown);
    }

    // Per-IP rate first so that token guessing is throttled too.
    let client = ClientView::of(peer.ip(), &parts.headers, &gateway.config.trusted_proxies);
    if let Err(retry_after_secs) = gateway.connect_limiter.check(client.ip) {
        rejected("connect_rate");
        return Err(Rejection::ConnectRateLimited { retry_after_secs });
    }
    if !origin_allowed(
        &parts.headers,
        &gateway.config.allowed_origins,
        client.scheme,
    ) {
        rejected("origin");
        return Err(Rejection::OriginNotAllowed);
    }
    let identity = gateway.authenticate(&parts.headers)?;
    let limits = &gateway.config.limits;
    let Some(slot) = gateway
        .user_connections
        .try_acquire(&identity.user_id, limits.max_connections_per_user)
        .await
    else {
        rejected("user_cap");
        return Err(Rejection::TooManyUserConnections);
    };
    let on_upgrade = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or(Rejection::NotWebSocket)?;

    // Each failed node is logged and counted there.
    let (upstream, node) = gateway
        .upstream
        .connect(&identity)
        .await
        .map_err(Rejection::Upstream)?;

    let context = RelayContext {
        connection,
        node,
        expires_at: identity
            .expires_at
            .saturating_add(gateway.config.jwt.leeway.as_secs()),
        slot,
        gateway: gateway.clone(),
    };
    tokio::spawn(serve(on_upgrade, upstream, context));

    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, accept_key)
        .body(Body::empty())
        .expect("static response parts are valid"))
}

/// RFC 6455 opening-handshake checks; returns the `Sec-WebSocket-Accept` value.
fn websocket_accept_key(parts: &Parts) -> Result<String, Rejection> {
    let headers = &parts.headers;
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let version_ok = headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    match headers.get(SEC_WEBSOCKET_KEY) {
        Some(key)
            if parts.method == Method::GET
                && has_token(CONNECTION, "upgrade")
                && has_token(UPGRADE, "websocket")
                && version_ok =>
        {
            Ok(derive_accept_key(key.as_bytes()))
        }
        _ => Err(Rejection::NotWebSocket),
    }
}

/// A room's history or read receipts over HTTP: the service's answer
/// (status and JSON) as it is.
async fn room_api(
    State(gateway): State<Gateway>,
    identity: Identity,
    path: Result<Path<(String, RoomResource)>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, Rejection> {
    let Path((room_id, resource)) = path.map_err(|_| Rejection::NotFound)?;
    let answer = gateway
        .upstream
        .room_api(&identity, &room_id, resource, query.as_deref())
        .await;
    upstream_answer(answer)
}

/// The user's direct conversations, as the service lists them.
async fn dms(
    State(gateway): State<Gateway>,
    identity: Identity,
    RawQuery(query): RawQuery,
) -> Result<Response, Rejection> {
    let answer = gateway
        .upstream
        .api_get(&identity, "/api/dms".to_owned(), query.as_deref())
        .await;
    upstream_answer(answer)
}

/// The service's answer (status and JSON) as it is, or why it failed.
fn upstream_answer(
    answer: Result<(StatusCode, bytes::Bytes), crate::upstream::UpstreamError>,
) -> Result<Response, Rejection> {
    let (status, body) = answer.map_err(|e| {
        tracing::warn!(side = "upstream", error = %e, "API request failed");
        metrics::counter!("gateway_upstream_errors_total", "kind" => e.kind()).increment(1);
        Rejection::Upstream(e)
    })?;
    Ok((status, [(CONTENT_TYPE, "application/json")], body).into_response())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn chat_page() -> Html<&'static str> {
    Html(CHAT_PAGE)
}

async fn not_found() -> Rejection {
    Rejection::NotFound
}

#[derive(Deserialize)]
struct DevLoginQuery {
    user: String,
}

/// Development only: mint a cookie for any name. Mounted only when the
/// gateway runs with a generated secret.
async fn dev_login(
    State(gateway): State<Gateway>,
    Query(query): Query<DevLoginQuery>,
) -> Result<(StatusCode, HeaderMap), Rejection> {
    let user = query.user.trim();
    if user.is_empty() || user.chars().count() > 64 || user.chars().any(char::is_control) {
        return Err(Rejection::BadRequest(
            "user must be 1-64 printable characters",
        ));
    }
    let JwtKey::Secret(secret) = &gateway.config.jwt.key else {
        return Err(Rejection::NotFound);
    };
    let ttl = gateway.config.dev_login_ttl;
    let token = mint_hs256_token(secret, user, Some(user), ttl)
        .map_err(|_| Rejection::BadRequest("cannot sign token"))?;
    let cookie = format!(
        "{ACCESS_TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        ttl.as_secs()
    );
    let mut headers = HeaderMap::new();
    headers.insert(SET_COOKIE, cookie.parse().expect("token is header-safe"));
    headers.insert(LOCATION, "/".parse().expect("static"));
    headers.insert(CACHE_CONTROL, "no-store".parse().expect("static"));
    Ok((StatusCode::SEE_OTHER, headers))
}
