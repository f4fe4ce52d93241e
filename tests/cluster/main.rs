//! Cluster mode with real processes: service nodes on the machine's
//! PostgreSQL, joined through a `redis-server` of the suite's own (killed
//! and restarted by the tests), and gateways in front. Every behaviour of
//! the protocol holds when the people involved are on different nodes.

mod harness;

#[path = "../../crates/chat-service/tests/common/backends.rs"]
mod backends;

use std::collections::HashMap;
use std::time::Duration;

use harness::{eventually, Client, Gateway, Node, RedisServer, PRESENCE_TTL_SECS};
use serde_json::{json, Value};

const NEEDS: &str =
    "needs PostgreSQL (TEST_POSTGRES_URL) and redis-server; run with --include-ignored";

async fn cluster(nodes: usize) -> (backends::TestDb, RedisServer, Vec<Node>) {
    let db = backends::postgres().await;
    let redis = RedisServer::start().await;
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
        assert_eq!(
            (reaction["seq"].clone(), edited["seq"].clone()),
            (json!(2), json!(3))
        );
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
        .internal(
            "DELETE",
            &format!("/rooms/r/messages/{}", id.as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for client in [&mut ann, &mut bob, &mut ann_tab] {
        assert_eq!(client.expect("chat.system").await["seq"], 4);
        let deleted = client.expect("chat.deleted").await;
        assert_eq!(
            (deleted["userId"].clone(), deleted["seq"].clone()),
            (json!("system"), json!(5))
        );
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
    assert_eq!(
        (joined["roomId"].clone(), joined["unread"].clone()),
        (json!(room), json!(1))
    );
    assert_eq!(dora.expect("chat.userJoined").await["userId"], "ann");
    ann.say(&room, "got it").await;
    assert_eq!(dora.expect("chat.message").await["message"], "got it");
    ann_elsewhere.expect("chat.dm.incoming").await;

    // Presence over every node and tab.
    let mut watcher = nodes[1].connect("watcher").await;
    watcher
        .send(
            "chat.presence",
            json!({"userIds": ["erin"], "subscribe": true}),
        )
        .await;
    assert_eq!(
        watcher.expect("chat.presence").await["users"][0]["status"],
        "offline"
    );
    let mut erin = nodes[0].connect("erin").await;
    let changed = watcher.expect("chat.presence.changed").await;
    assert_eq!(
        (changed["userId"].clone(), changed["status"].clone()),
        (json!("erin"), json!("online"))
    );
    erin.send("chat.status", json!({"status": "away"})).await;
    assert_eq!(
        watcher.expect("chat.presence.changed").await["status"],
        "away"
    );
    // Another tab, on another node, not away: online again.
    let erin_tab = nodes[2].connect("erin").await;
    assert_eq!(
        watcher.expect("chat.presence.changed").await["status"],
        "online"
    );
    drop(erin_tab);
    assert_eq!(
        watcher.expect("chat.presence.changed").await["status"],
        "away"
    );
    drop(erin);
    let offline = watcher.expect("chat.presence.changed").await;
    assert_eq!(offline["status"], "offline");
    assert!(offline["lastSeen"].is_string(), "{offline}");
    // Asked on a third node, the same answer.
    let mut asker = nodes[2].connect("asker").await;
    asker
        .send("chat.presence", json!({"userIds": ["erin", "dora"]}))
        .await;
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
    assert_eq!(
        bob_ops.expect("chat.removed").await,
        json!({"roomId": "private:ops"})
    );
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

/// Ten thousand messages from publishers on every node while Redis is
/// killed and restarted (empty) twice: every member on every node gets all
/// of them, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (TEST_POSTGRES_URL) and redis-server; run with --include-ignored"]
async fn nothing_is_lost_while_redis_restarts() {
    const TOTAL: u64 = 10_000;
    let (_db, mut redis, nodes) = cluster(3).await;
    let (progress, seen) = tokio::sync::watch::channel(0u64);
    let mut receivers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let mut member = node.connect(&format!("member{n}")).await;
        member.join("flood").await;
        let progress = progress.clone();
        receivers.push(tokio::spawn(async move {
            let mut seqs = Vec::with_capacity(TOTAL as usize);
            while (seqs.len() as u64) < TOTAL {
                let Some((event, data)) = member.next_event_within(Duration::from_secs(60)).await
                else {
                    panic!(
                        "member{n}'s connection closed after {} messages",
                        seqs.len()
                    );
                };
                if event == "chat.message" {
                    seqs.push(data["seq"].as_u64().unwrap());
                    if n == 0 {
                        progress.send_replace(seqs.len() as u64);
                    }
                }
            }
            seqs
        }));
    }
    let mut publishers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let mut publisher = node.connect(&format!("publisher{n}")).await;
        publisher.join("flood").await;
        let share = TOTAL / 3 + u64::from((n as u64) < TOTAL % 3);
        publishers.push(tokio::spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            let (mut sink, mut stream) = publisher.ws.split();
            let echoes = tokio::spawn(async move {
                let mut echoed = 0u64;
                while let Some(Ok(frame)) = stream.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
                        let value: Value = serde_json::from_str(&text).unwrap();
                        assert_ne!(value["event"], "error", "a message was refused: {value}");
                        if value["event"] == "chat.message"
                            && value["data"]["userId"] == format!("publisher{n}")
                        {
                            echoed += 1;
                            if echoed == share {
                                return echoed;
                            }
                        }
                    }
                }
                echoed
            });
            // Evenly spread, not in bursts: about 500 a second each.
            let mut ticks = tokio::time::interval(Duration::from_millis(2));
            for i in 0..share {
                ticks.tick().await;
                let frame = json!({"event": "chat.message", "data": {"roomId": "flood", "message": format!("p{n}-{i}")}});
                sink.send(tokio_tungstenite::tungstenite::Message::text(frame.to_string()))
                    .await
                    .unwrap();
            }
            let echoed = tokio::time::timeout(Duration::from_secs(60), echoes)
                .await
                .expect("every message echoed")
                .unwrap();
            assert_eq!(echoed, share);
            drop(sink);
        }));
    }
    // Two outages, mid-flood.
    for at in [TOTAL / 5, TOTAL * 3 / 5] {
        let mut seen = seen.clone();
        tokio::time::timeout(Duration::from_secs(60), seen.wait_for(|n| *n >= at))
            .await
            .expect("the flood goes on")
            .unwrap();
        let port = redis.port;
        redis.kill();
        tokio::time::sleep(Duration::from_millis(800)).await;
        redis = RedisServer::start_on(port).await;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    for (n, receiver) in receivers.into_iter().enumerate() {
        let seqs = tokio::time::timeout(Duration::from_secs(90), receiver)
            .await
            .unwrap_or_else(|_| panic!("member{n} got every message"))
            .unwrap();
        let expected: Vec<u64> = (1..=TOTAL).collect();
        if seqs != expected {
            let first_wrong = seqs.iter().zip(&expected).position(|(a, b)| a != b);
            panic!("member{n}: out of order, missing or repeated from index {first_wrong:?}");
        }
    }
    let mut outages = 0.0;
    let mut filled = 0.0;
    for node in &nodes {
        outages += node.metric("chat_cluster_redis_outages_total").await;
        filled += node.metric("chat_cluster_backfilled_events_total").await;
    }
    assert!(outages >= 3.0, "every node saw the outages: {outages}");
    assert!(filled > 0.0, "what Redis lost was filled from the database");
}

