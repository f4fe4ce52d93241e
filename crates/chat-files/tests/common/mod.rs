//! What the integration tests share: multipart bodies as a browser sends
//! them, streams that count what is pulled from them, test images, and
//! stores in temporary directories.
#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use chat_files::{FileStore, StoreConfig, UploadConfig, Uploader};
use futures_util::stream::{self, Stream, StreamExt};
use http::{HeaderMap, HeaderValue};
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};

pub const BOUNDARY: &str = "----formdata-chat-7MA4YWxkTrZu0gW";

/// One part of a multipart body.
#[derive(Clone, Copy)]
pub struct Part<'a> {
    pub name: &'a str,
    pub file_name: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub bytes: &'a [u8],
}

impl<'a> Part<'a> {
    pub fn file(file_name: &'a str, content_type: &'a str, bytes: &'a [u8]) -> Part<'a> {
        Part {
            name: "file",
            file_name: Some(file_name),
            content_type: Some(content_type),
            bytes,
        }
    }
}

pub fn part_head(part: &Part<'_>) -> Vec<u8> {
    let mut head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{}\"",
        part.name
    );
    if let Some(file_name) = part.file_name {
        head.push_str(&format!("; filename=\"{file_name}\""));
    }
    head.push_str("\r\n");
    if let Some(content_type) = part.content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

pub fn closing() -> Vec<u8> {
    format!("--{BOUNDARY}--\r\n").into_bytes()
}

pub fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(&part_head(part));
        body.extend_from_slice(part.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(&closing());
    body
}

pub fn headers(content_length: Option<u64>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/form-data; boundary={BOUNDARY}")).unwrap(),
    );
    if let Some(length) = content_length {
        headers.insert(http::header::CONTENT_LENGTH, length.into());
    }
    headers
}

/// A body as a stream of `chunk`-byte pieces, every one ready at once (the
/// case where a parser that reads until "pending" would read everything).
pub fn chunked(
    body: Vec<u8>,
    chunk: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let body = Bytes::from(body);
    let pieces: Vec<Bytes> = (0..body.len())
        .step_by(chunk)
        .map(|at| body.slice(at..(at + chunk).min(body.len())))
        .collect();
    stream::iter(pieces.into_iter().map(Ok))
}

/// A generated upload of `file_bytes` bytes of text (never held whole in
/// memory), counting in `pulled` the bytes taken from it so far, and
/// calling `on_pull` with that count before each chunk is produced.
pub fn counted_text_upload(
    file_bytes: u64,
    chunk: usize,
    pulled: Arc<AtomicU64>,
    on_pull: impl Fn(u64) + Send + 'static,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let head = Bytes::from(part_head(&Part::file("big.txt", "text/plain", b"")));
    let tail = Bytes::from([&b"\r\n"[..], &closing()].concat());
    let filler = Bytes::from(vec![b'a'; chunk]);
    let full_chunks = file_bytes / chunk as u64;
    let last = (file_bytes % chunk as u64) as usize;
    let middle = (0..full_chunks)
        .map(move |_| filler.clone())
        .chain((last > 0).then(|| Bytes::from(vec![b'a'; last])));
    stream::iter(
        std::iter::once(head)
            .chain(middle)
            .chain(std::iter::once(tail)),
    )
    .map(move |piece| {
        on_pull(pulled.load(Ordering::SeqCst));
        pulled.fetch_add(piece.len() as u64, Ordering::SeqCst);
        Ok(piece)
    })
}

/// A disk store in a fresh temporary directory.
pub struct TempStore {
    pub dir: tempfile::TempDir,
    pub uploader: Uploader,
}

