//! Files attached to chat messages: storing them, checking what they are,
//! and serving them back safely.
//!
//! # Pieces
//! - [`FileStore`]: content-addressed blobs (named by SHA-256, stored once
//!   however often uploaded) in a directory (`data/files/ab/cd/abcd…`) or
//!   an S3-compatible bucket, opened from a [`StoreConfig`] parsed from
//!   `FILE_STORE_URL`. Reads whole or by range, as streams an axum body
//!   takes; deletes by hash.
//! - [`Uploader`]: takes a `multipart/form-data` upload as a stream, with
//!   memory bounded whatever its size, and answers a [`StoredFile`] or a
//!   [`FileError`]. Limits are in [`UploadConfig`].
//! - [`sniff`]: types come from the bytes: PNG, JPEG, GIF, WebP, PDF and
//!   plain UTF-8 text, plus configured others; a client's claim that
//!   disagrees is refused.
//! - [`sanitize_file_name`]: names safe to store and to offer for saving.
//! - Images: dimensions from the header, a pixel limit checked before
//!   decoding, EXIF/XMP (GPS and all) cut out of JPEG, PNG and WebP
//!   without re-encoding, and a JPEG thumbnail at most 320 px on its
//!   longest side, stored beside the original as [`Blob::Thumbnail`].
//! - [`plan_download`]: status and headers for a download (`nosniff`,
//!   `sandbox`, disposition, ETag/304, ranges/206/416, caching).
//!
//! No JSON here: the upload answer's shape is
//! [`chat_proto::api::FileInfo`] ([`StoredFile::file_info`] fills it), and
//! the HTTP edge turns a [`FileError`] into `{"error", "code"}` with
//! [`FileError::status`] and [`FileError::code`].
//!
//! # Wiring it in
//! ```no_run
//! use axum::body::Body;
//! use axum::http::{HeaderMap, Response};
//! use chat_files::{plan_download, Download, FileError, StoreConfig, UploadConfig, Uploader};
//!
//! # async fn example(request_headers: HeaderMap, body: Body) -> Result<(), FileError> {
//! let store = chat_files::FileStore::open(&StoreConfig::from_url("data/files")?).await?;
//! let uploader = Uploader::new(store, UploadConfig::default());
//!
//! // POST …/files: the handler takes the headers and the body stream.
//! let stored = uploader.ingest(&request_headers, body.into_data_stream()).await?;
//! // …record `stored` (name, content_type, size, sha256, dimensions,
//! // thumbnail) under a new id, then answer 201 with
//! // `stored.file_info(id, url, thumbnail_url)`.
//!
//! // GET …/files/{id}: from the record, plan the answer, then stream it.
//! let download = Download::original(stored.sha256, stored.size, &stored.content_type, &stored.name);
//! let plan = plan_download(&download, &request_headers, chat_files::DEFAULT_MAX_AGE);
//! let body = match uploader.store().body(download.blob, &plan.body).await? {
//!     Some(stream) => Body::from_stream(stream),
//!     None => Body::empty(),
//! };
//! let mut response = Response::new(body);
//! *response.status_mut() = plan.status;
//! *response.headers_mut() = plan.headers;
//! # Ok(()) }
//! ```

mod error;
mod hash;
mod imaging;
mod ingest;
mod name;
mod serve;
pub mod sniff;
mod store;

pub use error::{FileError, FileErrorCode};
pub use hash::{ContentHash, InvalidContentHash};
pub use imaging::THUMBNAIL_CONTENT_TYPE;
pub use ingest::{
    Dimensions, StoredFile, StoredThumbnail, UploadConfig, Uploader, FILE_PART,
    MULTIPART_OVERHEAD_BYTES,
};
pub use name::{sanitize_file_name, FALLBACK_NAME, MAX_NAME_BYTES};
pub use serve::{plan_download, BodyPlan, Download, ResponsePlan, DEFAULT_MAX_AGE};
pub use store::{Blob, ByteStream, FileStore, StoreConfig, DEFAULT_DISK_ROOT, DISK_STAGING_DIR};
