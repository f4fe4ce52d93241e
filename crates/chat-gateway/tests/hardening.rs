//! Regression tests for the security review of the gateway, each on real
//! sockets against a real gateway and service.

mod common;
#[path = "../../chat-edge/tests/common/raw_http.rs"]
mod raw_http;

use std::num::NonZeroU32;

use common::*;
use raw_http::read_until_closed;
use serde_json::json;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A client behind a trusted proxy cannot pick the address it is limited
/// as: the list is read from the right, so what the proxy appended (the
/// real peer) counts, and what the client wrote further left does not.
#[tokio::test]
async fn forwarded_for_cannot_be_spoofed_through_a_trusted_proxy() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.connect_burst = nz(1);
    config.limits.connects_per_min = nz(1);
    config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let gateway = start_gateway(config).await;
    let auth = cookie(&token("xff"));
    let via_proxy = |chain: &'static str| {
        [
            ("cookie", auth.clone()),
            ("x-forwarded-for", chain.to_owned()),
        ]
    };
    let attempt = |headers: [(&'static str, String); 2]| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        connect(gateway.addr, &headers).await.map(|_| ())
    };
    // The attacker writes the victim's address and some garbage in front of
    // what the proxy appends: the victim is not charged.
    assert!(attempt(via_proxy("5.5.5.5, not-an-ip, 7.7.7.7"))
        .await
        .is_ok());
    assert!(
        attempt(via_proxy("5.5.5.5, not-an-ip, 8.8.8.8"))
            .await
            .is_ok(),
        "8.8.8.8 has a budget of its own"
    );
    assert_eq!(
        attempt(via_proxy("1.1.1.1, 7.7.7.7")).await.err(),
        Some(429)
    );
    // Garbage the proxy would have had to write means the list is not
    // believed: the peer (the proxy) is limited instead.
    assert!(attempt(via_proxy("9.9.9.9, garbage")).await.is_ok());
    assert_eq!(
        attempt(via_proxy("6.6.6.6, garbage")).await.err(),
        Some(429)
    );
}

/// An Origin with the wrong scheme is a different site.
#[tokio::test]
async fn origin_scheme_and_port_must_match() {
    let service = start_service().await;
    let plain = start_gateway(gateway_config(service.addr)).await;
    let auth = cookie(&token("o"));
    let host = plain.addr.to_string();
    for origin in [
        format!("https://{host}"),
        format!("http://{}:1", plain.addr.ip()),
    ] {
        let (status, _, body) =
            refused(plain.addr, &[("cookie", &auth), ("origin", &origin)]).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("origin_not_allowed")),
            "{origin}"
        );
    }
    assert!(connect(
        plain.addr,
        &[("cookie", &auth), ("origin", &format!("http://{host}"))]
    )
    .await
    .is_ok());

    // Behind a trusted TLS-terminating proxy the page is https.
    let mut config = gateway_config(service.addr);
    config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let proxied = start_gateway(config).await;
    let host = proxied.addr.to_string();
    let https = [("cookie", auth.as_str()), ("x-forwarded-proto", "https")];
    let origin = format!("https://{host}");
    assert!(
        connect(proxied.addr, &[https[0], https[1], ("origin", &origin)])
            .await
            .is_ok()
    );
    let origin = format!("http://{host}");
    assert_eq!(
        connect(proxied.addr, &[https[0], https[1], ("origin", &origin)])
            .await
            .err(),
        Some(403)
    );
    // From an untrusted peer the header means nothing.
    let origin = format!("https://{}", plain.addr);
    assert_eq!(
        connect(plain.addr, &[https[0], https[1], ("origin", &origin)])
            .await
            .err(),
        Some(403)
    );
}