/// kill -9 of a node: its clients, behind the gateways, are closed with
/// 1012, come back on the other nodes, recover with `since`, and lose
/// nothing that was acknowledged; the others see its users go offline
/// within PRESENCE_TTL_SECS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (TEST_POSTGRES_URL) and redis-server; run with --include-ignored"]
async fn a_killed_node_loses_nothing_acknowledged() {
    let (_db, redis, mut nodes) = cluster(3).await;
    let gateways = [
        Gateway::start(&nodes.iter().collect::<Vec<_>>(), &redis.url()).await,
        Gateway::start(&nodes.iter().collect::<Vec<_>>(), &redis.url()).await,
    ];
    // Six users through two gateways: two on each node (least connections).
    let mut clients = Vec::new();
    for n in 0..6 {
        let user = format!("user{n}");
        let mut client = gateways[n % 2].connect(&user).await;
        client.join("room").await;
        clients.push((user, client));
    }
    let per_node: Vec<u64> = {
        let mut counts = Vec::new();
        for node in &nodes {
            counts.push(node.stats().await["node"]["connections"].as_u64().unwrap());
        }
        counts
    };
    assert_eq!(per_node, [2, 2, 2], "spread by least connections");
    let mut watcher = nodes[0].connect("watcher").await;
    let users: Vec<String> = (0..6).map(|n| format!("user{n}")).collect();
    watcher
        .send(
            "chat.presence",
            json!({"userIds": users, "subscribe": true}),
        )
        .await;
    watcher.expect("chat.presence").await;
    // Each says something; every echo is an acknowledgement.
    let mut acknowledged: Vec<u64> = Vec::new();
    let mut highest: HashMap<String, u64> = HashMap::new();
    for (user, client) in clients.iter_mut() {
        client.say("room", &format!("before from {user}")).await;
        loop {
            let (event, data) = client.next_event().await;
            if event != "chat.message" {
                continue;
            }
            let seq = data["seq"].as_u64().unwrap();
            let seen = highest.entry(user.clone()).or_default();
            *seen = (*seen).max(seq);
            if data["userId"] == user.as_str() {
                acknowledged.push(seq);
                break;
            }
        }
    }
    nodes[2].kill().await;
    // The killed node's users see their sockets closed with 1012 (service
    // restarting); the others see every message.
    let mut dropped = Vec::new();
    for (user, client) in clients.iter_mut() {
        loop {
            let seen = highest.entry(user.clone()).or_default();
            match client.try_next_event(Duration::from_secs(3)).await {
                Ok(Some((event, data))) => {
                    if event == "chat.message" {
                        *seen = (*seen).max(data["seq"].as_u64().unwrap());
                    }
                }
                Ok(None) => {
                    assert_eq!(client.close_code, Some(1012), "{user} told to reconnect");
                    dropped.push(user.clone());
                    break;
                }
                // Quiet: still connected.
                Err(_) => break,
            }
        }
    }
    assert_eq!(
        dropped.len(),
        2,
        "the killed node's two users were dropped: {dropped:?}"
    );
    // Meanwhile the others keep talking.
    for (user, client) in clients.iter_mut().filter(|(u, _)| !dropped.contains(u)) {
        client.say("room", &format!("during from {user}")).await;
        loop {
            let (event, data) = client.next_event().await;
            if event == "chat.message" && data["userId"] == user.as_str() {
                acknowledged.push(data["seq"].as_u64().unwrap());
                break;
            }
        }
    }
    // The dropped ones come back through a gateway, on the other nodes,
    // and recover everything after what they had.
    for user in &dropped {
        let since = highest[user];
        let mut back = eventually("a gateway to take the client back", || {
            let addr = gateways[0].addr.clone();
            let user = user.clone();
            async move { Client::try_gateway(&addr, &user).await }
        })
        .await;
        back.send("chat.join", json!({"roomId": "room", "since": since}))
            .await;
        let joined = back.expect("chat.joined").await;
        assert_eq!(joined["recovered"], true);
        let last = joined["lastSeq"].as_u64().unwrap();
        let mut expected = since + 1;
        while expected <= last {
            let (event, data) = back.next_event().await;
            if let Some(seq) = data["seq"].as_u64() {
                assert_eq!(seq, expected, "{event} {data}");
                expected += 1;
            }
        }
        // Everything acknowledged is in what it has now.
        assert!(
            acknowledged.iter().all(|seq| *seq <= last),
            "{acknowledged:?} > {last}"
        );
    }
    // The others see the killed node's users go offline (and come back
    // online as they reconnected): each dropped user is reported offline
    // within the TTL, or online again from another node.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(PRESENCE_TTL_SECS * 3 + 10);
    let mut settled: HashMap<String, bool> = HashMap::new();
    while settled.len() < dropped.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence converged: {settled:?}"
        );
        let Some((event, data)) = watcher
            .next_event_within(Duration::from_secs(PRESENCE_TTL_SECS * 3 + 10))
            .await
        else {
            panic!("the watcher's connection closed");
        };
        if event == "chat.presence.changed" {
            let user = data["userId"].as_str().unwrap().to_owned();
            if dropped.contains(&user) {
                settled.insert(user, true);
            }
        }
    }
    let mut asked = nodes[1].connect("asker").await;
    asked
        .send("chat.presence", json!({"userIds": dropped}))
        .await;
    let answer = asked.expect("chat.presence").await;
    for user in answer["users"].as_array().unwrap() {
        assert_eq!(user["status"], "online", "back on another node: {user}");
    }
}

