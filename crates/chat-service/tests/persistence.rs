//! Persistence, history and recovery: one suite, run on SQLite and on
//! PostgreSQL (when `TEST_POSTGRES_URL` is set; CI always sets it).

mod common;

use std::collections::HashSet;

use chat_proto::RoomEvent;
use chat_service::store::Appended;
use chat_service::Config;
use common::backends::{self, TestDb};
use common::{Client, TestServer};
use serde_json::{json, Value};

fn config(db: &TestDb) -> Config {
    let mut config = Config::new(common::KEY);
    config.database_url = db.url.clone();
    config
}

/// Sends `count` messages and waits for their echoes; returns their seqs.
async fn say_many(client: &mut Client, room: &str, prefix: &str, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for n in 0..count {
        client.say(room, &format!("{prefix}{n}")).await;
    }
    while seqs.len() < count {
        let (event, data) = client.next_event().await;
        if event == "chat.message" && data["message"].as_str().unwrap().starts_with(prefix) {
            seqs.push(data["seq"].as_u64().unwrap());
        }
    }
    seqs
}

async fn history(client: &mut Client, room: &str, extra: Value) -> Value {
    let mut data = json!({"roomId": room});
    data.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    client.send("chat.history", data).await;
    client.expect("chat.history").await
}

fn seqs_of(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

async fn restart_keeps_history(db: TestDb) {
    let mut server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    ann.join("kept").await;
    assert_eq!(say_many(&mut ann, "kept", "before-", 3).await, [1, 2, 3]);
    drop(ann);
    server.stop().await.unwrap();

    let server = TestServer::start(config(&db)).await;
    let mut bob = server.connect("bob").await;
    assert_eq!(bob.join("kept").await["lastSeq"], 3);
    let page = history(&mut bob, "kept", json!({})).await;
    assert_eq!(seqs_of(&page), [1, 2, 3]);
    let first = &page["messages"][0];
    assert_eq!(first["message"], "before-0");
    assert_eq!(first["userId"], "ann");
    assert_eq!(first["username"], "ann");
    assert!(first["id"].is_string() && first["timestamp"].is_string());
    assert_eq!(say_many(&mut bob, "kept", "after-", 1).await, [4]);
}

async fn seq_is_gap_free_under_concurrent_senders(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut watcher = server.connect("watcher").await;
    watcher.join("busy").await;
    let senders = 4;
    let per_sender = 50;
    let mut tasks = Vec::new();
    for s in 0..senders {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, &format!("s{s}"), None).await;
            client.join("busy").await;
            say_many(&mut client, "busy", &format!("s{s}-"), per_sender).await
        }));
    }
    let mut last_seq = 0;
    let mut next_from: Vec<usize> = vec![0; senders];
    while last_seq < (senders * per_sender) as u64 {
        let (event, data) = watcher.next_event().await;
        if event != "chat.message" {
            continue;
        }
        let seq = data["seq"].as_u64().unwrap();
        assert_eq!(seq, last_seq + 1, "no gaps, no reordering");
        last_seq = seq;
        let text = data["message"].as_str().unwrap();
        let (sender, n) = text.split_once('-').unwrap();
        let sender: usize = sender[1..].parse().unwrap();
        assert_eq!(
            n.parse::<usize>().unwrap(),
            next_from[sender],
            "per-sender order"
        );
        next_from[sender] += 1;
    }
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }
}

