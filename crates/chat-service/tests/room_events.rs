//! Room events: edits, deletions and reactions are durable events of the
//! room's log. Each takes the room's next `seq`, reaches every member (the
//! actor included) only after it is stored, shows in history as the
//! message's current state, and is replayed by recovery in order, across
//! a restart. On SQLite and PostgreSQL (and memory where it needs no
//! restart).

mod common;

use std::time::Duration;

use chat_service::Config;
use common::backends::TestDb;
use common::{Client, TestServer};
use serde_json::{json, Value};

fn config(db: &TestDb) -> Config {
    let mut config = Config::new(common::KEY);
    config.database_url = db.url.clone();
    config
}

/// Sends a message and returns its echo.
async fn post(client: &mut Client, room: &str, text: &str) -> Value {
    client.say(room, text).await;
    client.expect("chat.message").await
}

async fn edit(client: &mut Client, room: &str, id: &Value, text: &str) {
    client
        .send(
            "chat.edit",
            json!({"roomId": room, "messageId": id, "message": text}),
        )
        .await;
}

async fn delete(client: &mut Client, room: &str, id: &Value) {
    client
        .send("chat.delete", json!({"roomId": room, "messageId": id}))
        .await;
}

async fn react(client: &mut Client, room: &str, id: &Value, emoji: &str, added: bool) {
    let event = if added { "chat.react" } else { "chat.unreact" };
    client
        .send(
            event,
            json!({"roomId": room, "messageId": id, "emoji": emoji}),
        )
        .await;
}

async fn history(client: &mut Client, room: &str) -> Vec<Value> {
    client
        .send("chat.history", json!({"roomId": room, "limit": 100}))
        .await;
    let page = client.expect("chat.history").await;
    page["messages"].as_array().unwrap().clone()
}

/// The time, `toISOString()` style, and no later than now.
fn assert_recent_iso(value: &Value) {
    let text = value.as_str().expect("an ISO timestamp");
    assert!(text.ends_with('Z') && text.len() == 24, "{text}");
}

async fn edits_reach_everyone_after_commit(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    ann.join("r").await;
    bob.join("r").await;
    ann.expect("chat.userJoined").await;
    let sent = post(&mut ann, "r", "helo").await;
    bob.expect("chat.message").await;
    let id = sent["id"].clone();

    edit(&mut ann, "r", &id, "  hello  ").await;
    let edited = ann.expect("chat.edited").await;
    assert_eq!(bob.expect("chat.edited").await, edited);
    assert_eq!(edited["roomId"], "r");
    assert_eq!(edited["messageId"], id);
    assert_eq!(edited["message"], "hello");
    assert_eq!(edited["userId"], "ann");
    assert_eq!(edited["seq"], 2, "an edit takes the room's next seq");
    assert_recent_iso(&edited["editedAt"]);

    // Only the author; the message must exist in that room; text rules hold.
    edit(&mut bob, "r", &id, "mine now").await;
    bob.expect_error("forbidden").await;
    edit(&mut ann, "r", &json!("no-such-message"), "x").await;
    ann.expect_error("not_found").await;
    edit(&mut ann, "r", &id, "   ").await;
    ann.expect_error("invalid_message").await;
    edit(&mut ann, "r", &id, &"x".repeat(4001)).await;
    ann.expect_error("message_too_long").await;
    edit(&mut ann, "elsewhere", &id, "x").await;
    ann.expect_error("not_in_room").await;
    ann.join("other").await;
    edit(&mut ann, "other", &id, "x").await;
    ann.expect_error("not_found").await;
    // The connection stays up, and nothing was stored by the refusals.
    let again = post(&mut ann, "r", "next").await;
    assert_eq!(again["seq"], 3);
    bob.expect("chat.message").await;

    let items = history(&mut bob, "r").await;
    assert_eq!(items[0]["message"], "hello");
    assert_eq!(items[0]["editedAt"], edited["editedAt"]);
    assert!(items[1].get("editedAt").is_none());
    bob.expect_silence(Duration::from_millis(100)).await;
}

