//! Files attached to messages: the upload and download routes the gateway
//! forwards to, and the janitor that deletes what nothing refers to.
//!
//! An upload is read as a stream into the file store by `chat_files`
//! (limits, sniffing, images), recorded in the store under a new id, and
//! answered with its [`FileInfo`]; a message attaches it by that id. A
//! download is planned by `chat_files::plan_download` (exact type,
//! `nosniff`, `sandbox`, disposition, ETag, ranges) and streamed from the
//! file store. Blobs are deleted by the janitor only, outside any
//! transaction, once the store says nothing refers to them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::CONNECTION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chat_edge::EarlyEnd;
use chat_files::{
    plan_download, Blob, Download, FileError, FileErrorCode, FileStore, StoreConfig, StoredFile,
    UploadConfig, Uploader,
};
use chat_proto::api::{FileInfo, SERVICE_FILES_PATH};
use chat_proto::client::MAX_FILE_ID_CHARS;
use chat_proto::RoomId;

use crate::http::{admit, authorize, identity, store_error, ApiError};
use crate::session::{new_id, Identity};
use crate::state::Shared;
use crate::store::{FileRecord, Store};

/// Uploads, downloads and the clean-up of files.
#[derive(Clone)]
pub struct FilesConfig {
    /// Where the bytes are kept (`FILE_STORE_URL`); `None`: nowhere, so
    /// uploads are refused and no file is found.
    pub store: Option<String>,
    /// Size limit, accepted types, image limits.
    pub upload: UploadConfig,
    /// An upload never sent with a message is deleted once this old.
    pub orphan_after: Duration,
    /// How often the janitor looks for such uploads (it deletes the files
    /// of a deleted message at once).
    pub sweep_every: Duration,
}

impl Default for FilesConfig {
    /// No file store: for tests and embedding that do not use files.
    fn default() -> FilesConfig {
        FilesConfig {
            store: None,
            upload: UploadConfig::default(),
            orphan_after: Duration::from_secs(24 * 3600),
            sweep_every: Duration::from_secs(600),
        }
    }
}

/// The store URL's settings may hold credentials: only their names show.
impl std::fmt::Debug for FilesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = self.store.as_deref().map(|url| match url.split_once('?') {
            Some((base, query)) => {
                let names: Vec<&str> = query
                    .split('&')
                    .map(|pair| pair.split('=').next().unwrap_or_default())
                    .collect();
                format!("{base}?{}", names.join("&"))
            }
            None => url.to_owned(),
        });
        f.debug_struct("FilesConfig")
            .field("store", &store)
            .field("upload", &self.upload)
            .field("orphan_after", &self.orphan_after)
            .field("sweep_every", &self.sweep_every)
            .finish()
    }
}

impl FilesConfig {
    /// Whether the file store's URL is one that can work, for the binaries
    /// to refuse at start (the store itself is opened by `run`).
    pub fn check(&self) -> Result<(), FileError> {
        match &self.store {
            Some(url) => StoreConfig::from_url(url).map(drop),
            None => Ok(()),
        }
    }
}

/// The open file store and what takes uploads into it.
pub(crate) struct Files {
    uploader: Uploader,
}

impl Files {
    /// Opens the configured file store, if there is one.
    pub(crate) async fn open(config: &FilesConfig) -> Result<Option<Files>, FileError> {
        let Some(url) = &config.store else {
            return Ok(None);
        };
        let store = FileStore::open(&StoreConfig::from_url(url)?).await?;
        Ok(Some(Files {
            uploader: Uploader::new(store, config.upload.clone()),
        }))
    }

