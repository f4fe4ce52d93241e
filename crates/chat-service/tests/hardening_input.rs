//! Bad text never reaches the store or other users: control characters in
//! messages and names are refused with `invalid_message`, spoofing
//! characters are cleaned out of display names, and a refused message
//! takes nobody else's message down with it. On SQLite and PostgreSQL.

mod common;

use chat_service::Config;
use common::backends::TestDb;
use common::TestServer;
use serde_json::json;

fn config(db: &TestDb) -> Config {
    let mut config = Config::new(common::KEY);
    config.database_url = db.url.clone();
    config
}

async fn control_characters_are_refused_and_others_still_deliver(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    ann.join("r").await;
    bob.join("r").await;
    ann.expect("chat.userJoined").await;
    for text in ["nul\u{0}inside", "escape\u{1b}[2J", "c1\u{9b}x"] {
        ann.say("r", text).await;
        bob.say("r", "fine").await;
        // Bob's message, sent at the same moment, is stored and delivered.
        let echoed = bob.expect("chat.message").await;
        assert_eq!(echoed["message"], "fine");
        // Ann's refusal and bob's message race each other to ann.
        let mut seen = [ann.next_event().await, ann.next_event().await];
        seen.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(seen[0].0, "chat.message");
        assert_eq!(seen[0].1["id"], echoed["id"]);
        assert_eq!(
            (seen[1].0.as_str(), &seen[1].1["code"]),
            ("error", &json!("invalid_message"))
        );
    }
    ann.send(
        "chat.message",
        json!({"roomId": "r", "message": "hi", "username": "ann\nadmin: forged"}),
    )
    .await;
    ann.expect_error("invalid_message").await;
    // Only bob's three messages exist, with seqs 1..3.
    ann.send("chat.history", json!({"roomId": "r"})).await;
    let page = ann.expect("chat.history").await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);

    // The internal API follows the same rule.
    let response = reqwest::Client::new()
        .post(server.http("/send-system-message"))
        .header("x-internal-api-key", common::KEY)
        .json(&json!({"roomId": "r", "message": "maintenance\u{0}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_message");
}

async fn display_names_are_cleaned(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    // The name the gateway vouches for (from a token) is cleaned too.
    let mut spoof = server.connect_named("u1", "\u{202e}nimda\u{200b}").await;
    let mut own = server.connect("u2").await;
    spoof.join("names").await;
    own.join("names").await;
    spoof.expect("chat.userJoined").await;
    spoof.say("names", "hello").await;
    assert_eq!(spoof.expect("chat.message").await["username"], "nimda");
    own.expect("chat.message").await;
    own.send(
        "chat.message",
        json!({"roomId": "names", "message": "hi", "username": "  alice\u{202e}\u{2066}  "}),
    )
    .await;
    assert_eq!(own.expect("chat.message").await["username"], "alice");
}

crate::on_every_store!(
    control_characters_are_refused_and_others_still_deliver,
    display_names_are_cleaned,
);
