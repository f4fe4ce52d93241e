//! Rate limits and caps: per-user frames, per-IP connects, per-user sockets,
//! and which address counts behind a proxy.

mod common;

use std::num::NonZeroU32;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

const RATE_LIMITED: &str =
    r#"{"event":"error","data":{"message":"Rate limit exceeded","code":"rate_limited"}}"#;

#[tokio::test]
async fn frames_over_the_user_limit_are_dropped_with_an_error() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.frame_burst = nz(5);
    config.limits.frames_per_sec = nz(1);
    let gateway = start_gateway(config).await;
    let mut flooder = connect_as(gateway.addr, "flooder").await;
    let mut calm = connect_as(gateway.addr, "calm").await;
    join(&mut calm, "r").await;

    // The join used one token; four messages fit the burst, the rest do not.
    join(&mut flooder, "r").await;
    for i in 0..8 {
        let frame =
            json!({"event": "chat.message", "data": {"roomId": "r", "message": format!("m{i}")}});
        flooder
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }
    let mut echoes = 0;
    let mut limited = 0;
    while echoes + limited < 8 {
        match flooder_next(&mut flooder).await {
            Frame::Echo => echoes += 1,
            Frame::Limited => limited += 1,
            Frame::Other => {}
        }
    }
    assert_eq!((echoes, limited), (4, 4));

    // The other user is unaffected.
    send_json(
        &mut calm,
        json!({"event": "chat.message", "data": {"roomId": "r", "message": "still here"}}),
    )
    .await;
    loop {
        let got = next_event(&mut calm, "chat.message").await;
        if got["data"]["userId"] == "calm" {
            break;
        }
    }
    // Control frames are not counted: a ping is still answered.
    flooder.send(Message::Ping("p".into())).await.unwrap();
    loop {
        let message = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut flooder))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if message.is_pong() {
            break;
        }
    }
}

enum Frame {
    Echo,
    Limited,
    Other,
}

async fn flooder_next(ws: &mut Client) -> Frame {
    loop {
        let message = tokio::time::timeout(WAIT, futures_util::StreamExt::next(ws))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match message {
            Message::Text(text) if text.as_str() == RATE_LIMITED => return Frame::Limited,
            Message::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                if value["event"] == "chat.message" && value["data"]["userId"] == "flooder" {
                    return Frame::Echo;
                }
                return Frame::Other;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn sustained_abuse_closes_with_1008() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.frame_burst = nz(1);
    config.limits.frames_per_sec = nz(1);
    config.limits.abuse_dropped_frames = 10;
    let gateway = start_gateway(config).await;
    let mut ws = connect_as(gateway.addr, "abuser").await;
    for _ in 0..20 {
        if ws.send(Message::text("{}")).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, 1008);
}

#[tokio::test]
async fn connect_rate_per_ip_answers_429_with_retry_after() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.connect_burst = nz(2);
    config.limits.connects_per_min = nz(1);
    let gateway = start_gateway(config).await;
    let t = token("c");
    let _a = connect(gateway.addr, &[("cookie", &cookie(&t))])
        .await
        .unwrap();
    let _b = connect(gateway.addr, &[("cookie", &cookie(&t))])
        .await
        .unwrap();
    let (status, headers, body) = refused(gateway.addr, &[("cookie", &cookie(&t))]).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "connect_rate_limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_trusted_proxies() {
    let service = start_service().await;
    let t = token("p");
    let auth = cookie(&t);

    // Untrusted peer: X-Forwarded-For is ignored, so rotating it does not help.
    let mut config = gateway_config(service.addr);
    config.limits.connect_burst = nz(1);
    config.limits.connects_per_min = nz(1);
    let untrusted = start_gateway(config.clone()).await;
    assert!(connect(
        untrusted.addr,
        &[("cookie", &auth), ("x-forwarded-for", "1.1.1.1")]
    )
    .await
    .is_ok());
    assert_eq!(
        connect(
            untrusted.addr,
            &[("cookie", &auth), ("x-forwarded-for", "2.2.2.2")]
        )
        .await
        .err(),
        Some(429)
    );

    // Trusted peer: each forwarded client has its own budget.
    config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let trusted = start_gateway(config).await;
    assert!(connect(
        trusted.addr,
        &[("cookie", &auth), ("x-forwarded-for", "1.1.1.1")]
    )
    .await
    .is_ok());
    assert!(connect(
        trusted.addr,
        &[("cookie", &auth), ("x-forwarded-for", "2.2.2.2")]
    )
    .await
    .is_ok());
    assert_eq!(
        connect(
            trusted.addr,
            &[("cookie", &auth), ("x-forwarded-for", "9.9.9.9, 1.1.1.1")]
        )
        .await
        .err(),
        Some(429),
        "the right-most untrusted hop is the client"
    );
}

#[tokio::test]
async fn concurrent_sockets_per_user_are_capped() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.limits.max_connections_per_user = 2;
    let gateway = start_gateway(config).await;
    let first = connect_as(gateway.addr, "capped").await;
    let _second = connect_as(gateway.addr, "capped").await;
    let (status, _, body) = refused(gateway.addr, &[("cookie", &cookie(&token("capped")))]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_connections"))
    );
    // Another user is not affected.
    let _other = connect_as(gateway.addr, "someone-else").await;
    // Closing one frees a slot.
    let mut first = first;
    first.close(None).await.unwrap();
    close_code(&mut first).await;
    let mut admitted = false;
    for _ in 0..50 {
        if connect(gateway.addr, &[("cookie", &cookie(&token("capped")))])
            .await
            .is_ok()
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(admitted);
}
