//! The relay against a real chat service: identity headers, Unicode, close
//! codes both ways, size limit, upstream failures, shutdown.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn identity_comes_from_the_token_not_from_client_headers() {
    let (_service, gateway) = start_pair().await;
    let t = sign(&json!({"sub": "李雷", "username": "José", "exp": now() + 600}));
    let mut ws = connect(
        gateway.addr,
        &[
            ("cookie", &cookie(&t)),
            ("x-user-id", "evil"),
            ("x-username", "Evil"),
            ("x-internal-api-key", "guess"),
        ],
    )
    .await
    .unwrap();
    join(&mut ws, "unicode").await;
    send_json(
        &mut ws,
        json!({"event": "chat.message", "data": {"roomId": "unicode", "message": "¡Hola, 世界!"}}),
    )
    .await;
    let echo = next_event(&mut ws, "chat.message").await;
    assert_eq!(echo["data"]["userId"], "李雷");
    assert_eq!(echo["data"]["username"], "José");
    assert_eq!(echo["data"]["message"], "¡Hola, 世界!");
}

#[tokio::test]
async fn frames_flow_both_ways_between_two_users() {
    let (_service, gateway) = start_pair().await;
    let mut alice = connect_as(gateway.addr, "alice").await;
    let mut bob = connect_as(gateway.addr, "bob").await;
    join(&mut alice, "lobby").await;
    join(&mut bob, "lobby").await;
    send_json(
        &mut bob,
        json!({"event": "chat.message", "data": {"roomId": "lobby", "message": "hi alice"}}),
    )
    .await;
    let got = next_event(&mut alice, "chat.message").await;
    assert_eq!(got["data"]["userId"], "bob");
    assert_eq!(got["data"]["message"], "hi alice");
    // Service errors pass through untouched.
    send_json(&mut alice, json!({"event": "chat.nope", "data": {}})).await;
    assert_eq!(
        next_event(&mut alice, "error").await["data"]["code"],
        "unknown_event"
    );
}

#[tokio::test]
async fn client_close_code_reaches_the_service_and_is_echoed() {
    let (_service, gateway) = start_pair().await;
    let mut alice = connect_as(gateway.addr, "alice").await;
    let mut bob = connect_as(gateway.addr, "bob").await;
    join(&mut alice, "room").await;
    join(&mut bob, "room").await;
    bob.send(Message::Close(Some(CloseFrame {
        code: close_code_value(4000),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    assert_eq!(close_code(&mut bob).await, 4000);
    // The service saw bob leave: the close went through.
    let left = next_event(&mut alice, "chat.userLeft").await;
    assert_eq!(left["data"]["userId"], "bob");
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let (_service, gateway) = start_pair().await;
    let mut ws = connect_as(gateway.addr, "big").await;
    let huge = "x".repeat(64 * 1024 + 1);
    let _ = ws.send(Message::text(huge)).await;
    assert_eq!(close_code(&mut ws).await, 1009);

    // Exactly at the limit is still relayed (and judged by the service).
    let mut ws = connect_as(gateway.addr, "fits").await;
    let frame =
        json!({"event": "chat.message", "data": {"roomId": "r", "message": "y"}}).to_string();
    let padded = frame.clone() + &" ".repeat(64 * 1024 - frame.len());
    ws.send(Message::text(padded)).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["event"], "error");
}

#[tokio::test]
async fn service_unreachable_is_502_before_upgrading() {
    // A port that was just free: nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = start_gateway(gateway_config(free)).await;
    let (status, _, body) = refused(gateway.addr, &[("cookie", &cookie(&token("a")))]).await;
    assert_eq!(status, 502);
    assert_eq!(body["code"], "upstream_unavailable");

    // A service with another internal key refuses the gateway: also 502.
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.internal_api_key = "wrong-key".into();
    let gateway = start_gateway(config).await;
    assert_eq!(
        connect(gateway.addr, &[("cookie", &cookie(&token("a")))])
            .await
            .err(),
        Some(502)
    );
}

#[tokio::test]
async fn service_shutdown_reaches_clients_as_1012() {
    let (service, gateway) = start_pair().await;
    let mut ws = connect_as(gateway.addr, "a").await;
    join(&mut ws, "r").await;
    service.stop().await;
    assert_eq!(close_code(&mut ws).await, 1012);
}

/// A node that dies is a node to come back from: reconnecting lands on
/// one that is up (1011 is kept for a service that breaks the protocol).
#[test]
fn service_crash_reaches_clients_as_1012() {
    // The service gets its own runtime so it can die without closing anything.
    let service_runtime = tokio::runtime::Runtime::new().unwrap();
    let service = service_runtime.block_on(start_service());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let gateway = start_gateway(gateway_config(service.addr)).await;
        let mut ws = connect_as(gateway.addr, "a").await;
        join(&mut ws, "r").await;
        std::mem::forget(service);
        service_runtime.shutdown_background();
        assert_eq!(close_code(&mut ws).await, 1012);
    });
}

/// A "service" that completes the handshake and then sends what is not
/// WebSocket: a fault to report, not a restart to come back from.
#[tokio::test]
async fn a_service_breaking_the_protocol_closes_with_1011() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let key = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| value.trim().to_owned())
                });
                let Some(key) = key else {
                    // The health check.
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                let accept =
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                     Upgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                // FIN, reserved bits set, opcode 15: no such frame exists.
                let _ = stream.write_all(&[0xff, 0x00]).await;
                let _ = stream.read(&mut chunk).await;
            });
        }
    });
    let gateway = start_gateway(gateway_config(addr)).await;
    let mut ws = connect_as(gateway.addr, "a").await;
    assert_eq!(close_code(&mut ws).await, 1011);
}