async fn history_paging_edges(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut ann = server.connect("ann").await;
    ann.join("paged").await;
    let empty = history(&mut ann, "paged", json!({})).await;
    assert_eq!(
        empty,
        json!({"roomId": "paged", "messages": [], "hasMore": false})
    );

    say_many(&mut ann, "paged", "m", 120).await;
    let newest = history(&mut ann, "paged", json!({})).await;
    assert_eq!(seqs_of(&newest), (71..=120).collect::<Vec<_>>());
    assert_eq!(newest["hasMore"], true);
    let older = history(&mut ann, "paged", json!({"before": 71, "limit": 100})).await;
    assert_eq!(seqs_of(&older), (1..=70).collect::<Vec<_>>());
    assert_eq!(older["hasMore"], false);
    let exact = history(&mut ann, "paged", json!({"before": 21, "limit": 20})).await;
    assert_eq!(seqs_of(&exact), (1..=20).collect::<Vec<_>>());
    assert_eq!(exact["hasMore"], false);
    let start = history(&mut ann, "paged", json!({"before": 1})).await;
    assert_eq!(
        (seqs_of(&start).len(), start["hasMore"].clone()),
        (0, json!(false))
    );
    let one = history(&mut ann, "paged", json!({"limit": 1})).await;
    assert_eq!(
        (seqs_of(&one), one["hasMore"].clone()),
        (vec![120], json!(true))
    );
    let beyond = history(&mut ann, "paged", json!({"before": 10_000, "limit": 2})).await;
    assert_eq!(seqs_of(&beyond), [119, 120]);
    // History items look like live chat.message data, with their current
    // reactions (none here).
    let item = &one["messages"][0];
    let keys: HashSet<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: HashSet<&str> = [
        "roomId",
        "userId",
        "username",
        "message",
        "timestamp",
        "id",
        "seq",
        "reactions",
    ]
    .into();
    assert_eq!(keys, expected);
    assert_eq!(item["reactions"], json!([]));

    for bad in [
        json!({"limit": 0}),
        json!({"limit": 101}),
        json!({"limit": "5"}),
        json!({"before": -1}),
        json!({"before": "x"}),
    ] {
        let mut data = json!({"roomId": "paged"});
        data.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        ann.send("chat.history", data).await;
        ann.expect_error("invalid_format").await;
    }
}

async fn recovery_with_since(db: TestDb) {
    let mut config = config(&db);
    config.limits.recovery_cap = 10;
    let server = TestServer::start(config).await;
    let mut ann = server.connect("ann").await;
    ann.join("rec").await;
    say_many(&mut ann, "rec", "m", 8).await;

    // since = 0: everything (under the cap), in order, before live traffic.
    let mut bob = server.connect("bob").await;
    bob.send("chat.join", json!({"roomId": "rec", "since": 0}))
        .await;
    let joined = bob.expect("chat.joined").await;
    assert_eq!(
        joined,
        json!({"roomId": "rec", "userId": "bob", "lastSeq": 8, "recovered": true, "readSeq": 0, "unread": 8})
    );
    for seq in 1..=8 {
        assert_eq!(bob.expect("chat.message").await["seq"], seq);
    }
    drop(bob);

    // since = current: nothing to replay.
    let mut carl = server.connect("carl").await;
    carl.send("chat.join", json!({"roomId": "rec", "since": 8}))
        .await;
    assert_eq!(carl.expect("chat.joined").await["recovered"], true);
    ann.say("rec", "live").await;
    assert_eq!(carl.expect("chat.message").await["seq"], 9);
    drop(carl);

    // A few behind.
    let mut dan = server.connect("dan").await;
    dan.send("chat.join", json!({"roomId": "rec", "since": 6}))
        .await;
    assert_eq!(dan.expect("chat.joined").await["lastSeq"], 9);
    for seq in 7..=9 {
        assert_eq!(dan.expect("chat.message").await["seq"], seq);
    }
    drop(dan);

    // Over the cap: told to page instead.
    say_many(&mut ann, "rec", "more", 10).await;
    let mut eve = server.connect("eve").await;
    eve.send("chat.join", json!({"roomId": "rec", "since": 2}))
        .await;
    let joined = eve.expect("chat.joined").await;
    assert_eq!(joined["recovered"], false);
    assert_eq!(joined["lastSeq"], 19);
    ann.say("rec", "after-eve").await;
    assert_eq!(eve.expect("chat.message").await["seq"], 20);

    // From the future (e.g. a reset store): not recoverable either.
    let mut fay = server.connect("fay").await;
    fay.send("chat.join", json!({"roomId": "rec", "since": 500}))
        .await;
    assert_eq!(fay.expect("chat.joined").await["recovered"], false);
}

async fn recovery_under_live_traffic_has_no_gaps_or_duplicates(db: TestDb) {
    let server = TestServer::start(config(&db)).await;
    let mut flooder = server.connect("flooder").await;
    flooder.join("live").await;
    say_many(&mut flooder, "live", "old", 20).await;
    let total = 300;
    let flood = tokio::spawn(async move {
        say_many(&mut flooder, "live", "new", total).await;
        flooder
    });
    let mut joiner = server.connect("joiner").await;
    joiner
        .send("chat.join", json!({"roomId": "live", "since": 5}))
        .await;
    assert_eq!(joiner.expect("chat.joined").await["recovered"], true);
    let mut expected = 6;
    while expected <= 20 + total as u64 {
        let (event, data) = joiner.next_event().await;
        if event == "chat.message" {
            assert_eq!(data["seq"], expected, "contiguous replay then live");
            expected += 1;
        }
    }
    flood.await.unwrap();
}

