//! The chat service as seen from the gateway: its nodes' addresses, the
//! identity headers it trusts, the upstream WebSocket (on a healthy node,
//! the next one if that fails), the room endpoints and the health checks.

use std::time::Duration;

use chat_proto::api::{INTERNAL_KEY_HEADER, USERNAME_HEADER, USER_ID_HEADER};
use http::{HeaderName, HeaderValue, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::auth::Identity;
use crate::config::HealthCheck;
use crate::nodes::{Node, NodeLease, Nodes};
use crate::GatewayError;

/// What `/chat/api/rooms/{roomId}/...` may ask the service for, the same
/// under the service's `/api/rooms/{roomId}/...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomResource {
    /// History: `{roomId, messages, hasMore}`.
    Messages,
    /// Every member's read marker: `{roomId, receipts}`.
    Receipts,
}

impl RoomResource {
    fn path(self) -> &'static str {
        match self {
            RoomResource::Messages => "messages",
            RoomResource::Receipts => "receipts",
        }
    }
}

/// How long the service has to answer a request of the room API (and the
/// head of a download).
const API_ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// A 101 from the service is a few hundred bytes; anything this big is wrong.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

pub type UpstreamSocket = WebSocketStream<TcpStream>;

/// RFC 3986 unreserved characters stay, everything else becomes `%XX` of its
/// UTF-8 bytes: the service decodes ids and names such as "李雷" intact.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// Base URL of the chat service, e.g. `http://127.0.0.1:3002`.
#[derive(Debug, Clone)]
pub struct ServiceUrl {
    host: String,
    port: u16,
    base_path: String,
}

impl ServiceUrl {
    pub fn parse(text: &str) -> Result<ServiceUrl, GatewayError> {
        let invalid = |why: &str| GatewayError::Config(format!("CHAT_SERVICE_URL `{text}` {why}"));
        let uri: http::Uri = text.trim().parse().map_err(|_| invalid("is not a URL"))?;
        let default_port = match uri.scheme_str() {
            Some("http") | Some("ws") => 80,
            Some(_) => {
                return Err(invalid(
                    "must use http:// (the service is reached on a private network)",
                ))
            }
            None => return Err(invalid("needs a scheme, e.g. http://localhost:3002")),
        };
        let host = uri.host().ok_or_else(|| invalid("has no host"))?;
        Ok(ServiceUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(default_port),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// A comma-separated list of nodes (one is a list too); empty entries
    /// are ignored, a node listed twice is refused.
    pub fn parse_list(text: &str) -> Result<Vec<ServiceUrl>, GatewayError> {
        let mut urls: Vec<ServiceUrl> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let url = ServiceUrl::parse(entry)?;
            if urls
                .iter()
                .any(|known| known.to_string() == url.to_string())
            {
                return Err(GatewayError::Config(format!(
                    "CHAT_SERVICE_URL lists {url} twice"
                )));
            }
            urls.push(url);
        }
        if urls.is_empty() {
            return Err(GatewayError::Config(
                "CHAT_SERVICE_URL names no service, e.g. http://localhost:3002".into(),
            ));
        }
        Ok(urls)
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}{}{}", self.authority(), self.base_path, path)
    }
}

impl std::fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.base_path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("chat service unreachable: {0}")]
    Unreachable(std::io::Error),
    #[error("chat service did not answer in time")]
    Timeout,
    #[error("chat service refused the WebSocket handshake with status {0}")]
    Refused(StatusCode),
    #[error("chat service WebSocket handshake failed: {0}")]
    Handshake(String),
    #[error("chat service request failed: {0}")]
    Http(reqwest::Error),
}

impl UpstreamError {
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable(_) => "unreachable",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Refused(_) => "refused",
            UpstreamError::Handshake(_) => "handshake",
            UpstreamError::Http(_) => "http",
        }
    }

    /// Whether the node could not be reached at all. A node that answers,
    /// even with a refusal (at its connection cap, say), is up.
    fn node_is_down(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_)
            | UpstreamError::Timeout
            | UpstreamError::Handshake(_) => true,
            UpstreamError::Refused(_) => false,
            UpstreamError::Http(e) => e.is_connect(),
        }
    }
}