#[tokio::test]
async fn gateway_shutdown_closes_clients_with_1001_quickly() {
    let (_service, gateway) = start_pair().await;
    let mut a = connect_as(gateway.addr, "a").await;
    let mut b = connect_as(gateway.addr, "b").await;
    join(&mut a, "r").await;
    let addr = gateway.addr;
    let stopping = tokio::spawn(gateway.stop());
    assert_eq!(close_code(&mut a).await, 1001);
    assert_eq!(close_code(&mut b).await, 1001);
    assert!(stopping.await.unwrap() < Duration::from_secs(10));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn internal_api_is_not_reachable_through_the_gateway() {
    let (_service, gateway) = start_pair().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", gateway.addr);
    let t = token("a");
    for (method, path) in [
        ("POST", "/send-system-message"),
        ("POST", "/chat/send-system-message"),
        ("GET", "/stats"),
        ("GET", "/chat/stats"),
        ("GET", "/ws"),
        ("GET", "/api/rooms/r/messages"),
        ("GET", "/chat/../stats"),
    ] {
        let response = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .header("x-internal-api-key", KEY)
            .header("cookie", cookie(&t))
            .json(&json!({"roomId": "r", "message": "pwned"}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(
            status == 404 || status == 405,
            "{method} {path} -> {status}"
        );
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("connectedUsers") && !body.contains("delivered"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn history_is_forwarded_over_http_for_authenticated_users() {
    let (_service, gateway) = start_pair().await;
    let mut ws = connect_as(gateway.addr, "writer").await;
    join(&mut ws, "hist").await;
    for i in 0..3 {
        send_json(&mut ws, json!({"event": "chat.message", "data": {"roomId": "hist", "message": format!("m{i}")}})).await;
        next_event(&mut ws, "chat.message").await;
    }
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/chat/api/rooms/hist/messages?limit=2",
        gateway.addr
    );
    let response = http
        .get(&url)
        .header("cookie", cookie(&token("reader")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["message"], "m2");
    assert_eq!(body["hasMore"], true);

    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let bad_room = format!(
        "http://{}/chat/api/rooms/bad%20room!/messages",
        gateway.addr
    );
    let response = http
        .get(&bad_room)
        .bearer_auth(token("reader"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        400,
        "the service's own verdict passes through"
    );
}

#[tokio::test]
async fn direct_conversations_are_listed_over_http() {
    let (_service, gateway) = start_pair().await;
    let mut ws = connect_as(gateway.addr, "ann").await;
    send_json(
        &mut ws,
        json!({"event": "chat.dm.open", "data": {"userId": "bob"}}),
    )
    .await;
    let joined = next_event(&mut ws, "chat.joined").await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/chat/api/dms?limit=5", gateway.addr);
    for (user, listed) in [("ann", "bob"), ("bob", "ann")] {
        let response = http
            .get(&url)
            .bearer_auth(token(user))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["conversations"][0]["roomId"], joined["data"]["roomId"]);
        assert_eq!(body["conversations"][0]["userId"], listed);
        assert_eq!(body["hasMore"], false);
    }
    // A private conversation's history is its participants' only.
    let room = joined["data"]["roomId"].as_str().unwrap();
    let history = format!("http://{}/chat/api/rooms/{room}/messages", gateway.addr);
    let outsider = http
        .get(&history)
        .bearer_auth(token("eve"))
        .send()
        .await
        .unwrap();
    assert_eq!(outsider.status(), 403);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn health_metrics_and_page() {
    let (_service, gateway) = start_pair().await;
    let _ws = connect_as(gateway.addr, "m").await;
    let base = format!("http://{}", gateway.addr);
    let health: serde_json::Value = reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = metrics_text();
    assert!(metrics.contains("gateway_connections_total"), "{metrics}");
    // Never on the public port.
    let public = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(public.status(), 404);
    for path in ["/", "/chat-test.html"] {
        let page = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }
    // A plain GET on the socket path is told to upgrade.
    let plain = reqwest::get(format!("{base}/chat/ws")).await.unwrap();
    assert_eq!(plain.status(), 400);
}