/// Two stores on one database (two processes' writers) never hand out the
/// same seq: the room's row lock orders them.
async fn two_writers_on_one_database_never_share_a_seq(db: TestDb) {
    use chat_proto::{ProtoLimits, RoomId};
    use chat_service::store::{NewMessage, Store};
    let stores = [
        Store::open(&db.url).await.unwrap(),
        Store::open(&db.url).await.unwrap(),
    ];
    let room = RoomId::parse("shared", &ProtoLimits::default()).unwrap();
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let store = stores[writer % 2].clone();
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..60 {
                let message = NewMessage {
                    id: format!("w{writer}-{n}"),
                    room_id: room.clone(),
                    user_id: "u".into(),
                    username: "u".into(),
                    message: format!("m{n}"),
                    timestamp_ms: chat_proto::time::now_millis(),
                    client_id: None,
                    kind: chat_proto::MessageKind::User,
                    attachments: Vec::new(),
                };
                let stored = store.append(vec![message]).await.unwrap();
                seqs.push(stored[0].seq().unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a seq was assigned twice");
    assert_eq!(all, (1..=240).collect::<Vec<_>>());
    for store in stores {
        store.close().await;
    }
}

async fn retention_prunes_old_messages(db: TestDb) {
    use chat_proto::{ProtoLimits, RoomId};
    use chat_service::store::{NewMessage, Store};
    let store = Store::open(&db.url).await.unwrap();
    let room = RoomId::parse("old", &ProtoLimits::default()).unwrap();
    let now = chat_proto::time::now_millis();
    let message = |n: i64, age_days: i64| NewMessage {
        id: format!("id-{n}"),
        room_id: room.clone(),
        user_id: "u".into(),
        username: "u".into(),
        message: format!("m{n}"),
        timestamp_ms: now - age_days * 86_400_000,
        client_id: None,
        kind: chat_proto::MessageKind::User,
        attachments: Vec::new(),
    };
    let stored = store
        .append(vec![message(1, 40), message(2, 31), message(3, 1)])
        .await
        .unwrap();
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(store.prune(now - 30 * 86_400_000).await.unwrap(), 2);
    let page = store.page(&room, None, 10).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].as_message().unwrap().message, "m3");
    // Pruning never rewinds the sequence.
    assert_eq!(store.last_seq(&room).await.unwrap(), 3);
    store.close().await;
}

/// One row the database refuses fails alone: the rest of its batch is
/// stored, with each room's seqs contiguous and in batch order. The row
/// here repeats a stored message's id, which both engines refuse alike.
async fn a_refused_row_fails_alone(db: TestDb) {
    use chat_proto::{ProtoLimits, RoomId};
    use chat_service::store::{NewMessage, Store};
    let store = Store::open(&db.url).await.unwrap();
    let limits = ProtoLimits::default();
    let (a, b) = (
        RoomId::parse("a", &limits).unwrap(),
        RoomId::parse("b", &limits).unwrap(),
    );
    let message = |id: &str, room: &RoomId| NewMessage {
        id: id.to_owned(),
        room_id: room.clone(),
        user_id: "u".into(),
        username: "u".into(),
        message: format!("text of {id}"),
        timestamp_ms: chat_proto::time::now_millis(),
        client_id: None,
        kind: chat_proto::MessageKind::User,
        attachments: Vec::new(),
    };
    let first = store.append(vec![message("taken", &a)]).await.unwrap();
    assert_eq!(first[0].seq().unwrap(), 1);

    let mut batch: Vec<NewMessage> = (0..37)
        .map(|n| message(&format!("ok-{n}"), if n % 3 == 0 { &b } else { &a }))
        .collect();
    batch.insert(20, message("taken", &b));
    batch.insert(5, message("taken", &a));
    let appended = store.append(batch.clone()).await.unwrap();
    assert_eq!(appended.len(), batch.len());
    let mut next = std::collections::HashMap::from([("a", 2u64), ("b", 1u64)]);
    for (sent, row) in batch.iter().zip(&appended) {
        if sent.id == "taken" {
            assert!(
                matches!(row, Appended::Refused(_)),
                "the repeated id was stored: {row:?}"
            );
            continue;
        }
        let Some(RoomEvent::Message(stored)) = row.event() else {
            panic!("a valid row is stored: {row:?}");
        };
        assert_eq!(stored.id, sent.id);
        let expected = next.get_mut(sent.room_id.as_str()).unwrap();
        assert_eq!(stored.seq, *expected, "seqs follow batch order, no gaps");
        *expected += 1;
    }
    assert_eq!(store.last_seq(&a).await.unwrap(), next["a"] - 1);
    assert_eq!(store.last_seq(&b).await.unwrap(), next["b"] - 1);
    let page = store.page(&b, None, 100).await.unwrap();
    assert_eq!(page.messages.len() as u64, next["b"] - 1);
    store.close().await;
}

