//! Regression tests for the security review of the gateway, each on real
//! sockets against a real gateway and service.

mod common;

use std::num::NonZeroU32;

use common::*;
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
