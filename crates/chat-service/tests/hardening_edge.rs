//! The service's own listener is held to what the gateway's is: request
//! heads must arrive in time, and open connections are capped with a clear
//! refusal.

mod common;
#[path = "../../chat-edge/tests/common/raw_http.rs"]
mod raw_http;

use std::time::Duration;

use chat_service::Config;
use common::TestServer;
use raw_http::read_until_closed;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn unfinished_request_heads_time_out() {
    let mut config = Config::new(common::KEY);
    config.limits.header_read_timeout = Duration::from_secs(1);
    let server = TestServer::start(config).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            .await
            .unwrap();
        slow.push(stream);
    }
    for stream in &mut slow {
        assert!(
            read_until_closed(stream, Duration::from_secs(10))
                .await
                .is_some(),
            "an unfinished request head is still open"
        );
    }
    let mut client = server.connect("after").await;
    client.join("r").await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_clearly() {
    let mut config = Config::new(common::KEY);
    config.limits.max_connections = 2;
    let server = TestServer::start(config).await;
    let mut first = server.connect("a").await;
    let _second = server.connect("b").await;
    let mut third = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains(r#""code":"too_many_connections""#),
        "{answer}"
    );
    // Those admitted are unaffected.
    first.join("r").await;
}
