//! Files attached to messages, on real sockets and real HTTP: uploads and
//! their limits, types and images, downloads and their headers, who may
//! see what, attachments in messages (live, in history, after a restart),
//! and what is deleted when. On SQLite and PostgreSQL (and the memory
//! store for what does not need a restart), files on disk.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::backends::{self, TestDb};
use common::files::*;
use common::{TestServer, KEY, WAIT};
use futures_util::stream;
use serde_json::{json, Value};

/// Waits for `check` to hold; panics naming `what` after a few seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {WAIT:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn an_upload_is_served_to_the_room_with_safe_headers(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(&db, dir.path())).await;
    let picture = png(640, 480);
    let info = uploaded(&server, "ann", "lobby", "cat.png", "image/png", &picture).await;
    let id = info["id"].as_str().unwrap().to_owned();
    assert_eq!(
        info,
        json!({
            "id": id, "name": "cat.png", "size": picture.len(), "contentType": "image/png",
            "sha256": chat_files::ContentHash::of(&picture).to_hex(),
            "width": 640, "height": 480,
            "url": format!("/chat/api/files/{id}"),
            "thumbnailUrl": format!("/chat/api/files/{id}/thumbnail"),
        })
    );

    // The uploader sees it before it is sent; the original byte for byte.
    let response = fetch(&server, "ann", &info["url"], &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("image/png"));
    assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
    assert_eq!(
        header(&response, "content-security-policy"),
        Some("sandbox")
    );
    assert_eq!(
        header(&response, "content-disposition"),
        Some("inline; filename=\"cat.png\"; filename*=UTF-8''cat.png")
    );
    assert_eq!(
        header(&response, "cache-control"),
        Some("private, max-age=86400")
    );
    let etag = header(&response, "etag").unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", info["sha256"].as_str().unwrap()));
    assert_eq!(&response.bytes().await.unwrap()[..], &picture[..]);

    // Conditional and partial requests.
    let again = fetch(&server, "ann", &info["url"], &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let part = fetch(&server, "ann", &info["url"], &[("range", "bytes=8-23")]).await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        header(&part, "content-range"),
        Some(format!("bytes 8-23/{}", picture.len()).as_str())
    );
    assert_eq!(&part.bytes().await.unwrap()[..], &picture[8..24]);
    let past = fetch(&server, "ann", &info["url"], &[("range", "bytes=999999-")]).await;
    assert_eq!(past.status(), 416);

    // The thumbnail: a JPEG at most 320 px on its longest side.
    let thumbnail = fetch(&server, "ann", &info["thumbnailUrl"], &[]).await;
    assert_eq!(thumbnail.status(), 200);
    assert_eq!(header(&thumbnail, "content-type"), Some("image/jpeg"));
    let jpeg = thumbnail.bytes().await.unwrap();
    let decoded = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (320, 240));

    // Anything that is not an image is an attachment to save, never a page.
    let document = pdf("report");
    let info = uploaded(
        &server,
        "ann",
        "lobby",
        "Relatório.pdf",
        "application/pdf",
        &document,
    )
    .await;
    assert!(
        info.get("thumbnailUrl").is_none() && info.get("width").is_none(),
        "{info}"
    );
    let response = fetch(&server, "ann", &info["url"], &[]).await;
    assert_eq!(header(&response, "content-type"), Some("application/pdf"));
    assert_eq!(
        header(&response, "content-disposition"),
        Some("attachment; filename=\"Relat_rio.pdf\"; filename*=UTF-8''Relat%C3%B3rio.pdf")
    );
    assert_eq!(&response.bytes().await.unwrap()[..], &document[..]);
    let no_thumbnail = format!("{}/thumbnail", info["url"].as_str().unwrap());
    assert_eq!(status_of(&server, "ann", &json!(no_thumbnail)).await, 404);

    // Unknown ids, and requests without the gateway's headers.
    assert_eq!(
        status_of(&server, "ann", &json!("/chat/api/files/no-such-file")).await,
        404
    );
    let anonymous = reqwest::Client::new()
        .get(server.http(&service_path(&info["url"])))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// Joins and sends a message with files; the echo's data.
