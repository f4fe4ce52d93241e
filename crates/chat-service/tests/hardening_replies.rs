//! No reply the server builds can kill its own connection, and no client
//! can make the server hold more for it than its queue's budget.

mod common;

use std::time::Duration;

use chat_proto::{ProtoLimits, RoomId};
use chat_service::store::{NewMessage, Store};
use chat_service::Config;
use common::backends::{self, TestDb};
use common::{Client, TestServer};
use serde_json::{json, Value};

/// Stores `texts` in `room` straight through the store, as an older
/// version (or another writer) may have: the protocol's input rules do not
/// apply to what is already stored.
async fn seed(db: &TestDb, room: &str, texts: impl IntoIterator<Item = String>) {
    let store = Store::open(&db.url).await.unwrap();
    let room = RoomId::parse(room, &ProtoLimits::default()).unwrap();
    let batch: Vec<NewMessage> = texts
        .into_iter()
        .enumerate()
        .map(|(n, message)| NewMessage {
            id: format!("seeded-{n}"),
            room_id: room.clone(),
            user_id: "seeder".into(),
            username: "seeder".into(),
            message,
            timestamp_ms: chat_proto::time::now_millis(),
            client_id: None,
            kind: chat_proto::MessageKind::User,
            attachments: Vec::new(),
        })
        .collect();
    for row in store.append(batch).await.unwrap() {
        assert!(row.event().is_some(), "{row:?}");
    }
    store.close().await;
}

fn config(db: &TestDb) -> Config {
    let mut config = Config::new(common::KEY);
    config.database_url = db.url.clone();
    config
}

/// Pages back with `chat.history` until the start; returns every seq seen.
async fn page_to_the_start(client: &mut Client, room: &str) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut data = json!({"roomId": room, "limit": 100});
        if let Some(before) = before {
            data["before"] = json!(before);
        }
        client.send("chat.history", data).await;
        let page = client.expect("chat.history").await;
        let page_seqs: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert!(!page_seqs.is_empty() || page["hasMore"] == false);
        seqs.splice(0..0, page_seqs.iter().copied());
        if page["hasMore"] != true {
            return seqs;
        }
        before = page_seqs.first().copied();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_page_of_long_messages_never_kills_the_socket() {
    let db = backends::sqlite();
    // 4000 × "é" is 8000 bytes of JSON; 4000 × U+0001 is 24000 (\u0001).
    let heavy = (0..50)
        .map(|_| "é".repeat(4000))
        .chain((0..12).map(|_| "\u{1}".repeat(4000)));
    seed(&db, "heavy", heavy).await;
    let server = TestServer::start(config(&db)).await;
    let mut client = server.connect("reader").await;
    client.join("heavy").await;
    let seqs = page_to_the_start(&mut client, "heavy").await;
    assert_eq!(seqs, (1..=62).collect::<Vec<_>>());
    // Still connected and served.
    client.join("another").await;

    // The same over HTTP: pages are bounded, and paging reaches everything.
    let http = reqwest::Client::new();
    let mut before = String::new();
    let mut seen = 0;
    loop {
        let page: Value = http
            .get(server.http(&format!("/api/rooms/heavy/messages?limit=100{before}")))
            .header("x-internal-api-key", common::KEY)
            .header("x-user-id", "reader")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let messages = page["messages"].as_array().unwrap();
        seen += messages.len();
        if page["hasMore"] != true {
            break;
        }
        assert!(
            messages.len() < 62,
            "a 62-message page is over the byte budget"
        );
        before = format!("&before={}", messages[0]["seq"]);
    }
    assert_eq!(seen, 62);
}

/// MAX_FRAME_BYTES limits what clients send, never what the server sends.
#[tokio::test]
async fn a_small_client_frame_limit_does_not_limit_server_frames() {
    let mut config = Config::new(common::KEY);
    config.limits.max_frame_bytes = 1024;
    let server = TestServer::start(config).await;
    let mut members = Vec::new();
    for n in 0..3 {
        let mut member = server.connect(&format!("m{n}")).await;
        member.join("small").await;
        members.push(member);
    }
    let long = "ü".repeat(4000);
    let response = reqwest::Client::new()
        .post(server.http("/send-system-message"))
        .header("x-internal-api-key", common::KEY)
        .json(&json!({"roomId": "small", "message": long}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for member in &mut members {
        loop {
            let (event, data) = member.next_event().await;
            if event == "chat.system" {
                assert_eq!(data["message"].as_str().unwrap().chars().count(), 4000);
                break;
            }
        }
        // And the connection is still there to use.
        member.join("still-here").await;
    }
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Joiners asking for a long backlog and never reading cost at most their
/// queue's budget and a page each, and are cut off once they cannot take
/// their own replies; one that reads gets the whole backlog, then live
/// messages, in order and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_paced_by_the_reader_and_bounded_for_those_who_do_not_read() {
    let db = backends::sqlite();
    let text = "é".repeat(4000);
    seed(&db, "backlog", (0..1000).map(|_| text.clone())).await;
    let mut config = config(&db);
    // A client that cannot take its own replies this long is gone; pings
    // and the idle check are kept out of the way.
    config.limits.idle_timeout = Duration::from_secs(2);
    config.limits.ping_interval = Duration::from_secs(600);
    let server = TestServer::start(config).await;

    let before = resident_bytes();
    let mut stalled = Vec::new();
    for n in 0..10 {
        let mut client = server.connect(&format!("stalled{n}")).await;
        client
            .send("chat.join", json!({"roomId": "backlog", "since": 0}))
            .await;
        stalled.push(client);
    }
    // They fill what they can, then are cut off as slow consumers once
    // their replies have waited the idle timeout.
    server
        .wait_for_stats_within(
            json!({"connectedUsers": 0, "connections": 0, "rooms": 0}),
            Duration::from_secs(20),
        )
        .await;
    // The allocator keeps what it was given, so this is about the peak.
    let grown = resident_bytes().saturating_sub(before);
    eprintln!(
        "ten stalled joiners: +{} KiB resident at most",
        grown / 1024
    );
    // Unbounded, each would hold its whole 8 MB backlog and a full queue
    // (well over 100 MB for ten); bounded, a queue budget (1 MiB) and a
    // page of the store each.
    assert!(
        grown < 40 * 1024 * 1024,
        "ten stalled joiners grew the process by {} MiB",
        grown / (1024 * 1024)
    );
    let metrics = server.metrics().await;
    let evicted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chat_slow_consumer_disconnects_total "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0);
    assert!(evicted >= 10.0, "{metrics}");
    drop(stalled);

    // A joiner that reads gets the whole backlog, then what was said
    // meanwhile, in order and once.
    let mut reader = server.connect("reader").await;
    reader
        .send("chat.join", json!({"roomId": "backlog", "since": 0}))
        .await;
    let joined = reader.expect("chat.joined").await;
    assert_eq!(
        (joined["recovered"].clone(), joined["lastSeq"].clone()),
        (json!(true), json!(1000))
    );
    let mut talker = server.connect("talker").await;
    talker.join("backlog").await;
    for n in 0..20 {
        talker.say("backlog", &format!("live {n}")).await;
    }
    let mut expected = 1;
    while expected <= 1020 {
        let (event, data) = reader.next_event().await;
        if event == "chat.message" {
            assert_eq!(data["seq"], expected, "in order, no gaps, no duplicates");
            expected += 1;
        }
    }
}
