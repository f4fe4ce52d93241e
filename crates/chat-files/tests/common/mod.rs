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