async fn send_with(
    client: &mut common::Client,
    room: &str,
    text: Option<&str>,
    attachments: &[&Value],
) -> Value {
    let ids: Vec<&Value> = attachments.iter().map(|info| &info["id"]).collect();
    let mut data = json!({"roomId": room, "attachments": ids});
    if let Some(text) = text {
        data["message"] = json!(text);
    }
    client.send("chat.message", data).await;
    client.expect("chat.message").await
}

fn attachment_of(info: &Value) -> Value {
    let mut attachment = info.clone();
    attachment.as_object_mut().unwrap().remove("sha256");
    attachment
}

async fn messages_carry_attachments_live_in_history_and_after_a_restart(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(config(&db, dir.path())).await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    ann.expect("chat.userJoined").await;
    let picture = uploaded(
        &server,
        "ann",
        "lobby",
        "cat.png",
        "image/png",
        &png(64, 48),
    )
    .await;
    let document = uploaded(
        &server,
        "ann",
        "lobby",
        "a.pdf",
        "application/pdf",
        &pdf("a"),
    )
    .await;

    // Files alone make a message; the room sees them in the order given.
    let echo = send_with(&mut ann, "lobby", None, &[&document, &picture]).await;
    assert_eq!(echo["message"], "");
    let expected = json!([attachment_of(&document), attachment_of(&picture)]);
    assert_eq!(echo["attachments"], expected);
    let seen = bob.expect("chat.message").await;
    assert_eq!(seen["attachments"], expected);
    // And the room may fetch them now.
    assert_eq!(status_of(&server, "bob", &picture["url"]).await, 200);
    assert_eq!(
        status_of(&server, "bob", &picture["thumbnailUrl"]).await,
        200
    );
    let text = send_with(&mut ann, "lobby", Some("and some text"), &[]).await;
    assert!(text.get("attachments").is_none(), "{text}");
    bob.expect("chat.message").await;

    let history = as_user(
        reqwest::Method::GET,
        &server,
        "bob",
        "/api/rooms/lobby/messages",
    )
    .send()
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(history["messages"][0]["attachments"], expected);
    assert!(history["messages"][1].get("attachments").is_none());

    if db.url == "memory:" {
        return;
    }
    drop((ann, bob));
    server.stop().await.unwrap();
    let server = TestServer::start(config(&db, dir.path())).await;
    let mut bob = server.connect("bob").await;
    bob.send("chat.join", json!({"roomId": "lobby", "since": 0}))
        .await;
    bob.expect("chat.joined").await;
    let replayed = bob.expect("chat.message").await;
    assert_eq!(replayed["attachments"], expected);
    assert_eq!(status_of(&server, "bob", &document["url"]).await, 200);
    // A resend of the same clientId answers with the original, files and all.
    let mut ann = server.connect("ann").await;
    ann.join("lobby").await;
    let more = uploaded(
        &server,
        "ann",
        "lobby",
        "b.pdf",
        "application/pdf",
        &pdf("b"),
    )
    .await;
    let frame = json!({"roomId": "lobby", "attachments": [more["id"]], "clientId": "c-1"});
    ann.send("chat.message", frame.clone()).await;
    let first = ann.expect("chat.message").await;
    ann.send("chat.message", frame).await;
    let resent = ann.expect("chat.message").await;
    assert_eq!(resent["id"], first["id"]);
    assert_eq!(resent["attachments"], json!([attachment_of(&more)]));
}

