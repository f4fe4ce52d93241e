//! Calls: the ICE servers route, and signaling frames' own rate limit
//! (ICE candidate bursts pass, floods are still cut), against a real
//! service that answers a `chat.call.signal` for a call it does not have
//! with `not_found`: each such answer is one frame that reached it.

mod common;

use std::num::NonZeroU32;

use chat_gateway::{turn_credentials, IceConfig};
use chat_proto::api::IceServersResponse;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const TURN_SECRET: &str = "rtc-test-turn-secret-0123456789";

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn ice_servers(gateway: std::net::SocketAddr, user: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{gateway}/chat/api/rtc/ice-servers"))
        .header("cookie", cookie(&token(user)))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn without_servers_configured_the_list_is_empty() {
    let (_service, gateway) = start_pair().await;
    let answer = ice_servers(gateway.addr, "alice").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    assert_eq!(
        answer.json::<Value>().await.unwrap(),
        json!({"iceServers": []})
    );
}

#[tokio::test]
async fn ice_servers_carry_fresh_turn_credentials_for_the_caller() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.ice = IceConfig::from_settings(
        &strings(&["stun:127.0.0.1:3478"]),
        &strings(&[
            "turn:127.0.0.1:3478?transport=udp",
            "turn:127.0.0.1:3478?transport=tcp",
        ]),
        Some(TURN_SECRET),
        120,
    )
    .unwrap();
    let gateway = start_gateway(config).await;

    let before = now();
    let answer = ice_servers(gateway.addr, "李雷:ops").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    let raw: Value = answer.json().await.unwrap();
    // The WebRTC RTCIceServer shape: no username/credential keys for STUN.
    assert_eq!(
        raw["iceServers"][0],
        json!({"urls": ["stun:127.0.0.1:3478"]})
    );
    let body: IceServersResponse = serde_json::from_value(raw).unwrap();
    let turn = &body.ice_servers[1];
    assert_eq!(
        turn.urls,
        [
            "turn:127.0.0.1:3478?transport=udp",
            "turn:127.0.0.1:3478?transport=tcp"
        ]
    );
    let username = turn.username.as_deref().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (before + 120..=now() + 120).contains(&expiry),
        "{expiry} vs {before}"
    );
    assert_eq!(user, "%E6%9D%8E%E9%9B%B7%3Aops");
    let expected = turn_credentials(TURN_SECRET.as_bytes(), "李雷:ops", expiry);
    assert_eq!(turn.username.as_deref(), Some(expected.username.as_str()));
    assert_eq!(
        turn.credential.as_deref(),
        Some(expected.credential.as_str())
    );
}

#[tokio::test]
async fn ice_servers_need_a_token_and_share_the_api_rate() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.api_burst = nz(2);
    config.limits.api_requests_per_sec = nz(1);
    let gateway = start_gateway(config).await;

    let anonymous = reqwest::get(format!("http://{}/chat/api/rtc/ice-servers", gateway.addr))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["code"], "missing_token");

    assert_eq!(ice_servers(gateway.addr, "eager").await.status(), 200);
    assert_eq!(ice_servers(gateway.addr, "eager").await.status(), 200);
    let limited = ice_servers(gateway.addr, "eager").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
}

fn signal(i: usize) -> Message {
    let frame = json!({
        "event": "chat.call.signal",
        "data": {"callId": "call-1", "toUserId": "bob", "signal": {"type": "candidate", "candidate": {"candidate": format!("candidate:{i} 1 udp 1 127.0.0.1 {} typ relay", 50_000 + i), "sdpMid": "0"}}},
    });
    Message::text(frame.to_string())
}

/// Sorts what came back: answers from the service, or the gateway's
/// `rate_limited` notices.
#[derive(Default, Debug)]
struct Answers {
    not_found: usize,
    not_in_room: usize,
    rate_limited: usize,
}

impl Answers {
    fn total(&self) -> usize {
        self.not_found + self.not_in_room + self.rate_limited
    }

    async fn read(ws: &mut Client, count: usize) -> Answers {
        let mut answers = Answers::default();
        while answers.total() < count {
            let value = next_event(ws, "error").await;
            match value["data"]["code"].as_str() {
                Some("not_found") => answers.not_found += 1,
                Some("not_in_room") => answers.not_in_room += 1,
                Some("rate_limited") => answers.rate_limited += 1,
                other => panic!("unexpected error {other:?}"),
            }
        }
        answers
    }
}

/// A call's candidates arrive in a burst; the chat limit (30 in a burst)
/// would cut them. Signaling has its own allowance, and chat frames keep
/// theirs, untouched by the signaling.
#[tokio::test]
async fn an_ice_candidate_burst_gets_through_while_chat_stays_limited() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    // The default chat burst, refilled slowly so the count below is exact.
    config.limits.frames_per_sec = nz(1);
    let gateway = start_gateway(config).await;
    let mut ws = connect_as(gateway.addr, "caller").await;

    // Twice the chat burst, sent at once: under the chat limit half would
    // be dropped.
    for i in 0..60 {
        ws.feed(signal(i)).await.unwrap();
    }
    ws.flush().await.unwrap();
    let answers = Answers::read(&mut ws, 60).await;
    assert_eq!(
        (answers.not_found, answers.rate_limited),
        (60, 0),
        "every signal reached the service"
    );

    // Chat frames beyond the chat burst are still dropped.
    for _ in 0..40 {
        let history = json!({"event": "chat.history", "data": {"roomId": "not-joined"}});
        ws.feed(Message::text(history.to_string())).await.unwrap();
    }
    ws.flush().await.unwrap();
    let answers = Answers::read(&mut ws, 40).await;
    assert!(
        (30..=31).contains(&answers.not_in_room) && answers.rate_limited >= 9,
        "{answers:?}"
    );
}

#[tokio::test]
async fn a_sustained_signal_flood_is_limited_then_closed() {
    let (_service, gateway) = start_pair().await;
    let mut ws = connect_as(gateway.addr, "flooder").await;
    // Default signal limit: 100 in a burst, 20 per second; 100 dropped
    // frames within a minute close the socket.
    let started = std::time::Instant::now();
    for i in 0..400 {
        if ws.feed(signal(i)).await.is_err() {
            break;
        }
    }
    let _ = ws.flush().await;
    let mut answers = Answers::default();
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frames in time")
        {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                match value["data"]["code"].as_str() {
                    Some("not_found") => answers.not_found += 1,
                    Some("rate_limited") => answers.rate_limited += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(1008), "{answers:?}");
    // Answers still in flight when the socket closes are not relayed, so
    // only the upper bound is exact: the burst and what refilled meanwhile.
    let refilled = 20 * (started.elapsed().as_secs() as usize + 1);
    assert!(
        (1..=100 + refilled).contains(&answers.not_found),
        "{answers:?}"
    );
    assert!(answers.rate_limited >= 90, "{answers:?}");
}
