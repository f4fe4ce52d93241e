//! Voice and video calls on real sockets: ringing on every tab, one tab's
//! answer for all, signaling relayed to exactly the connection in the call,
//! the refusals, ring and reconnect timeouts, the participant limit, and the
//! ended call's record live, in history and in recovery, across a restart
//! on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use chat_service::Config;
use common::backends::TestDb;
use common::{Client, TestServer, KEY};
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(150);

fn config(db: &TestDb) -> Config {
    let mut config = Config::new(KEY);
    config.database_url = db.url.clone();
    config
}

async fn internal_put(server: &TestServer, path: &str) {
    let response = reqwest::Client::new()
        .put(server.http(path))
        .header("x-internal-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn add_member(server: &TestServer, room: &str, user: &str) {
    internal_put(server, &format!("/rooms/{room}/members/{user}")).await;
}

/// Opens the DM with `peer` and returns its room id.
async fn open_dm(client: &mut Client, peer: &str) -> String {
    client.send("chat.dm.open", json!({"userId": peer})).await;
    let joined = client.expect("chat.joined").await;
    joined["roomId"].as_str().unwrap().to_owned()
}

async fn start(client: &mut Client, room: &str, media: &str) {
    client
        .send("chat.call.start", json!({"roomId": room, "media": media}))
        .await;
}

async fn answer(client: &mut Client, how: &str, call: &Value) {
    client
        .send(&format!("chat.call.{how}"), json!({"callId": call}))
        .await;
}

async fn signal(client: &mut Client, call: &Value, to: &str, signal: Value) {
    client
        .send(
            "chat.call.signal",
            json!({"callId": call, "toUserId": to, "signal": signal}),
        )
        .await;
}

/// The next `chat.call.state`, checked to be this connection's user's copy.
async fn state(client: &mut Client, you: &str) -> Value {
    let state = client.expect("chat.call.state").await;
    assert_eq!(state["you"], you, "{state}");
    state
}

/// Each participant as `"user:state"`, in order.
fn who(state: &Value) -> Vec<String> {
    state["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}:{}",
                p["userId"].as_str().unwrap(),
                p["state"].as_str().unwrap()
            )
        })
        .collect()
}

/// Alice calls bob in their DM; bob's two tabs, neither in the DM, ring.
/// Returns the DM's room and the call id.
async fn dm_call(alice: &mut Client, bob1: &mut Client, bob2: &mut Client) -> (String, Value) {
    let room = open_dm(alice, "bob").await;
    start(alice, &room, "video").await;
    let ringing = state(alice, "alice").await;
    assert_eq!(ringing["state"], "ringing");
    assert_eq!(ringing["roomId"], room.as_str());
    assert_eq!(ringing["media"], "video");
    assert_eq!(who(&ringing), ["alice:joined", "bob:ringing"]);
    let call = ringing["callId"].clone();
    for bob in [bob1, bob2] {
        let ring = bob.expect("chat.call.ring").await;
        assert_eq!(
            ring,
            json!({"callId": call, "roomId": room, "userId": "alice", "username": "alice", "media": "video"})
        );
        same_state(&state(bob, "bob").await, &ringing);
    }
    (room, call)
}

/// `state` without `you`, to compare copies meant for different users.
fn without_you(state: &Value) -> Value {
    let mut state = state.clone();
    state.as_object_mut().unwrap().remove("you");
    state
}

/// Two copies of one state, for different users: the same but for `you`.
fn same_state(a: &Value, b: &Value) {
    assert_eq!(without_you(a), without_you(b));
}