async fn only_the_senders_unsent_uploads_to_the_room_can_be_attached(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(&db, dir.path())).await;
    let mut ann = server.connect("ann").await;
    let mut bob = server.connect("bob").await;
    for room in ["lobby", "other"] {
        ann.join(room).await;
        bob.join(room).await;
        ann.expect("chat.userJoined").await;
    }
    let anns = uploaded(&server, "ann", "lobby", "a.txt", "text/plain", b"ann's").await;
    let elsewhere = uploaded(&server, "ann", "other", "b.txt", "text/plain", b"other").await;
    let ids = |infos: &[&Value]| json!(infos.iter().map(|i| &i["id"]).collect::<Vec<_>>());

    for (by_bob, attachments) in [
        (true, ids(&[&anns])),
        (false, ids(&[&elsewhere])),
        (false, json!(["no-such-file"])),
        // All or nothing.
        (false, ids(&[&anns, &elsewhere])),
    ] {
        let sender = if by_bob { &mut bob } else { &mut ann };
        sender
            .send(
                "chat.message",
                json!({"roomId": "lobby", "message": "look", "attachments": attachments}),
            )
            .await;
        sender.expect_error("invalid_attachment").await;
    }
    ann.send(
        "chat.message",
        json!({"roomId": "lobby", "attachments": ["x", "x"]}),
    )
    .await;
    ann.expect_error("invalid_attachment").await;
    let eleven: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    ann.send(
        "chat.message",
        json!({"roomId": "lobby", "attachments": eleven}),
    )
    .await;
    ann.expect_error("invalid_attachment").await;

    // Sent once; not again, not even by its uploader.
    let echo = send_with(&mut ann, "lobby", Some("here"), &[&anns]).await;
    assert_eq!(echo["attachments"][0]["id"], anns["id"]);
    bob.expect("chat.message").await;
    ann.send(
        "chat.message",
        json!({"roomId": "lobby", "message": "again", "attachments": [anns["id"]]}),
    )
    .await;
    ann.expect_error("invalid_attachment").await;
    // Nothing refused reached anyone, and the connections are fine.
    bob.say("lobby", "still here").await;
    assert_eq!(bob.expect("chat.message").await["message"], "still here");
    assert_eq!(ann.expect("chat.message").await["message"], "still here");
    // The file meant for another room still goes there.
    let echo = send_with(&mut ann, "other", None, &[&elsewhere]).await;
    assert_eq!(echo["attachments"][0]["id"], elsewhere["id"]);
}

