//! Files: uploads streamed to the service as they arrive, downloads
//! streamed back, neither ever held whole. The gateway decides who may
//! upload (authentication and the per-user request rate, by the `Identity`
//! extractor; Origin) and refuses a body that cannot fit before reading
//! it; the service decides the rest (room membership, types, limits while
//! reading, who may download what).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::Response;
use chat_edge::EarlyEnd;
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONNECTION, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, IF_RANGE, ORIGIN, RANGE,
    RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::admission::{origin_allowed, ClientView};
use crate::auth::{cookie_token, Identity};
use crate::metrics::rejected;
use crate::rejection::Rejection;
use crate::state::Gateway;
use crate::upstream::percent_encode;

/// What a client's upload request passes on to the service.
const UPLOAD_HEADERS: [HeaderName; 2] = [CONTENT_TYPE, CONTENT_LENGTH];
/// What a client's download request passes on: conditions and ranges.
const DOWNLOAD_HEADERS: [HeaderName; 3] = [IF_NONE_MATCH, RANGE, IF_RANGE];
/// What the service's answer passes on to the client: the download
/// headers `chat_files` planned (type, safety, caching, ranges).
const ANSWER_HEADERS: [HeaderName; 10] = [
    CONTENT_TYPE,
    CONTENT_LENGTH,
    CONTENT_RANGE,
    ACCEPT_RANGES,
    ETAG,
    CACHE_CONTROL,
    CONTENT_DISPOSITION,
    CONTENT_SECURITY_POLICY,
    X_CONTENT_TYPE_OPTIONS,
    RETRY_AFTER,
];

/// `POST /chat/api/rooms/{roomId}/files`: a `multipart/form-data` body with
/// one `file` part, streamed to the service's `/api/rooms/{roomId}/files`.
///
/// Cross-site requests are refused like sockets are: an `Origin` must be
/// this gateway or listed. A request without one is a browser's only when
/// the browser sends its cookie (browsers send `Origin` with every POST a
/// page makes): authenticated by cookie, it is refused; with a bearer token
/// (which no other site can make a browser send) it is a program's, and
/// accepted.
pub(crate) async fn upload(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    identity: Identity,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Rejection> {
    let Path(room_id) = path.map_err(|_| Rejection::NotFound)?;
    let (parts, body) = request.into_parts();
    let client = ClientView::of(peer.ip(), &parts.headers, &gateway.config.trusted_proxies);
    if parts.headers.contains_key(ORIGIN) {
        if !origin_allowed(
            &parts.headers,
            &gateway.config.allowed_origins,
            client.scheme,
        ) {
            rejected("origin");
            return Err(Rejection::OriginNotAllowed);
        }
    } else if cookie_token(&parts.headers).is_some() {
        rejected("origin");
        return Err(Rejection::OriginRequired);
    }
    let limits = &gateway.config.limits;
    let body_limit = chat_proto::limits::upload_body_limit(limits.max_upload_bytes);
    let too_large = Rejection::FileTooLarge {
        limit: limits.max_upload_bytes,
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > body_limit) {
        rejected("file_too_large");
        return Err(too_large);
    }
    // The service may answer before it has read the whole body (a refusal):
    // the rest of the client's is then read and dropped, up to the limit.
    let (body, watch) = chat_edge::read_apart(body, body_limit, limits.upload_idle_timeout);
    let path = format!("/api/rooms/{}/files", percent_encode(&room_id));
    let answer = gateway
        .upstream
        .forward(
            &identity,
            Method::POST,
            &path,
            picked(&parts.headers, &UPLOAD_HEADERS),
            Some(reqwest::Body::wrap_stream(body)),
        )
        .await;
    match answer {
        Ok(answer) => Ok(streamed(answer)),
        // The client's body, not the service, ended the request.
        Err(error) => match watch.early_end() {
            Some(EarlyEnd::OverLimit) => {
                rejected("file_too_large");
                Err(too_large)
            }
            Some(EarlyEnd::Stalled) => Err(Rejection::UploadStalled),
            None => Err(upstream_failed(error)),
        },
    }
}

/// `GET /chat/api/files/{id}`: the file, for those the service lets see it.
pub(crate) async fn download(
    State(gateway): State<Gateway>,
    identity: Identity,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Rejection> {
    let Path(file_id) = path.map_err(|_| Rejection::NotFound)?;
    fetch(&gateway, &identity, &file_id, "", request.headers()).await
}

/// `GET /chat/api/files/{id}/thumbnail`: an image's thumbnail.
pub(crate) async fn thumbnail(
    State(gateway): State<Gateway>,
    identity: Identity,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Rejection> {
    let Path(file_id) = path.map_err(|_| Rejection::NotFound)?;
    fetch(
        &gateway,
        &identity,
        &file_id,
        "/thumbnail",
        request.headers(),
    )
    .await
}

async fn fetch(
    gateway: &Gateway,
    identity: &Identity,
    file_id: &str,
    suffix: &str,
    headers: &HeaderMap,
) -> Result<Response, Rejection> {
    let path = format!(
        "{}/{}{suffix}",
        chat_proto::api::SERVICE_FILES_PATH,
        percent_encode(file_id)
    );
    let answer = gateway
        .upstream
        .forward(
            identity,
            Method::GET,
            &path,
            picked(headers, &DOWNLOAD_HEADERS),
            None,
        )
        .await
        .map_err(upstream_failed)?;
    Ok(streamed(answer))
}

fn upstream_failed(error: crate::upstream::UpstreamError) -> Rejection {
    tracing::warn!(side = "upstream", %error, "file request failed");
    metrics::counter!("gateway_upstream_errors_total", "kind" => error.kind()).increment(1);
    Rejection::Upstream(error)
}

fn picked(headers: &HeaderMap, names: &[HeaderName]) -> HeaderMap {
    let mut picked = HeaderMap::new();
    for name in names {
        if let Some(value) = headers.get(name) {
            picked.insert(name.clone(), value.clone());
        }
    }
    picked
}

/// The service's answer as it comes: its status, the headers a client may
/// see, its body streamed. A refusal of a body too large also closes the
/// client's connection, so the rest of that body is not read.
fn streamed(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let headers = picked(answer.headers(), &ANSWER_HEADERS);
    let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
