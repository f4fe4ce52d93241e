//! Real servers on port 0 and real WebSocket clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use chat_service::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod backends;
pub mod files;

pub const KEY: &str = "test-internal-key";
pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), chat_service::ServiceError>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(chat_service::run(listener, config, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn memory() -> TestServer {
        TestServer::start(Config::new(KEY)).await
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(&mut self) -> Result<(), chat_service::ServiceError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("service stops within 10 s")
            .expect("service task did not panic")
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

    /// Polls `/stats` until it equals `expected`; panics after [`WAIT`].
    /// A disconnect is noticed by the server asynchronously, so tests wait
    /// for its effect instead of sleeping a guessed while.
    pub async fn wait_for_stats(&self, expected: Value) {
        self.wait_for_stats_within(expected, WAIT).await;
    }

    pub async fn wait_for_stats_within(&self, expected: Value, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let stats = self.stats().await;
            if stats == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats stayed {stats}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The Prometheus page.
    pub async fn metrics(&self) -> String {
        reqwest::Client::new()
            .get(self.http("/metrics"))
            .header("x-internal-api-key", KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(self.addr, user, None).await
    }

    pub async fn connect_named(&self, user: &str, username: &str) -> Client {
        Client::connect(self.addr, user, Some(username)).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Client {
    pub async fn connect(addr: SocketAddr, user: &str, username: Option<&str>) -> Client {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("x-internal-api-key", KEY.parse().unwrap());
        headers.insert("x-user-id", encode(user).parse().unwrap());
        if let Some(name) = username {
            headers.insert("x-username", encode(name).parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Client { ws }
    }

    pub async fn send(&mut self, event: &str, data: Value) {
        self.send_raw(&json!({"event": event, "data": data}).to_string())
            .await;
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.send("chat.join", json!({"roomId": room})).await;
        self.expect("chat.joined").await
    }

    pub async fn say(&mut self, room: &str, text: &str) {
        self.send("chat.message", json!({"roomId": room, "message": text}))
            .await;
    }

    /// The next event, skipping pings; panics after [`WAIT`].
    pub async fn next_event(&mut self) -> (String, Value) {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("an event within the wait")
                .expect("connection open")
                .expect("frame ok");
            match frame {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    return (
                        value["event"].as_str().unwrap().to_owned(),
                        value["data"].clone(),
                    );
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next event, which must be `event`; returns its data.
    pub async fn expect(&mut self, event: &str) -> Value {
        let (name, data) = self.next_event().await;
        assert_eq!(name, event, "unexpected event with data {data}");
        data
    }

    /// The next event must be an error with this code.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let data = self.expect("error").await;
        assert_eq!(data["code"], code, "{data}");
        assert!(data["message"].as_str().is_some_and(|m| !m.is_empty()));
        data
    }

    /// Nothing arrives within `quiet` (pings aside).
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

    /// Reads until the server closes; returns the close code.
    pub async fn expect_close(&mut self) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("closed within 10 s")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}