async fn add_member(server: &TestServer, room: &str, user: &str) {
    let response = reqwest::Client::new()
        .put(server.http(&format!("/rooms/{room}/members/{user}")))
        .header("x-internal-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn members_only_rooms_admit_their_members_to_files(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(&db, dir.path())).await;
    let room = "private:team";
    add_member(&server, room, "ann").await;
    add_member(&server, room, "bob").await;

    // Strangers may not upload there, whether the room exists or not.
    for (user, room) in [("eve", room), ("eve", "private:nobody")] {
        let (status, body) = upload(&server, user, room, "a.txt", "text/plain", b"hi").await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    }
    let info = uploaded(&server, "ann", room, "plan.txt", "text/plain", b"the plan").await;
    // Not sent yet: the uploader's alone, nobody else learns of it.
    assert_eq!(status_of(&server, "ann", &info["url"]).await, 200);
    assert_eq!(status_of(&server, "bob", &info["url"]).await, 404);
    assert_eq!(status_of(&server, "eve", &info["url"]).await, 404);

    let mut ann = server.connect("ann").await;
    ann.join(room).await;
    send_with(&mut ann, room, None, &[&info]).await;
    assert_eq!(status_of(&server, "bob", &info["url"]).await, 200);
    assert_eq!(status_of(&server, "eve", &info["url"]).await, 403);
    // Taken out of the room, taken out of its files.
    let removed = reqwest::Client::new()
        .delete(server.http(&format!("/rooms/{room}/members/bob")))
        .header("x-internal-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    assert_eq!(status_of(&server, "bob", &info["url"]).await, 403);

    // A direct conversation: its two participants.
    ann.send("chat.dm.open", json!({"userId": "bob"})).await;
    let dm = ann.expect("chat.joined").await["roomId"]
        .as_str()
        .unwrap()
        .to_owned();
    let shared = uploaded(
        &server,
        "ann",
        &dm,
        "for-bob.pdf",
        "application/pdf",
        &pdf("dm"),
    )
    .await;
    let (status, _) = upload(&server, "eve", &dm, "x.txt", "text/plain", b"x").await;
    assert_eq!(status, 403);
    send_with(&mut ann, &dm, Some("for you"), &[&shared]).await;
    assert_eq!(status_of(&server, "bob", &shared["url"]).await, 200);
    assert_eq!(status_of(&server, "eve", &shared["url"]).await, 403);

    // A public room: anyone authenticated.
    let open = uploaded(&server, "eve", "lobby", "hi.txt", "text/plain", b"hello").await;
    let mut eve = server.connect("eve").await;
    eve.join("lobby").await;
    send_with(&mut eve, "lobby", None, &[&open]).await;
    assert_eq!(status_of(&server, "zed", &open["url"]).await, 200);
}

/// Sends a request head by hand (and no body) and reads the answer.
fn raw_request(addr: std::net::SocketAddr, head: &str) -> String {
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    // Until the server closes: it does not wait for the body it refused.
    loop {
        match socket.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(error) => panic!("the server neither answered nor closed: {error}"),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

async fn too_large_uploads_are_refused_without_reading_the_rest(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&db, dir.path());
    let limit = 256 * 1024;
    config.files.upload.max_upload_bytes = limit;
    let server = TestServer::start(config).await;
    let store = StoreView::open(dir.path()).await;

    // A declared length over the limit: 413 at once, the body never read.
    let head = format!(
        "POST /api/rooms/lobby/files HTTP/1.1\r\nHost: x\r\nx-internal-api-key: {KEY}\r\n\
         x-user-id: ann\r\ncontent-type: {}\r\ncontent-length: 1000000000\r\n\r\n",
        multipart_type()
    );
    let addr = server.addr;
    let answer = tokio::task::spawn_blocking(move || raw_request(addr, &head))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":\"file_too_large\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    // No declared length (chunked): reading stops at the limit.
    let pulled = Arc::new(AtomicU64::new(0));
    let mut body = multipart("big.txt", "text/plain", b"");
    body.truncate(body.len() - format!("\r\n--{BOUNDARY}--\r\n").len());
    let head = bytes::Bytes::from(body);
    let counter = pulled.clone();
    let chunks = stream::iter(
        std::iter::once(head).chain((0..4096).map(|_| bytes::Bytes::from(vec![b'a'; 64 * 1024]))),
    );
    let counted = futures_util::StreamExt::map(chunks, move |chunk| {
        counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        Ok::<_, std::io::Error>(chunk)
    });
    let response = as_user(
        reqwest::Method::POST,
        &server,
        "ann",
        "/api/rooms/lobby/files",
    )
    .header("content-type", multipart_type())
    .body(reqwest::Body::wrap_stream(counted))
    .send()
    .await;
    // The refusal comes while the client is still sending; the client
    // reads it, then the connection is closed.
    let response = response.expect("the 413 reaches a client still sending");
    assert_eq!(response.status(), 413);
    assert_eq!(header(&response, "connection"), Some("close"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "file_too_large");
    // Of the 256 MiB on offer, the client got rid of what the service read
    // and what the sockets' buffers between them hold, no more.
    let read = pulled.load(Ordering::SeqCst);
    assert!(
        read < 32 * 1024 * 1024,
        "{read} bytes pulled for a limit of {limit}"
    );
    assert_eq!(store.blob_count(), 0);

    // At the limit is fine.
    let exact = vec![b'x'; limit as usize];
    uploaded(&server, "ann", "lobby", "exact.txt", "text/plain", &exact).await;
    let (status, body) = upload(
        &server,
        "ann",
        "lobby",
        "over.txt",
        "text/plain",
        &vec![b'x'; limit as usize + 1],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("file_too_large"))
    );
}

async fn types_come_from_the_bytes(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&db, dir.path());
    config.files.upload.extra_types = vec!["application/zip".into()];
    let server = TestServer::start(config).await;
    let html = b"<!doctype html><script>alert(document.cookie)</script>";
    for (name, claimed, bytes) in [
        ("cat.png", "image/png", &html[..]),
        ("page.html", "text/html", &html[..]),
        (
            "x.svg",
            "image/svg+xml",
            &b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>"[..],
        ),
        ("doc.pdf", "application/pdf", &png(4, 4)[..]),
        (
            "blob.bin",
            "application/octet-stream",
            &[0u8, 159, 146, 150, 1, 2, 3][..],
        ),
        (
            "a.mp3",
            "audio/mpeg",
            &b"ID3\x03\x00\x00\x00\x00\x00\x00"[..],
        ),
    ] {
        let (status, body) = upload(&server, "ann", "lobby", name, claimed, bytes).await;
        assert_eq!(status, 415, "{name}: {body}");
        assert_eq!(body["code"], "unsupported_media_type", "{name}");
    }
    // A configured extra type is accepted, as detected.
    let zip = b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00!\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let info = uploaded(&server, "ann", "lobby", "a.zip", "application/zip", zip).await;
    assert_eq!(info["contentType"], "application/zip");
    // A client that names no type, or a wrong alias, is judged by the bytes.
    let info = uploaded(
        &server,
        "ann",
        "lobby",
        "scan",
        "application/octet-stream",
        &pdf("s"),
    )
    .await;
    assert_eq!(info["contentType"], "application/pdf");

    // A decompression bomb: a GIF whose header claims 65535x65535 pixels.
    let mut gif = Vec::new();
    image::DynamicImage::new_rgba8(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut gif), image::ImageFormat::Gif)
        .unwrap();
    gif[6..10].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    let (status, body) = upload(&server, "ann", "lobby", "bomb.gif", "image/gif", &gif).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("image_too_large")),
        "{body}"
    );

    // Names are cleaned of paths and reordering characters.
    let info = uploaded(
        &server,
        "ann",
        "lobby",
        "..\\\\..\\\\evil\u{202E}gnp.txt",
        "text/plain",
        b"text",
    )
    .await;
    assert_eq!(info["name"], "evilgnp.txt");
    // Not multipart, or no file part: 400.
    let response = as_user(
        reqwest::Method::POST,
        &server,
        "ann",
        "/api/rooms/lobby/files",
    )
    .header("content-type", "application/json")
    .body("{}")
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_upload");
    let (status, body) = upload(&server, "ann", "bad room!", "a.txt", "text/plain", b"x").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_room")));
}

