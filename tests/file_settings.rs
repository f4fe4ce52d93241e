//! The binaries take the file settings (FILE_STORE_URL, MAX_UPLOAD_BYTES,
//! UPLOAD_EXTRA_TYPES) from the environment, the all-in-one `chat` giving
//! its gateway the service's upload limit, and refuse a bad store at start
//! with one line.

mod binaries;

use binaries::{gateway_port, refusal};

use tokio::process::Command;

const JWT_SECRET: &str = "file-settings-secret-of-at-least-32-bytes";
const BOUNDARY: &str = "----file-settings-boundary";

fn chat() -> Command {
    let mut command = binaries::chat();
    command.env("JWT_SECRET", JWT_SECRET);
    command
}

fn multipart(name: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn token(user: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["token", "--user", user])
        .env("JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn blobs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.file_name().unwrap() == ".staging" {
                0
            } else if path.is_dir() {
                blobs(&path)
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test]
async fn chat_takes_the_file_settings_and_shares_the_limit_with_its_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = chat();
    command
        .env("FILE_STORE_URL", dir.path())
        .env("MAX_UPLOAD_BYTES", "2000")
        .env("UPLOAD_EXTRA_TYPES", "application/zip, audio/mpeg");
    let (_chat, port) = gateway_port(&mut command).await;
    let token = token("ann");
    let upload = |name: &str, content_type: &str, bytes: &[u8]| {
        reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{port}/chat/api/rooms/lobby/files"
            ))
            .bearer_auth(&token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(multipart(name, content_type, bytes))
            .send()
    };
    let response = upload("a.txt", "text/plain", &[b'a'; 1500]).await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(blobs(dir.path()), 1);
    let zip = b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00!\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let response = upload("a.zip", "application/zip", zip).await.unwrap();
    assert_eq!(response.status(), 201);
    // Over the limit, refused by the service while reading, and (its
    // length past the limit and the multipart allowance) by the gateway
    // before reading.
    for size in [2500, 40_000] {
        let response = upload("b.txt", "text/plain", &vec![b'b'; size])
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{size}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "file_too_large", "{size}");
    }
    assert_eq!(blobs(dir.path()), 2);
}

#[tokio::test]
async fn a_bad_file_store_stops_the_binaries_with_one_line() {
    for url in [
        "ftp://files.example.com/chat",
        "s3://bucket?no_such_setting=1",
        "",
    ] {
        let mut service = Command::new(env!("CARGO_BIN_EXE_chat-service"));
        service
            .env("INTERNAL_API_KEY", "file-settings-internal-key")
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("DATABASE_URL", "memory:")
            .env("METRICS_ADDR", "");
        for mut command in [chat(), service] {
            command
                .env("FILE_STORE_URL", url)
                // Only the refusal: no warnings about the open-files limit.
                .env("RUST_LOG", "error");
            let stderr = refusal(command).await;
            assert!(stderr.contains("FILE_STORE_URL"), "{url:?}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        }
    }
}