/// Every route under /chat/api is rate-limited per user.
#[tokio::test]
async fn http_api_is_rate_limited_per_user() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.api_burst = nz(3);
    config.limits.api_requests_per_sec = nz(1);
    let gateway = start_gateway(config).await;
    let http = reqwest::Client::new();
    let get = |user: &str| {
        http.get(format!("http://{}/chat/api/rooms/r/messages", gateway.addr))
            .header("cookie", cookie(&token(user)))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(get("greedy").await.unwrap().status(), 200);
    }
    let limited = get("greedy").await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Someone else is not affected.
    assert_eq!(get("modest").await.unwrap().status(), 200);
}

/// A token whose user id holds a line break (or any control character) is
/// refused: ids reach logs, headers and the database.
#[tokio::test]
async fn ids_with_control_characters_are_refused() {
    let (_service, gateway) = start_pair().await;
    for sub in ["alice\nINFO forged log line", "nul\u{0}", "bell\u{7}"] {
        let forged = sign(&json!({"sub": sub, "exp": now() + 60}));
        let (status, _, body) = refused(gateway.addr, &[("cookie", &cookie(&forged))]).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_subject")),
            "{sub:?}"
        );
    }
}

/// A client socket with a tiny receive buffer that joins `room` and then
/// never reads again.
async fn stalled_client(gateway: std::net::SocketAddr, token: &str, room: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(gateway).await.unwrap();
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{gateway}/chat/ws"
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", cookie(token).parse().unwrap());
    let (mut ws, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    join(&mut ws, room).await;
    ws
}

/// Floods `room` through the service's internal API until `until` says stop.
async fn flood(service: std::net::SocketAddr, room: &str, mut until: impl FnMut() -> bool) {
    let http = reqwest::Client::new();
    let text = "x".repeat(4000);
    for _ in 0..20_000 {
        if until() {
            return;
        }
        let _ = http
            .post(format!("http://{service}/send-system-message"))
            .header("x-internal-api-key", KEY)
            .json(&json!({"roomId": room, "message": text}))
            .send()
            .await;
    }
}

/// Tries to open a socket for `user` until one is admitted.
async fn admitted_again(
    gateway: std::net::SocketAddr,
    user: &str,
    within: std::time::Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if connect(gateway, &[("cookie", &cookie(&token(user)))])
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// A client that stops reading does not hold its relay, its sockets or its
/// user slot: the write to it is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_let_go() {
    let freed =
        slot_is_freed_while_stalled(std::time::Duration::from_secs(1), "stuck", &token("stuck"))
            .await;
    assert!(freed, "the stalled socket still holds the user's only slot");
}

/// Opens one socket with `token` for `user` (at a cap of one), stops
/// reading while the service floods its room, and says whether the user's
/// slot came free again (a new socket admitted) within 30 s.
async fn slot_is_freed_while_stalled(
    write_timeout: std::time::Duration,
    user: &str,
    token: &str,
) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.max_connections_per_user = 1;
    config.limits.client_write_timeout = write_timeout;
    let gateway = start_gateway(config).await;
    let stalled = stalled_client(gateway.addr, token, "flooded").await;
    let freed = AtomicBool::new(false);
    let flooding = flood(service.addr, "flooded", || freed.load(Relaxed));
    let waiting = async {
        let again = admitted_again(gateway.addr, user, std::time::Duration::from_secs(30)).await;
        freed.store(true, Relaxed);
        again
    };
    let ((), again) = tokio::join!(flooding, waiting);
    drop(stalled);
    again
}

/// A stalled client's token still expires: 4001 is enforced while the relay
/// is waiting to write to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_is_enforced_while_writing() {
    // A write timeout far longer than the test: only the expiry can end it.
    let short = sign(&json!({"sub": "brief", "exp": now() + 3}));
    let freed =
        slot_is_freed_while_stalled(std::time::Duration::from_secs(600), "brief", &short).await;
    assert!(freed, "the expired, stalled socket still holds the slot");
}

