//! The S3 store against a real S3-compatible server: moto's server mode,
//! started by the test on a free loopback port and killed at the end.
//! `.ci/run` installs it (`pip install 'moto[server]'`); `MOTO_SERVER`
//! names another binary.

mod common;

use std::time::{Duration, Instant};

use chat_files::{Blob, ContentHash, FileStore, StoreConfig, Uploader};
use chat_testkit::MotoServer;
use common::*;

#[tokio::test]
#[ignore = "needs an S3-compatible server: moto_server (pip install 'moto[server]'), started by the test"]
async fn the_s3_store_keeps_its_contract_against_a_real_server() {
    let server = MotoServer::start().await;
    server.create_bucket("chat-files").await;
    let config = StoreConfig::from_url(&server.store_url("chat-files", "test/prefix")).unwrap();
    let store = FileStore::open(&config).await.unwrap();
    let uploader = Uploader::new(store.clone(), large_file_config());
    exercise_store(&uploader).await;

    // Two nodes sharing the bucket see the same files.
    let other_node = FileStore::open(&config).await.unwrap();
    let stored = upload_to(&uploader, "shared.pdf", "application/pdf", PDF).await;
    assert_eq!(
        other_node
            .read_to_bytes(Blob::Original(stored.sha256))
            .await
            .unwrap(),
        PDF
    );

    // Concurrent uploads of the same bytes from both nodes.
    let text = b"the same bytes from two nodes at once\n".repeat(500);
    let second = Uploader::new(other_node.clone(), large_file_config());
    let (a, b) = tokio::join!(
        upload_to(&uploader, "a.txt", "text/plain", &text),
        upload_to(&second, "b.txt", "text/plain", &text)
    );
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(
        store.read_to_bytes(Blob::Original(a.sha256)).await.unwrap(),
        text
    );

    // Keys are under the prefix, path-style: the bucket sees them there.
    let unprefixed =
        FileStore::open(&StoreConfig::from_url(&server.store_url("chat-files", "")).unwrap())
            .await
            .unwrap();
    assert!(!unprefixed
        .contains(Blob::Original(stored.sha256))
        .await
        .unwrap());

    // A bucket that does not exist is the store failing, not a missing file.
    let nowhere =
        FileStore::open(&StoreConfig::from_url(&server.store_url("no-such-bucket", "")).unwrap())
            .await
            .unwrap();
    let missing = Uploader::new(nowhere, large_file_config());
    let body = multipart(&[Part::file("a.txt", "text/plain", b"hello")]);
    let refused = missing
        .ingest(&headers(None), chunked(body, 1024))
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "store_unavailable", "{refused}");

    // The server goes away: store_unavailable (503), not a hang.
    server.stop().await;
    let started = Instant::now();
    let error = store
        .contains(Blob::Original(ContentHash::of(b"x")))
        .await
        .unwrap_err();
    assert_eq!(error.code().as_str(), "store_unavailable", "{error}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn an_s3_store_nobody_answers_is_unavailable() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!(
        "s3://chat-files?endpoint=http://127.0.0.1:{port}&access_key_id=test&secret_access_key=test"
    );
    let store = FileStore::open(&StoreConfig::from_url(&url).unwrap())
        .await
        .unwrap();
    let uploader = Uploader::new(store, chat_files::UploadConfig::default());
    let body = multipart(&[Part::file("a.txt", "text/plain", b"hello")]);
    let refused = uploader
        .ingest(&headers(None), chunked(body, 1024))
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "store_unavailable", "{refused}");
    assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    let read = uploader
        .store()
        .read(Blob::Original(ContentHash::of(b"hello")))
        .await;
    assert_eq!(
        read.err().map(|e| e.code().as_str()),
        Some("store_unavailable")
    );
}
