//! Who may be in a room, direct conversations and presence: members-only
//! rooms refuse everyone else on every path; a DM reaches both users on
//! every tab; presence follows tabs, away and reloads. On SQLite and
//! PostgreSQL.

mod common;

use std::time::Duration;

use chat_service::Config;
use common::backends::TestDb;
use common::{Client, TestServer};
use serde_json::{json, Value};

fn config(db: &TestDb) -> Config {
    let mut config = Config::new(common::KEY);
    config.database_url = db.url.clone();
    config.limits.presence_grace = Duration::from_millis(500);
    config
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The internal API, with the key: `(status, body)`.
async fn internal(server: &TestServer, method: &str, path: &str) -> (u16, Value) {
    let request = reqwest::Client::new()
        .request(method.parse().unwrap(), server.http(path))
        .header("x-internal-api-key", common::KEY);
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The user-facing HTTP API as the gateway calls it.
async fn as_user(server: &TestServer, user: &str, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(server.http(path))
        .header("x-internal-api-key", common::KEY)
        .header("x-user-id", encode(user))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn add_member(server: &TestServer, room: &str, user: &str) -> Value {
    let (status, body) = internal(
        server,
        "PUT",
        &format!("/rooms/{room}/members/{}", encode(user)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn try_join(client: &mut Client, room: &str) -> (String, Value) {
    client.send("chat.join", json!({"roomId": room})).await;
    client.next_event().await
}

async fn members_only_rooms_refuse_everyone_else(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let room = "private:team";
    let mut ann = server.connect("ann").await;
    let mut eve = server.connect("eve").await;
    // Before it exists, and after: the same refusal, nothing learnt.
    let refusal = try_join(&mut eve, room).await;
    assert_eq!(refusal.0, "error");
    assert_eq!(refusal.1["code"], "forbidden");
    add_member(&server, room, "ann").await;
    ann.join(room).await;
    ann.say(room, "plans").await;
    ann.expect("chat.message").await;
    let refusal_after = try_join(&mut eve, room).await;
    assert_eq!(refusal_after, refusal);
    for path in ["messages", "receipts"] {
        for room in [room, "private:nothing-here", "dm:0123"] {
            let (status, body) =
                as_user(&server, "eve", &format!("/api/rooms/{room}/{path}")).await;
            assert_eq!(
                (status, body["code"].clone()),
                (403, json!("forbidden")),
                "{room} {path}"
            );
        }
    }
    // With since (recovery) too.
    eve.send("chat.join", json!({"roomId": room, "since": 0}))
        .await;
    eve.expect_error("forbidden").await;
    // Everything that needs the room needs the join.
    eve.send("chat.history", json!({"roomId": room})).await;
    eve.expect_error("not_in_room").await;
    eve.send("chat.members", json!({"roomId": room})).await;
    eve.expect_error("forbidden").await;
    // Members read over HTTP.
    let (status, page) = as_user(&server, "ann", &format!("/api/rooms/{room}/messages")).await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"][0]["message"], "plans");
    // Public rooms stay open.
    eve.join("lobby").await;
}

async fn membership_is_managed_by_the_application(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let room = "private:ops";
    // User ids are any UTF-8: none is read out of a room id.
    let odd = ["李雷", "a:b", "x y"];
    for user in ["ann", "bob"].iter().chain(&odd) {
        let added = add_member(&server, room, user).await;
        assert_eq!(
            added,
            json!({"roomId": room, "userId": user, "member": true, "changed": true})
        );
    }
    assert_eq!(add_member(&server, room, "ann").await["changed"], false);
    let (status, listed) = internal(&server, "GET", &format!("/rooms/{room}/members")).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed,
        json!({"roomId": room, "members": ["ann", "bob", "李雷", "a:b", "x y"]})
    );
    let mut odd_client = server.connect("a:b").await;
    odd_client.join(room).await;

    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    let mut bob_tab = server.connect("bob").await;
    ann.join(room).await;
    odd_client.expect("chat.userJoined").await;
    bob.join(room).await;
    bob_tab.join(room).await;
    ann.expect("chat.userJoined").await;
    odd_client.expect("chat.userJoined").await;
    bob_tab
        .send("chat.typing", json!({"roomId": room, "isTyping": true}))
        .await;
    ann.expect("chat.typing").await;
    odd_client.expect("chat.typing").await;
    bob.expect("chat.typing").await;

    // Removal takes effect at once, on every tab.
    let (status, body) = internal(&server, "DELETE", &format!("/rooms/{room}/members/bob")).await;
    assert_eq!(status, 200);
    assert_eq!(body["member"], false);
    assert_eq!(bob.expect("chat.removed").await, json!({"roomId": room}));
    assert_eq!(
        bob_tab.expect("chat.removed").await,
        json!({"roomId": room})
    );
    for other in [&mut ann, &mut odd_client] {
        let stopped = other.expect("chat.typing").await;
        assert_eq!(stopped["isTyping"], false);
        assert_eq!(
            other.expect("chat.userLeft").await,
            json!({"userId": "bob", "roomId": room})
        );
    }
    bob.say(room, "still here?").await;
    bob.expect_error("not_in_room").await;
    ann.say(room, "bob is gone").await;
    ann.expect("chat.message").await;
    bob.expect_silence(Duration::from_millis(100)).await;
    let refused = try_join(&mut bob, room).await;
    assert_eq!(refused.1["code"], "forbidden");

    // Only private rooms have members to manage.
    for (path, code) in [
        ("/rooms/lobby/members/ann", "invalid_room"),
        ("/rooms/dm:abc/members/ann", "invalid_room"),
        ("/rooms/private:x/members/%20", "invalid_user"),
    ] {
        let (status, body) = internal(&server, "PUT", path).await;
        assert_eq!((status, body["code"].clone()), (400, json!(code)), "{path}");
    }
    let (status, _) = reqwest::Client::new()
        .put(server.http("/rooms/private:x/members/ann"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401);
}

async fn open_dm(client: &mut Client, peer: &str) -> Value {
    client.send("chat.dm.open", json!({"userId": peer})).await;
    client.expect("chat.joined").await
}

async fn direct_messages_reach_both_users_everywhere(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    let mut ann_elsewhere = server.connect("ann").await;
    let mut bob_tab1 = server.connect("李雷").await;
    let mut bob_tab2 = server.connect("李雷").await;
    let opened = open_dm(&mut ann, "李雷").await;
    let room = opened["roomId"].as_str().unwrap().to_owned();
    assert!(room.starts_with("dm:"), "{room}");
    assert!(!room.contains("ann") && !room.contains("李雷"));
    assert_eq!(opened["dm"], json!({"userId": "李雷"}));
    assert_eq!(
        (opened["lastSeq"].clone(), opened["unread"].clone()),
        (json!(0), json!(0))
    );

    ann.say(&room, "hi bob").await;
    let message = ann.expect("chat.message").await;
    // Connections of either user not in the conversation hear of it, once.
    for (other, peer) in [
        (&mut ann_elsewhere, "李雷"),
        (&mut bob_tab1, "ann"),
        (&mut bob_tab2, "ann"),
    ] {
        let incoming = other.expect("chat.dm.incoming").await;
        assert_eq!(
            incoming,
            json!({"roomId": room, "userId": "ann", "username": "ann", "message": message,
                "dm": {"userId": peer}})
        );
        other.expect_silence(Duration::from_millis(50)).await;
    }

    // The same conversation, whoever opens it.
    let bob_opened = open_dm(&mut bob_tab1, "ann").await;
    assert_eq!(bob_opened["roomId"], room);
    assert_eq!(bob_opened["dm"], json!({"userId": "ann"}));
    assert_eq!(bob_opened["unread"], 1);
    ann.expect("chat.userJoined").await;
    bob_tab1
        .send("chat.typing", json!({"roomId": room, "isTyping": true}))
        .await;
    ann.expect("chat.typing").await;
    bob_tab1.say(&room, "hello ann").await;
    let reply = bob_tab1.expect("chat.message").await;
    assert_eq!(ann.expect("chat.message").await, reply);
    // The tab in the conversation gets the message, the others the notice.
    bob_tab2.expect("chat.dm.incoming").await;
    ann_elsewhere.expect("chat.dm.incoming").await;
    bob_tab1.expect_silence(Duration::from_millis(50)).await;

    // Reactions, edits, reads and history work as in any room.
    let id = reply["id"].clone();
    ann.send(
        "chat.react",
        json!({"roomId": room, "messageId": id, "emoji": "👋"}),
    )
    .await;
    ann.expect("chat.reaction").await;
    bob_tab1.expect("chat.reaction").await;
    ann.send("chat.read", json!({"roomId": room, "seq": 3}))
        .await;
    bob_tab1.expect("chat.read").await;
    ann_elsewhere.expect("chat.read").await;

    // Nobody else gets in, by any path.
    let mut carl = server.connect("carl").await;
    assert_eq!(try_join(&mut carl, &room).await.1["code"], "forbidden");
    let (status, _) = as_user(&server, "carl", &format!("/api/rooms/{room}/messages")).await;
    assert_eq!(status, 403);
    let (status, page) = as_user(&server, "李雷", &format!("/api/rooms/{room}/messages")).await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);

    // Not with oneself; user ids are checked.
    ann.send("chat.dm.open", json!({"userId": "ann"})).await;
    ann.expect_error("invalid_user").await;
    ann.send("chat.dm.open", json!({"userId": ""})).await;
    ann.expect_error("invalid_user").await;
    ann.send("chat.dm.open", json!({"userId": 7})).await;
    ann.expect_error("invalid_user").await;
    // Ids that look like each other make different conversations.
    let mut colon = server.connect("a:b").await;
    let one = open_dm(&mut colon, "c").await["roomId"].clone();
    let mut other = server.connect("a").await;
    let two = open_dm(&mut other, "b:c").await["roomId"].clone();
    assert_ne!(one, two);
}

async fn conversations_are_listed_most_recent_first(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    let mut rooms = Vec::new();
    for peer in ["p1", "p2", "p3"] {
        let room = open_dm(&mut ann, peer).await["roomId"].clone();
        rooms.push(room);
    }
    // p1's conversation gets the latest message.
    let mut p1 = server.connect("p1").await;
    let room1 = rooms[0].as_str().unwrap().to_owned();
    p1.send("chat.join", json!({"roomId": room1})).await;
    p1.expect("chat.joined").await;
    ann.expect("chat.userJoined").await;
    p1.say(&room1, "ping").await;
    p1.expect("chat.message").await;
    ann.expect("chat.message").await;

    ann.send("chat.dm.list", json!({"limit": 2})).await;
    let first = ann.expect("chat.dm.list").await;
    assert_eq!(first["hasMore"], true);
    let conversations = first["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 2);
    assert_eq!(conversations[0]["roomId"], rooms[0]);
    assert_eq!(conversations[0]["userId"], "p1");
    assert_eq!(conversations[0]["lastSeq"], 1);
    assert_eq!(conversations[0]["unread"], 1);
    assert_eq!(conversations[0]["readSeq"], 0);
    assert_eq!(conversations[0]["lastMessage"]["message"], "ping");
    assert!(conversations[1]["lastMessage"].is_null());
    let before = conversations[1]["lastActivity"].clone();
    ann.send("chat.dm.list", json!({"before": before})).await;
    let rest = ann.expect("chat.dm.list").await;
    assert_eq!(rest["hasMore"], false);
    let rest = rest["conversations"].as_array().unwrap();
    assert_eq!(rest.len(), 1);
    let listed: Vec<&Value> = conversations
        .iter()
        .chain(rest)
        .map(|c| &c["userId"])
        .collect();
    assert_eq!(listed.len(), 3);
    // Over HTTP, the same.
    let (status, http) = as_user(&server, "ann", "/api/dms?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(http, first);
    let (status, bad) = as_user(&server, "ann", "/api/dms?before=yesterday").await;
    assert_eq!(
        (status, bad["code"].clone()),
        (400, json!("invalid_format"))
    );
    ann.send("chat.dm.list", json!({"limit": 0})).await;
    ann.expect_error("invalid_format").await;
}

async fn blocked_senders_reach_nobody(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    let room = open_dm(&mut ann, "bob").await["roomId"].clone();
    let (status, body) = internal(&server, "PUT", "/blocks/bob/ann").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"userId": "bob", "blockedId": "ann", "blocked": true, "changed": true})
    );
    ann.say(room.as_str().unwrap(), "let me in").await;
    ann.expect_error("forbidden").await;
    ann.send("chat.dm.open", json!({"userId": "bob"})).await;
    ann.expect_error("forbidden").await;
    bob.expect_silence(Duration::from_millis(100)).await;
    // The block is one way.
    let bob_room = open_dm(&mut bob, "ann").await["roomId"].clone();
    assert_eq!(bob_room, room);
    ann.expect("chat.userJoined").await;
    bob.say(room.as_str().unwrap(), "I can write").await;
    bob.expect("chat.message").await;
    ann.expect("chat.message").await;
    let (status, _) = internal(&server, "DELETE", "/blocks/bob/ann").await;
    assert_eq!(status, 200);
    ann.say(room.as_str().unwrap(), "thanks").await;
    ann.expect("chat.message").await;
    bob.expect("chat.message").await;
}

async fn presence_request(client: &mut Client, users: &[&str], subscribe: Option<bool>) -> Value {
    let mut data = json!({"userIds": users});
    if let Some(subscribe) = subscribe {
        data["subscribe"] = json!(subscribe);
    }
    client.send("chat.presence", data).await;
    client.expect("chat.presence").await
}

async fn expect_presence(client: &mut Client, user: &str, status: &str) -> Value {
    let changed = client.expect("chat.presence.changed").await;
    assert_eq!(
        (changed["userId"].clone(), changed["status"].clone()),
        (json!(user), json!(status)),
        "{changed}"
    );
    changed
}

async fn presence_follows_tabs_away_and_reloads(db: TestDb) {
    let mut server = TestServer::start(config(&db)).await;
    let mut watcher = server.connect("watcher").await;
    let now = presence_request(&mut watcher, &["ann", "nobody"], Some(true)).await;
    assert_eq!(
        now,
        json!({"users": [
            {"userId": "ann", "status": "offline", "lastSeen": null},
            {"userId": "nobody", "status": "offline", "lastSeen": null},
        ]})
    );
    let mut ann = server.connect("ann").await;
    expect_presence(&mut watcher, "ann", "online").await;
    ann.send("chat.status", json!({"status": "away"})).await;
    expect_presence(&mut watcher, "ann", "away").await;
    // Away only when every tab is.
    let mut ann_tab = server.connect("ann").await;
    expect_presence(&mut watcher, "ann", "online").await;
    ann_tab.send("chat.status", json!({"status": "away"})).await;
    expect_presence(&mut watcher, "ann", "away").await;
    ann.send("chat.status", json!({"status": "online"})).await;
    expect_presence(&mut watcher, "ann", "online").await;
    // The away tab closing leaves the online one.
    drop(ann_tab);
    ann.send("chat.status", json!({"status": "bogus"})).await;
    ann.expect_error("invalid_format").await;
    watcher.expect_silence(Duration::from_millis(100)).await;

    // A reload: closed, back within the grace period: nothing to say.
    drop(ann);
    let ann = server.connect("ann").await;
    watcher.expect_silence(Duration::from_millis(800)).await;
    // Gone for good: offline, with when.
    drop(ann);
    let offline = expect_presence(&mut watcher, "ann", "offline").await;
    let last_seen = offline["lastSeen"].clone();
    assert!(
        last_seen.as_str().is_some_and(|t| t.ends_with('Z')),
        "{offline}"
    );
    // Until unsubscribed.
    presence_request(&mut watcher, &["ann"], Some(false)).await;
    let _ann = server.connect("ann").await;
    watcher.expect_silence(Duration::from_millis(200)).await;
    drop(_ann);
    // lastSeen survives a restart.
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.stop().await.unwrap();
    let server = TestServer::start(config(&db)).await;
    let mut watcher = server.connect("watcher").await;
    let after = presence_request(&mut watcher, &["ann"], None).await;
    assert_eq!(after["users"][0]["status"], "offline");
    assert!(after["users"][0]["lastSeen"].is_string(), "{after}");
    assert_ne!(after["users"][0]["lastSeen"], Value::Null);
}

async fn presence_requests_are_bounded(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut watcher = server.connect("watcher").await;
    let many: Vec<String> = (0..101).map(|n| format!("u{n}")).collect();
    watcher
        .send("chat.presence", json!({"userIds": many}))
        .await;
    watcher.expect_error("invalid_format").await;
    for start in (0..1000).step_by(100) {
        let batch: Vec<String> = (start..start + 100).map(|n| format!("u{n}")).collect();
        watcher
            .send(
                "chat.presence",
                json!({"userIds": batch, "subscribe": true}),
            )
            .await;
        let answer = watcher.expect("chat.presence").await;
        assert_eq!(answer["users"].as_array().unwrap().len(), 100);
    }
    watcher
        .send(
            "chat.presence",
            json!({"userIds": ["one-more"], "subscribe": true}),
        )
        .await;
    watcher.expect_error("too_many_subscriptions").await;
    // Watching someone already watched again is no new subscription.
    presence_request(&mut watcher, &["u5"], Some(true)).await;
    watcher
        .send("chat.presence", json!({"userIds": ["u1", 5]}))
        .await;
    watcher.expect_error("invalid_user").await;
}

async fn members_lists_people_with_status(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect_named("ann", "Ann").await;
    let mut bob = server.connect("bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    ann.expect("chat.userJoined").await;
    bob.send("chat.status", json!({"status": "away"})).await;
    // Bob's frames are handled in order: once this is answered, so is that.
    presence_request(&mut bob, &["bob"], None).await;
    ann.send("chat.members", json!({"roomId": "lobby"})).await;
    let listed = ann.expect("chat.members").await;
    assert_eq!(
        listed,
        json!({"roomId": "lobby", "members": [
            {"userId": "ann", "username": "Ann", "status": "online"},
            {"userId": "bob", "username": "bob", "status": "away"},
        ]})
    );
    let mut carl = server.connect("carl").await;
    carl.send("chat.members", json!({"roomId": "lobby"})).await;
    carl.expect_error("not_in_room").await;
    // A private room lists its members, connected or not.
    add_member(&server, "private:p", "ann").await;
    add_member(&server, "private:p", "dora").await;
    ann.send("chat.members", json!({"roomId": "private:p"}))
        .await;
    let private = ann.expect("chat.members").await;
    assert_eq!(
        private["members"],
        json!([
            {"userId": "ann", "username": "Ann", "status": "online"},
            {"userId": "dora", "username": "dora", "status": "offline"},
        ])
    );
    carl.send("chat.members", json!({"roomId": "private:p"}))
        .await;
    carl.expect_error("forbidden").await;
}

crate::on_every_store!(
    members_only_rooms_refuse_everyone_else,
    membership_is_managed_by_the_application,
    direct_messages_reach_both_users_everywhere,
    conversations_are_listed_most_recent_first,
    blocked_senders_reach_nobody,
    presence_follows_tabs_away_and_reloads,
    presence_requests_are_bounded,
    members_lists_people_with_status,
);

crate::on_the_memory_store!(
    members_only_rooms_refuse_everyone_else,
    membership_is_managed_by_the_application,
    direct_messages_reach_both_users_everywhere,
    conversations_are_listed_most_recent_first,
    blocked_senders_reach_nobody,
    members_lists_people_with_status,
);
