//! The disk store: layout, staging, and the store contract.

mod common;

use chat_files::{Blob, FileStore, StoreConfig, Uploader};
use common::*;

#[tokio::test]
async fn the_disk_store_keeps_its_contract() {
    let store = TempStore::new(large_file_config()).await;
    exercise_store(&store.uploader).await;
    assert!(store.blobs().is_empty(), "{:?}", store.blobs());
    assert_eq!(store.staged_files(), 0);
}

#[tokio::test]
async fn blobs_are_laid_out_by_hash() {
    let store = TempStore::new(chat_files::UploadConfig::default()).await;
    let stored = store
        .upload_file("a.txt", "text/plain", b"hello")
        .await
        .unwrap();
    let hex = stored.sha256.to_hex();
    let path = store.dir.path().join(&hex[..2]).join(&hex[2..4]).join(&hex);
    assert_eq!(std::fs::read(&path).unwrap(), b"hello");
    assert_eq!(store.blobs(), [Blob::Original(stored.sha256).key()]);
}

#[tokio::test]
async fn opening_creates_the_directories_and_clears_only_stale_staging_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nested/files");
    let config = StoreConfig::from_url(root.to_str().unwrap()).unwrap();
    FileStore::open(&config).await.unwrap();
    let staging = root.join(chat_files::DISK_STAGING_DIR);
    assert!(staging.is_dir());

    let stale = staging.join("upload-crashed");
    std::fs::write(&stale, b"half an upload").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let fresh = staging.join("upload-running");
    std::fs::write(&fresh, b"an upload in progress").unwrap();
    let store = FileStore::open(&config).await.unwrap();
    assert!(!stale.exists());
    assert!(fresh.exists());

    let uploader = Uploader::new(store, chat_files::UploadConfig::default());
    let stored = upload_to(&uploader, "x.pdf", "application/pdf", PDF).await;
    assert!(uploader
        .store()
        .contains(Blob::Original(stored.sha256))
        .await
        .unwrap());
}

#[tokio::test]
async fn a_store_that_cannot_be_created_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let config = StoreConfig::Disk {
        root: file.join("below"),
    };
    let error = FileStore::open(&config).await.unwrap_err();
    assert_eq!(error.code().as_str(), "invalid_config", "{error}");
}