/// Interest-based routing: a node with no member of a room receives none
/// of its traffic from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (TEST_POSTGRES_URL) and redis-server; run with --include-ignored"]
async fn a_node_receives_nothing_for_rooms_it_does_not_host() {
    let (_db, _redis, nodes) = cluster(3).await;
    let mut a = nodes[0].connect("a").await;
    let mut b = nodes[1].connect("b").await;
    let mut elsewhere = nodes[2].connect("c").await;
    a.join("busy").await;
    b.join("busy").await;
    a.expect("chat.userJoined").await;
    elsewhere.join("quiet").await;
    let before = nodes[2].metric("chat_cluster_received_bytes_total").await;
    let before_b = nodes[1].metric("chat_cluster_received_bytes_total").await;
    for n in 0..200 {
        a.say("busy", &format!("message {n} with some text to weigh it"))
            .await;
    }
    let mut got = 0;
    while got < 200 {
        if b.expect_skipping("chat.message").await["seq"]
            .as_u64()
            .is_some()
        {
            got += 1;
        }
    }
    let received_b = nodes[1].metric("chat_cluster_received_bytes_total").await - before_b;
    assert!(
        received_b > 200.0 * 50.0,
        "the host received the room: {received_b}"
    );
    let received = nodes[2].metric("chat_cluster_received_bytes_total").await - before;
    assert_eq!(received, 0.0, "node 3 hosts no member of the busy room");
    elsewhere.expect_silence(Duration::from_millis(100)).await;
}