impl TempStore {
    pub async fn new(config: UploadConfig) -> TempStore {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&StoreConfig::Disk {
            root: dir.path().to_owned(),
        })
        .await
        .unwrap();
        TempStore {
            uploader: Uploader::new(store, config),
            dir,
        }
    }

    pub fn store(&self) -> &FileStore {
        self.uploader.store()
    }

    pub fn staging(&self) -> PathBuf {
        self.dir.path().join(chat_files::DISK_STAGING_DIR)
    }

    /// Every stored blob (staging excluded), as paths relative to the root.
    pub fn blobs(&self) -> Vec<String> {
        let mut found = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut found);
        found.sort();
        found
    }

    /// Bytes in the staging directory now.
    pub fn staged_bytes(&self) -> u64 {
        std::fs::read_dir(self.staging())
            .unwrap()
            .flatten()
            .map(|entry| entry.metadata().map(|meta| meta.len()).unwrap_or(0))
            .sum()
    }

    pub fn staged_files(&self) -> usize {
        std::fs::read_dir(self.staging()).unwrap().count()
    }

    pub async fn upload(
        &self,
        parts: &[Part<'_>],
    ) -> Result<chat_files::StoredFile, chat_files::FileError> {
        let body = multipart(parts);
        let length = body.len() as u64;
        self.uploader
            .ingest(&headers(Some(length)), chunked(body, 8 * 1024))
            .await
    }

    pub async fn upload_file(
        &self,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<chat_files::StoredFile, chat_files::FileError> {
        self.upload(&[Part::file(name, content_type, bytes)]).await
    }
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.file_name().unwrap() == chat_files::DISK_STAGING_DIR {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, found);
        } else {
            found.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

/// A picture with some structure (so encoders cannot make it trivially small).
pub fn picture(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
        Rgba([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            ((x ^ y) & 0xFF) as u8,
            255,
        ])
    }))
}

pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(image.to_rgb8())
            .write_to(&mut out, format)
            .unwrap(),
        _ => image.write_to(&mut out, format).unwrap(),
    }
    out.into_inner()
}

/// The smallest PDF readers open.
pub const PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";