/// Client pings count against the frame limit: a ping flood is cut off like
/// any other flood.
#[tokio::test]
async fn ping_floods_are_rate_limited() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.frame_burst = nz(5);
    config.limits.frames_per_sec = nz(1);
    config.limits.abuse_dropped_frames = 20;
    let gateway = start_gateway(config).await;
    let mut ws = connect_as(gateway.addr, "pinger").await;
    use futures_util::SinkExt;
    for _ in 0..200 {
        if ws
            .send(tokio_tungstenite::tungstenite::Message::Ping(
                vec![1].into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, 1008);
}

/// Echoes of messages the service accepted reach the client before the
/// gateway's own shutdown closes the socket: every message stored is a
/// message its sender saw echoed.
#[tokio::test]
async fn echoes_are_delivered_during_gateway_shutdown() {
    let service = start_service().await;
    let gateway = start_gateway(gateway_config(service.addr)).await;
    let mut ws = connect_as(gateway.addr, "last-words").await;
    join(&mut ws, "bye").await;
    for n in 0..20 {
        send_json(
            &mut ws,
            json!({"event": "chat.message", "data": {"roomId": "bye", "message": format!("m{n}")}}),
        )
        .await;
    }
    // Messages are flowing; stop while the rest are in flight.
    next_event(&mut ws, "chat.message").await;
    let stopping = tokio::spawn(gateway.stop());
    let mut echoes = 1;
    loop {
        let frame = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
            .await
            .expect("a frame in time");
        match frame {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                if value["event"] == "chat.message" {
                    echoes += 1;
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("expected frames then a close, got {other:?}"),
        }
    }
    stopping.await.unwrap();
    let stored: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/api/rooms/bye/messages", service.addr))
        .header("x-internal-api-key", KEY)
        .header("x-user-id", "auditor")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored = stored["messages"].as_array().unwrap().len();
    eprintln!("{echoes} echoed, {stored} stored");
    assert_eq!(
        echoes, stored,
        "every stored message was echoed before the close"
    );
}

/// Slowloris: request heads that never finish are dropped after the
/// header-read timeout, however many there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_request_heads_time_out() {
    use tokio::io::AsyncWriteExt;
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.header_read_timeout = std::time::Duration::from_secs(1);
    let gateway = start_gateway(config).await;
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        stream
            .write_all(b"GET /chat/ws HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
            .await
            .unwrap();
        slow.push(stream);
    }
    for stream in &mut slow {
        assert!(
            read_until_closed(stream, std::time::Duration::from_secs(10))
                .await
                .is_some(),
            "an unfinished request head is still open"
        );
    }
    // The gateway still serves.
    let _ws = connect_as(gateway.addr, "after-the-storm").await;
}

/// A request head over 16 KiB is refused, not buffered.
#[tokio::test]
async fn oversized_request_heads_are_refused() {
    use tokio::io::AsyncWriteExt;
    let (_service, gateway) = start_pair().await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let filler = "a".repeat(20 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Filler: {filler}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_until_closed(&mut stream, std::time::Duration::from_secs(5))
        .await
        .expect("closed after answering");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A head under the cap (cookies and all) is fine.
    let http = reqwest::Client::new();
    let response = http
        .get(format!("http://{}/healthz", gateway.addr))
        .header("x-filler", "a".repeat(12 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Past the connection cap a new connection is refused with a clear 503;
/// the open ones keep working, and closing one makes room.
#[tokio::test]
async fn the_connection_cap_refuses_clearly() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.max_connections = 3;
    let gateway = start_gateway(config).await;
    let mut open = Vec::new();
    for n in 0..3 {
        open.push(connect_as(gateway.addr, &format!("capped{n}")).await);
    }
    let (status, headers, body) =
        refused(gateway.addr, &[("cookie", &cookie(&token("late")))]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("too_many_connections"))
    );
    assert!(headers.contains_key("retry-after"));
    // Those admitted are unaffected.
    join(&mut open[0], "still-here").await;
    // Closing one makes room.
    let mut first = open.remove(0);
    futures_util::SinkExt::close(&mut first).await.unwrap();
    close_code(&mut first).await;
    assert!(admitted_again(gateway.addr, "late", std::time::Duration::from_secs(10)).await);
}
