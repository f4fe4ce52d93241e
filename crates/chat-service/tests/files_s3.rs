//! Files kept in a real S3-compatible store: moto's server mode, started by
//! the test on a free loopback port and killed at the end. `.ci/run`
//! installs it (`pip install 'moto[server]'`); `MOTO_SERVER` names another
//! binary.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use chat_files::{Blob, FileStore, StoreConfig};
use common::backends;
use common::files::*;
use common::{TestServer, WAIT};
use serde_json::json;
use tokio::process::{Child, Command};

const NEEDS: &str =
    "needs an S3-compatible server: moto_server (pip install 'moto[server]'), started by the test";

struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    async fn start() -> MotoServer {
        let binary = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {binary:?} ({error}): this suite {NEEDS}")
            });
        let mut server = MotoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("moto_server exited ({status}) before serving; this suite {NEEDS}");
            }
            if client.get(server.url("/")).send().await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let created = client.put(server.url("/chat-files")).send().await.unwrap();
        assert!(
            created.status().is_success(),
            "creating the bucket: {}",
            created.status()
        );
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn store_url(&self) -> String {
        format!(
            "s3://chat-files/uploads?endpoint={}&region=us-east-1&access_key_id=test&secret_access_key=test",
            self.url("")
        )
    }
}

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
    let scratch = tempfile::tempdir().unwrap();
    let mut config = config(&db, scratch.path());
    config.files.store = Some(moto.store_url());
    config.files.orphan_after = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let bucket = FileStore::open(&StoreConfig::from_url(&moto.store_url()).unwrap())
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
