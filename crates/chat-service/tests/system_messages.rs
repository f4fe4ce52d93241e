//! System messages are durable room events: they take the room's next
//! `seq`, show in history as `type: "system"`, and are replayed by
//! recovery as `chat.system`. On SQLite and PostgreSQL, across a restart.

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

async fn system(server: &TestServer, room: &str, text: &str) -> Value {
    reqwest::Client::new()
        .post(server.http("/send-system-message"))
        .header("x-internal-api-key", common::KEY)
        .json(&json!({"roomId": room, "message": text}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn system_messages_are_in_the_log(db: TestDb) {
    let mut server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    ann.join("r").await;
    ann.say("r", "one").await;
    assert_eq!(ann.expect("chat.message").await["seq"], 1);
    let sent = system(&server, "r", "Maintenance at noon").await;
    assert_eq!(
        (sent["delivered"].clone(), sent["seq"].clone()),
        (json!(1), json!(2))
    );
    let live = ann.expect("chat.system").await;
    assert_eq!(live["seq"], 2);
    assert_eq!(live["id"], sent["id"]);
    ann.say("r", "three").await;
    assert_eq!(ann.expect("chat.message").await["seq"], 3);
    // Sent while nobody is in the room: stored all the same.
    let quiet = system(&server, "empty", "Anyone?").await;
    assert_eq!(
        (quiet["delivered"].clone(), quiet["seq"].clone()),
        (json!(0), json!(1))
    );

    drop(ann);
    server.stop().await.unwrap();
    let server = TestServer::start(config(&db)).await;
    let mut bob = server.connect("bob").await;
    bob.send("chat.join", json!({"roomId": "r", "since": 0}))
        .await;
    assert_eq!(bob.expect("chat.joined").await["recovered"], true);
    assert_eq!(bob.expect("chat.message").await["seq"], 1);
    let replayed = bob.expect("chat.system").await;
    assert_eq!(
        (replayed["seq"].clone(), replayed["message"].clone()),
        (json!(2), json!("Maintenance at noon"))
    );
    assert_eq!(bob.expect("chat.message").await["seq"], 3);

    bob.send("chat.history", json!({"roomId": "r"})).await;
    let page = bob.expect("chat.history").await;
    let item = &page["messages"][1];
    assert_eq!(item["type"], "system");
    assert_eq!(item["seq"], 2);
    assert!(item.get("userId").is_none(), "{item}");
    assert_eq!(page["messages"][0].get("type"), None);
}

crate::on_every_store!(system_messages_are_in_the_log);
