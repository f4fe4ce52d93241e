//! Real chat service + real gateway on 127.0.0.1 port 0, tokens minted here.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_gateway::{GatewayConfig, HealthCheck, JwtConfig, ServiceUrl};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const KEY: &str = "test-internal-key";
pub const SECRET: &str = "test-secret-for-hs256-of-32-bytes";
pub const WAIT: Duration = Duration::from_secs(5);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A server task with a stop switch.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Duration {
        let started = std::time::Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops within its budget")
                .expect("server task");
        }
        started.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs a server library's `run(listener, config, shutdown)` on port 0.
async fn spawn_server<F, Fut, E>(run: F) -> Running
where
    F: FnOnce(TcpListener, oneshot::Receiver<()>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Debug,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_server_on(listener, run)
}

fn spawn_server_on<F, Fut, E>(listener: TcpListener, run: F) -> Running
where
    F: FnOnce(TcpListener, oneshot::Receiver<()>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Debug,
{
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = run(listener, stopped);
    let task = tokio::spawn(async move {
        server.await.expect("server runs");
    });
    Running {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

pub async fn start_service() -> Running {
    start_service_with(chat_service::Config::new(KEY)).await
}

pub async fn start_service_with(config: chat_service::Config) -> Running {
    spawn_server(|listener, stopped| {
        chat_service::run(listener, config, async {
            let _ = stopped.await;
        })
    })
    .await
}

/// A service on the address another one had (a node coming back): the
/// port may take a moment to be free again.
pub async fn start_service_on(addr: SocketAddr) -> Running {
    let listener = eventually("the node's port to be free again", WAIT, || async {
        TcpListener::bind(addr).await.ok()
    })
    .await;
    spawn_server_on(listener, |listener, stopped| {
        chat_service::run(listener, chat_service::Config::new(KEY), async {
            let _ = stopped.await;
        })
    })
}

pub fn gateway_config(service: SocketAddr) -> GatewayConfig {
    gateway_config_for(&[service])
}

/// A gateway in front of several service nodes.
pub fn gateway_config_for(services: &[SocketAddr]) -> GatewayConfig {
    let urls = services
        .iter()
        .map(|service| ServiceUrl::parse(&format!("http://{service}")).unwrap())
        .collect();
    let mut jwt = JwtConfig::hs256(SECRET);
    jwt.leeway = Duration::ZERO;
    let mut config = GatewayConfig::new(urls, KEY, jwt);
    // Most tests open many sockets from one address; limit tests lower these.
    config.limits.connect_burst = 1000.try_into().unwrap();
    config.limits.max_connections_per_user = 1000;
    // The service installs the process-wide recorder; render that one.
    config.metrics = Some(chat_service::install_metrics_recorder());
    config
}

pub async fn start_gateway(config: GatewayConfig) -> Running {
    spawn_server(|listener, stopped| {
        chat_gateway::run(listener, config, async {
            let _ = stopped.await;
        })
    })
    .await
}

/// Service plus a gateway in front of it with the default test config.
pub async fn start_pair() -> (Running, Running) {
    let service = start_service().await;
    let gateway = start_gateway(gateway_config(service.addr)).await;
    (service, gateway)
}

/// Health checks quick enough for a test to wait on.
pub fn quick_health_checks(config: &mut GatewayConfig) {
    config.health = HealthCheck {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
        unhealthy_after: 2,
    };
}

/// What the process's metrics listener would serve (the binaries put it on
/// a loopback port of its own; tests read the recorder directly).
pub fn metrics_text() -> String {
    chat_service::install_metrics_recorder().render()
}

/// A metric's value for one service node (`node="http://ADDR"`).
pub fn node_metric(name: &str, node: SocketAddr) -> Option<f64> {
    let prefix = format!("{name}{{node=\"http://{node}\"}} ");
    metrics_text()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

/// A metric without labels.
pub fn metric(name: &str) -> Option<f64> {
    let prefix = format!("{name} ");
    metrics_text()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

/// Polls `check` until it gives a value; panics naming `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {within:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The service's `/stats` (`{connectedUsers, connections, rooms}`).
pub async fn service_stats(service: SocketAddr) -> Value {
    reqwest::Client::new()
        .get(format!("http://{service}/stats"))
        .header("x-internal-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Each service's open connections, in order.
pub async fn connections_per_node(services: &[SocketAddr]) -> Vec<u64> {
    let mut counts = Vec::new();
    for service in services {
        counts.push(
            service_stats(*service).await["connections"]
                .as_u64()
                .unwrap(),
        );
    }
    counts
}

/// Waits until the services hold exactly these connection counts.
pub async fn wait_for_connections(services: &[SocketAddr], expected: &[u64]) {
    eventually(
        &format!("connections per node to be {expected:?}"),
        WAIT,
        || async {
            let counts = connections_per_node(services).await;
            (counts == expected).then_some(())
        },
    )
    .await;
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(claims: &Value) -> String {
    sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

pub fn sign_with(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

/// A valid HS256 token for `user` (also its username).
pub fn token(user: &str) -> String {
    sign(&json!({ "sub": user, "username": user, "exp": now() + 3600 }))
}

pub fn cookie(token: &str) -> String {
    format!("theme=dark; access_token={token}; other=1")
}

/// The `/chat/ws` handshake request with extra headers.
fn ws_request(
    gateway: SocketAddr,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!("ws://{gateway}/chat/ws")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request
}

/// Opens `/chat/ws` with extra headers; an HTTP refusal comes back as `Err(status)`.
pub async fn connect(gateway: SocketAddr, headers: &[(&str, &str)]) -> Result<Client, u16> {
    let request = ws_request(gateway, headers);
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake finishes")
    {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("unexpected handshake error: {other}"),
    }
}

/// The refused handshake's full response (status, headers, JSON body).
pub async fn refused(
    gateway: SocketAddr,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Value) {
    let request = ws_request(gateway, headers);
    match tokio_tungstenite::connect_async(request).await {
        Err(WsError::Http(response)) => {
            let (parts, body) = response.into_parts();
            let body = body
                .map(|b| serde_json::from_slice(&b).unwrap())
                .unwrap_or(Value::Null);
            (parts.status.as_u16(), parts.headers, body)
        }
        Ok(_) => panic!("handshake unexpectedly accepted"),
        Err(other) => panic!("unexpected handshake error: {other}"),
    }
}

pub async fn connect_as(gateway: SocketAddr, user: &str) -> Client {
    let token = token(user);
    connect(gateway, &[("cookie", &cookie(&token))])
        .await
        .expect("authenticated connect")
}

pub async fn send_json(ws: &mut Client, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// The next text frame as JSON (skipping pings).
pub async fn next_json(ws: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame ok");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Skips to the next frame whose `event` is `event`.
pub async fn next_event(ws: &mut Client, event: &str) -> Value {
    loop {
        let value = next_json(ws).await;
        if value["event"] == event {
            return value;
        }
    }
}

/// Reads until the close frame; returns its code (1005 when none, 1006 when
/// the socket ended without one).
pub async fn close_code(ws: &mut Client) -> u16 {
    close_code_within(ws, WAIT).await
}

pub async fn close_code_within(ws: &mut Client, within: Duration) -> u16 {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or(1005, |f| u16::from(f.code));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return 1006,
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("closed in time")
}

pub async fn join(ws: &mut Client, room: &str) {
    send_json(ws, json!({"event": "chat.join", "data": {"roomId": room}})).await;
    next_event(ws, "chat.joined").await;
}

pub fn close_code_value(code: u16) -> CloseCode {
    CloseCode::from(code)
}