pub async fn collect(stream: chat_files::ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// Uploads one file (8 KiB chunks, with its Content-Length).
pub async fn upload_to(
    uploader: &Uploader,
    name: &str,
    content_type: &str,
    bytes: &[u8],
) -> chat_files::StoredFile {
    let body = multipart(&[Part::file(name, content_type, bytes)]);
    let length = body.len() as u64;
    uploader
        .ingest(&headers(Some(length)), chunked(body, 8 * 1024))
        .await
        .unwrap()
}

/// What every store must do, whatever is behind it: store, read whole and
/// by range (as a download would), store the same bytes once, thumbnails,
/// large files, delete. `uploader` allows files of at least 7 MiB.
pub async fn exercise_store(uploader: &Uploader) {
    use chat_files::{plan_download, Blob, BodyPlan, ContentHash, Download, FileError};

    let store = uploader.store();
    let text: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let stored = upload_to(uploader, "log.txt", "text/plain", &text).await;
    let blob = Blob::Original(stored.sha256);
    assert_eq!(stored.sha256, ContentHash::of(&text));
    assert!(stored.newly_stored);
    assert!(store.contains(blob).await.unwrap());
    assert_eq!(store.size(blob).await.unwrap(), text.len() as u64);
    assert_eq!(collect(store.read(blob).await.unwrap()).await, text);
    assert_eq!(
        collect(store.read_range(blob, 10..20).await.unwrap()).await,
        &text[10..20]
    );
    let tail = text.len() as u64 - 5..text.len() as u64;
    assert_eq!(
        collect(store.read_range(blob, tail).await.unwrap()).await,
        &text[text.len() - 5..]
    );
    assert!(collect(store.read_range(blob, 7..7).await.unwrap())
        .await
        .is_empty());

    // A download of a range, the way the HTTP layer serves it.
    let download = Download::original(
        stored.sha256,
        stored.size,
        &stored.content_type,
        &stored.name,
    );
    let mut request = HeaderMap::new();
    request.insert(
        http::header::RANGE,
        HeaderValue::from_static("bytes=100-199"),
    );
    let plan = plan_download(&download, &request, chat_files::DEFAULT_MAX_AGE);
    assert_eq!(plan.status, http::StatusCode::PARTIAL_CONTENT);
    assert_eq!(plan.body, BodyPlan::Range(100..200));
    let stream = store.body(blob, &plan.body).await.unwrap().unwrap();
    let body = axum::body::Body::from_stream(stream);
    let served = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    assert_eq!(&served[..], &text[100..200]);
    let not_modified = {
        let mut request = HeaderMap::new();
        request.insert(
            http::header::IF_NONE_MATCH,
            plan.headers[http::header::ETAG].clone(),
        );
        plan_download(&download, &request, chat_files::DEFAULT_MAX_AGE)
    };
    assert_eq!(not_modified.status, http::StatusCode::NOT_MODIFIED);
    assert!(store
        .body(blob, &not_modified.body)
        .await
        .unwrap()
        .is_none());

    // The same bytes again: stored once.
    let again = upload_to(uploader, "copy.txt", "text/plain", &text).await;
    assert_eq!((again.sha256, again.newly_stored), (stored.sha256, false));

    // An image and its thumbnail.
    let png = encode(&picture(640, 480), ImageFormat::Png);
    let image = upload_to(uploader, "p.png", "image/png", &png).await;
    let thumbnail = image.thumbnail.expect("a thumbnail");
    let thumbnail_blob = Blob::Thumbnail(image.sha256);
    assert_eq!(store.size(thumbnail_blob).await.unwrap(), thumbnail.size);
    let jpeg = collect(store.read(thumbnail_blob).await.unwrap()).await;
    let decoded = image::load_from_memory_with_format(&jpeg, ImageFormat::Jpeg).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (320, 240));
    let image_again = upload_to(uploader, "p2.png", "image/png", &png).await;
    assert_eq!(image_again.thumbnail, image.thumbnail);
    assert!(!image_again.newly_stored);

    // Larger than one S3 part: a multipart upload there.
    let large: Vec<u8> = (0..7 * 1024 * 1024u32)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let big = upload_to(uploader, "big.txt", "text/plain", &large).await;
    assert_eq!(big.size, large.len() as u64);
    let read = collect(store.read(Blob::Original(big.sha256)).await.unwrap()).await;
    assert!(read == large, "the large file came back different");

    // Delete: both blobs of the image go; deleting again is fine.
    store.delete(&image.sha256).await.unwrap();
    assert!(!store.contains(Blob::Original(image.sha256)).await.unwrap());
    assert!(!store.contains(thumbnail_blob).await.unwrap());
    assert!(matches!(
        store.read(thumbnail_blob).await,
        Err(FileError::NotFound)
    ));
    assert!(matches!(
        store.size(Blob::Original(image.sha256)).await,
        Err(FileError::NotFound)
    ));
    store.delete(&image.sha256).await.unwrap();
    store.delete(&stored.sha256).await.unwrap();
    store.delete(&big.sha256).await.unwrap();
    assert!(matches!(store.read(blob).await, Err(FileError::NotFound)));
    assert!(matches!(
        store.read_to_bytes(blob).await,
        Err(FileError::NotFound)
    ));
    let missing = store
        .read(Blob::Original(ContentHash::of(b"never stored")))
        .await;
    assert_eq!(
        missing.err().map(|e| e.status()),
        Some(http::StatusCode::NOT_FOUND)
    );

    // After a delete the same bytes are simply stored anew.
    let back = upload_to(uploader, "log.txt", "text/plain", &text).await;
    assert!(back.newly_stored);
    store.delete(&back.sha256).await.unwrap();
}

pub fn large_file_config() -> UploadConfig {
    UploadConfig {
        max_upload_bytes: 8 * 1024 * 1024,
        ..UploadConfig::default()
    }
}
