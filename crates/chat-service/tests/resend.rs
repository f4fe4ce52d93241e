//! `clientId`: a message resent with the same id (same user, same room,
//! within a day) is stored once; the sender gets the original's echo
//! again, and the room sees it once. On SQLite and PostgreSQL, across a
//! restart.

mod common;

use chat_service::Config;
use common::backends::TestDb;
use common::{Client, TestServer};
use serde_json::{json, Value};

fn config(db: &TestDb) -> Config {
    let mut config = Config::new(common::KEY);
    config.database_url = db.url.clone();
    config
}

async fn send(client: &mut Client, room: &str, text: &str, client_id: &str) {
    client
        .send(
            "chat.message",
            json!({"roomId": room, "message": text, "clientId": client_id}),
        )
        .await;
}

async fn resends_are_stored_once(db: TestDb) {
    let mut server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    ann.join("r").await;
    bob.join("r").await;
    ann.expect("chat.userJoined").await;

    send(&mut ann, "r", "hello", "tab-1").await;
    let original = ann.expect("chat.message").await;
    assert_eq!(
        (original["clientId"].clone(), original["seq"].clone()),
        (json!("tab-1"), json!(1))
    );
    assert_eq!(bob.expect("chat.message").await, original);

    // The resend (after a reconnect, say) is answered with the original.
    send(&mut ann, "r", "hello", "tab-1").await;
    assert_eq!(ann.expect("chat.message").await, original);
    // Twice at once: both answered with one stored message.
    send(&mut ann, "r", "again", "tab-2").await;
    send(&mut ann, "r", "again", "tab-2").await;
    let first = ann.expect("chat.message").await;
    assert_eq!(ann.expect("chat.message").await, first);
    assert_eq!(first["seq"], 2);
    // The room saw each message once: bob's next is the one after.
    assert_eq!(bob.expect("chat.message").await, first);
    ann.say("r", "plain").await;
    assert_eq!(bob.expect("chat.message").await["seq"], 3);
    ann.expect("chat.message").await;

    // The same id from someone else, or in another room, is another message.
    send(&mut bob, "r", "mine", "tab-1").await;
    assert_eq!(bob.expect("chat.message").await["seq"], 4);
    ann.expect("chat.message").await;
    ann.join("other").await;
    send(&mut ann, "other", "elsewhere", "tab-1").await;
    assert_eq!(ann.expect("chat.message").await["seq"], 1);

    // Durable: after a restart the resend is still recognised.
    drop((ann, bob));
    server.stop().await.unwrap();
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    ann.join("r").await;
    send(&mut ann, "r", "hello", "tab-1").await;
    assert_eq!(ann.expect("chat.message").await, original);

    ann.send("chat.history", json!({"roomId": "r"})).await;
    let page = ann.expect("chat.history").await;
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m: &Value| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello", "again", "plain", "mine"]);
}

crate::on_every_store!(resends_are_stored_once);

/// The memory store recognises resends among the messages it keeps.
#[tokio::test]
async fn resends_are_stored_once_in_memory() {
    let server = TestServer::memory().await;
    let mut ann = server.connect("ann").await;
    ann.join("r").await;
    send(&mut ann, "r", "hello", "m-1").await;
    let original = ann.expect("chat.message").await;
    send(&mut ann, "r", "hello", "m-1").await;
    assert_eq!(ann.expect("chat.message").await, original);
    ann.say("r", "next").await;
    assert_eq!(ann.expect("chat.message").await["seq"], 2);
}

#[tokio::test]
async fn a_bad_client_id_is_refused() {
    let server = TestServer::memory().await;
    let mut ann = server.connect("ann").await;
    ann.join("r").await;
    for bad in [json!(""), json!("x".repeat(65)), json!(7), json!("a\nb")] {
        ann.send(
            "chat.message",
            json!({"roomId": "r", "message": "hi", "clientId": bad}),
        )
        .await;
        ann.expect_error("invalid_format").await;
    }
}