#[tokio::test]
async fn a_dm_call_rings_every_tab_outside_it_and_one_answer_stops_the_others() {
    let server = TestServer::memory().await;
    let mut alice = server.connect("alice").await;
    let mut bob1 = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    let (room, call) = dm_call(&mut alice, &mut bob1, &mut bob2).await;
    // Only the callee rings; the caller's other tabs follow the call's state.
    let mut alice2 = server.connect("alice").await;

    answer(&mut bob1, "accept", &call).await;
    let active = state(&mut alice, "alice").await;
    assert_eq!(active["state"], "active");
    assert_eq!(who(&active), ["alice:joined", "bob:joined"]);
    // The other tab sees bob joined: it stops ringing.
    same_state(&state(&mut bob1, "bob").await, &active);
    same_state(&state(&mut bob2, "bob").await, &active);
    same_state(&state(&mut alice2, "alice").await, &active);
    // It cannot take the call from the tab that has it.
    answer(&mut bob2, "accept", &call).await;
    bob2.expect_error("forbidden").await;
    // Accepting again on the same tab changes nothing; only it is told.
    answer(&mut bob1, "accept", &call).await;
    same_state(&state(&mut bob1, "bob").await, &active);

    answer(&mut alice, "hangup", &call).await;
    let ended = state(&mut alice, "alice").await;
    assert_eq!(ended["state"], "ended");
    assert_eq!(ended["reason"], "hangup");
    assert_eq!(who(&ended), ["alice:left", "bob:left"]);
    same_state(&state(&mut bob1, "bob").await, &ended);
    same_state(&state(&mut bob2, "bob").await, &ended);
    same_state(&state(&mut alice2, "alice").await, &ended);
    // Alice is in the DM: the record reaches her as a room event.
    let record = alice.expect("chat.call.ended").await;
    assert_eq!(record["callId"], call);
    assert_eq!(record["roomId"], room.as_str());
    assert_eq!(record["type"], "call");
    // A call that ended is gone.
    answer(&mut bob1, "accept", &call).await;
    bob1.expect_error("not_found").await;
    answer(&mut alice, "hangup", &call).await;
    alice.expect_error("not_found").await;
    alice2.expect_silence(QUIET).await;
}

