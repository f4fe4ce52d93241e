//! Content-addressed blob storage: a directory on disk, or any
//! S3-compatible object store through `object_store`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use tempfile::TempPath;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{ContentHash, FileError};

/// Where files are kept when nothing is configured.
pub const DEFAULT_DISK_ROOT: &str = "data/files";
/// The staging directory inside a disk store's root: uploads are written
/// there and renamed into place, which is atomic on one file system.
pub const DISK_STAGING_DIR: &str = ".staging";
/// Staged files older than this are leftovers of a crash, removed at open.
const STALE_STAGING_AGE: Duration = Duration::from_secs(3600);
/// Bytes per read when streaming a blob from disk.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Bytes an S3 upload buffers before it becomes a multipart upload, and
/// the size of each part then (S3's smallest part is 5 MiB).
const S3_PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts of one S3 multipart upload in flight at once.
const S3_PARTS_IN_FLIGHT: usize = 2;

/// A stream of a blob's bytes; `axum::body::Body::from_stream` takes it.
pub type ByteStream = BoxStream<'static, Result<Bytes, FileError>>;

/// A stored blob: an upload's bytes, or the thumbnail made from them,
/// both named by the SHA-256 of the stored upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blob {
    Original(ContentHash),
    Thumbnail(ContentHash),
}

impl Blob {
    /// The hash that names the blob (for a thumbnail, its original's).
    pub fn hash(&self) -> ContentHash {
        match self {
            Blob::Original(hash) | Blob::Thumbnail(hash) => *hash,
        }
    }

    /// The blob's path relative to the store's root or prefix:
    /// `ab/cd/abcd…` for an original, `ab/cd/abcd….thumb` for its thumbnail.
    /// Two levels of 256 directories keep every directory small.
    pub fn key(&self) -> String {
        let hex = self.hash().to_hex();
        let suffix = match self {
            Blob::Original(_) => "",
            Blob::Thumbnail(_) => ".thumb",
        };
        format!("{}/{}/{hex}{suffix}", &hex[..2], &hex[2..4])
    }
}

/// Where the store is, parsed from `FILE_STORE_URL`.
///
/// - a path (`data/files`, `/var/lib/chat/files`) or a `file:///…` URL: a
///   directory on this machine;
/// - `s3://BUCKET[/PREFIX][?SETTING=VALUE&…]`: an S3-compatible store. The
///   settings are `object_store`'s S3 options, most usefully `endpoint`
///   (e.g. `http://127.0.0.1:9000` for a local server), `region` (default
///   `us-east-1`), `virtual_hosted_style_request=true` (the bucket in the
///   host name; the default is path-style, `ENDPOINT/BUCKET/KEY`, which
///   local servers want), `allow_http=true` (implied by an `http://`
///   endpoint), `access_key_id`, `secret_access_key` and `session_token`.
///   Credentials and other settings not in the URL come from the usual
///   environment variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
///   `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
///   `AWS_ENDPOINT` (or `AWS_ENDPOINT_URL`), `AWS_ALLOW_HTTP`, and the
///   instance / container / web-identity credentials AWS provides. The URL
///   wins over the environment. Prefer the environment for secrets: the
///   URL ends up in shell histories (the `Debug` form hides setting values).
#[derive(Clone, PartialEq)]
pub enum StoreConfig {
    Disk {
        root: PathBuf,
    },
    S3 {
        bucket: String,
        /// Keys go under this prefix (no leading or trailing `/`); may be empty.
        prefix: String,
        settings: Vec<(AmazonS3ConfigKey, String)>,
    },
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig::Disk {
            root: PathBuf::from(DEFAULT_DISK_ROOT),
        }
    }
}

impl StoreConfig {
    pub fn from_url(text: &str) -> Result<StoreConfig, FileError> {
        let invalid = |why: String| FileError::InvalidConfig(why);
        let text = text.trim();
        if text.is_empty() {
            return Err(invalid("the file store URL is empty".into()));
        }
        if !text.contains("://") {
            return Ok(StoreConfig::Disk {
                root: PathBuf::from(text),
            });
        }
        let url = url::Url::parse(text)
            .map_err(|error| invalid(format!("the file store URL does not parse: {error}")))?;
        match url.scheme() {
            "file" => {
                let root = url
                    .to_file_path()
                    .map_err(|()| invalid("a file:// store URL needs an absolute path".into()))?;
                Ok(StoreConfig::Disk { root })
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|host| !host.is_empty())
                    .ok_or_else(|| {
                        invalid("an s3:// store URL names its bucket: s3://BUCKET".into())
                    })?
                    .to_owned();
                let prefix = url.path().trim_matches('/').to_owned();
                let settings = url
                    .query_pairs()
                    .map(|(key, value)| {
                        let parsed = AmazonS3ConfigKey::from_str(&key)
                            .map_err(|_| invalid(format!("unknown S3 setting {key:?}")))?;
                        Ok((parsed, value.into_owned()))
                    })
                    .collect::<Result<_, FileError>>()?;
                Ok(StoreConfig::S3 {
                    bucket,
                    prefix,
                    settings,
                })
            }
            other => Err(invalid(format!(
                "unsupported file store scheme {other:?}: use a path or s3://"
            ))),
        }
    }
}

