//! The chat service as seen from the gateway: its address, the identity
//! headers it trusts, the upstream WebSocket and the history endpoint.

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
}

/// Talks to the service on behalf of authenticated users.
pub struct Upstream {
    url: ServiceUrl,
    internal_api_key: HeaderValue,
    http: reqwest::Client,
    connect_timeout: Duration,
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
        url: ServiceUrl,
        internal_api_key: &str,
        connect_timeout: Duration,
    ) -> Result<Upstream, GatewayError> {
        let mut internal_api_key = HeaderValue::from_str(internal_api_key)
            .map_err(|_| GatewayError::Config("INTERNAL_API_KEY must be printable ASCII".into()))?;
        internal_api_key.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| GatewayError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Upstream {
            url,
            internal_api_key,
            http,
            connect_timeout,
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

    /// Opens the service's `/ws` for this user; done before the client gets
    /// its 101 so an unreachable service is an honest 502.
    pub async fn connect(&self, identity: &Identity) -> Result<UpstreamSocket, UpstreamError> {
        let connecting = async {
            let tcp = TcpStream::connect((self.url.host.as_str(), self.url.port))
                .await
                .map_err(UpstreamError::Unreachable)?;
            // Chat frames are small and latency-sensitive.
            let _ = tcp.set_nodelay(true);
            self.handshake(tcp, identity).await
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
        mut tcp: TcpStream,
        identity: &Identity,
    ) -> Result<UpstreamSocket, UpstreamError> {
        let key = generate_key();
        let mut request = format!(
            "GET {}/ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n",
            self.url.base_path,
            self.url.authority()
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

    /// `GET /api/rooms/{roomId}/messages` on the service for this user.
    pub async fn room_api(
        &self,
        identity: &Identity,
        room_id: &str,
        resource: RoomResource,
        query: Option<&str>,
    ) -> Result<(StatusCode, bytes::Bytes), UpstreamError> {
        let mut url = self.url.http_url(&format!(
            "/api/rooms/{}/{}",
            percent_encode(room_id),
            resource.path()
        ));
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(query);
        }
        let mut request = self.http.get(url);
        for (name, value) in self.identity_headers(identity) {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(UpstreamError::Http)?;
        let status = response.status();
        let body = response.bytes().await.map_err(UpstreamError::Http)?;
        Ok((status, body))
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
}