async fn deletes_erase_and_stay_in_place(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    ann.join("r").await;
    bob.join("r").await;
    ann.expect("chat.userJoined").await;
    let first = post(&mut ann, "r", "oops, a secret").await;
    bob.expect("chat.message").await;
    let id = first["id"].clone();
    edit(&mut ann, "r", &id, "still a secret").await;
    ann.expect("chat.edited").await;
    bob.expect("chat.edited").await;
    react(&mut bob, "r", &id, "👀", true).await;
    ann.expect("chat.reaction").await;
    bob.expect("chat.reaction").await;

    delete(&mut bob, "r", &id).await;
    bob.expect_error("forbidden").await;
    delete(&mut ann, "r", &id).await;
    let deleted = ann.expect("chat.deleted").await;
    assert_eq!(bob.expect("chat.deleted").await, deleted);
    assert_eq!(
        deleted,
        json!({"roomId": "r", "messageId": id, "userId": "ann", "seq": 4})
    );
    // Gone for every purpose.
    delete(&mut ann, "r", &id).await;
    ann.expect_error("not_found").await;
    edit(&mut ann, "r", &id, "back").await;
    ann.expect_error("not_found").await;
    react(&mut bob, "r", &id, "👍", true).await;
    bob.expect_error("not_found").await;

    let items = history(&mut bob, "r").await;
    assert_eq!(
        items,
        [json!({"id": id, "seq": 1, "roomId": "r", "userId": "ann", "deleted": true})]
    );
    // The replay holds no trace of the text either.
    let mut late = server.connect("carl").await;
    late.send("chat.join", json!({"roomId": "r", "since": 0}))
        .await;
    late.expect("chat.joined").await;
    let mut replayed = String::new();
    for _ in 1..=4 {
        let (event, data) = late.next_event().await;
        replayed.push_str(&format!("{event} {data}\n"));
    }
    assert!(!replayed.contains("secret"), "{replayed}");
    assert!(replayed.contains(r#""deleted":true"#), "{replayed}");
}

async fn reactions_count_and_no_ops_are_silent(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    ann.join("r").await;
    bob.join("r").await;
    ann.expect("chat.userJoined").await;
    let sent = post(&mut ann, "r", "vote").await;
    bob.expect("chat.message").await;
    let id = sent["id"].clone();

    react(&mut bob, "r", &id, "👍", true).await;
    let added = bob.expect("chat.reaction").await;
    assert_eq!(ann.expect("chat.reaction").await, added);
    assert_eq!(
        added,
        json!({"roomId": "r", "messageId": id, "emoji": "👍", "userId": "bob", "added": true, "seq": 2})
    );
    // Twice is once; removing what one did not add changes nothing.
    react(&mut bob, "r", &id, "👍", true).await;
    react(&mut ann, "r", &id, "👍", false).await;
    react(&mut ann, "r", &id, "🎉", false).await;
    react(&mut ann, "r", &id, "👍", true).await;
    let second = ann.expect("chat.reaction").await;
    assert_eq!(bob.expect("chat.reaction").await, second);
    assert_eq!(second["seq"], 3, "no-ops took no seq");
    bob.expect_silence(Duration::from_millis(100)).await;

    let items = history(&mut ann, "r").await;
    assert_eq!(
        items[0]["reactions"],
        json!([{"emoji": "👍", "count": 2, "userIds": ["bob", "ann"]}])
    );
    react(&mut bob, "r", &id, "👍", false).await;
    let removed = bob.expect("chat.reaction").await;
    assert_eq!(
        (removed["added"].clone(), removed["seq"].clone()),
        (json!(false), json!(4))
    );
    ann.expect("chat.reaction").await;

    // At most 20 distinct emoji per message.
    for n in 1..20 {
        react(&mut ann, "r", &id, &format!("e{n}"), true).await;
        ann.expect("chat.reaction").await;
        bob.expect("chat.reaction").await;
    }
    react(&mut bob, "r", &id, "one-too-many", true).await;
    bob.expect_error("too_many_reactions").await;
    // One already there is no new one.
    react(&mut bob, "r", &id, "e7", true).await;
    bob.expect("chat.reaction").await;
    ann.expect("chat.reaction").await;
    let items = history(&mut ann, "r").await;
    let reactions = items[0]["reactions"].as_array().unwrap();
    assert_eq!(reactions.len(), 20);
    assert_eq!(
        reactions[0],
        json!({"emoji": "👍", "count": 1, "userIds": ["ann"]})
    );
    let e7 = reactions.iter().find(|r| r["emoji"] == "e7").unwrap();
    assert_eq!(e7["userIds"], json!(["ann", "bob"]));
    react(&mut ann, "r", &id, "bad emoji", true).await;
    ann.expect_error("invalid_format").await;
    bob.expect_silence(Duration::from_millis(100)).await;
}

/// Emoji are listed in the order of their oldest remaining reaction, on
/// every store.
async fn reaction_order_follows_the_oldest_remaining_reaction(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    ann.join("r").await;
    let id = post(&mut ann, "r", "order").await["id"].clone();
    let mut bob = server.connect("bob").await;
    bob.join("r").await;
    ann.expect("chat.userJoined").await;
    for (by_ann, emoji, added) in [
        (true, "👍", true),
        (false, "🎉", true),
        (false, "👍", true),
        (true, "👍", false),
    ] {
        let client = if by_ann { &mut ann } else { &mut bob };
        react(client, "r", &id, emoji, added).await;
        // Both see each one, in order, before the next.
        assert_eq!(ann.expect("chat.reaction").await["emoji"], emoji);
        assert_eq!(bob.expect("chat.reaction").await["emoji"], emoji);
    }
    let mut viewer = server.connect("viewer").await;
    viewer.join("r").await;
    let items = history(&mut viewer, "r").await;
    assert_eq!(
        items[0]["reactions"],
        json!([
            {"emoji": "🎉", "count": 1, "userIds": ["bob"]},
            {"emoji": "👍", "count": 1, "userIds": ["bob"]},
        ])
    );
}

/// History lists at most 50 of the users who reacted with one emoji, and
/// counts them all.
async fn reaction_user_lists_are_bounded(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    ann.join("r").await;
    let id = post(&mut ann, "r", "popular").await["id"].clone();
    let mut fans = Vec::new();
    for n in 0..55 {
        let mut fan = server.connect(&format!("fan{n:02}")).await;
        fan.join("r").await;
        react(&mut fan, "r", &id, "❤️", true).await;
        fans.push(fan);
    }
    // Over HTTP, which ann's stream of arrivals does not get in the way of.
    let items = loop {
        let page: Value = reqwest::Client::new()
            .get(server.http("/api/rooms/r/messages"))
            .header("x-internal-api-key", common::KEY)
            .header("x-user-id", "ann")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["messages"][0]["reactions"][0]["count"] == 55 {
            break page["messages"].as_array().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let users = items[0]["reactions"][0]["userIds"].as_array().unwrap();
    assert_eq!(users.len(), 50);
    assert_eq!(users[0], "fan00");
    assert_eq!(users[49], "fan49");
}

/// Every durable event a member receives, in order, numbered 1, 2, 3 …
/// across kinds; a join with `since` replays all of them after it (old
/// messages' edits, deletions and reactions included), then live events,
/// with no gap and no duplicate, also across a restart.
async fn recovery_replays_every_kind_across_a_restart(db: TestDb) {
    let mut server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    let mut watcher = server.connect("watcher").await;
    ann.join("r").await;
    watcher.join("r").await;
    ann.expect("chat.userJoined").await;
    let first = post(&mut ann, "r", "first").await["id"].clone();
    let second = post(&mut ann, "r", "second").await["id"].clone();
    edit(&mut ann, "r", &first, "first, edited").await;
    ann.expect("chat.edited").await;
    react(&mut ann, "r", &second, "👍", true).await;
    ann.expect("chat.reaction").await;
    delete(&mut ann, "r", &second).await;
    ann.expect("chat.deleted").await;
    let sent = reqwest::Client::new()
        .post(server.http("/send-system-message"))
        .header("x-internal-api-key", common::KEY)
        .json(&json!({"roomId": "r", "message": "maintenance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let mut live = Vec::new();
    for _ in 1..=6 {
        let (event, data) = watcher.next_event().await;
        live.push((event, data["seq"].as_u64().unwrap()));
    }
    assert_eq!(
        live,
        [
            ("chat.message".to_owned(), 1),
            ("chat.message".to_owned(), 2),
            ("chat.edited".to_owned(), 3),
            ("chat.reaction".to_owned(), 4),
            ("chat.deleted".to_owned(), 5),
            ("chat.system".to_owned(), 6),
        ]
    );
    server.stop().await.unwrap();

    let server = TestServer::start(config(&db)).await;
    let mut back = server.connect("watcher").await;
    back.send("chat.join", json!({"roomId": "r", "since": 1}))
        .await;
    let joined = back.expect("chat.joined").await;
    assert_eq!(
        (joined["recovered"].clone(), joined["lastSeq"].clone()),
        (json!(true), json!(6))
    );
    let mut replay = Vec::new();
    for _ in 2..=6 {
        replay.push(back.next_event().await);
    }
    let kinds: Vec<(&str, u64)> = replay
        .iter()
        .map(|(event, data)| (event.as_str(), data["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("chat.message", 2),
            ("chat.edited", 3),
            ("chat.reaction", 4),
            ("chat.deleted", 5),
            ("chat.system", 6),
        ]
    );
    // The replayed message shows its current state: deleted, so no text.
    assert_eq!(
        replay[0].1,
        json!({"id": second, "seq": 2, "roomId": "r", "userId": "ann", "deleted": true})
    );
    assert_eq!(replay[1].1["message"], "first, edited");
    assert_eq!(replay[2].1["emoji"], "👍");
    // Then live, continuing the numbering.
    let mut ann = server.connect("ann").await;
    ann.join("r").await;
    back.expect("chat.userJoined").await;
    react(&mut ann, "r", &first, "🎉", true).await;
    assert_eq!(back.expect("chat.reaction").await["seq"], 7);
    back.expect_silence(Duration::from_millis(100)).await;
}

/// Unread counts messages by others after the marker; deleted ones and
/// other kinds of events do not count.
async fn unread_skips_deleted_messages(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    ann.join("r").await;
    let one = post(&mut ann, "r", "one").await["id"].clone();
    post(&mut ann, "r", "two").await;
    let three = post(&mut ann, "r", "three").await["id"].clone();
    edit(&mut ann, "r", &three, "three!").await;
    ann.expect("chat.edited").await;
    react(&mut ann, "r", &three, "👍", true).await;
    ann.expect("chat.reaction").await;
    delete(&mut ann, "r", &one).await;
    ann.expect("chat.deleted").await;
    let mut bob = server.connect("bob").await;
    let joined = bob.join("r").await;
    assert_eq!(
        (
            joined["lastSeq"].clone(),
            joined["readSeq"].clone(),
            joined["unread"].clone()
        ),
        (json!(6), json!(0), json!(2))
    );
    bob.send("chat.read", json!({"roomId": "r", "seq": 6}))
        .await;
    ann.expect("chat.userJoined").await;
    assert_eq!(ann.expect("chat.read").await["seq"], 6);
}

/// Moderation: the internal API deletes any message, shown as deleted by
/// `system`; it needs the key and names the outcome.
async fn moderators_delete_any_message(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    ann.join("r").await;
    let id = post(&mut ann, "r", "spam").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    let moderate = |room: &str, message: &str, key: &str| {
        http.delete(server.http(&format!("/rooms/{room}/messages/{message}")))
            .header("x-internal-api-key", key)
            .send()
    };
    let refused = moderate("r", &id, "wrong-key-wrong-key").await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["code"],
        "unauthorized"
    );

    let done = moderate("r", &id, common::KEY).await.unwrap();
    assert_eq!(done.status(), 200);
    let body: Value = done.json().await.unwrap();
    assert_eq!(
        body,
        json!({"roomId": "r", "messageId": id, "seq": 2, "delivered": 1})
    );
    assert_eq!(
        ann.expect("chat.deleted").await,
        json!({"roomId": "r", "messageId": id, "userId": "system", "seq": 2})
    );
    for (room, message) in [("r", id.as_str()), ("r", "unknown"), ("other", id.as_str())] {
        let missing = moderate(room, message, common::KEY).await.unwrap();
        assert_eq!(missing.status(), 404, "{room} {message}");
        assert_eq!(missing.json::<Value>().await.unwrap()["code"], "not_found");
    }
    let bad = moderate("bad%20room", "x", common::KEY).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["code"], "invalid_room");
    // A system message may be moderated away too.
    let system: Value = http
        .post(server.http("/send-system-message"))
        .header("x-internal-api-key", common::KEY)
        .json(&json!({"roomId": "r", "message": "wrong announcement"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ann.expect("chat.system").await;
    let system_id = system["id"].as_str().unwrap();
    assert_eq!(
        moderate("r", system_id, common::KEY)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(ann.expect("chat.deleted").await["messageId"], system_id);
    let items = history(&mut ann, "r").await;
    assert_eq!(
        items[1],
        json!({"id": system_id, "seq": 3, "roomId": "r", "type": "system", "deleted": true})
    );
}

crate::on_every_store!(
    edits_reach_everyone_after_commit,
    deletes_erase_and_stay_in_place,
    reactions_count_and_no_ops_are_silent,
    reaction_user_lists_are_bounded,
    reaction_order_follows_the_oldest_remaining_reaction,
    recovery_replays_every_kind_across_a_restart,
    unread_skips_deleted_messages,
    moderators_delete_any_message,
);

// The memory store applies the same rules (no restart to survive).
crate::on_the_memory_store!(
    edits_reach_everyone_after_commit,
    deletes_erase_and_stay_in_place,
    reactions_count_and_no_ops_are_silent,
    reaction_user_lists_are_bounded,
    reaction_order_follows_the_oldest_remaining_reaction,
    unread_skips_deleted_messages,
    moderators_delete_any_message,
);
