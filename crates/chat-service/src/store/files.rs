//! Files uploaded to rooms: their records, the messages that carry them,
//! and the stored blobs no record refers to any more.
//!
//! A record is an upload of some bytes to a room by a user. It waits to be
//! sent; a message attaches it (once: it lives and dies with that message)
//! in the same transaction that stores the message, under the rule in
//! [`super::rules`]. Deleting the message deletes its records; uploads never
//! sent are deleted once older than the orphan age by
//! [`Store::sweep_files`]. Blobs are counted: one whose last record is gone
//! is condemned, [`Store::condemned_blobs`] lists it for the service to
//! delete from the file store (never inside a transaction), and
//! [`Store::forget_blob`] ends it. A condemned blob takes no new record
//! ([`Store::add_file`] answers false), so nothing is ever deleted from
//! under a file that uses it.

use std::collections::HashMap;
use std::sync::Arc;

use chat_files::ContentHash;
use chat_proto::{Attachment, RoomId};
use tokio::sync::Notify;

use super::{Change, Store, StoreError};

/// One upload, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub id: String,
    pub room_id: RoomId,
    pub uploader_id: Arc<str>,
    /// Sanitized.
    pub name: String,
    /// As sniffed from the bytes.
    pub content_type: String,
    /// Of the bytes as stored (an image without its metadata).
    pub size: u64,
    pub sha256: ContentHash,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The thumbnail's length, for an image that has one.
    pub thumbnail_size: Option<u64>,
    pub created_at_ms: i64,
    /// The message it was sent with; `None` while it waits to be sent.
    pub message_id: Option<String>,
}

impl FileRecord {
    /// The file as the message carrying it shows it.
    pub fn attachment(&self) -> Attachment {
        Attachment {
            id: self.id.clone(),
            name: self.name.clone(),
            size: self.size,
            content_type: self.content_type.clone(),
            width: self.width,
            height: self.height,
            url: chat_proto::api::file_url(&self.id),
            thumbnail_url: self
                .thumbnail_size
                .map(|_| chat_proto::api::thumbnail_url(&self.id)),
        }
    }
}

/// Condemned blobs listed per call of [`Store::condemned_blobs`].
pub(crate) const CONDEMNED_PAGE: usize = 100;

impl Store {
    /// Records an upload whose bytes are stored. False (and nothing
    /// recorded) when those bytes are condemned: their blob is being
    /// deleted, so the upload must be sent again.
    pub(crate) async fn add_file(&self, file: FileRecord) -> Result<bool, StoreError> {
        self.change(Change::AddFile(Box::new(file))).await
    }

    /// The file's record, whether or not it was sent yet.
    pub async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.files().file(id)),
            Store::Sql(store) => store.file(id).await,
        }
    }

    /// Deletes the records of uploads never sent and created before
    /// `unsent_before_ms`, and of files whose message is gone (deleted,
    /// or pruned by retention); condemns the blobs that lost their last
    /// record. True if it removed any.
    pub(crate) async fn sweep_files(&self, unsent_before_ms: i64) -> Result<bool, StoreError> {
        self.change(Change::SweepFiles { unsent_before_ms }).await
    }

    /// Blobs no record refers to, to delete from the file store.
    pub(crate) async fn condemned_blobs(&self) -> Result<Vec<ContentHash>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.files().condemned(CONDEMNED_PAGE)),
            Store::Sql(store) => store.condemned_blobs(CONDEMNED_PAGE).await,
        }
    }

    /// The condemned blob is deleted from the file store: its bytes may be
    /// uploaded anew.
    pub(crate) async fn forget_blob(&self, hash: ContentHash) -> Result<bool, StoreError> {
        self.change(Change::ForgetBlob(hash)).await
    }

    /// Notified when a deletion condemned blobs (their message was
    /// deleted), so they go from the file store without waiting for a
    /// sweep.
    pub(crate) fn blobs_released(&self) -> Arc<Notify> {
        match self {
            Store::Memory(store) => store.blobs_released(),
            Store::Sql(store) => store.blobs_released(),
        }
    }
}

/// How many records refer to a blob, and whether it is condemned.
#[derive(Debug, Clone, Copy, Default)]
struct BlobState {
    refs: u64,
    condemned: bool,
}

/// The memory store's files.
#[derive(Default)]
pub(super) struct MemoryFiles {
    pub(super) records: HashMap<String, FileRecord>,
    blobs: HashMap<ContentHash, BlobState>,
}

impl MemoryFiles {
    pub(super) fn file(&self, id: &str) -> Option<FileRecord> {
        self.records.get(id).cloned()
    }

    pub(super) fn add(&mut self, file: FileRecord) -> bool {
        let blob = self.blobs.entry(file.sha256).or_default();
        if blob.condemned {
            return false;
        }
        blob.refs += 1;
        self.records.insert(file.id.clone(), file);
        true
    }

    /// Deletes the records `doomed` picks; true if a blob was condemned.
    pub(super) fn remove_where(&mut self, mut doomed: impl FnMut(&FileRecord) -> bool) -> bool {
        let gone: Vec<ContentHash> = self
            .records
            .values()
            .filter(|record| doomed(record))
            .map(|record| record.sha256)
            .collect();
        self.records.retain(|_, record| !doomed(record));
        let mut condemned = false;
        for hash in gone {
            let blob = self.blobs.entry(hash).or_default();
            blob.refs = blob.refs.saturating_sub(1);
            if blob.refs == 0 {
                blob.condemned = true;
                condemned = true;
            }
        }
        condemned
    }

    pub(super) fn condemned(&self, limit: usize) -> Vec<ContentHash> {
        let mut condemned: Vec<ContentHash> = self
            .blobs
            .iter()
            .filter(|(_, blob)| blob.condemned)
            .map(|(hash, _)| *hash)
            .collect();
        condemned.sort();
        condemned.truncate(limit);
        condemned
    }

    pub(super) fn forget(&mut self, hash: &ContentHash) -> bool {
        match self.blobs.get(hash) {
            Some(blob) if blob.condemned => {
                self.blobs.remove(hash);
                true
            }
            _ => false,
        }
    }
}
