//! Durable before echo: SIGKILL the service in the middle of a flood, start
//! it again on the same database, and find every message any client
//! received in history. On SQLite always; on PostgreSQL with
//! `TEST_POSTGRES_URL` set and `--include-ignored` (CI does both).

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

// The persistence suite's databases: a fresh SQLite file or PostgreSQL database.
#[path = "../crates/chat-service/tests/common/backends.rs"]
mod backends;

const SERVICE: &str = env!("CARGO_BIN_EXE_chat-service");
const KEY: &str = "durability-test-key";
/// Messages the receiver must have seen before the service is killed.
const KILL_AFTER: usize = 2000;

async fn start(database_url: &str) -> (Child, String) {
    let mut child = Command::new(SERVICE)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("INTERNAL_API_KEY", KEY)
        .env("DATABASE_URL", database_url)
        .env("METRICS_ADDR", "")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("chat-service starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("chat-service listening on http://") {
                return url.to_owned();
            }
        }
        panic!("chat-service exited before listening");
    })
    .await
    .expect("listening within 20 s");
    (child, address)
}

async fn flood_then_kill(database_url: &str) {
    let (mut child, address) = start(database_url).await;
    let connect = |user: &str| {
        let mut request = format!("ws://{address}/ws").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-internal-api-key", KEY.parse().unwrap());
        request
            .headers_mut()
            .insert("x-user-id", user.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let join =
        Message::text(json!({"event": "chat.join", "data": {"roomId": "flood"}}).to_string());

    // The receiver records every message id it was shown.
    let (mut receiver, _) = connect("receiver").await.unwrap();
    receiver.send(join.clone()).await.unwrap();
    let (progress, mut seen) = tokio::sync::watch::channel(0usize);
    let received = tokio::spawn(async move {
        let mut ids = HashSet::new();
        while let Some(Ok(frame)) = receiver.next().await {
            if let Message::Text(text) = frame {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["event"] == "chat.message" {
                    ids.insert(value["data"]["id"].as_str().unwrap().to_owned());
                    progress.send_replace(ids.len());
                }
            }
        }
        ids
    });
    let mut senders = Vec::new();
    for s in 0..3 {
        let (ws, _) = connect(&format!("sender{s}")).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        sink.send(join.clone()).await.unwrap();
        // Drain echoes so the senders are never cut off as slow consumers.
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        senders.push(tokio::spawn(async move {
            for n in 0.. {
                let frame = json!({"event": "chat.message", "data": {"roomId": "flood", "message": format!("s{s}-{n}")}});
                if sink.send(Message::text(frame.to_string())).await.is_err() {
                    break;
                }
                if n % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    // Kill in the middle of the flood: once the receiver has been shown a
    // good number of messages, with the senders still going.
    tokio::time::timeout(Duration::from_secs(30), seen.wait_for(|n| *n >= KILL_AFTER))
        .await
        .expect("the flood reaches the receiver")
        .expect("receiver running");
    child.start_kill().expect("SIGKILL sent");
    child.wait().await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .expect("receiver sees the connection drop")
        .unwrap();
    for sender in senders {
        sender.abort();
    }
    assert!(received.len() >= KILL_AFTER);

    let (_child, address) = start(database_url).await;
    let http = reqwest::Client::new();
    let mut stored = HashSet::new();
    let mut before: Option<u64> = None;
    loop {
        let mut url = format!("http://{address}/api/rooms/flood/messages?limit=100");
        if let Some(before) = before {
            url.push_str(&format!("&before={before}"));
        }
        let page: Value = http
            .get(url)
            .header("x-internal-api-key", KEY)
            .header("x-user-id", "auditor")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let messages = page["messages"].as_array().unwrap();
        for message in messages {
            stored.insert(message["id"].as_str().unwrap().to_owned());
        }
        if page["hasMore"] != true {
            break;
        }
        before = messages.first().and_then(|m| m["seq"].as_u64());
    }
    let lost: Vec<&String> = received.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} received messages missing from history",
        lost.len()
    );
    eprintln!(
        "received {} messages before SIGKILL; {} stored; none lost",
        received.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_flood_loses_nothing_received_on_sqlite() {
    flood_then_kill(&backends::sqlite().url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set TEST_POSTGRES_URL and run with --include-ignored"]
async fn sigkill_during_a_flood_loses_nothing_received_on_postgres() {
    flood_then_kill(&backends::postgres().await.url).await;
}