impl FromStr for StoreConfig {
    type Err = FileError;

    fn from_str(text: &str) -> Result<StoreConfig, FileError> {
        StoreConfig::from_url(text)
    }
}

/// Shows S3 setting names but not their values, which may be secrets.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Disk { root } => f.debug_struct("Disk").field("root", root).finish(),
            StoreConfig::S3 {
                bucket,
                prefix,
                settings,
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("prefix", prefix)
                .field(
                    "settings",
                    &settings
                        .iter()
                        .map(|(key, _)| key.as_ref())
                        .collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

/// The blob store. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct FileStore {
    backend: Arc<Backend>,
}

enum Backend {
    Disk {
        root: PathBuf,
        staging: PathBuf,
    },
    S3 {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        staging: PathBuf,
    },
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.backend {
            Backend::Disk { root, .. } => f.debug_struct("FileStore").field("disk", root).finish(),
            Backend::S3 { store, prefix, .. } => f
                .debug_struct("FileStore")
                .field("s3", &store.to_string())
                .field("prefix", prefix)
                .finish(),
        }
    }
}

impl FileStore {
    /// Opens the store: creates a disk store's directories (and clears
    /// staged files a crash left), or builds the S3 client. Makes no S3
    /// request, so a store that is down shows up as `store_unavailable` on
    /// use, not here. S3 uploads are staged in the system's temporary
    /// directory (`TMPDIR`).
    pub async fn open(config: &StoreConfig) -> Result<FileStore, FileError> {
        let backend = match config {
            StoreConfig::Disk { root } => {
                let staging = root.join(DISK_STAGING_DIR);
                tokio::fs::create_dir_all(&staging).await.map_err(|error| {
                    FileError::InvalidConfig(format!(
                        "cannot create {}: {error}",
                        staging.display()
                    ))
                })?;
                let stale = staging.clone();
                tokio::task::spawn_blocking(move || remove_stale_staged(&stale))
                    .await
                    .map_err(FileError::store)?;
                Backend::Disk {
                    root: root.clone(),
                    staging,
                }
            }
            StoreConfig::S3 {
                bucket,
                prefix,
                settings,
            } => {
                let staging = std::env::temp_dir().join("chat-files-staging");
                tokio::fs::create_dir_all(&staging).await.map_err(|error| {
                    FileError::InvalidConfig(format!(
                        "cannot create {}: {error}",
                        staging.display()
                    ))
                })?;
                Backend::S3 {
                    store: Arc::new(build_s3(bucket, settings)?),
                    prefix: prefix.clone(),
                    staging,
                }
            }
        };
        Ok(FileStore {
            backend: Arc::new(backend),
        })
    }

    /// Where uploads are written while they are read and checked.
    pub(crate) fn staging_dir(&self) -> &Path {
        match &*self.backend {
            Backend::Disk { staging, .. } | Backend::S3 { staging, .. } => staging,
        }
    }