/// Reads until the call is in `state`.
async fn call_state(client: &mut Client, state: &str) -> Value {
    loop {
        let update = client.expect_skipping("chat.call.state").await;
        if update["state"] == state {
            return update;
        }
    }
}

/// Calls across nodes: the callee's tabs on other nodes ring, one accepts
/// and the others stop, signals reach exactly the connection in the call
/// wherever it is, a start from another node joins the room's one call,
/// and the record lands in the room's log for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (TEST_POSTGRES_URL) and redis-server; run with --include-ignored"]
async fn calls_cross_nodes() {
    let (_db, _redis, nodes) = cluster(3).await;
    let mut ann = nodes[0].connect("ann").await;
    ann.send("chat.dm.open", json!({"userId": "bob"})).await;
    let room = ann.expect("chat.joined").await["roomId"]
        .as_str()
        .unwrap()
        .to_owned();
    // bob's tabs, on two other nodes, have not joined the conversation.
    let mut bob_one = nodes[1].connect("bob").await;
    let mut bob_two = nodes[2].connect("bob").await;
    ann.send("chat.call.start", json!({"roomId": room, "media": "video"}))
        .await;
    let ringing = ann.expect("chat.call.state").await;
    assert_eq!(ringing["state"], "ringing");
    let call = ringing["callId"].clone();
    for tab in [&mut bob_one, &mut bob_two] {
        let ring = tab.expect("chat.call.ring").await;
        assert_eq!(
            (ring["callId"].clone(), ring["userId"].clone()),
            (call.clone(), json!("ann"))
        );
    }
    // Accepted on one tab, on a node that does not hold the call.
    bob_two
        .send("chat.call.accept", json!({"callId": call}))
        .await;
    for client in [&mut ann, &mut bob_one, &mut bob_two] {
        call_state(client, "active").await;
    }
    // Signals both ways, each to the one connection in the call.
    let offer = json!({"type": "offer", "sdp": "v=0 from ann"});
    ann.send(
        "chat.call.signal",
        json!({"callId": call, "toUserId": "bob", "signal": offer}),
    )
    .await;
    let relayed = bob_two.expect("chat.call.signal").await;
    assert_eq!(
        relayed,
        json!({"callId": call, "fromUserId": "ann", "signal": offer})
    );
    let answer = json!({"type": "answer", "sdp": "v=0 from bob"});
    bob_two
        .send(
            "chat.call.signal",
            json!({"callId": call, "toUserId": "ann", "signal": answer}),
        )
        .await;
    assert_eq!(ann.expect("chat.call.signal").await["signal"], answer);
    // From the wrong tab: refused, by the node holding the call.
    bob_one
        .send(
            "chat.call.signal",
            json!({"callId": call, "toUserId": "ann", "signal": answer}),
        )
        .await;
    assert_eq!(bob_one.expect("error").await["code"], "forbidden");
    bob_one.expect_silence(Duration::from_millis(200)).await;

    // A second start in the room, from another node, joins this call.
    let mut carl = nodes[2].connect("carl").await;
    let mut dora = nodes[1].connect("dora").await;
    carl.join("lobby").await;
    dora.join("lobby").await;
    carl.expect("chat.userJoined").await;
    carl.send(
        "chat.call.start",
        json!({"roomId": "lobby", "media": "audio"}),
    )
    .await;
    let lobby_call = carl.expect("chat.call.state").await["callId"].clone();
    // Public room: dora, in it on another node, rings.
    assert_eq!(dora.expect("chat.call.ring").await["callId"], lobby_call);
    dora.send(
        "chat.call.start",
        json!({"roomId": "lobby", "media": "audio"}),
    )
    .await;
    let joined = dora.expect_skipping("chat.call.state").await;
    assert_eq!(
        joined["callId"], lobby_call,
        "one call per room over the cluster"
    );

    // Hang up: ended for both, and recorded in the room's log.
    ann.send("chat.call.hangup", json!({"callId": call})).await;
    call_state(&mut ann, "ended").await;
    let record = ann.expect_skipping("chat.call.ended").await;
    assert_eq!(record["callId"], call);
    let mut bob_dm = nodes[2].connect("bob").await;
    bob_dm
        .send("chat.join", json!({"roomId": room, "since": 0}))
        .await;
    bob_dm.expect("chat.joined").await;
    let replayed = bob_dm.expect_skipping("chat.call.ended").await;
    assert_eq!(replayed["seq"], record["seq"]);
}