#[tokio::test]
async fn signals_reach_only_the_connection_in_the_call() {
    let server = TestServer::memory().await;
    let mut alice = server.connect("alice").await;
    let mut bob1 = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let (_, call) = dm_call(&mut alice, &mut bob1, &mut bob2).await;

    // Before bob answers he has no connection in the call.
    let offer = json!({"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"});
    signal(&mut alice, &call, "bob", offer.clone()).await;
    alice.expect_error("forbidden").await;

    answer(&mut bob2, "accept", &call).await;
    state(&mut alice, "alice").await;
    state(&mut bob1, "bob").await;
    state(&mut bob2, "bob").await;

    signal(&mut alice, &call, "bob", offer.clone()).await;
    let relayed = bob2.expect("chat.call.signal").await;
    assert_eq!(
        relayed,
        json!({"callId": call, "fromUserId": "alice", "signal": offer})
    );
    let reply = json!({"type": "answer", "sdp": "v=0\r\n"});
    signal(&mut bob2, &call, "alice", reply.clone()).await;
    assert_eq!(
        alice.expect("chat.call.signal").await,
        json!({"callId": call, "fromUserId": "bob", "signal": reply})
    );
    let candidate = json!({"type": "candidate", "candidate": {
        "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}});
    signal(&mut alice, &call, "bob", candidate.clone()).await;
    assert_eq!(bob2.expect("chat.call.signal").await["signal"], candidate);

    // Bob's other tab, and anyone outside the call, may not signal.
    signal(&mut bob1, &call, "alice", reply.clone()).await;
    bob1.expect_error("forbidden").await;
    signal(&mut carol, &call, "alice", reply.clone()).await;
    carol.expect_error("forbidden").await;
    // Nor reach anyone but the participants.
    signal(&mut alice, &call, "carol", offer.clone()).await;
    alice.expect_error("forbidden").await;
    signal(&mut alice, &call, "alice", offer.clone()).await;
    alice.expect_error("forbidden").await;
    signal(&mut alice, &json!("no-such-call"), "bob", offer.clone()).await;
    alice.expect_error("not_found").await;
    // Oversized or malformed signals are refused, the connection stays up.
    let huge = json!({"type": "offer", "sdp": "a".repeat(17 * 1024)});
    signal(&mut alice, &call, "bob", huge).await;
    alice.expect_error("signal_too_large").await;
    signal(&mut alice, &call, "bob", json!({"type": "offer"})).await;
    alice.expect_error("invalid_format").await;
    signal(&mut alice, &call, "bob", json!("offer")).await;
    alice.expect_error("invalid_format").await;

    signal(&mut alice, &call, "bob", candidate.clone()).await;
    assert_eq!(bob2.expect("chat.call.signal").await["signal"], candidate);
    // Nothing leaked to bob's other tab or to carol.
    bob1.expect_silence(QUIET).await;
    carol.expect_silence(QUIET).await;

    answer(&mut bob2, "hangup", &call).await;
    state(&mut alice, "alice").await;
    alice.expect("chat.call.ended").await;
    signal(&mut alice, &call, "bob", candidate).await;
    alice.expect_error("not_found").await;
}

#[tokio::test]
async fn who_may_call_and_where_it_rings() {
    let server = TestServer::memory().await;
    let mut alice = server.connect("alice").await;
    let mut carol_in = server.connect("carol").await;
    let mut carol_out = server.connect("carol").await;
    let mut eve = server.connect("eve").await;
    alice.join("lobby").await;
    carol_in.join("lobby").await;
    alice.expect("chat.userJoined").await;

    // A public room: only from inside it.
    start(&mut eve, "lobby", "audio").await;
    eve.expect_error("not_in_room").await;
    // A members-only room: members only; a DM: its two participants.
    start(&mut eve, "private:team", "audio").await;
    eve.expect_error("forbidden").await;
    let dm = open_dm(&mut alice, "carol").await;
    start(&mut eve, &dm, "audio").await;
    eve.expect_error("forbidden").await;
    for (data, code) in [
        (
            json!({"roomId": "lobby", "media": "hologram"}),
            "invalid_format",
        ),
        (
            json!({"roomId": "no room", "media": "audio"}),
            "invalid_room",
        ),
    ] {
        alice.send("chat.call.start", data).await;
        alice.expect_error(code).await;
    }
    for bad in [json!({}), json!({"callId": 5})] {
        alice.send("chat.call.accept", bad).await;
        alice.expect_error("invalid_format").await;
    }

    // In a public room the tabs in the room ring; carol's other tab only
    // learns of the call.
    start(&mut alice, "lobby", "audio").await;
    let ringing = state(&mut alice, "alice").await;
    assert_eq!(who(&ringing), ["alice:joined", "carol:ringing"]);
    let call = ringing["callId"].clone();
    let ring = carol_in.expect("chat.call.ring").await;
    assert_eq!(ring["callId"], call);
    assert_eq!(ring["media"], "audio");
    same_state(&state(&mut carol_in, "carol").await, &ringing);
    same_state(&state(&mut carol_out, "carol").await, &ringing);
    // Eve is not called and may not answer.
    answer(&mut eve, "accept", &call).await;
    eve.expect_error("forbidden").await;
    answer(&mut eve, "hangup", &call).await;
    eve.expect_error("forbidden").await;

    // Everyone called declines: the call ends as declined.
    answer(&mut carol_out, "decline", &call).await;
    let ended = state(&mut alice, "alice").await;
    assert_eq!(ended["reason"], "declined");
    assert_eq!(who(&ended), ["alice:left", "carol:declined"]);
    let record = alice.expect("chat.call.ended").await;
    assert_eq!(record["reason"], "declined");
    assert_eq!(record["durationSecs"], 0);
    assert_eq!(
        carol_in.expect("chat.call.state").await["reason"],
        "declined"
    );
    assert_eq!(carol_in.expect("chat.call.ended").await, record);
    eve.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_call_nobody_answers_is_missed() {
    let mut config = Config::new(KEY);
    config.limits.calls.ring_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let mut alice = server.connect("alice").await;
    let mut bob1 = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    let (room, call) = dm_call(&mut alice, &mut bob1, &mut bob2).await;
    // Nobody answers: after the ring timeout every tab hears it ended.
    let ended = state(&mut alice, "alice").await;
    assert_eq!(ended["state"], "ended");
    assert_eq!(ended["reason"], "missed");
    assert_eq!(who(&ended), ["alice:left", "bob:missed"]);
    same_state(&state(&mut bob1, "bob").await, &ended);
    same_state(&state(&mut bob2, "bob").await, &ended);
    let record = alice.expect("chat.call.ended").await;
    assert_eq!(record["callId"], call);
    assert_eq!(record["roomId"], room.as_str());
    assert_eq!(record["reason"], "missed");
    assert_eq!(record["durationSecs"], 0);
    assert_eq!(
        record["participants"],
        json!([{"userId": "alice", "username": "alice", "state": "left"},
               {"userId": "bob", "username": "bob", "state": "missed"}])
    );
}

#[tokio::test]
async fn a_participant_who_drops_has_the_grace_period_to_come_back() {
    let mut config = Config::new(KEY);
    config.limits.calls.reconnect_grace = Duration::from_millis(400);
    let server = TestServer::start(config).await;
    let mut alice = server.connect("alice").await;
    let mut bob1 = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    let (_, call) = dm_call(&mut alice, &mut bob1, &mut bob2).await;
    answer(&mut bob1, "accept", &call).await;
    state(&mut alice, "alice").await;
    state(&mut bob1, "bob").await;
    state(&mut bob2, "bob").await;

    // Bob's connection in the call drops: the others see him reconnecting.
    drop(bob1);
    let waiting = state(&mut alice, "alice").await;
    assert_eq!(waiting["state"], "active");
    assert_eq!(who(&waiting), ["alice:joined", "bob:reconnecting"]);
    same_state(&state(&mut bob2, "bob").await, &waiting);
    signal(
        &mut alice,
        &call,
        "bob",
        json!({"type": "candidate", "candidate": null}),
    )
    .await;
    alice.expect_error("forbidden").await;
    // He does not come back: the call fails.
    let ended = state(&mut alice, "alice").await;
    assert_eq!(ended["reason"], "failed");
    assert_eq!(who(&ended), ["alice:left", "bob:left"]);
    same_state(&state(&mut bob2, "bob").await, &ended);
    assert_eq!(alice.expect("chat.call.ended").await["reason"], "failed");
}

#[tokio::test]
async fn a_participant_back_in_time_goes_on_from_the_new_connection() {
    let server = TestServer::memory().await;
    let mut alice = server.connect("alice").await;
    let mut bob1 = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    let (_, call) = dm_call(&mut alice, &mut bob1, &mut bob2).await;
    answer(&mut bob1, "accept", &call).await;
    state(&mut alice, "alice").await;
    state(&mut bob2, "bob").await;
    drop(bob1);
    assert_eq!(
        who(&state(&mut alice, "alice").await)[1],
        "bob:reconnecting"
    );
    state(&mut bob2, "bob").await;

    let mut bob3 = server.connect("bob").await;
    answer(&mut bob3, "accept", &call).await;
    let back = state(&mut bob3, "bob").await;
    assert_eq!(who(&back), ["alice:joined", "bob:joined"]);
    same_state(&state(&mut alice, "alice").await, &back);
    same_state(&state(&mut bob2, "bob").await, &back);
    let candidate = json!({"type": "candidate", "candidate": null});
    signal(&mut alice, &call, "bob", candidate.clone()).await;
    assert_eq!(bob3.expect("chat.call.signal").await["signal"], candidate);
    bob2.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_group_call_takes_so_many_and_a_second_start_joins_it() {
    let mut config = Config::new(KEY);
    config.limits.calls.max_participants = 3;
    let server = TestServer::start(config).await;
    let room = "private:team";
    let users = ["ann", "bob", "cat", "dan"];
    for user in users {
        add_member(&server, room, user).await;
    }
    let mut clients = Vec::new();
    for user in users {
        clients.push(server.connect(user).await);
    }
    let [ann, bob, cat, dan] = &mut clients[..] else {
        unreachable!()
    };
    // Members ring whether they joined the room or not.
    start(ann, room, "video").await;
    let ringing = state(ann, "ann").await;
    assert_eq!(
        who(&ringing),
        ["ann:joined", "bob:ringing", "cat:ringing", "dan:ringing"]
    );
    let call = ringing["callId"].clone();
    for (client, user) in [(&mut *bob, "bob"), (&mut *cat, "cat"), (&mut *dan, "dan")] {
        assert_eq!(client.expect("chat.call.ring").await["callId"], call);
        state(client, user).await;
    }
    // A start by someone called joins the ringing call.
    start(bob, room, "audio").await;
    let active = state(bob, "bob").await;
    assert_eq!(active["callId"], call);
    assert_eq!(active["state"], "active");
    assert_eq!(active["media"], "video");
    for (client, user) in [(&mut *ann, "ann"), (&mut *cat, "cat"), (&mut *dan, "dan")] {
        same_state(&state(client, user).await, &active);
    }
    answer(cat, "accept", &call).await;
    let full = state(cat, "cat").await;
    assert_eq!(
        who(&full),
        ["ann:joined", "bob:joined", "cat:joined", "dan:ringing"]
    );
    for (client, user) in [(&mut *ann, "ann"), (&mut *bob, "bob"), (&mut *dan, "dan")] {
        state(client, user).await;
    }
    // The next one is refused, by accept and by start alike.
    answer(dan, "accept", &call).await;
    dan.expect_error("call_full").await;
    start(dan, room, "video").await;
    dan.expect_error("call_full").await;
    // One hanging up makes room; the call goes on.
    answer(cat, "hangup", &call).await;
    for (client, user) in [
        (&mut *ann, "ann"),
        (&mut *bob, "bob"),
        (&mut *cat, "cat"),
        (&mut *dan, "dan"),
    ] {
        assert_eq!(who(&state(client, user).await)[2], "cat:left");
    }
    start(dan, room, "video").await;
    let joined = state(dan, "dan").await;
    assert_eq!(joined["callId"], call);
    assert_eq!(
        who(&joined),
        ["ann:joined", "bob:joined", "cat:left", "dan:joined"]
    );
}

/// A call between alice and bob in a public room, after one message: bob
/// accepts, alice hangs up. Returns the record both were sent.
async fn record_a_call(server: &TestServer) -> Value {
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.join("room1").await;
    bob.join("room1").await;
    alice.expect("chat.userJoined").await;
    alice.say("room1", "before the call").await;
    alice.expect("chat.message").await;
    bob.expect("chat.message").await;
    start(&mut alice, "room1", "video").await;
    let call = state(&mut alice, "alice").await["callId"].clone();
    bob.expect("chat.call.ring").await;
    state(&mut bob, "bob").await;
    answer(&mut bob, "accept", &call).await;
    state(&mut alice, "alice").await;
    state(&mut bob, "bob").await;
    answer(&mut alice, "hangup", &call).await;
    assert_eq!(state(&mut alice, "alice").await["reason"], "hangup");
    state(&mut bob, "bob").await;
    let record = alice.expect("chat.call.ended").await;
    assert_eq!(bob.expect("chat.call.ended").await, record);
    assert_eq!(record["callId"], call);
    record
}

async fn history(client: &mut Client, room: &str) -> Vec<Value> {
    client
        .send("chat.history", json!({"roomId": room, "limit": 100}))
        .await;
    client.expect("chat.history").await["messages"]
        .as_array()
        .unwrap()
        .clone()
}

/// Joins with `since` and returns what is replayed after `chat.joined`.
async fn recover(client: &mut Client, room: &str, since: u64, count: usize) -> Vec<Value> {
    client
        .send("chat.join", json!({"roomId": room, "since": since}))
        .await;
    let joined = client.expect("chat.joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let mut replayed = Vec::new();
    for _ in 0..count {
        let (event, data) = client.next_event().await;
        replayed.push(json!({"event": event, "data": data}));
    }
    replayed
}

async fn an_ended_call_is_a_durable_room_event(db: TestDb) {
    let mut server = TestServer::start(config(&db)).await;
    let record = record_a_call(&server).await;
    assert_eq!(record["type"], "call");
    assert_eq!(record["roomId"], "room1");
    assert_eq!(record["media"], "video");
    assert_eq!(record["userId"], "alice");
    assert_eq!(record["reason"], "hangup");
    assert_eq!(record["seq"], 2, "the room's next seq");
    assert!(record["durationSecs"].as_u64().is_some());
    for field in ["startedAt", "endedAt"] {
        let at = record[field].as_str().unwrap();
        assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    }
    assert_eq!(
        record["participants"],
        json!([{"userId": "alice", "username": "alice", "state": "left"},
               {"userId": "bob", "username": "bob", "state": "left"}])
    );

    let check = |items: Vec<Value>| {
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0]["message"], "before the call");
        assert_eq!(items[1], record);
    };
    let mut carol = server.connect("carol").await;
    carol.join("room1").await;
    check(history(&mut carol, "room1").await);
    let mut dave = server.connect("dave").await;
    assert_eq!(
        recover(&mut dave, "room1", 1, 1).await,
        [json!({"event": "chat.call.ended", "data": record})]
    );
    // The next event takes the next seq.
    carol.expect("chat.userJoined").await;
    carol.say("room1", "after").await;
    assert_eq!(carol.expect("chat.message").await["seq"], 3);
    drop((carol, dave));

    server.stop().await.unwrap();
    let server = TestServer::start(config(&db)).await;
    let mut erin = server.connect("erin").await;
    erin.join("room1").await;
    let items = history(&mut erin, "room1").await;
    assert_eq!(items.len(), 3);
    assert_eq!(items[1], record);
    let mut fred = server.connect("fred").await;
    let replayed = recover(&mut fred, "room1", 1, 2).await;
    assert_eq!(
        replayed[0],
        json!({"event": "chat.call.ended", "data": record})
    );
    assert_eq!(replayed[1]["data"]["message"], "after");
    // History over HTTP lists it the same way.
    let page: Value = reqwest::Client::new()
        .get(server.http("/api/rooms/room1/messages"))
        .header("x-internal-api-key", KEY)
        .header("x-user-id", "fred")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["messages"][1], record);
}

async fn calls_in_progress_are_recorded_as_failed_when_the_service_stops(db: TestDb) {
    let mut server = TestServer::start(config(&db)).await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.join("room1").await;
    bob.join("room1").await;
    alice.expect("chat.userJoined").await;
    start(&mut alice, "room1", "audio").await;
    let call = state(&mut alice, "alice").await["callId"].clone();
    bob.expect("chat.call.ring").await;
    state(&mut bob, "bob").await;
    answer(&mut bob, "accept", &call).await;
    state(&mut alice, "alice").await;
    state(&mut bob, "bob").await;
    drop((alice, bob));
    server.stop().await.unwrap();

    let server = TestServer::start(config(&db)).await;
    let mut carol = server.connect("carol").await;
    carol.join("room1").await;
    let items = history(&mut carol, "room1").await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["callId"], call);
    assert_eq!(items[0]["reason"], "failed");
}

#[tokio::test]
async fn the_memory_store_keeps_calls_in_history_and_recovery() {
    let server = TestServer::memory().await;
    let record = record_a_call(&server).await;
    let mut carol = server.connect("carol").await;
    carol.join("room1").await;
    assert_eq!(history(&mut carol, "room1").await[1], record);
    let mut dave = server.connect("dave").await;
    assert_eq!(
        recover(&mut dave, "room1", 1, 1).await,
        [json!({"event": "chat.call.ended", "data": record})]
    );
}

on_every_store!(
    an_ended_call_is_a_durable_room_event,
    calls_in_progress_are_recorded_as_failed_when_the_service_stops,
);
