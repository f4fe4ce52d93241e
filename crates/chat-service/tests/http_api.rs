//! The internal HTTP API and the upgrade checks.

mod common;

use common::{TestServer, KEY};
use serde_json::{json, Value};

async fn status_and_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

async fn upgrade_attempt(server: &TestServer, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .get(server.http("/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    status_and_body(request.send().await.unwrap()).await
}

#[tokio::test]
async fn upgrade_needs_the_key_and_a_user() {
    let server = TestServer::memory().await;
    let (status, body) = upgrade_attempt(&server, &[("x-user-id", "u")]).await;
    assert_eq!((status, body["code"].clone()), (401, json!("unauthorized")));
    let (status, _) = upgrade_attempt(
        &server,
        &[("x-user-id", "u"), ("x-internal-api-key", "wrong")],
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = upgrade_attempt(&server, &[("x-internal-api-key", KEY)]).await;
    assert_eq!((status, body["code"].clone()), (400, json!("missing_user")));
    let long = "a".repeat(129);
    let (status, _) = upgrade_attempt(
        &server,
        &[("x-internal-api-key", KEY), ("x-user-id", &long)],
    )
    .await;
    assert_eq!(status, 400);
    // With both, the same request upgrades.
    let response = reqwest::Client::new()
        .get(server.http("/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("x-internal-api-key", KEY)
        .header("x-user-id", "u")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 101);
}

#[tokio::test]
async fn system_messages_reach_the_room() {
    let server = TestServer::memory().await;
    let mut ann = server.connect("ann").await;
    let mut ann_tab = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    ann.join("room123").await;
    ann_tab.join("room123").await;
    bob.join("elsewhere").await;

    let http = reqwest::Client::new();
    let (status, body) = status_and_body(
        http.post(server.http("/send-system-message"))
            .header("x-internal-api-key", KEY)
            .json(&json!({"roomId": "room123", "message": "Server maintenance in 5 minutes"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["delivered"].clone(), body["seq"].clone()),
        (json!(2), json!(1))
    );
    for client in [&mut ann, &mut ann_tab] {
        let system = client.expect("chat.system").await;
        assert_eq!(system["roomId"], "room123");
        assert_eq!(system["message"], "Server maintenance in 5 minutes");
        assert!(system["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            (system["id"].clone(), system["seq"].clone()),
            (body["id"].clone(), json!(1))
        );
    }
    bob.expect_silence(std::time::Duration::from_millis(200))
        .await;

    let (status, body) = status_and_body(
        http.post(server.http("/send-system-message"))
            .header("x-internal-api-key", KEY)
            .json(&json!({"roomId": "nobody-here", "message": "hello?"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["delivered"].clone()), (200, json!(0)));
}

#[tokio::test]
async fn internal_api_rejects_bad_requests_with_json() {
    let server = TestServer::memory().await;
    let http = reqwest::Client::new();
    let post = |key: Option<&str>, body: &str| {
        let mut request = http
            .post(server.http("/send-system-message"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            request = request.header("x-internal-api-key", key);
        }
        request.send()
    };
    let valid = r#"{"roomId":"r","message":"m"}"#;
    for (key, body, expected) in [
        (None, valid, 401),
        (Some("wrong"), valid, 401),
        (Some(KEY), "{oops", 400),
        (Some(KEY), r#"{"roomId":"r"}"#, 400),
        (Some(KEY), r#"{"message":"m"}"#, 400),
        (Some(KEY), r#"{"roomId":"bad room","message":"m"}"#, 400),
        (Some(KEY), r#"{"roomId":"r","message":"   "}"#, 400),
        (Some(KEY), "[]", 400),
    ] {
        let (status, body) = status_and_body(post(key, body).await.unwrap()).await;
        assert_eq!(status, expected, "{body}");
        assert!(
            body["error"].is_string() && body["code"].is_string(),
            "{body}"
        );
    }
    let (status, _) = status_and_body(http.get(server.http("/stats")).send().await.unwrap()).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn stats_health_and_metrics() {
    let server = TestServer::memory().await;
    let mut a = server.connect("a").await;
    let _a2 = server.connect("a").await;
    let mut b = server.connect("b").await;
    a.join("x").await;
    b.join("y").await;
    assert_eq!(
        server.stats().await,
        json!({"connectedUsers": 2, "connections": 3, "rooms": 2})
    );
    let health = reqwest::get(server.http("/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    a.say("x", "counted").await;
    a.expect("chat.message").await;
    a.send_raw("garbage").await;
    a.expect_error("invalid_format").await;
    let metrics = server.metrics().await;
    for name in [
        "chat_connections",
        "chat_rooms",
        "chat_messages_in_total",
        "chat_messages_out_total",
        "chat_errors_total{code=\"invalid_format\"}",
        "chat_slow_consumer_disconnects_total",
        "chat_fanout_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn history_over_http_needs_key_and_user() {
    let server = TestServer::memory().await;
    let mut a = server.connect("a").await;
    a.join("h").await;
    a.say("h", "one").await;
    a.expect("chat.message").await;
    let http = reqwest::Client::new();
    let get = |path: &str, user: Option<&str>| {
        let mut request = http
            .get(server.http(path))
            .header("x-internal-api-key", KEY);
        if let Some(user) = user {
            request = request.header("x-user-id", user);
        }
        request.send()
    };
    let (status, body) =
        status_and_body(get("/api/rooms/h/messages", Some("a")).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["roomId"], "h");
    assert_eq!(body["hasMore"], false);
    assert_eq!(body["messages"][0]["message"], "one");
    assert_eq!(body["messages"][0]["seq"], 1);
    let (status, _) = status_and_body(get("/api/rooms/h/messages", None).await.unwrap()).await;
    assert_eq!(status, 400);
    let (status, _) = status_and_body(
        get("/api/rooms/h/messages?limit=0", Some("a"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = status_and_body(
        get("/api/rooms/h/messages?before=x", Some("a"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = status_and_body(
        get("/api/rooms/bad%20room/messages", Some("a"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
}
