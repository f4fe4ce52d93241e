//! Every rejected frame gets an `error` event with a code, and the
//! connection stays open; the limits hold.

mod common;

use std::time::Duration;

use chat_service::Config;
use common::{Client, TestServer};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn every_error_code_keeps_the_connection_open() {
    let mut config = Config::new(common::KEY);
    config.limits.max_rooms_per_connection = 2;
    let server = TestServer::start(config).await;
    let mut client = server.connect("u").await;

    let cases: &[(&str, &str)] = &[
        ("{not json", "invalid_format"),
        ("[1,2,3]", "invalid_format"),
        (r#""chat.join""#, "invalid_format"),
        (r#"{"event":"chat.join"}"#, "invalid_format"),
        (r#"{"event":"chat.join","data":[]}"#, "invalid_format"),
        (r#"{"event":42,"data":{}}"#, "invalid_format"),
        (
            r#"{"event":"chat.typing","data":{"roomId":"a","isTyping":"yes"}}"#,
            "invalid_format",
        ),
        (r#"{"event":"chat.nope","data":{}}"#, "unknown_event"),
        (
            r#"{"event":"chat.join","data":{"roomId":"bad room"}}"#,
            "invalid_room",
        ),
        (
            r#"{"event":"chat.join","data":{"roomId":17}}"#,
            "invalid_room",
        ),
        (
            r#"{"event":"chat.message","data":{"roomId":"a","message":"  "}}"#,
            "invalid_message",
        ),
        (
            r#"{"event":"chat.message","data":{"roomId":"a"}}"#,
            "invalid_message",
        ),
        (
            r#"{"event":"chat.message","data":{"roomId":"a","message":"hi"}}"#,
            "not_in_room",
        ),
    ];
    for (frame, code) in cases {
        client.send_raw(frame).await;
        client.expect_error(code).await;
    }
    let too_long = "x".repeat(4001);
    client.join("a").await;
    client.say("a", &too_long).await;
    client.expect_error("message_too_long").await;

    client
        .ws
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    client.expect_error("invalid_format").await;

    client.join("b").await;
    client.send("chat.join", json!({"roomId": "c"})).await;
    client.expect_error("too_many_rooms").await;

    // After all that, the connection still works.
    client.say("a", "still here").await;
    assert_eq!(client.expect("chat.message").await["message"], "still here");
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let server = TestServer::memory().await;
    let mut client = server.connect("u").await;
    client.join("a").await;
    let huge =
        json!({"event": "chat.message", "data": {"roomId": "a", "message": "x".repeat(70_000)}});
    client.send_raw(&huge.to_string()).await;
    assert_eq!(client.expect_close().await, Some(CloseCode::Size));
    // The service itself is fine.
    let mut other = server.connect("v").await;
    other.join("a").await;
}

#[tokio::test]
async fn silent_clients_are_pinged_then_closed() {
    let mut config = Config::new(common::KEY);
    config.limits.ping_interval = Duration::from_millis(200);
    config.limits.idle_timeout = Duration::from_millis(700);
    let server = TestServer::start(config).await;

    // A client that reads (and so answers pings) stays.
    let mut lively = server.connect("lively").await;
    // A client that never reads never answers a ping.
    let mut silent = server.connect("silent").await;
    let started = std::time::Instant::now();
    lively.expect_silence(Duration::from_millis(1500)).await;
    lively.join("still-open").await;

    assert_eq!(silent.expect_close().await, Some(CloseCode::Normal));
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[tokio::test]
async fn slow_consumers_are_cut_off_without_slowing_the_room() {
    let mut config = Config::new(common::KEY);
    config.limits.outbound_queue_bytes = 256 * 1024;
    let server = TestServer::start(config).await;
    let mut stalled = server.connect("stalled").await;
    let mut sender = server.connect("sender").await;
    stalled.join("busy").await;
    sender.join("busy").await;

    // Big messages fill the stalled client's socket buffers, then its queue.
    // The sender reads its own echoes, staying at most a window ahead, as a
    // well-behaved client does.
    let text = "y".repeat(3900);
    let count = 4000;
    let window = 32;
    let mut echoed = 0;
    for sent in 1..=count {
        sender.say("busy", &text).await;
        while sent - echoed > window || (sent == count && echoed < count) {
            if sender.next_event().await.0 == "chat.message" {
                echoed += 1;
            }
        }
    }
    assert_eq!(echoed, count, "the sender got every echo");

    let stats = server.stats().await;
    assert_eq!(
        stats["connections"], 1,
        "the stalled client was dropped: {stats}"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("chat_slow_consumer_disconnects_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // What it does read before the end is a prefix, never a reordering.
    let mut seen = 0u64;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(
        Duration::from_secs(2),
        futures_util::StreamExt::next(&mut stalled.ws),
    )
    .await
    {
        match frame {
            Message::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                if let Some(seq) = value["data"]["seq"].as_u64() {
                    assert_eq!(seq, seen + 1);
                    seen = seq;
                }
            }
            Message::Close(frame) => {
                assert_eq!(frame.map(|f| f.code), Some(CloseCode::Policy));
                break;
            }
            _ => {}
        }
    }
    assert!(seen < count as u64);
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let mut server = TestServer::memory().await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut client = Client::connect(server.addr, &format!("u{i}"), None).await;
        client.join("r").await;
        clients.push(client);
    }
    // `stop` itself fails the test past its 10 s budget.
    server.stop().await.expect("clean stop");
    for client in &mut clients {
        assert_eq!(client.expect_close().await, Some(CloseCode::Away));
    }
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}