async fn the_same_bytes_are_stored_once(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(&db, dir.path())).await;
    let store = StoreView::open(dir.path()).await;
    let picture = png(100, 80);
    let first = uploaded(&server, "ann", "lobby", "a.png", "image/png", &picture).await;
    let second = uploaded(&server, "bob", "other", "b.png", "image/png", &picture).await;
    assert_ne!(first["id"], second["id"]);
    assert_eq!(first["sha256"], second["sha256"]);
    // One original and one thumbnail, whoever uploaded them where.
    assert_eq!(store.blob_count(), 2);
    assert!(store.has(hash_of(&first)).await && store.has_thumbnail(hash_of(&first)).await);
    assert_eq!(second["name"], "b.png");
    assert_eq!(
        status_of(&server, "bob", &second["thumbnailUrl"]).await,
        200
    );
}

async fn deleting_a_message_deletes_its_files(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(&db, dir.path())).await;
    let store = StoreView::open(dir.path()).await;
    let mut ann = server.connect("ann").await;
    ann.join("lobby").await;
    let picture = png(90, 60);
    let sent = uploaded(&server, "ann", "lobby", "a.png", "image/png", &picture).await;
    let kept = uploaded(
        &server,
        "ann",
        "lobby",
        "kept.pdf",
        "application/pdf",
        &pdf("k"),
    )
    .await;
    let message = send_with(&mut ann, "lobby", Some("soon gone"), &[&sent, &kept]).await;
    // The same picture, uploaded again but not sent: its bytes must stay.
    let pending = uploaded(&server, "bob", "lobby", "copy.png", "image/png", &picture).await;

    ann.send(
        "chat.delete",
        json!({"roomId": "lobby", "messageId": message["id"]}),
    )
    .await;
    ann.expect("chat.deleted").await;
    assert_eq!(status_of(&server, "ann", &sent["url"]).await, 404);
    assert_eq!(status_of(&server, "ann", &kept["url"]).await, 404);
    let document = hash_of(&kept);
    eventually("the deleted message's document to leave the store", || {
        let store = &store;
        async move { !store.has(document).await }
    })
    .await;
    assert!(store.has(hash_of(&pending)).await);
    assert!(store.has_thumbnail(hash_of(&pending)).await);
    assert_eq!(status_of(&server, "bob", &pending["url"]).await, 200);
    let history = as_user(
        reqwest::Method::GET,
        &server,
        "ann",
        "/api/rooms/lobby/messages",
    )
    .send()
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(
        history["messages"][0],
        json!({"id": message["id"], "seq": message["seq"], "roomId": "lobby", "userId": "ann", "deleted": true})
    );

    // Moderation deletes files too; once the pending copy is sent and its
    // message deleted, the picture's bytes go as well.
    let mut bob = server.connect("bob").await;
    bob.join("lobby").await;
    let message = send_with(&mut bob, "lobby", None, &[&pending]).await;
    let moderated = reqwest::Client::new()
        .delete(server.http(&format!(
            "/rooms/lobby/messages/{}",
            message["id"].as_str().unwrap()
        )))
        .header("x-internal-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(moderated.status(), 200);
    let picture_hash = hash_of(&pending);
    eventually("the picture to leave the store", || {
        let store = &store;
        async move { !store.has(picture_hash).await && !store.has_thumbnail(picture_hash).await }
    })
    .await;
    assert_eq!(store.blob_count(), 0);
    // Its bytes may come back: stored anew.
    let back = uploaded(&server, "ann", "lobby", "again.png", "image/png", &picture).await;
    assert_eq!(status_of(&server, "ann", &back["thumbnailUrl"]).await, 200);
    assert!(store.has(picture_hash).await);
}