    pub async fn contains(&self, blob: Blob) -> Result<bool, FileError> {
        match self.size(blob).await {
            Ok(_) => Ok(true),
            Err(FileError::NotFound) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// The blob's length in bytes; `NotFound` if it is not stored.
    pub async fn size(&self, blob: Blob) -> Result<u64, FileError> {
        match &*self.backend {
            Backend::Disk { root, .. } => Ok(tokio::fs::metadata(root.join(blob.key()))
                .await
                .map_err(FileError::reading)?
                .len()),
            Backend::S3 { store, prefix, .. } => {
                Ok(store.head(&object_path(prefix, blob)).await?.size)
            }
        }
    }

    /// The whole blob as a stream; `NotFound` (before any byte) if it is not
    /// stored.
    pub async fn read(&self, blob: Blob) -> Result<ByteStream, FileError> {
        self.read_from(blob, None).await
    }

    /// Bytes `range.start..range.end` of the blob (the caller keeps the
    /// range inside the blob, as [`crate::plan_download`] does).
    pub async fn read_range(&self, blob: Blob, range: Range<u64>) -> Result<ByteStream, FileError> {
        if range.is_empty() {
            return Ok(futures_util::stream::empty().boxed());
        }
        self.read_from(blob, Some(range)).await
    }

    /// The whole blob in memory; for thumbnails and small files.
    pub async fn read_to_bytes(&self, blob: Blob) -> Result<Bytes, FileError> {
        match &*self.backend {
            Backend::Disk { root, .. } => Ok(tokio::fs::read(root.join(blob.key()))
                .await
                .map_err(FileError::reading)?
                .into()),
            Backend::S3 { store, prefix, .. } => {
                Ok(store.get(&object_path(prefix, blob)).await?.bytes().await?)
            }
        }
    }

    async fn read_from(
        &self,
        blob: Blob,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, FileError> {
        match &*self.backend {
            Backend::Disk { root, .. } => {
                let mut file = tokio::fs::File::open(root.join(blob.key()))
                    .await
                    .map_err(FileError::reading)?;
                let stream = match range {
                    None => {
                        tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK_BYTES).boxed()
                    }
                    Some(range) => {
                        file.seek(std::io::SeekFrom::Start(range.start)).await?;
                        let part = file.take(range.end - range.start);
                        tokio_util::io::ReaderStream::with_capacity(part, READ_CHUNK_BYTES).boxed()
                    }
                };
                Ok(stream.map_err(FileError::from).boxed())
            }
            Backend::S3 { store, prefix, .. } => {
                let options = GetOptions {
                    range: range.map(GetRange::Bounded),
                    ..GetOptions::default()
                };
                let result = store.get_opts(&object_path(prefix, blob), options).await?;
                Ok(result.into_stream().map_err(FileError::from).boxed())
            }
        }
    }

    /// Deletes an upload's blob and its thumbnail; deleting what is not
    /// there is not an error. The caller decides when a blob is an orphan
    /// (no file record points at its hash any more); since a new upload of
    /// the same bytes finds the blob already there and does not store it
    /// again, delete only blobs unreferenced for longer than an upload takes.
    pub async fn delete(&self, hash: &ContentHash) -> Result<(), FileError> {
        for blob in [Blob::Thumbnail(*hash), Blob::Original(*hash)] {
            let outcome = match &*self.backend {
                Backend::Disk { root, .. } => tokio::fs::remove_file(root.join(blob.key()))
                    .await
                    .map_err(FileError::reading),
                Backend::S3 { store, prefix, .. } => store
                    .delete(&object_path(prefix, blob))
                    .await
                    .map_err(FileError::from),
            };
            match outcome {
                Ok(()) | Err(FileError::NotFound) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// Stores a staged file (written and synced in [`Self::staging_dir`])
    /// as `blob`, unless it is already stored. Answers whether it was new.
    ///
    /// Two uploads of the same bytes may race here; both write identical
    /// content (a rename on disk, a whole-object PUT on S3, each atomic),
    /// so readers see the blob whole either way.
    pub(crate) async fn put_staged(&self, blob: Blob, staged: TempPath) -> Result<bool, FileError> {
        match &*self.backend {
            Backend::Disk { root, .. } => {
                let target = root.join(blob.key());
                tokio::task::spawn_blocking(move || persist_on_disk(staged, &target))
                    .await
                    .map_err(FileError::store)?
            }
            Backend::S3 { store, prefix, .. } => {
                let location = object_path(prefix, blob);
                if self.contains(blob).await? {
                    discard(staged).await;
                    return Ok(false);
                }
                let mut file = tokio::fs::File::open(&staged).await?;
                let mut writer = BufWriter::with_capacity(store.clone(), location, S3_PART_BYTES)
                    .with_max_concurrency(S3_PARTS_IN_FLIGHT);
                let copied = tokio::io::copy(&mut file, &mut writer).await;
                drop(file);
                discard(staged).await;
                if let Err(error) = copied {
                    // Leave no half-finished multipart upload behind.
                    let _ = writer.abort().await;
                    return Err(FileError::store(error));
                }
                writer.shutdown().await.map_err(FileError::store)?;
                Ok(true)
            }
        }
    }

    /// Stores bytes already in memory (a stripped image, a thumbnail).
    pub(crate) async fn put_bytes(&self, blob: Blob, bytes: Bytes) -> Result<bool, FileError> {
        match &*self.backend {
            Backend::Disk { root, staging } => {
                let target = root.join(blob.key());
                let staging = staging.clone();
                tokio::task::spawn_blocking(move || {
                    if target.exists() {
                        return Ok(false);
                    }
                    let mut staged = tempfile::Builder::new()
                        .prefix(STAGED_PREFIX)
                        .tempfile_in(&staging)?;
                    std::io::Write::write_all(&mut staged, &bytes)?;
                    staged.as_file().sync_all()?;
                    persist_on_disk(staged.into_temp_path(), &target)
                })
                .await
                .map_err(FileError::store)?
            }
            Backend::S3 { store, prefix, .. } => {
                if self.contains(blob).await? {
                    return Ok(false);
                }
                store
                    .put(&object_path(prefix, blob), PutPayload::from_bytes(bytes))
                    .await?;
                Ok(true)
            }
        }
    }
}

/// Names of staged files start with this.
pub(crate) const STAGED_PREFIX: &str = "upload-";

fn persist_on_disk(staged: TempPath, target: &Path) -> Result<bool, FileError> {
    if target.exists() {
        staged.close()?;
        return Ok(false);
    }
    let parent = target.parent().expect("blob keys have directories");
    std::fs::create_dir_all(parent)?;
    staged
        .persist(target)
        .map_err(|error| FileError::from(error.error))?;
    // The rename is durable once the directory entry is.
    std::fs::File::open(parent)?.sync_all()?;
    Ok(true)
}

async fn discard(staged: TempPath) {
    let _ = tokio::task::spawn_blocking(move || staged.close()).await;
}

fn remove_stale_staged(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| {
                now.duration_since(modified).unwrap_or_default() > STALE_STAGING_AGE
            });
        if stale
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGED_PREFIX)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn object_path(prefix: &str, blob: Blob) -> ObjectPath {
    if prefix.is_empty() {
        ObjectPath::from(blob.key())
    } else {
        ObjectPath::from(format!("{prefix}/{}", blob.key()))
    }
}

fn build_s3(
    bucket: &str,
    settings: &[(AmazonS3ConfigKey, String)],
) -> Result<object_store::aws::AmazonS3, FileError> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (key, value) in settings {
        builder = builder.with_config(*key, value);
    }
    let plain_http = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some_and(|endpoint| endpoint.starts_with("http://"));
    let allow_http_set = settings.iter().any(|(key, _)| {
        *key == AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp)
    }) || std::env::var_os("AWS_ALLOW_HTTP").is_some();
    if plain_http && !allow_http_set {
        builder = builder.with_allow_http(true);
    }
    // Fail an upload or download within seconds when the store is down,
    // rather than after object_store's default three minutes of retries.
    builder = builder.with_retry(object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
        ..Default::default()
    });
    builder
        .build()
        .map_err(|error| FileError::InvalidConfig(format!("S3 store: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_fan_out_by_hash() {
        let hash = ContentHash::of(b"abc");
        assert_eq!(
            Blob::Original(hash).key(),
            "ba/78/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Blob::Thumbnail(hash).key(),
            "ba/78/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.thumb"
        );
    }

    #[test]
    fn store_urls() {
        assert_eq!(
            StoreConfig::from_url("data/files").unwrap(),
            StoreConfig::Disk {
                root: "data/files".into()
            }
        );
        assert_eq!(
            StoreConfig::from_url("file:///var/lib/chat").unwrap(),
            StoreConfig::Disk {
                root: "/var/lib/chat".into()
            }
        );
        let s3 = StoreConfig::from_url(
            "s3://chat-files/prod/eu?endpoint=http://127.0.0.1:9000&region=eu-west-1&secret_access_key=hush",
        )
        .unwrap();
        let StoreConfig::S3 {
            bucket,
            prefix,
            settings,
        } = &s3
        else {
            panic!("{s3:?}")
        };
        assert_eq!(bucket, "chat-files");
        assert_eq!(prefix, "prod/eu");
        assert_eq!(
            settings[0],
            (
                AmazonS3ConfigKey::Endpoint,
                "http://127.0.0.1:9000".to_owned()
            )
        );
        assert_eq!(
            settings[1],
            (AmazonS3ConfigKey::Region, "eu-west-1".to_owned())
        );
        let shown = format!("{s3:?}");
        assert!(!shown.contains("hush"), "{shown}");
        assert!(shown.contains("chat-files"), "{shown}");

        for bad in [
            "",
            "s3://",
            "s3:///x",
            "ftp://host/x",
            "s3://b?no_such_setting=1",
            "file://relative",
        ] {
            let error = StoreConfig::from_url(bad).unwrap_err();
            assert_eq!(error.code().as_str(), "invalid_config", "{bad}: {error}");
        }
    }
}