    pub(crate) fn store(&self) -> &FileStore {
        self.uploader.store()
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/rooms/{room_id}/files", post(upload))
        .route(&format!("{SERVICE_FILES_PATH}/{{file_id}}"), get(download))
        .route(
            &format!("{SERVICE_FILES_PATH}/{{file_id}}/thumbnail"),
            get(thumbnail),
        )
}

/// How long an upload whose bytes are being deleted waits for the janitor
/// to finish before it is refused (each step).
const CONDEMNED_RETRY: Duration = Duration::from_millis(100);
const CONDEMNED_RETRIES: u32 = 50;

/// A file error as the HTTP answer; a body too large also closes the
/// connection, so the rest of it is never read.
fn file_error(error: FileError) -> Response {
    let too_large = error.code() == FileErrorCode::FileTooLarge;
    let mut response = ApiError::File(error).into_response();
    if too_large {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path(room_id): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(error) = authorize(&shared, &parts.headers) {
        return error.into_response();
    }
    let Some(files) = shared.files.as_ref() else {
        return no_file_store().into_response();
    };
    // Declared too large: answered without reading any of it.
    if let Err(error) = files.uploader.check_declared_length(&parts.headers) {
        return file_error(error);
    }
    // From here a refusal leaves the rest of the body to be read and
    // dropped (up to the limit), so the gateway, still sending, reads it.
    let limit = chat_proto::limits::upload_body_limit(files.uploader.config().max_upload_bytes);
    let (body, watch) = chat_edge::read_apart(body, limit, shared.config.limits.idle_timeout);
    let (room_id, who) = match admit_uploader(&shared, &parts.headers, &room_id).await {
        Ok(admitted) => admitted,
        Err(error) => return error.into_response(),
    };
    let stored = match files.uploader.ingest(&parts.headers, body).await {
        Ok(stored) => stored,
        Err(error) => {
            let error = match watch.early_end() {
                Some(EarlyEnd::OverLimit) => FileError::FileTooLarge {
                    limit: files.uploader.config().max_upload_bytes,
                },
                Some(EarlyEnd::Stalled) => FileError::InvalidUpload(
                    "the upload stalled: nothing arrived for too long".into(),
                ),
                None => error,
            };
            tracing::debug!(code = error.code().as_str(), %error, "upload refused");
            return file_error(error);
        }
    };
    let record = FileRecord {
        id: new_id(),
        room_id,
        uploader_id: who.user_id.clone(),
        name: stored.name.clone(),
        content_type: stored.content_type.clone(),
        size: stored.size,
        sha256: stored.sha256,
        width: stored.dimensions.map(|d| d.width),
        height: stored.dimensions.map(|d| d.height),
        thumbnail_size: stored.thumbnail.map(|t| t.size),
        created_at_ms: chat_proto::time::now_millis(),
        message_id: None,
    };
    if let Err(response) = record_upload(&shared, files, &record, &stored).await {
        return response;
    }
    let info: FileInfo = stored.file_info(
        record.id.clone(),
        chat_proto::api::file_url(&record.id),
        chat_proto::api::thumbnail_url(&record.id),
    );
    (StatusCode::CREATED, Json(info)).into_response()
}

/// The uploader, if they may be in the room: anyone authenticated in a
/// public room, members in a members-only one.
async fn admit_uploader(
    shared: &Shared,
    headers: &HeaderMap,
    room_id: &str,
) -> Result<(RoomId, Identity), ApiError> {
    let who = identity(headers, shared.config.limits.proto.max_username_chars)?;
    let room_id = RoomId::parse(room_id, &shared.config.limits.proto).map_err(ApiError::Invalid)?;
    admit(shared, &room_id, &who).await?;
    Ok((room_id, who))
}

fn no_file_store() -> ApiError {
    ApiError::File(FileError::StoreUnavailable(
        "no file store is configured".into(),
    ))
}

/// Records the upload. Bytes whose blob is being deleted (condemned) wait
/// for the janitor; and since the blob may have gone between the upload
/// finding it and the record counting it, the recorded file's bytes are
/// checked to be there.
async fn record_upload(
    shared: &Shared,
    files: &Files,
    record: &FileRecord,
    stored: &StoredFile,
) -> Result<(), Response> {
    let store = &shared.store;
    let mut attempts = 0;
    loop {
        match store.add_file(record.clone()).await {
            Ok(true) => break,
            Ok(false) if attempts < CONDEMNED_RETRIES => {
                attempts += 1;
                store.blobs_released().notify_one();
                tokio::time::sleep(CONDEMNED_RETRY).await;
            }
            Ok(false) => {
                return Err(file_error(FileError::StoreUnavailable(
                    "the same file is being deleted; send it again in a moment".into(),
                )))
            }
            Err(error) => return Err(store_error(error).into_response()),
        }
    }
    let mut blobs = vec![Blob::Original(stored.sha256)];
    if stored.thumbnail.is_some() {
        blobs.push(Blob::Thumbnail(stored.sha256));
    }
    for blob in blobs {
        match files.store().contains(blob).await {
            Ok(true) => {}
            Ok(false) => {
                // Deleted from under it. The record stays until it is swept
                // as never sent; sent again, the bytes are stored anew.
                return Err(file_error(FileError::StoreUnavailable(
                    "the file was deleted while it was stored; send it again".into(),
                )));
            }
            Err(error) => return Err(file_error(error)),
        }
    }
    Ok(())
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path(file_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&shared, &file_id, &headers, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn thumbnail(
    State(shared): State<Arc<Shared>>,
    Path(file_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&shared, &file_id, &headers, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// A file, or its thumbnail, for someone who may see it: a member of its
/// room once it was sent, its uploader alone before. Anyone else learns
/// nothing of a file not sent yet (404) and is refused one of a room they
/// may not enter (403).
async fn serve(
    shared: &Shared,
    file_id: &str,
    headers: &HeaderMap,
    thumbnail: bool,
) -> Result<Response, ApiError> {
    authorize(shared, headers)?;
    let who = identity(headers, shared.config.limits.proto.max_username_chars)?;
    let not_found = || ApiError::File(FileError::NotFound);
    let files = shared.files.as_ref().ok_or_else(not_found)?;
    if file_id.is_empty()
        || file_id.chars().count() > MAX_FILE_ID_CHARS
        || file_id.chars().any(char::is_control)
    {
        return Err(not_found());
    }
    let record = shared
        .store
        .file(file_id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    if record.message_id.is_none() && record.uploader_id != who.user_id {
        return Err(not_found());
    }
    admit(shared, &record.room_id, &who).await?;
    let download = if thumbnail {
        let size = record.thumbnail_size.ok_or_else(not_found)?;
        Download::thumbnail(record.sha256, size, &record.name)
    } else {
        Download::original(
            record.sha256,
            record.size,
            &record.content_type,
            &record.name,
        )
    };
    let plan = plan_download(&download, headers, chat_files::DEFAULT_MAX_AGE);
    let body = match files
        .store()
        .body(download.blob, &plan.body)
        .await
        .map_err(ApiError::File)?
    {
        Some(stream) => Body::from_stream(stream),
        None => Body::empty(),
    };
    let mut response = Response::new(body);
    *response.status_mut() = plan.status;
    *response.headers_mut() = plan.headers;
    Ok(response)
}

/// Deletes, until the service stops: uploads never sent once older than
/// `orphan_after` (every `sweep_every`), and the blobs nothing refers to
/// any more, as soon as a deletion releases them. A blob that cannot be
/// deleted now (the store is down) is tried again on the next round.
pub(crate) async fn janitor(
    store: Store,
    files: FileStore,
    config: FilesConfig,
    cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
) {
    let released = store.blobs_released();
    let mut every = tokio::time::interval(config.sweep_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // One janitor over a cluster: two deleting the same blob could
        // delete bytes an upload has just stored again.
        if let Some(cluster) = &cluster {
            if !cluster.lease("janitor", config.sweep_every * 3).await {
                every.tick().await;
                continue;
            }
        }
        tokio::select! {
            _ = every.tick() => {
                let orphan_ms = i64::try_from(config.orphan_after.as_millis()).unwrap_or(i64::MAX);
                let cutoff = chat_proto::time::now_millis().saturating_sub(orphan_ms);
                if let Err(error) = store.sweep_files(cutoff).await {
                    tracing::warn!(%error, "looking for unsent uploads failed");
                }
            }
            () = released.notified() => {}
        }
        delete_condemned(&store, &files).await;
    }
}

async fn delete_condemned(store: &Store, files: &FileStore) {
    loop {
        let condemned = match store.condemned_blobs().await {
            Ok(condemned) => condemned,
            Err(error) => {
                tracing::warn!(%error, "listing unreferenced files failed");
                return;
            }
        };
        if condemned.is_empty() {
            return;
        }
        let mut deleted = 0;
        for hash in condemned {
            if let Err(error) = files.delete(&hash).await {
                tracing::warn!(%error, "deleting an unreferenced file failed; trying again later");
                return;
            }
            match store.forget_blob(hash).await {
                Ok(_) => deleted += 1,
                Err(error) => {
                    tracing::warn!(%error, "forgetting a deleted file failed");
                    return;
                }
            }
        }
        tracing::debug!(deleted, "deleted unreferenced files");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_credentials_never_reach_logs() {
        let config = FilesConfig {
            store: Some("s3://b/p?endpoint=http://x:9000&secret_access_key=hunter2".into()),
            ..FilesConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("s3://b/p?endpoint&secret_access_key"),
            "{shown}"
        );
    }
}