async fn uploads_never_sent_are_deleted_after_the_orphan_age(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&db, dir.path());
    config.files.orphan_after = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let store = StoreView::open(dir.path()).await;
    let mut ann = server.connect("ann").await;
    ann.join("lobby").await;
    let orphan = uploaded(
        &server,
        "ann",
        "lobby",
        "o.pdf",
        "application/pdf",
        &pdf("orphan"),
    )
    .await;
    let sent = uploaded(
        &server,
        "ann",
        "lobby",
        "s.pdf",
        "application/pdf",
        &pdf("sent"),
    )
    .await;
    send_with(&mut ann, "lobby", None, &[&sent]).await;

    let orphan_hash = hash_of(&orphan);
    eventually("the unsent upload to be deleted", || {
        let (server, store, orphan) = (&server, &store, &orphan);
        async move {
            status_of(server, "ann", &orphan["url"]).await == 404 && !store.has(orphan_hash).await
        }
    })
    .await;
    // Sent files stay, however old.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_of(&server, "ann", &sent["url"]).await, 200);
    assert!(store.has(hash_of(&sent)).await);
    // Too late to send it now.
    ann.send(
        "chat.message",
        json!({"roomId": "lobby", "attachments": [orphan["id"]]}),
    )
    .await;
    ann.expect_error("invalid_attachment").await;

    // A message pruned by retention takes its files with it, as a
    // deletion does (the janitor finds files whose message is gone).
    if db.url == "memory:" {
        return;
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let message_id: String = sqlx::query_scalar("SELECT message_id FROM files WHERE id = $1")
        .bind(sent["id"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    // What `prune` does to an old message.
    sqlx::query("DELETE FROM room_events WHERE id = $1")
        .bind(&message_id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let sent_hash = hash_of(&sent);
    eventually("the pruned message's file to be deleted", || {
        let (server, store, sent) = (&server, &store, &sent);
        async move { status_of(server, "ann", &sent["url"]).await == 404 && !store.has(sent_hash).await }
    })
    .await;
}

crate::on_every_store!(
    an_upload_is_served_to_the_room_with_safe_headers,
    messages_carry_attachments_live_in_history_and_after_a_restart,
    only_the_senders_unsent_uploads_to_the_room_can_be_attached,
    members_only_rooms_admit_their_members_to_files,
    too_large_uploads_are_refused_without_reading_the_rest,
    types_come_from_the_bytes,
    the_same_bytes_are_stored_once,
    deleting_a_message_deletes_its_files,
    uploads_never_sent_are_deleted_after_the_orphan_age,
);

crate::on_the_memory_store!(
    messages_carry_attachments_live_in_history_and_after_a_restart,
    only_the_senders_unsent_uploads_to_the_room_can_be_attached,
    deleting_a_message_deletes_its_files,
    uploads_never_sent_are_deleted_after_the_orphan_age,
    members_only_rooms_admit_their_members_to_files,
);

#[tokio::test]
async fn without_a_file_store_uploads_are_refused_and_nothing_is_found() {
    let server = TestServer::memory().await;
    let (status, body) = upload(&server, "ann", "lobby", "a.txt", "text/plain", b"x").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("store_unavailable"))
    );
    assert_eq!(
        status_of(&server, "ann", &json!("/chat/api/files/anything")).await,
        404
    );
}

/// Two writers on one database (two processes' stores): a file sent from
/// both at once is sent once, the other message refused.
async fn two_services_send_a_file_once(db: TestDb) {
    use chat_proto::{ProtoLimits, RoomId};
    use chat_service::store::{Appended, NewMessage, Refusal, Store};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(&db, dir.path())).await;
    server.stats().await;
    let stores = [
        Store::open(&db.url).await.unwrap(),
        Store::open(&db.url).await.unwrap(),
    ];
    let room = RoomId::parse("lobby", &ProtoLimits::default()).unwrap();
    for round in 0..5 {
        let info = uploaded(
            &server,
            "ann",
            "lobby",
            "a.txt",
            "text/plain",
            format!("round {round}").as_bytes(),
        )
        .await;
        let file = info["id"].as_str().unwrap().to_owned();
        let message = |n: usize| NewMessage {
            id: format!("round-{round}-{n}"),
            room_id: room.clone(),
            user_id: "ann".into(),
            username: "ann".into(),
            message: "mine".into(),
            timestamp_ms: chat_proto::time::now_millis(),
            client_id: None,
            kind: chat_proto::MessageKind::User,
            attachments: vec![file.clone()],
        };
        let (one, two) = tokio::join!(
            stores[0].append(vec![message(0)]),
            stores[1].append(vec![message(1)])
        );
        let mut outcomes: Vec<&str> = [one.unwrap(), two.unwrap()]
            .iter()
            .map(|rows| match &rows[0] {
                Appended::Stored(_) => "sent",
                Appended::Refused(Refusal::InvalidAttachment | Refusal::Rejected(_)) => "refused",
                other => panic!("{other:?}"),
            })
            .collect();
        outcomes.sort();
        assert_eq!(outcomes, ["refused", "sent"], "round {round}");
    }
    for store in stores {
        store.close().await;
    }
}

mod shared_database {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        two_services_send_a_file_once(backends::sqlite()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set TEST_POSTGRES_URL and run with --include-ignored"]
    async fn postgres() {
        two_services_send_a_file_once(backends::postgres().await).await;
    }
}
