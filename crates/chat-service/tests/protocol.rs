//! The seed's protocol, event by event, on real sockets.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn join_message_and_echo() {
    let server = TestServer::memory().await;
    let mut ann = server.connect_named("1", "Ann").await;
    let mut bob = server.connect("2").await;

    let joined = ann.join("room123").await;
    assert_eq!(joined["roomId"], "room123");
    assert_eq!(joined["lastSeq"], 0);
    assert!(joined.get("recovered").is_none());
    bob.join("room123").await;
    assert_eq!(
        ann.expect("chat.userJoined").await,
        json!({"userId": "2", "roomId": "room123"})
    );

    bob.send(
        "chat.message",
        json!({"roomId": "room123", "message": "  Hello world!  ", "username": "Bobby"}),
    )
    .await;
    for client in [&mut ann, &mut bob] {
        let message = client.expect("chat.message").await;
        assert_eq!(message["roomId"], "room123");
        assert_eq!(message["userId"], "2");
        assert_eq!(message["username"], "Bobby");
        assert_eq!(message["message"], "Hello world!");
        assert_eq!(message["seq"], 1);
        assert!(message["id"].as_str().is_some_and(|id| !id.is_empty()));
        let timestamp = message["timestamp"].as_str().unwrap();
        assert_eq!(timestamp.len(), 24, "{timestamp}");
        assert!(timestamp.ends_with('Z') && timestamp.as_bytes()[19] == b'.');
    }

    // The gateway's name outranks the client's own claim.
    ann.send(
        "chat.message",
        json!({"roomId": "room123", "message": "hi", "username": "Mallory"}),
    )
    .await;
    assert_eq!(ann.expect("chat.message").await["username"], "Ann");
    let seen = bob.expect("chat.message").await;
    assert_eq!(
        (seen["username"].clone(), seen["seq"].clone()),
        (json!("Ann"), json!(2))
    );

    // No name at all: the user id stands in.
    bob.say("room123", "anon").await;
    assert_eq!(bob.expect("chat.message").await["username"], "2");
}

#[tokio::test]
async fn unicode_identities_arrive_intact() {
    let server = TestServer::memory().await;
    let mut lei = server.connect_named("李雷", "José 李雷").await;
    lei.join("r").await;
    lei.say("r", "你好").await;
    let message = lei.expect("chat.message").await;
    assert_eq!(message["userId"], "李雷");
    assert_eq!(message["username"], "José 李雷");
    assert_eq!(message["message"], "你好");
}

#[tokio::test]
async fn second_tab_joins_and_leaves_silently() {
    let server = TestServer::memory().await;
    let mut ann = server.connect("ann").await;
    let mut bob_tab1 = server.connect("bob").await;
    let mut bob_tab2 = server.connect("bob").await;
    ann.join("r").await;

    bob_tab1.join("r").await;
    assert_eq!(ann.expect("chat.userJoined").await["userId"], "bob");
    bob_tab2.join("r").await;
    ann.expect_silence(QUIET).await;
    bob_tab1.expect_silence(QUIET).await;

    // Joining again answers again and announces nothing.
    bob_tab2.join("r").await;
    ann.expect_silence(QUIET).await;

    bob_tab1.send("chat.leave", json!({"roomId": "r"})).await;
    ann.expect_silence(QUIET).await;
    bob_tab2.send("chat.leave", json!({"roomId": "r"})).await;
    assert_eq!(
        ann.expect("chat.userLeft").await,
        json!({"userId": "bob", "roomId": "r"})
    );
}

#[tokio::test]
async fn typing_reaches_others_only_and_stops_on_leave() {
    let server = TestServer::memory().await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect_named("bob", "Bob").await;
    ann.join("r").await;
    bob.join("r").await;
    ann.expect("chat.userJoined").await;

    bob.send(
        "chat.typing",
        json!({"roomId": "r", "username": "ignored", "isTyping": true}),
    )
    .await;
    assert_eq!(
        ann.expect("chat.typing").await,
        json!({"userId": "bob", "username": "Bob", "isTyping": true, "roomId": "r"})
    );
    bob.expect_silence(QUIET).await;

    bob.send("chat.leave", json!({"roomId": "r"})).await;
    assert_eq!(
        ann.expect("chat.typing").await,
        json!({"userId": "bob", "username": "Bob", "isTyping": false, "roomId": "r"})
    );
    assert_eq!(ann.expect("chat.userLeft").await["userId"], "bob");
}

#[tokio::test]
async fn disconnect_leaves_every_room_and_destroys_empty_ones() {
    let server = TestServer::memory().await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    ann.join("a").await;
    ann.join("b").await;
    bob.join("a").await;
    bob.join("b").await;
    bob.join("c").await;
    bob.send("chat.typing", json!({"roomId": "a", "isTyping": true}))
        .await;
    ann.expect("chat.userJoined").await;
    ann.expect("chat.userJoined").await;
    ann.expect("chat.typing").await;
    assert_eq!(
        server.stats().await,
        json!({"connectedUsers": 2, "connections": 2, "rooms": 3})
    );

    drop(bob);
    let mut left = Vec::new();
    let mut stopped_typing = false;
    while left.len() < 2 {
        let (event, data) = ann.next_event().await;
        match event.as_str() {
            "chat.userLeft" => left.push(data["roomId"].as_str().unwrap().to_owned()),
            "chat.typing" => {
                assert_eq!(data["isTyping"], false);
                assert_eq!(data["roomId"], "a");
                stopped_typing = true;
            }
            other => panic!("unexpected {other}"),
        }
    }
    left.sort();
    assert_eq!(left, ["a", "b"]);
    assert!(stopped_typing);
    assert_eq!(
        server.stats().await,
        json!({"connectedUsers": 1, "connections": 1, "rooms": 2})
    );
    drop(ann);
    server
        .wait_for_stats(json!({"connectedUsers": 0, "connections": 0, "rooms": 0}))
        .await;
}

#[tokio::test]
async fn messages_keep_the_order_they_were_sent_in() {
    let server = TestServer::memory().await;
    let mut sender = server.connect("s").await;
    let mut receivers = Vec::new();
    for i in 0..3 {
        let mut receiver = server.connect(&format!("r{i}")).await;
        receiver.join("order").await;
        receivers.push(receiver);
    }
    sender.join("order").await;
    let count = 300;
    for n in 0..count {
        sender.say("order", &format!("m{n}")).await;
    }
    for receiver in receivers.iter_mut().chain([&mut sender]) {
        let mut expected = 0;
        let mut last_seq = 0;
        while expected < count {
            let (event, data) = receiver.next_event().await;
            if event != "chat.message" {
                continue;
            }
            assert_eq!(data["message"], format!("m{expected}"));
            let seq = data["seq"].as_u64().unwrap();
            assert_eq!(seq, last_seq + 1, "gap-free, increasing");
            last_seq = seq;
            expected += 1;
        }
    }
}

#[tokio::test]
async fn non_members_are_told_not_in_room() {
    let server = TestServer::memory().await;
    let mut ann = server.connect("ann").await;
    ann.send("chat.leave", json!({"roomId": "r"})).await;
    ann.expect_error("not_in_room").await;
    ann.say("r", "hi").await;
    ann.expect_error("not_in_room").await;
    ann.send("chat.typing", json!({"roomId": "r", "isTyping": true}))
        .await;
    ann.expect_error("not_in_room").await;
    ann.send("chat.history", json!({"roomId": "r"})).await;
    ann.expect_error("not_in_room").await;
    // Still open and working.
    ann.join("r").await;
}
