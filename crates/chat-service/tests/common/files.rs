//! Uploads and downloads against a real service: multipart bodies as a
//! browser's `FormData` sends them, the identity headers the gateway adds,
//! test files, and a look at the file store's directory.
#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_files::{Blob, ContentHash, FileStore, StoreConfig};
use chat_service::Config;
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use serde_json::Value;

use super::backends::TestDb;
use super::{TestServer, KEY};

pub const BOUNDARY: &str = "----formdata-chat-files-7MA4YWxkTrZu0gW";

/// A service on `db` keeping files in `dir`, with janitor timings a test
/// can wait on.
pub fn config(db: &TestDb, dir: &Path) -> Config {
    let mut config = Config::new(KEY);
    config.database_url = db.url.clone();
    config.files.store = Some(dir.display().to_string());
    config.files.sweep_every = Duration::from_millis(100);
    config
}

/// One `file` part, as `FormData.append("file", blob, name)` sends it.
pub fn multipart(name: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

fn encoded(user: &str) -> String {
    percent_encoding::utf8_percent_encode(user, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A request to the service as the gateway makes it for `user`.
pub fn as_user(
    method: reqwest::Method,
    server: &TestServer,
    user: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, server.http(path))
        .header("x-internal-api-key", KEY)
        .header("x-user-id", encoded(user))
}

/// Uploads one file to a room; the status and the JSON answer.
pub async fn upload(
    server: &TestServer,
    user: &str,
    room: &str,
    name: &str,
    content_type: &str,
    bytes: &[u8],
) -> (u16, Value) {
    let response = as_user(
        reqwest::Method::POST,
        server,
        user,
        &format!("/api/rooms/{room}/files"),
    )
    .header("content-type", multipart_type())
    .body(multipart(name, content_type, bytes))
    .send()
    .await
    .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// Uploads a file that must be accepted; its `FileInfo`.
pub async fn uploaded(
    server: &TestServer,
    user: &str,
    room: &str,
    name: &str,
    content_type: &str,
    bytes: &[u8],
) -> Value {
    let (status, info) = upload(server, user, room, name, content_type, bytes).await;
    assert_eq!(status, 201, "{info}");
    info
}

/// The service's path for a URL the answer gives (the gateway's `/chat/api/…`).
pub fn service_path(url: &Value) -> String {
    url.as_str()
        .expect("a URL")
        .strip_prefix("/chat")
        .expect("under /chat")
        .to_owned()
}

/// GETs a file's URL (as given in a `FileInfo` or an attachment) as `user`.
pub async fn fetch(
    server: &TestServer,
    user: &str,
    url: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = as_user(reqwest::Method::GET, server, user, &service_path(url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

pub async fn status_of(server: &TestServer, user: &str, url: &Value) -> u16 {
    fetch(server, user, url, &[]).await.status().as_u16()
}

/// A picture with some structure, as PNG.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
        Rgba([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            ((x ^ y) & 0xFF) as u8,
            255,
        ])
    }));
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The smallest PDF readers open, with `tag` in a comment so that each
/// tag is different bytes.
pub fn pdf(tag: &str) -> Vec<u8> {
    format!(
        "%PDF-1.4\n% {tag}\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n\
         2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )
    .into_bytes()
}

/// The hash a `FileInfo` names.
pub fn hash_of(info: &Value) -> ContentHash {
    info["sha256"].as_str().unwrap().parse().unwrap()
}

/// Looks into the service's file store.
pub struct StoreView {
    pub root: PathBuf,
    store: FileStore,
}

impl StoreView {
    pub async fn open(root: &Path) -> StoreView {
        let store = FileStore::open(&StoreConfig::Disk {
            root: root.to_owned(),
        })
        .await
        .unwrap();
        StoreView {
            root: root.to_owned(),
            store,
        }
    }

    pub async fn has(&self, hash: ContentHash) -> bool {
        self.store.contains(Blob::Original(hash)).await.unwrap()
    }

    pub async fn has_thumbnail(&self, hash: ContentHash) -> bool {
        self.store.contains(Blob::Thumbnail(hash)).await.unwrap()
    }

    /// Every blob file under the root (staging excluded).
    pub fn blob_count(&self) -> usize {
        fn walk(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|entry| {
                    let path = entry.path();
                    if path.file_name().unwrap() == chat_files::DISK_STAGING_DIR {
                        0
                    } else if path.is_dir() {
                        walk(&path)
                    } else {
                        1
                    }
                })
                .sum()
        }
        walk(&self.root)
    }
}
