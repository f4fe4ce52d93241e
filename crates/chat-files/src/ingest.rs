//! Reading an upload: a streaming `multipart/form-data` body in, a stored,
//! checked file out, with memory bounded whatever the body's size.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::imaging::{self, PreparedImage};
use crate::sniff::{raster_format, AcceptedTypes, Sniffer};
use crate::store::STAGED_PREFIX;
use crate::{sanitize_file_name, Blob, ContentHash, FileError, FileStore};

/// The one part of an upload holding the file (what `FormData.append("file", …)` sends).
pub const FILE_PART: &str = "file";
/// What the multipart framing (boundaries, part headers) may add to the
/// file's bytes before a declared `Content-Length` counts as too large (the
/// gateway's early check uses the same allowance).
pub const MULTIPART_OVERHEAD_BYTES: u64 = chat_proto::limits::MULTIPART_OVERHEAD_BYTES;

/// Limits and choices for uploads.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Largest file accepted, in bytes. Default 10 MiB.
    pub max_upload_bytes: u64,
    /// Most pixels (width × height, from the header) an image may have;
    /// past it the upload is refused before decoding. Default 40 megapixels.
    pub max_image_pixels: u64,
    /// Longest side of a thumbnail, in pixels. Default 320.
    pub thumbnail_max_side: u32,
    /// MIME types accepted besides the built-in ones (PNG, JPEG, GIF, WebP,
    /// PDF, plain text), as `infer` detects them: e.g. `application/zip`,
    /// `audio/mpeg`, `video/mp4`. Types that are active content in a
    /// browser (HTML, SVG, XML) are never recognized as plain text, and
    /// adding them here does not make them safe: they are always served as
    /// attachments under `Content-Security-Policy: sandbox`.
    pub extra_types: Vec<String>,
    /// Images decoded at once (each may take `max_image_pixels` × 4 bytes
    /// and more while it is thumbnailed). Default 2.
    pub concurrent_image_decodes: usize,
}

impl Default for UploadConfig {
    fn default() -> UploadConfig {
        UploadConfig {
            max_upload_bytes: chat_proto::limits::DEFAULT_MAX_UPLOAD_BYTES,
            max_image_pixels: 40_000_000,
            thumbnail_max_side: 320,
            extra_types: Vec::new(),
            concurrent_image_decodes: 2,
        }
    }
}

/// Width and height in pixels, as the image is shown (EXIF orientation
/// applied, so a portrait photo is taller than wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimensions {
    pub width: u32,
    pub height: u32,
}

/// The thumbnail stored beside an image (a JPEG, [`Blob::Thumbnail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredThumbnail {
    pub dimensions: Dimensions,
    /// Its length in bytes.
    pub size: u64,
}

/// An accepted, stored upload. `size` and `sha256` describe the bytes as
/// stored and served, which for JPEG, PNG and WebP are the upload with its
/// metadata cut out, not the bytes the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The client's file name, cleaned ([`sanitize_file_name`]).
    pub name: String,
    /// The type found in the bytes (e.g. `image/png`, `text/plain`).
    pub content_type: String,
    pub size: u64,
    pub sha256: ContentHash,
    /// For images.
    pub dimensions: Option<Dimensions>,
    /// For images.
    pub thumbnail: Option<StoredThumbnail>,
    /// False when the same bytes were already stored (by this or another
    /// upload): nothing new was written.
    pub newly_stored: bool,
}

impl StoredFile {
    /// The `201` answer to an upload; `thumbnail_url` is used only when
    /// the file has a thumbnail.
    pub fn file_info(
        &self,
        id: String,
        url: String,
        thumbnail_url: String,
    ) -> chat_proto::api::FileInfo {
        chat_proto::api::FileInfo {
            id,
            name: self.name.clone(),
            size: self.size,
            content_type: self.content_type.clone(),
            sha256: self.sha256.to_hex(),
            width: self.dimensions.map(|d| d.width),
            height: self.dimensions.map(|d| d.height),
            url,
            thumbnail_url: self.thumbnail.map(|_| thumbnail_url),
        }
    }
}

/// Takes uploads into a [`FileStore`].
#[derive(Debug, Clone)]
pub struct Uploader {
    store: FileStore,
    config: Arc<UploadConfig>,
    accepted: Arc<AcceptedTypes>,
    decodes: Arc<Semaphore>,
}

