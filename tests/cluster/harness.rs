//! Real processes for the cluster suite: a `redis-server` of the test's own
//! on a free loopback port (so it can be killed and restarted; never the
//! machine's shared one), service nodes and gateways from the binaries
//! cargo built, and WebSocket clients.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use chat_testkit::RedisServer;

pub const SERVICE: &str = env!("CARGO_BIN_EXE_chat-service");
pub const GATEWAY: &str = env!("CARGO_BIN_EXE_chat-gateway");
pub const KEY: &str = "cluster-test-internal-key";
pub const JWT_SECRET: &str = "cluster-test-jwt-secret-of-32-bytes!";
pub const WAIT: Duration = Duration::from_secs(15);
/// What the suite sets `PRESENCE_TTL_SECS` to.
pub const PRESENCE_TTL_SECS: u64 = 3;

/// A service node (`chat-service`) in cluster mode.
pub struct Node {
    pub addr: String,
    child: Child,
}

impl Node {
    pub async fn start(database_url: &str, redis_url: &str) -> Node {
        let mut child = Command::new(SERVICE)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("INTERNAL_API_KEY", KEY)
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url)
            .env("PRESENCE_TTL_SECS", PRESENCE_TTL_SECS.to_string())
            .env("METRICS_ADDR", "")
            .env("RUST_LOG", "warn,chat_service=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("chat-service starts");
        let addr = listening(&mut child, "chat-service listening on http://").await;
        Node { addr, child }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A client straight to this node, as the gateway would connect it.
    pub async fn connect(&self, user: &str) -> Client {
        Client::to_service(&self.addr, user).await
    }

    pub async fn stats(&self) -> Value {
        reqwest::Client::new()
            .get(self.http("/stats"))
            .header("x-internal-api-key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A counter of this node's Prometheus page.
    pub async fn metric(&self, name: &str) -> f64 {
        let page = reqwest::Client::new()
            .get(self.http("/metrics"))
            .header("x-internal-api-key", KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        page.lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn internal(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method.parse().unwrap(), self.http(path))
            .header("x-internal-api-key", KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, and wait for it to stop.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

pub struct Gateway {
    pub addr: String,
    child: Child,
}

impl Gateway {
    pub async fn start(nodes: &[&Node], redis_url: &str) -> Gateway {
        let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.addr)).collect();
        let mut child = Command::new(GATEWAY)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("INTERNAL_API_KEY", KEY)
            .env("JWT_SECRET", JWT_SECRET)
            .env("CHAT_SERVICE_URL", urls.join(","))
            .env("REDIS_URL", redis_url)
            .env("HEALTH_CHECK_INTERVAL_SECS", "1")
            .env("RATE_LIMIT_BURST", "100000")
            .env("RATE_LIMIT_PER_SEC", "100000")
            .env("CONNECT_RATE_BURST", "100000")
            .env("CONNECT_RATE_PER_MIN", "100000")
            .env("METRICS_ADDR", "")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("chat-gateway starts");
        let addr = listening(&mut child, "chat-gateway listening on http://").await;
        Gateway { addr, child }
    }

    pub async fn connect(&self, user: &str) -> Client {
        Client::to_gateway(&self.addr, user).await
    }
}

async fn listening(child: &mut Child, prefix: &str) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix(prefix) {
                return addr.to_owned();
            }
        }
        panic!("the process exited before listening");
    })
    .await
    .expect("listening in time");
    // Keep reading, so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The close code the server sent, once it closed.
    pub close_code: Option<u16>,
}

impl Client {
    pub async fn to_service(addr: &str, user: &str) -> Client {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("x-internal-api-key", KEY.parse().unwrap());
        headers.insert("x-user-id", encode(user).parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Client {
            ws,
            close_code: None,
        }
    }

    pub async fn to_gateway(addr: &str, user: &str) -> Client {
        Client::try_gateway(addr, user)
            .await
            .expect("the gateway takes the client")
    }

    pub async fn try_gateway(addr: &str, user: &str) -> Option<Client> {
        let token = chat_gateway::mint_hs256_token(
            JWT_SECRET.as_bytes(),
            user,
            None,
            Duration::from_secs(3600),
        )
        .unwrap();
        let mut request = format!("ws://{addr}/chat/ws")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        tokio_tungstenite::connect_async(request)
            .await
            .ok()
            .map(|(ws, _)| Client {
                ws,
                close_code: None,
            })
    }

    pub async fn send(&mut self, event: &str, data: Value) {
        self.ws
            .send(Message::text(
                json!({"event": event, "data": data}).to_string(),
            ))
            .await
            .unwrap();
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.send("chat.join", json!({"roomId": room})).await;
        self.expect("chat.joined").await
    }

    pub async fn say(&mut self, room: &str, text: &str) {
        self.send("chat.message", json!({"roomId": room, "message": text}))
            .await;
    }

    /// The next event, pings aside; `None` once the socket is closed.
    pub async fn next_event_within(&mut self, wait: Duration) -> Option<(String, Value)> {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next())
                .await
                .expect("an event within the wait");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    return Some((
                        value["event"].as_str().unwrap().to_owned(),
                        value["data"].clone(),
                    ));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(other)) => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Like [`Client::next_event_within`], but a quiet wait is `Err`.
    pub async fn try_next_event(
        &mut self,
        wait: Duration,
    ) -> Result<Option<(String, Value)>, tokio::time::error::Elapsed> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    return Ok(Some((
                        value["event"].as_str().unwrap().to_owned(),
                        value["data"].clone(),
                    )));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return Ok(None);
                }
                Some(Err(_)) | None => return Ok(None),
                Some(Ok(other)) => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn next_event(&mut self) -> (String, Value) {
        self.next_event_within(WAIT)
            .await
            .expect("the connection stays open")
    }

    pub async fn expect(&mut self, event: &str) -> Value {
        let (name, data) = self.next_event().await;
        assert_eq!(name, event, "unexpected event with data {data}");
        data
    }

    /// Skips other events until `event`.
    pub async fn expect_skipping(&mut self, event: &str) -> Value {
        loop {
            let (name, data) = self.next_event().await;
            if name == event {
                return data;
            }
        }
    }

    pub async fn expect_silence(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// Polls `check` until it gives a value; panics after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
