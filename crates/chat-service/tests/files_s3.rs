//! Files kept in a real S3-compatible store: moto's server mode, started by
//! the test on a free loopback port and killed at the end. `.ci/run`
//! installs it (`pip install 'moto[server]'`); `MOTO_SERVER` names another
//! binary.

mod common;

use std::time::Duration;

use chat_files::{Blob, FileStore, StoreConfig};
use chat_testkit::MotoServer;
use common::backends;
use common::files::*;
use common::{TestServer, WAIT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3-compatible server: moto_server (pip install 'moto[server]'), started by the test"]
async fn files_live_in_an_s3_store_with_sqlite() {
    files_live_in_an_s3_store(backends::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3-compatible server (moto_server, started by the test) and PostgreSQL (TEST_POSTGRES_URL)"]
async fn files_live_in_an_s3_store_with_postgres() {
    files_live_in_an_s3_store(backends::postgres().await).await;
}

async fn files_live_in_an_s3_store(db: backends::TestDb) {
    let moto = MotoServer::start().await;
    moto.create_bucket("chat-files").await;
    let store_url = moto.store_url("chat-files", "uploads");
    let scratch = tempfile::tempdir().unwrap();
    let mut config = config(&db, scratch.path());
    config.files.store = Some(store_url.clone());
    config.files.orphan_after = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let bucket = FileStore::open(&StoreConfig::from_url(&store_url).unwrap())
        .await
        .unwrap();

    let picture = png(800, 600);
    let info = uploaded(&server, "ann", "lobby", "big.png", "image/png", &picture).await;
    let hash = hash_of(&info);
    assert!(bucket.contains(Blob::Original(hash)).await.unwrap());
    assert!(bucket.contains(Blob::Thumbnail(hash)).await.unwrap());
    let mut ann = server.connect("ann").await;
    ann.join("lobby").await;
    ann.send(
        "chat.message",
        json!({"roomId": "lobby", "attachments": [info["id"]]}),
    )
    .await;
    let message = ann.expect("chat.message").await;

    let whole = fetch(&server, "bob", &info["url"], &[]).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(&whole.bytes().await.unwrap()[..], &picture[..]);
    let part = fetch(&server, "bob", &info["url"], &[("range", "bytes=100-199")]).await;
    assert_eq!(part.status(), 206);
    assert_eq!(&part.bytes().await.unwrap()[..], &picture[100..200]);
    assert_eq!(status_of(&server, "bob", &info["thumbnailUrl"]).await, 200);

    // An upload never sent goes after the orphan age; the deleted message's
    // picture at once; nothing is left in the bucket.
    let orphan = uploaded(
        &server,
        "ann",
        "lobby",
        "o.pdf",
        "application/pdf",
        &pdf("o"),
    )
    .await;
    ann.send(
        "chat.delete",
        json!({"roomId": "lobby", "messageId": message["id"]}),
    )
    .await;
    ann.expect("chat.deleted").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = [
            bucket.contains(Blob::Original(hash)).await.unwrap(),
            bucket.contains(Blob::Thumbnail(hash)).await.unwrap(),
            bucket
                .contains(Blob::Original(hash_of(&orphan)))
                .await
                .unwrap(),
        ];
        if left == [false; 3] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still in the bucket: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(&server, "bob", &info["url"]).await, 404);
}