/// Talks to the service on behalf of authenticated users.
pub struct Upstream {
    nodes: Nodes,
    internal_api_key: HeaderValue,
    http: reqwest::Client,
    /// For files: no overall deadline, since a body takes as long as the
    /// client takes to send or read it.
    files: reqwest::Client,
    connect_timeout: Duration,
    health_timeout: Duration,
}

/// Frames from the service are trusted and may be large (history pages);
/// buffers stay small because most frames are.
pub fn upstream_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

impl Upstream {
    pub fn new(
        urls: Vec<ServiceUrl>,
        internal_api_key: &str,
        connect_timeout: Duration,
        health: &HealthCheck,
    ) -> Result<Upstream, GatewayError> {
        if urls.is_empty() {
            return Err(GatewayError::Config(
                "no chat service node configured".into(),
            ));
        }
        let mut internal_api_key = HeaderValue::from_str(internal_api_key)
            .map_err(|_| GatewayError::Config("INTERNAL_API_KEY must be printable ASCII".into()))?;
        internal_api_key.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(API_ANSWER_TIMEOUT)
            .build()
            .map_err(|e| GatewayError::Config(format!("cannot build HTTP client: {e}")))?;
        let files = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| GatewayError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Upstream {
            nodes: Nodes::new(urls, health.unhealthy_after),
            internal_api_key,
            http,
            files,
            connect_timeout,
            health_timeout: health.timeout,
        })
    }

    /// The only headers the service sees: built from the verified identity,
    /// never copied from the client.
    fn identity_headers(&self, identity: &Identity) -> Vec<(HeaderName, HeaderValue)> {
        let encoded = |text: &str| {
            HeaderValue::from_str(&percent_encode(text)).expect("percent-encoded text is ASCII")
        };
        let mut headers = vec![
            (
                HeaderName::from_static(INTERNAL_KEY_HEADER),
                self.internal_api_key.clone(),
            ),
            (
                HeaderName::from_static(USER_ID_HEADER),
                encoded(&identity.user_id),
            ),
        ];
        if let Some(name) = &identity.username {
            headers.push((HeaderName::from_static(USERNAME_HEADER), encoded(name)));
        }
        headers
    }

    /// Opens the service's `/ws` for this user on the node with the fewest
    /// sockets, the next one if that fails; done before the client gets its
    /// 101 so that no node being reachable is an honest 502 (the last
    /// node's error).
    pub async fn connect(
        &self,
        identity: &Identity,
    ) -> Result<(UpstreamSocket, NodeLease), UpstreamError> {
        let mut tried = Vec::new();
        let mut last_error = None;
        while let Some(lease) = self.nodes.lease(&tried) {
            tried.push(lease.index());
            let node = lease.node();
            match self.connect_node(&node.url, identity).await {
                Ok(socket) => return Ok((socket, lease)),
                Err(e) => {
                    tracing::warn!(
                        user = ?identity.user_id,
                        node = %node.label(),
                        side = "upstream",
                        error = %e,
                        "cannot open chat service socket"
                    );
                    metrics::counter!("gateway_upstream_errors_total", "kind" => e.kind())
                        .increment(1);
                    if e.node_is_down() {
                        node.mark_unhealthy(&e.to_string());
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("Upstream::new refuses an empty node list"))
    }

    async fn connect_node(
        &self,
        url: &ServiceUrl,
        identity: &Identity,
    ) -> Result<UpstreamSocket, UpstreamError> {
        let connecting = async {
            let tcp = TcpStream::connect((url.host.as_str(), url.port))
                .await
                .map_err(UpstreamError::Unreachable)?;
            // Chat frames are small and latency-sensitive.
            let _ = tcp.set_nodelay(true);
            self.handshake(url, tcp, identity).await
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }

    /// The RFC 6455 client handshake, done here rather than by tungstenite
    /// because its handshake buffer (4 KiB and more) would live on as the
    /// socket's read buffer for the whole connection.
    async fn handshake(
        &self,
        url: &ServiceUrl,
        mut tcp: TcpStream,
        identity: &Identity,
    ) -> Result<UpstreamSocket, UpstreamError> {
        let key = generate_key();
        let mut request = format!(
            "GET {}/ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n",
            url.base_path,
            url.authority()
        );
        for (name, value) in self.identity_headers(identity) {
            let value = value.to_str().expect("identity headers are ASCII");
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let io_error = |e: std::io::Error| UpstreamError::Handshake(e.to_string());
        tcp.write_all(request.as_bytes()).await.map_err(io_error)?;

        let mut head = Vec::with_capacity(256);
        let head_len = loop {
            let mut chunk = [0u8; 256];
            let read = tcp.read(&mut chunk).await.map_err(io_error)?;
            if read == 0 {
                return Err(UpstreamError::Handshake("closed during handshake".into()));
            }
            head.extend_from_slice(&chunk[..read]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&head) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    if status != 101 {
                        let status = StatusCode::from_u16(status)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        return Err(UpstreamError::Refused(status));
                    }
                    let expected = derive_accept_key(key.as_bytes());
                    let accepted = response.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("sec-websocket-accept")
                            && h.value == expected.as_bytes()
                    });
                    if !accepted {
                        return Err(UpstreamError::Handshake("bad Sec-WebSocket-Accept".into()));
                    }
                    break len;
                }
                Ok(httparse::Status::Partial) if head.len() < MAX_RESPONSE_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(UpstreamError::Handshake("response head too large".into()))
                }
                Err(e) => return Err(UpstreamError::Handshake(e.to_string())),
            }
        };
        let early_frames = head.split_off(head_len);
        let config = Some(upstream_ws_config());
        Ok(if early_frames.is_empty() {
            WebSocketStream::from_raw_socket(tcp, Role::Client, config).await
        } else {
            WebSocketStream::from_partially_read(tcp, early_frames, Role::Client, config).await
        })
    }

    /// `GET /api/rooms/{roomId}/messages` (or `receipts`) for this user on
    /// a healthy node; these are stateless reads, so a node that cannot be
    /// reached is marked and the next one asked.
    /// A room's history or receipts: the service's answer as it is.
    pub async fn room_api(
        &self,
        identity: &Identity,
        room_id: &str,
        resource: RoomResource,
        query: Option<&str>,
    ) -> Result<(StatusCode, bytes::Bytes), UpstreamError> {
        let path = format!("/api/rooms/{}/{}", percent_encode(room_id), resource.path());
        self.api_get(identity, path, query).await
    }

    /// A read of the service's user API (`/api/...`) for the user, on any
    /// healthy node (the next one if a node cannot be reached): the
    /// service's status and JSON body as they are.
    pub async fn api_get(
        &self,
        identity: &Identity,
        mut path: String,
        query: Option<&str>,
    ) -> Result<(StatusCode, bytes::Bytes), UpstreamError> {
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            path.push('?');
            path.push_str(query);
        }
        let mut tried = Vec::new();
        loop {
            let (index, node) = self
                .nodes
                .any(&tried)
                .expect("Upstream::new refuses an empty node list");
            tried.push(index);
            match self.room_api_on(node, identity, &path).await {
                Err(e) if self.try_elsewhere(node, &e, true, &tried, "room API") => {}
                answered => return answered,
            }
        }
    }

    /// A file request for the user on any healthy node, its body (an
    /// upload) streamed as it comes; the answer's head once it arrives, its
    /// body left to stream. A request without a body goes to the next node
    /// when one cannot be reached, and waits for the answer's head as long
    /// as the room API does; one with a body cannot be sent twice.
    pub async fn forward(
        &self,
        identity: &Identity,
        method: http::Method,
        path: &str,
        headers: http::HeaderMap,
        body: Option<reqwest::Body>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut body = body;
        let mut tried = Vec::new();
        loop {
            let (index, node) = self
                .nodes
                .any(&tried)
                .expect("Upstream::new refuses an empty node list");
            tried.push(index);
            let mut request = self
                .files
                .request(method.clone(), node.url.http_url(path))
                .headers(headers.clone());
            for (name, value) in self.identity_headers(identity) {
                request = request.header(name, value);
            }
            let retriable = body.is_none();
            let sent = match body.take() {
                Some(body) => request.body(body).send().await,
                None => match tokio::time::timeout(API_ANSWER_TIMEOUT, request.send()).await {
                    Ok(sent) => sent,
                    Err(_) => return Err(UpstreamError::Timeout),
                },
            };
            match sent.map_err(UpstreamError::Http) {
                Err(e) if self.try_elsewhere(node, &e, retriable, &tried, "file") => {}
                answered => return answered,
            }
        }
    }

    /// After a request to `node` failed with `e`: a node that could not be
    /// reached is marked unhealthy, and the request goes to another node if
    /// it may be sent again and one is left to try.
    fn try_elsewhere(
        &self,
        node: &Node,
        e: &UpstreamError,
        may_resend: bool,
        tried: &[usize],
        request: &'static str,
    ) -> bool {
        if !e.node_is_down() {
            return false;
        }
        node.mark_unhealthy(&e.to_string());
        let elsewhere = may_resend && tried.len() < self.nodes.len();
        if elsewhere {
            tracing::warn!(node = %node.label(), side = "upstream", error = %e, request, "request failed; trying another node");
            metrics::counter!("gateway_upstream_errors_total", "kind" => e.kind()).increment(1);
        }
        elsewhere
    }

    async fn room_api_on(
        &self,
        node: &Node,
        identity: &Identity,
        path: &str,
    ) -> Result<(StatusCode, bytes::Bytes), UpstreamError> {
        let mut request = self.http.get(node.url.http_url(path));
        for (name, value) in self.identity_headers(identity) {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(UpstreamError::Http)?;
        let status = response.status();
        let body = response.bytes().await.map_err(UpstreamError::Http)?;
        Ok((status, body))
    }

    /// One round of health checks, every node at once.
    pub async fn check_health(&self) {
        let checks = self.nodes.iter().map(|node| async move {
            match self.check_node(node).await {
                Ok(()) => node.check_passed(),
                Err(reason) => node.check_failed(&reason),
            }
        });
        futures_util::future::join_all(checks).await;
    }

    async fn check_node(&self, node: &Node) -> Result<(), String> {
        let response = self
            .http
            .get(node.url.http_url("/healthz"))
            .timeout(self.health_timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    return format!("no answer within {:?}", self.health_timeout);
                }
                // The innermost cause says what happened ("Connection refused").
                let mut innermost = None;
                let mut cause = std::error::Error::source(&e);
                while let Some(next) = cause {
                    innermost = Some(next);
                    cause = next.source();
                }
                match innermost {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                }
            })?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(format!("/healthz answered {status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_is_percent_encoded() {
        assert_eq!(percent_encode("José"), "Jos%C3%A9");
        assert_eq!(percent_encode("李雷"), "%E6%9D%8E%E9%9B%B7");
        assert_eq!(percent_encode("a-b_c.d~e f"), "a-b_c.d~e%20f");
    }

    #[test]
    fn service_url_forms() {
        let url = ServiceUrl::parse("http://localhost:3002/").unwrap();
        assert_eq!(url.http_url("/x"), "http://localhost:3002/x");
        let url = ServiceUrl::parse("http://[::1]:9/chat").unwrap();
        assert_eq!(url.http_url("/ws"), "http://[::1]:9/chat/ws");
        assert!(ServiceUrl::parse("https://svc").is_err());
        assert!(ServiceUrl::parse("localhost:3002").is_err());
    }

    #[test]
    fn service_url_lists() {
        let one = ServiceUrl::parse_list("http://a:1").unwrap();
        assert_eq!(one.len(), 1);
        let nodes = ServiceUrl::parse_list(" http://a:1, http://b:2/ ,,http://[::1]:3").unwrap();
        let shown: Vec<String> = nodes.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["http://a:1", "http://b:2", "http://[::1]:3"]);
        assert!(ServiceUrl::parse_list("http://a:1,http://a:1/").is_err());
        assert!(ServiceUrl::parse_list(" , ").is_err());
        assert!(ServiceUrl::parse_list("http://a:1,https://b").is_err());
    }
}