/// PostgreSQL refuses NUL in text; a message holding one (which the
/// protocol no longer lets through) fails alone, not its batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set TEST_POSTGRES_URL and run with --include-ignored"]
async fn a_nul_fails_alone_on_postgres() {
    use chat_proto::{ProtoLimits, RoomId};
    use chat_service::store::{NewMessage, Store};
    let db = backends::postgres().await;
    let store = Store::open(&db.url).await.unwrap();
    let room = RoomId::parse("nul", &ProtoLimits::default()).unwrap();
    let message = |n: usize, text: &str| NewMessage {
        id: format!("id-{n}"),
        room_id: room.clone(),
        user_id: "u".into(),
        username: "u".into(),
        message: text.to_owned(),
        timestamp_ms: chat_proto::time::now_millis(),
        client_id: None,
        kind: chat_proto::MessageKind::User,
        attachments: Vec::new(),
    };
    let batch = vec![
        message(0, "before"),
        message(1, "a\u{0}b"),
        message(2, "after"),
    ];
    let appended = store.append(batch).await.unwrap();
    assert_eq!(appended[0].seq(), Some(1));
    assert!(matches!(appended[1], Appended::Refused(_)));
    assert_eq!(appended[2].seq(), Some(2));
    store.close().await;
}

/// Writes queued before `close` commit; a write after it fails at once
/// instead of waiting on a writer that is gone.
async fn close_commits_queued_writes_then_refuses(db: TestDb) {
    use chat_proto::{ProtoLimits, RoomId};
    use chat_service::store::{NewMessage, Store, StoreError};
    let store = Store::open(&db.url).await.unwrap();
    let room = RoomId::parse("closing", &ProtoLimits::default()).unwrap();
    let message = |n: usize| NewMessage {
        id: format!("close-{n}"),
        room_id: room.clone(),
        user_id: "u".into(),
        username: "u".into(),
        message: format!("m{n}"),
        timestamp_ms: chat_proto::time::now_millis(),
        client_id: None,
        kind: chat_proto::MessageKind::User,
        attachments: Vec::new(),
    };
    // Polled in order: each write is queued before close is (ten fit in the
    // writer's queue without waiting).
    let writes = futures_util::future::join_all((0..10).map(|n| store.append(vec![message(n)])));
    let (written, ()) = futures_util::future::join(writes, store.close()).await;
    for write in written {
        assert_eq!(write.unwrap().len(), 1);
    }
    let late = store.append(vec![message(99)]).await;
    assert!(matches!(late, Err(StoreError::WriterGone)), "{late:?}");
    let reopened = Store::open(&db.url).await.unwrap();
    assert_eq!(reopened.last_seq(&room).await.unwrap(), 10);
    reopened.close().await;
}

crate::on_every_store!(
    restart_keeps_history,
    seq_is_gap_free_under_concurrent_senders,
    history_paging_edges,
    recovery_with_since,
    recovery_under_live_traffic_has_no_gaps_or_duplicates,
    retention_prunes_old_messages,
    close_commits_queued_writes_then_refuses,
    a_refused_row_fails_alone,
);
// Several processes sharing one database is a PostgreSQL deployment; the
// SQLite store is the single-process embedded default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set TEST_POSTGRES_URL and run with --include-ignored"]
async fn two_writers_on_one_postgres_never_share_a_seq() {
    two_writers_on_one_database_never_share_a_seq(backends::postgres().await).await;
}

/// Without a broker a second service would deliver only its own commits:
/// it is refused at start, with a line that says why; once the first
/// stops, it may start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set TEST_POSTGRES_URL and run with --include-ignored"]
async fn a_second_service_on_one_postgres_is_refused_without_a_broker() {
    let db = backends::postgres().await;
    let mut first = TestServer::start(config(&db)).await;
    first.connect("ann").await.join("r").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = chat_service::run(listener, config(&db), std::future::pending())
        .await
        .expect_err("a second service on the same database starts");
    assert!(
        refused
            .to_string()
            .contains("another chat-service is using this database"),
        "{refused}"
    );
    first.stop().await.unwrap();
    let second = TestServer::start(config(&db)).await;
    second.connect("ann").await.join("r").await;
}