impl Uploader {
    pub fn new(store: FileStore, config: UploadConfig) -> Uploader {
        Uploader {
            accepted: Arc::new(AcceptedTypes::new(&config.extra_types)),
            decodes: Arc::new(Semaphore::new(config.concurrent_image_decodes.max(1))),
            config: Arc::new(config),
            store,
        }
    }

    pub fn store(&self) -> &FileStore {
        &self.store
    }

    pub fn config(&self) -> &UploadConfig {
        &self.config
    }

    /// `FileTooLarge` when the request's `Content-Length` already says the
    /// body cannot fit (the file plus [`MULTIPART_OVERHEAD_BYTES`]), so the
    /// HTTP layer can answer 413 without reading any of it. [`Self::ingest`]
    /// checks this first too.
    pub fn check_declared_length(&self, headers: &HeaderMap) -> Result<(), FileError> {
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        match declared {
            Some(length) if length > self.body_limit() => Err(self.too_large()),
            _ => Ok(()),
        }
    }

    /// Reads one upload: the request's headers (for `Content-Type` with its
    /// boundary, and `Content-Length`) and its body as a stream of chunks
    /// (`axum::body::Body::into_data_stream()`).
    ///
    /// The body must be `multipart/form-data` with exactly one part, named
    /// `file`; any other part, before or after it, is refused
    /// (`invalid_upload`), as is a missing or empty file. The file is
    /// hashed and sniffed while it is written to a staging file, so memory
    /// holds one chunk at a time; past `max_upload_bytes` reading stops at
    /// once with `file_too_large` (answer 413 and close the connection
    /// rather than read the rest). Its type is decided from its bytes
    /// ([`crate::sniff`]); a part's `Content-Type` that says otherwise is
    /// refused with `unsupported_media_type`. Images are checked against
    /// `max_image_pixels` from their header, stripped of metadata, and
    /// thumbnailed (once per distinct image). Nothing is stored unless the
    /// whole upload is accepted, and the same bytes are stored once.
    pub async fn ingest<S, O, E>(
        &self,
        headers: &HeaderMap,
        body: S,
    ) -> Result<StoredFile, FileError>
    where
        S: Stream<Item = Result<O, E>> + Send + 'static,
        O: Into<Bytes> + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.check_declared_length(headers)?;
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            FileError::invalid("the body must be multipart/form-data with a boundary")
        })?;
        let limits = multer::SizeLimit::new()
            .whole_stream(self.body_limit())
            .per_field(self.config.max_upload_bytes);
        let mut multipart = multer::Multipart::with_constraints(
            OneChunkPerPoll::new(body),
            boundary,
            multer::Constraints::new().size_limit(limits),
        );

        let mut staged = None;
        while let Some(mut field) = multipart
            .next_field()
            .await
            .map_err(|e| self.multipart_error(e))?
        {
            match field.name() {
                Some(FILE_PART) if staged.is_none() => {}
                Some(FILE_PART) => {
                    return Err(FileError::invalid("more than one part named \"file\""))
                }
                other => {
                    return Err(FileError::invalid(format!(
                        "unexpected part {:?}: send one part named \"file\"",
                        other.unwrap_or_default()
                    )))
                }
            }
            staged = Some(self.stage(&mut field).await?);
        }
        let staged = staged.ok_or_else(|| FileError::invalid("no part named \"file\""))?;
        match raster_format(&staged.content_type) {
            Some(format) => self.store_image(staged, format).await,
            None => {
                let newly_stored = self
                    .store
                    .put_staged(Blob::Original(staged.sha256), staged.temp)
                    .await?;
                Ok(StoredFile {
                    name: staged.name,
                    content_type: staged.content_type,
                    size: staged.size,
                    sha256: staged.sha256,
                    dimensions: None,
                    thumbnail: None,
                    newly_stored,
                })
            }
        }
    }

    /// Writes the file part to a staging file, hashing and sniffing it.
    async fn stage(&self, field: &mut multer::Field<'_>) -> Result<Staged, FileError> {
        let name = sanitize_file_name(field.file_name());
        // The raw header, so a claim `mime` cannot parse is still checked.
        let claimed = field
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let staging = self.store.staging_dir().to_owned();
        let (file, temp) = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(STAGED_PREFIX)
                .tempfile_in(staging)
                .map(tempfile::NamedTempFile::into_parts)
        })
        .await
        .map_err(FileError::store)??;
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut sniffer = Sniffer::default();
        let mut size = 0u64;
        while let Some(chunk) = field.chunk().await.map_err(|e| self.multipart_error(e))? {
            size += chunk.len() as u64;
            if size > self.config.max_upload_bytes {
                return Err(self.too_large());
            }
            hasher.update(&chunk);
            sniffer.feed(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        if size == 0 {
            return Err(FileError::invalid("the file is empty"));
        }
        let content_type = sniffer.finish(claimed.as_deref(), &self.accepted)?;
        Ok(Staged {
            temp,
            name,
            content_type,
            size,
            sha256: ContentHash::from_hasher(hasher),
        })
    }

    async fn store_image(
        &self,
        staged: Staged,
        format: image::ImageFormat,
    ) -> Result<StoredFile, FileError> {
        let Staged {
            temp,
            name,
            content_type,
            sha256,
            ..
        } = staged;
        let max_pixels = self.config.max_image_pixels;
        let max_side = self.config.thumbnail_max_side;
        let original = Bytes::from(tokio::fs::read(&temp).await?);
        let image =
            blocking(move || imaging::prepare(original, sha256, format, max_pixels)).await?;
        let thumbnail_blob = Blob::Thumbnail(image.sha256);
        let (image, thumbnail) = if self.store.contains(thumbnail_blob).await? {
            let (width, height) = imaging::thumbnail_size(image.width, image.height, max_side);
            let size = self.store.size(thumbnail_blob).await?;
            let thumbnail = StoredThumbnail {
                dimensions: Dimensions { width, height },
                size,
            };
            (image, thumbnail)
        } else {
            // Bounds the memory decoding takes across concurrent uploads.
            let permit = self.decodes.acquire().await.map_err(FileError::store)?;
            let (image, encoded) = blocking(move || {
                let encoded = imaging::thumbnail(&image, max_side)?;
                Ok((image, encoded))
            })
            .await?;
            drop(permit);
            let thumbnail = StoredThumbnail {
                dimensions: Dimensions {
                    width: encoded.width,
                    height: encoded.height,
                },
                size: encoded.bytes.len() as u64,
            };
            self.store.put_bytes(thumbnail_blob, encoded.bytes).await?;
            (image, thumbnail)
        };
        let PreparedImage {
            bytes,
            sha256,
            width,
            height,
            ..
        } = image;
        let size = bytes.len() as u64;
        let newly_stored = self.store.put_bytes(Blob::Original(sha256), bytes).await?;
        let _ = tokio::task::spawn_blocking(move || temp.close()).await;
        Ok(StoredFile {
            name,
            content_type,
            size,
            sha256,
            dimensions: Some(Dimensions { width, height }),
            thumbnail: Some(thumbnail),
            newly_stored,
        })
    }

    fn body_limit(&self) -> u64 {
        chat_proto::limits::upload_body_limit(self.config.max_upload_bytes)
    }

    fn too_large(&self) -> FileError {
        FileError::FileTooLarge {
            limit: self.config.max_upload_bytes,
        }
    }

    fn multipart_error(&self, error: multer::Error) -> FileError {
        match error {
            multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
                self.too_large()
            }
            multer::Error::StreamReadFailed(_) => {
                FileError::invalid("the upload was interrupted before it ended")
            }
            other => FileError::invalid(format!("malformed multipart body: {other}")),
        }
    }
}

/// An upload written to the staging directory, checked, not yet stored.
struct Staged {
    temp: TempPath,
    name: String,
    content_type: String,
    size: u64,
    sha256: ContentHash,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(FileError::store)?
}

/// Hands the body to multer one chunk per poll. multer polls its input
/// until the input is pending, appending to its buffer: given a body whose
/// bytes are already there (a fast client, a test) it would take in
/// everything up to its whole-stream limit before handing out a single
/// chunk. Yielding after each chunk keeps its buffer at about one chunk.
struct OneChunkPerPoll<S> {
    inner: Pin<Box<S>>,
    just_yielded_chunk: bool,
}

impl<S> OneChunkPerPoll<S> {
    fn new(inner: S) -> OneChunkPerPoll<S> {
        OneChunkPerPoll {
            inner: Box::pin(inner),
            just_yielded_chunk: false,
        }
    }
}

impl<S: Stream> Stream for OneChunkPerPoll<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        if this.just_yielded_chunk {
            this.just_yielded_chunk = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let item = std::task::ready!(this.inner.as_mut().poll_next(cx));
        this.just_yielded_chunk = item.is_some();
        Poll::Ready(item)
    }
}
