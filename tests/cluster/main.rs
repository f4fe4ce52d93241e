//! Cluster mode with real processes: service nodes on the machine's
//! PostgreSQL, joined through a `redis-server` of the suite's own (killed
//! and restarted by the tests), and gateways in front. Every behaviour of
//! the protocol holds when the people involved are on different nodes.

mod harness;

#[path = "../../crates/chat-service/tests/common/backends.rs"]
mod backends;

use std::collections::HashMap;
use std::time::Duration;

use harness::{eventually, Client, Gateway, Node, Redis, PRESENCE_TTL_SECS};
use serde_json::{json, Value};

const NEEDS: &str = "needs PostgreSQL (TEST_POSTGRES_URL) and redis-server; run with --include-ignored";

async fn cluster(nodes: usize) -> (backends::TestDb, Redis, Vec<Node>) {
    let db = backends::postgres().await;
    let redis = Redis::start().await;
    let mut started = Vec::new();
    for _ in 0..nodes {
        started.push(Node::start(&db.url, &redis.url()).await);
    }
    (db, redis, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (TEST_POSTGRES_URL) and redis-server; run with --include-ignored"]
async fn messages_and_room_events_cross_nodes() {
    let _ = NEEDS;
    let (_db, _redis, nodes) = cluster(3).await;
    let mut ann = nodes[0].connect("ann").await;
    let mut bob = nodes[1].connect("bob").await;
    let mut ann_tab = nodes[2].connect("ann").await;
    ann.join("r").await;
    bob.join("r").await;
    assert_eq!(ann.expect("chat.userJoined").await["userId"], "bob");
    // A second tab on another node: nobody hears of ann again.
    ann_tab.join("r").await;
    bob.say("r", "hi from node 2").await;
    let echo = bob.expect("chat.message").await;
    assert_eq!(echo["seq"], 1);
    assert_eq!(ann.expect("chat.message").await, echo);
    assert_eq!(ann_tab.expect("chat.message").await, echo);
    // Typing crosses too (to the others only).
    bob.send("chat.typing", json!({"roomId": "r", "isTyping": true}))
        .await;
    assert_eq!(ann.expect("chat.typing").await["userId"], "bob");
    assert_eq!(ann_tab.expect("chat.typing").await["userId"], "bob");

    // Edits, reactions, deletions, in seq order everywhere.
    let id = echo["id"].clone();
    ann.send(
        "chat.react",
        json!({"roomId": "r", "messageId": id, "emoji": "👍"}),
    )
    .await;
    bob.send(
        "chat.edit",
        json!({"roomId": "r", "messageId": id, "message": "hi, edited"}),
    )
    .await;
    for client in [&mut ann, &mut bob, &mut ann_tab] {
        let reaction = client.expect("chat.reaction").await;
        let edited = client.expect("chat.edited").await;
        assert_eq!((reaction["seq"].clone(), edited["seq"].clone()), (json!(2), json!(3)));
    }
    // A system message from a third node's internal API, and moderation
    // from another.
    let (status, sent) = nodes[2]
        .internal(
            "POST",
            "/send-system-message",
            Some(json!({"roomId": "r", "message": "maintenance"})),
        )
        .await;
    assert_eq!((status, sent["seq"].clone()), (200, json!(4)));
    let (status, _) = nodes[0]
        .internal("DELETE", &format!("/rooms/r/messages/{}", id.as_str().unwrap()), None)
        .await;
    assert_eq!(status, 200);
    for client in [&mut ann, &mut bob, &mut ann_tab] {
        assert_eq!(client.expect("chat.system").await["seq"], 4);
        let deleted = client.expect("chat.deleted").await;
        assert_eq!((deleted["userId"].clone(), deleted["seq"].clone()), (json!("system"), json!(5)));
    }

    // ann leaves on one node, still there on the other: nothing; then gone.
    ann.send("chat.leave", json!({"roomId": "r"})).await;
    bob.expect_silence(Duration::from_millis(300)).await;
    drop(ann_tab);
    assert_eq!(
        bob.expect("chat.userLeft").await,
        json!({"userId": "ann", "roomId": "r"})
    );
    // Stats count distinct users over every node, and each node its own.
    let stats = nodes[1].stats().await;
    assert_eq!(stats["connectedUsers"], 2, "{stats}");
    assert_eq!(stats["node"]["connectedUsers"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (TEST_POSTGRES_URL) and redis-server; run with --include-ignored"]
async fn people_cross_nodes() {
    let (_db, _redis, nodes) = cluster(3).await;
    // A direct message reaches the other side's tabs on other nodes.
    let mut dora = nodes[2].connect("dora").await;
    let mut ann_elsewhere = nodes[0].connect("ann").await;
    dora.send("chat.dm.open", json!({"userId": "ann"})).await;
    let room = dora.expect("chat.joined").await["roomId"]
        .as_str()
        .unwrap()
        .to_owned();
    dora.say(&room, "psst").await;
    let message = dora.expect("chat.message").await;
    let incoming = ann_elsewhere.expect("chat.dm.incoming").await;
    assert_eq!(incoming["message"], message);
    assert_eq!(incoming["dm"], json!({"userId": "dora"}));
    // Opened on another node, it is the same conversation, with its history.
    let mut ann = nodes[1].connect("ann").await;
    ann.send("chat.dm.open", json!({"userId": "dora"})).await;
    let joined = ann.expect("chat.joined").await;
    assert_eq!((joined["roomId"].clone(), joined["unread"].clone()), (json!(room), json!(1)));
    assert_eq!(dora.expect("chat.userJoined").await["userId"], "ann");
    ann.say(&room, "got it").await;
    assert_eq!(dora.expect("chat.message").await["message"], "got it");
    ann_elsewhere.expect("chat.dm.incoming").await;

    // Presence over every node and tab.
    let mut watcher = nodes[1].connect("watcher").await;
    watcher
        .send("chat.presence", json!({"userIds": ["erin"], "subscribe": true}))
        .await;
    assert_eq!(watcher.expect("chat.presence").await["users"][0]["status"], "offline");
    let mut erin = nodes[0].connect("erin").await;
    let changed = watcher.expect("chat.presence.changed").await;
    assert_eq!((changed["userId"].clone(), changed["status"].clone()), (json!("erin"), json!("online")));
    erin.send("chat.status", json!({"status": "away"})).await;
    assert_eq!(watcher.expect("chat.presence.changed").await["status"], "away");
    // Another tab, on another node, not away: online again.
    let erin_tab = nodes[2].connect("erin").await;
    assert_eq!(watcher.expect("chat.presence.changed").await["status"], "online");
    drop(erin_tab);
    assert_eq!(watcher.expect("chat.presence.changed").await["status"], "away");
    drop(erin);
    let offline = watcher.expect("chat.presence.changed").await;
    assert_eq!(offline["status"], "offline");
    assert!(offline["lastSeen"].is_string(), "{offline}");
    // Asked on a third node, the same answer.
    let mut asker = nodes[2].connect("asker").await;
    asker.send("chat.presence", json!({"userIds": ["erin", "dora"]})).await;
    let users = asker.expect("chat.presence").await["users"].clone();
    assert_eq!(users[0]["status"], "offline");
    assert_eq!(users[1]["status"], "online");

    // A removal from a private room, asked on one node, takes the member's
    // connections on another out at once; a member elsewhere sees it.
    for user in ["ann", "bob"] {
        let (status, _) = nodes[0]
            .internal("PUT", &format!("/rooms/private:ops/members/{user}"), None)
            .await;
        assert_eq!(status, 200);
    }
    let mut ann_ops = nodes[1].connect("ann").await;
    let mut bob_ops = nodes[2].connect("bob").await;
    ann_ops.join("private:ops").await;
    bob_ops.join("private:ops").await;
    ann_ops.expect("chat.userJoined").await;
    let (status, _) = nodes[0]
        .internal("DELETE", "/rooms/private:ops/members/bob", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(bob_ops.expect("chat.removed").await, json!({"roomId": "private:ops"}));
    assert_eq!(
        ann_ops.expect("chat.userLeft").await,
        json!({"userId": "bob", "roomId": "private:ops"})
    );
    bob_ops.say("private:ops", "still here?").await;
    assert_eq!(bob_ops.expect("error").await["code"], "not_in_room");

    // Members of a public room, over every node.
    let mut one = nodes[0].connect("one").await;
    let mut two = nodes[1].connect("two").await;
    one.join("lobby").await;
    two.join("lobby").await;
    one.expect("chat.userJoined").await;
    two.send("chat.members", json!({"roomId": "lobby"})).await;
    let members = two.expect("chat.members").await["members"].clone();
    let ids: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["one", "two"]);
}
