//! Read markers: `chat.read` moves a user's marker forward only, tells the
//! room and the user's other tabs, survives a restart, and shows in
//! `chat.joined` (`readSeq`, `unread`) and in receipts (socket and HTTP).
//! On SQLite and PostgreSQL.

mod common;

use chat_service::Config;
use common::backends::TestDb;
use common::TestServer;
use serde_json::{json, Value};

fn config(db: &TestDb) -> Config {
    let mut config = Config::new(common::KEY);
    config.database_url = db.url.clone();
    config
}

async fn http_receipts(server: &TestServer, room: &str) -> Value {
    reqwest::Client::new()
        .get(server.http(&format!("/api/rooms/{room}/receipts")))
        .header("x-internal-api-key", common::KEY)
        .header("x-user-id", "auditor")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn markers_move_forward_and_are_shared(db: TestDb) {
    let mut server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    let mut bob_tab = server.connect("bob").await;
    let joined = bob.join("r").await;
    assert_eq!(
        (joined["readSeq"].clone(), joined["unread"].clone()),
        (json!(0), json!(0))
    );
    bob_tab.join("r").await;
    ann.join("r").await;
    bob.expect("chat.userJoined").await;
    bob_tab.expect("chat.userJoined").await;
    for n in 1..=3 {
        ann.say("r", &format!("m{n}")).await;
        ann.expect("chat.message").await;
        bob.expect("chat.message").await;
        bob_tab.expect("chat.message").await;
    }
    // A fresh connection learns where bob is; ann's own messages are not
    // unread for ann.
    let mut bob_late = server.connect("bob").await;
    let joined = bob_late.join("r").await;
    assert_eq!(
        (joined["readSeq"].clone(), joined["unread"].clone()),
        (json!(0), json!(3))
    );
    let mut ann_late = server.connect("ann").await;
    assert_eq!(ann_late.join("r").await["unread"], 0);

    // Reading tells the room and bob's other tabs, not the connection itself.
    bob.send("chat.read", json!({"roomId": "r", "seq": 2}))
        .await;
    let read = json!({"roomId": "r", "userId": "bob", "seq": 2});
    assert_eq!(ann.expect("chat.read").await, read);
    assert_eq!(bob_tab.expect("chat.read").await, read);
    assert_eq!(bob_late.expect("chat.read").await, read);
    // Backwards is ignored, silently; past the end is the end.
    bob.send("chat.read", json!({"roomId": "r", "seq": 1}))
        .await;
    bob.send("chat.read", json!({"roomId": "r", "seq": 99}))
        .await;
    assert_eq!(ann.expect("chat.read").await["seq"], 3);
    ann.say("r", "m4").await;
    // The first thing bob's own connection hears is the message: no echo
    // of its own reads.
    assert_eq!(bob.expect("chat.message").await["seq"], 4);

    bob.send("chat.receipts", json!({"roomId": "r"})).await;
    let receipts = bob.expect("chat.receipts").await;
    assert_eq!(
        receipts,
        json!({"roomId": "r", "receipts": [{"userId": "bob", "seq": 3}]})
    );
    assert_eq!(http_receipts(&server, "r").await, receipts);

    // Only members read or ask.
    let mut stranger = server.connect("stranger").await;
    stranger
        .send("chat.read", json!({"roomId": "r", "seq": 1}))
        .await;
    stranger.expect_error("not_in_room").await;
    stranger.send("chat.receipts", json!({"roomId": "r"})).await;
    stranger.expect_error("not_in_room").await;
    stranger.send("chat.read", json!({"roomId": "r"})).await;
    stranger.expect_error("invalid_format").await;

    // Durable.
    drop((ann, bob, bob_tab, bob_late, ann_late, stranger));
    server.stop().await.unwrap();
    let server = TestServer::start(config(&db)).await;
    let mut bob = server.connect("bob").await;
    let joined = bob.join("r").await;
    assert_eq!(
        (joined["readSeq"].clone(), joined["unread"].clone()),
        (json!(3), json!(1))
    );
}

crate::on_every_store!(markers_move_forward_and_are_shared);

#[tokio::test]
async fn markers_in_memory() {
    let server = TestServer::memory().await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    ann.join("r").await;
    bob.join("r").await;
    ann.expect("chat.userJoined").await;
    ann.say("r", "one").await;
    ann.expect("chat.message").await;
    bob.expect("chat.message").await;
    bob.send("chat.read", json!({"roomId": "r", "seq": 1}))
        .await;
    assert_eq!(ann.expect("chat.read").await["userId"], "bob");
    let mut again = server.connect("bob").await;
    let joined = again.join("r").await;
    assert_eq!(
        (joined["readSeq"].clone(), joined["unread"].clone()),
        (json!(1), json!(0))
    );
}

/// A reader's tabs that are not in the room hear of the read too (their
/// unread counts go down), once; tabs in it hear it as members.
#[tokio::test]
async fn reads_reach_the_readers_tabs_outside_the_room() {
    let server = TestServer::memory().await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    let mut bob_in = server.connect("bob").await;
    let mut bob_out = server.connect("bob").await;
    ann.join("r").await;
    bob.join("r").await;
    bob_in.join("r").await;
    ann.expect("chat.userJoined").await;
    ann.say("r", "one").await;
    ann.expect("chat.message").await;
    bob.expect("chat.message").await;
    bob_in.expect("chat.message").await;
    bob.send("chat.read", json!({"roomId": "r", "seq": 1}))
        .await;
    let read = json!({"roomId": "r", "userId": "bob", "seq": 1});
    assert_eq!(ann.expect("chat.read").await, read);
    assert_eq!(bob_in.expect("chat.read").await, read);
    assert_eq!(bob_out.expect("chat.read").await, read);
    for client in [&mut bob, &mut bob_in, &mut bob_out] {
        client
            .expect_silence(std::time::Duration::from_millis(100))
            .await;
    }
}
