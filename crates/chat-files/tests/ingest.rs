//! Uploads through `Uploader::ingest` into a real disk store: types,
//! claims, names, parts, limits, bounded buffering and deduplication.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chat_files::{Blob, ContentHash, FileError, UploadConfig};
use common::*;
use futures_util::StreamExt;
use image::ImageFormat;

const MIB: u64 = 1024 * 1024;

fn code(result: Result<chat_files::StoredFile, FileError>) -> &'static str {
    result
        .expect_err("the upload should be refused")
        .code()
        .as_str()
}

#[tokio::test]
async fn each_built_in_type_is_sniffed_from_its_bytes() {
    let store = TempStore::new(UploadConfig::default()).await;
    let picture = picture(40, 30);
    for (format, content_type) in [
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let bytes = encode(&picture, format);
        // The client says nothing useful; the bytes decide.
        let stored = store
            .upload_file("picture", "application/octet-stream", &bytes)
            .await
            .unwrap();
        assert_eq!(stored.content_type, content_type);
        assert_eq!(
            stored.dimensions,
            Some(chat_files::Dimensions {
                width: 40,
                height: 30
            })
        );
        assert!(stored.thumbnail.is_some(), "{content_type}");
    }
    let pdf = store
        .upload_file("doc.pdf", "application/pdf", PDF)
        .await
        .unwrap();
    assert_eq!(pdf.content_type, "application/pdf");
    assert_eq!((pdf.dimensions, pdf.thumbnail), (None, None));
    assert_eq!(pdf.sha256, ContentHash::of(PDF));
    assert_eq!(pdf.size, PDF.len() as u64);

    let text = "Grüße, 李雷 🎉\nsecond line\n".as_bytes();
    let notes = store
        .upload_file("notes.txt", "text/plain", text)
        .await
        .unwrap();
    assert_eq!(notes.content_type, "text/plain");
    let markdown = store
        .upload_file("readme.md", "text/markdown", b"# Title\n")
        .await
        .unwrap();
    assert_eq!(markdown.content_type, "text/plain");
    // No Content-Type on the part at all.
    let bare = store
        .upload(&[Part {
            content_type: None,
            ..Part::file("x.pdf", "", PDF)
        }])
        .await
        .unwrap();
    assert_eq!(bare.content_type, "application/pdf");
}

#[tokio::test]
async fn a_claim_that_disagrees_with_the_bytes_is_refused() {
    let store = TempStore::new(UploadConfig::default()).await;
    let png = encode(&picture(8, 8), ImageFormat::Png);
    let jpeg = encode(&picture(8, 8), ImageFormat::Jpeg);
    assert_eq!(
        code(store.upload_file("doc.png", "image/png", PDF).await),
        "unsupported_media_type"
    );
    assert_eq!(
        code(store.upload_file("a.jpg", "image/png", &jpeg).await),
        "unsupported_media_type"
    );
    assert_eq!(
        code(store.upload_file("a.png", "text/plain", &png).await),
        "unsupported_media_type"
    );
    assert_eq!(
        code(
            store
                .upload_file("a.txt", "application/pdf", b"just text")
                .await
        ),
        "unsupported_media_type"
    );
    // Aliases of the same type are not a mismatch.
    assert_eq!(
        store
            .upload_file("a.jpg", "image/jpg", &jpeg)
            .await
            .unwrap()
            .content_type,
        "image/jpeg"
    );
    assert_eq!(
        store
            .upload_file("a.jpg", "IMAGE/PJPEG", &jpeg)
            .await
            .unwrap()
            .content_type,
        "image/jpeg"
    );
}

#[tokio::test]
async fn markup_and_executables_are_refused_whatever_they_claim() {
    let store = TempStore::new(UploadConfig::default()).await;
    let html = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>";
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"><rect width=\"10\" height=\"10\"/></svg>";
    let svg_with_prolog = [&b"<?xml version=\"1.0\"?>\n"[..], svg].concat();
    for (name, bytes) in [
        ("x.png", &html[..]),
        ("x.png", &svg[..]),
        ("x.png", &svg_with_prolog[..]),
    ] {
        let refused = store
            .upload_file(name, "image/png", bytes)
            .await
            .unwrap_err();
        assert_eq!(
            refused.code().as_str(),
            "unsupported_media_type",
            "{refused}"
        );
        assert_eq!(refused.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    for claim in ["text/html", "text/plain", "image/svg+xml", ""] {
        assert_eq!(
            code(store.upload_file("x.html", claim, html).await),
            "unsupported_media_type",
            "{claim}"
        );
        assert_eq!(
            code(store.upload_file("x.svg", claim, svg).await),
            "unsupported_media_type",
            "{claim}"
        );
    }
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.resize(256, 0);
    assert_eq!(
        code(
            store
                .upload_file("a.out", "application/octet-stream", &elf)
                .await
        ),
        "unsupported_media_type"
    );
    let binary = [0u8, 1, 2, 3, 250, 251, 252, 253];
    assert_eq!(
        code(store.upload_file("blob.bin", "", &binary).await),
        "unsupported_media_type"
    );
    assert!(store.blobs().is_empty(), "{:?}", store.blobs());
    assert_eq!(store.staged_files(), 0);
}

#[tokio::test]
async fn configured_types_are_accepted_by_their_signature() {
    let mut zip = b"PK\x03\x04\x14\0\0\0\0\0".to_vec();
    zip.resize(200, 0);
    let plain = TempStore::new(UploadConfig::default()).await;
    assert_eq!(
        code(plain.upload_file("a.zip", "application/zip", &zip).await),
        "unsupported_media_type"
    );
    let config = UploadConfig {
        extra_types: vec!["application/zip".into()],
        ..UploadConfig::default()
    };
    let store = TempStore::new(config).await;
    let stored = store
        .upload_file("a.zip", "application/x-zip-compressed", &zip)
        .await
        .unwrap();
    assert_eq!(stored.content_type, "application/zip");
    assert_eq!(
        code(store.upload_file("a.png", "image/png", &zip).await),
        "unsupported_media_type"
    );
}

#[tokio::test]
async fn file_names_are_cleaned() {
    let store = TempStore::new(UploadConfig::default()).await;
    let stored = store
        .upload_file("../../home/me/inv\u{202E}fdp.txt", "text/plain", b"x")
        .await
        .unwrap();
    assert_eq!(stored.name, "invfdp.txt");
    let windows = store
        .upload_file("C:\\Users\\me\\report.pdf", "application/pdf", PDF)
        .await
        .unwrap();
    assert_eq!(windows.name, "report.pdf");
    let nameless = store
        .upload(&[Part {
            file_name: None,
            ..Part::file("", "text/plain", b"x")
        }])
        .await
        .unwrap();
    assert_eq!(nameless.name, "file");
}

#[tokio::test]
async fn only_one_part_named_file_is_accepted() {
    let store = TempStore::new(UploadConfig::default()).await;
    let note = Part {
        name: "note",
        file_name: None,
        content_type: None,
        bytes: b"hello",
    };
    let file = Part::file("a.txt", "text/plain", b"x");
    assert_eq!(code(store.upload(&[]).await), "invalid_upload");
    assert_eq!(code(store.upload(&[note]).await), "invalid_upload");
    let before = store.upload(&[note, file]).await.unwrap_err();
    assert_eq!(
        before.to_string(),
        "unexpected part \"note\": send one part named \"file\""
    );
    assert_eq!(code(store.upload(&[file, note]).await), "invalid_upload");
    let twice = store
        .upload(&[file, Part::file("b.txt", "text/plain", b"y")])
        .await
        .unwrap_err();
    assert_eq!(twice.to_string(), "more than one part named \"file\"");
    assert_eq!(
        code(store.upload_file("empty.txt", "text/plain", b"").await),
        "invalid_upload"
    );
    assert!(store.blobs().is_empty());
    assert_eq!(store.staged_files(), 0);
}

#[tokio::test]
async fn bodies_that_are_not_whole_multipart_are_refused() {
    let store = TempStore::new(UploadConfig::default()).await;
    let uploader = &store.uploader;
    let mut json = http::HeaderMap::new();
    json.insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    let refused = uploader
        .ingest(&json, chunked(b"{}".to_vec(), 2))
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "invalid_upload");
    assert_eq!(refused.status(), http::StatusCode::BAD_REQUEST);

    // Cut off before the closing boundary: nothing is stored.
    let mut body = multipart(&[Part::file("a.txt", "text/plain", b"all of it")]);
    body.truncate(body.len() - closing().len() - 10);
    let cut = uploader
        .ingest(&headers(None), chunked(body, 16))
        .await
        .unwrap_err();
    assert_eq!(cut.code().as_str(), "invalid_upload", "{cut}");

    // The client went away: the body stream fails.
    let body = multipart(&[Part::file("a.txt", "text/plain", &[b'a'; 5000])]);
    let failing = chunked(body[..3000].to_vec(), 1000).chain(futures_util::stream::once(async {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "gone",
        ))
    }));
    let gone = uploader.ingest(&headers(None), failing).await.unwrap_err();
    assert_eq!(
        gone.to_string(),
        "the upload was interrupted before it ended"
    );
    assert!(store.blobs().is_empty());
    assert_eq!(store.staged_files(), 0);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_reading() {
    let store = TempStore::new(UploadConfig::default()).await;
    let pulled = Arc::new(AtomicU64::new(0));
    let body = counted_text_upload(11 * MIB, 64 * 1024, pulled.clone(), |_| {});
    let refused = store
        .uploader
        .ingest(&headers(Some(11 * MIB + 200)), body)
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "file_too_large");
    assert_eq!(refused.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
    assert!(store
        .uploader
        .check_declared_length(&headers(Some(11 * MIB)))
        .is_err());
    assert!(store
        .uploader
        .check_declared_length(&headers(Some(10 * MIB + 500)))
        .is_ok());
}

#[tokio::test]
async fn an_oversized_stream_is_cut_off_right_after_the_limit() {
    let store = TempStore::new(UploadConfig::default()).await;
    let pulled = Arc::new(AtomicU64::new(0));
    let chunk = 64 * 1024;
    // No Content-Length: the limit must hold while reading.
    let body = counted_text_upload(11 * MIB, chunk, pulled.clone(), |_| {});
    let refused = store
        .uploader
        .ingest(&headers(None), body)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, FileError::FileTooLarge { limit } if limit == 10 * MIB),
        "{refused}"
    );
    let pulled = pulled.load(Ordering::SeqCst);
    assert!(pulled > 10 * MIB, "{pulled}");
    assert!(
        pulled <= 10 * MIB + 2 * chunk as u64 + 1024,
        "read {pulled} bytes of an 11 MiB upload"
    );
    assert!(store.blobs().is_empty());
    assert_eq!(store.staged_files(), 0);
}

#[tokio::test]
async fn a_large_upload_streams_through_with_a_bounded_buffer() {
    let config = UploadConfig {
        max_upload_bytes: 64 * MIB,
        ..UploadConfig::default()
    };
    let store = Arc::new(TempStore::new(config).await);
    let chunk = 8 * 1024;
    let size = 24 * MIB;
    let pulled = Arc::new(AtomicU64::new(0));
    let most_in_flight = Arc::new(AtomicU64::new(0));
    let watcher = (store.clone(), most_in_flight.clone());
    // Before each chunk is handed over: everything pulled so far but not
    // yet in the staging file is what the pipeline holds in memory.
    let body = counted_text_upload(size, chunk, pulled.clone(), move |pulled| {
        let (store, most) = &watcher;
        let in_flight = pulled.saturating_sub(store.staged_bytes());
        most.fetch_max(in_flight, Ordering::SeqCst);
    });
    let stored = store.uploader.ingest(&headers(None), body).await.unwrap();
    assert_eq!(stored.size, size);
    assert_eq!(stored.content_type, "text/plain");
    let held = most_in_flight.load(Ordering::SeqCst);
    assert!(
        held <= 8 * chunk as u64,
        "held up to {held} bytes of a {size}-byte upload in memory"
    );
    assert_eq!(
        store
            .store()
            .size(Blob::Original(stored.sha256))
            .await
            .unwrap(),
        size
    );
    assert_eq!(store.staged_files(), 0);
}

#[tokio::test]
async fn the_same_bytes_are_stored_once() {
    let store = TempStore::new(UploadConfig::default()).await;
    let first = store
        .upload_file("a.pdf", "application/pdf", PDF)
        .await
        .unwrap();
    let second = store
        .upload_file("b.pdf", "application/pdf", PDF)
        .await
        .unwrap();
    assert!(first.newly_stored);
    assert!(!second.newly_stored);
    assert_eq!(first.sha256, second.sha256);
    assert_eq!(second.name, "b.pdf");
    assert_eq!(store.blobs(), [Blob::Original(first.sha256).key()]);

    let png = encode(&picture(50, 40), ImageFormat::Png);
    let one = store.upload_file("p.png", "image/png", &png).await.unwrap();
    let two = store.upload_file("q.png", "image/png", &png).await.unwrap();
    assert_eq!((one.newly_stored, two.newly_stored), (true, false));
    assert_eq!(one.thumbnail, two.thumbnail);
    assert_eq!(store.blobs().len(), 3, "{:?}", store.blobs());
    assert_eq!(store.staged_files(), 0);
}

#[tokio::test]
async fn concurrent_uploads_of_the_same_bytes_are_safe() {
    let store = TempStore::new(UploadConfig::default()).await;
    let text = "the same text, uploaded four times at once\n".repeat(2000);
    let png = encode(&picture(120, 90), ImageFormat::Png);
    let uploads = (0..4).map(|i| {
        let (store, text, png) = (&store, text.as_bytes(), &png);
        async move {
            let text = store
                .upload_file(&format!("{i}.txt"), "text/plain", text)
                .await
                .unwrap();
            let png = store
                .upload_file(&format!("{i}.png"), "image/png", png)
                .await
                .unwrap();
            (text, png)
        }
    });
    let results = futures_util::future::join_all(uploads).await;
    for (text, png) in &results {
        assert_eq!(text.sha256, results[0].0.sha256);
        assert_eq!(png.sha256, results[0].1.sha256);
    }
    assert_eq!(store.blobs().len(), 3, "{:?}", store.blobs());
    let read = store
        .store()
        .read_to_bytes(Blob::Original(results[0].0.sha256))
        .await
        .unwrap();
    assert_eq!(&read[..], text.as_bytes());
    assert_eq!(store.staged_files(), 0);
}

#[tokio::test]
async fn uploads_and_downloads_run_on_spawned_tasks() {
    // What an axum handler needs: Send futures over 'static streams.
    let store = TempStore::new(UploadConfig::default()).await;
    let uploader = store.uploader.clone();
    let body = multipart(&[Part::file("a.txt", "text/plain", b"spawned")]);
    let stored =
        tokio::spawn(async move { uploader.ingest(&headers(None), chunked(body, 3)).await })
            .await
            .unwrap()
            .unwrap();
    let files = store.store().clone();
    let read = tokio::spawn(async move {
        collect(files.read(Blob::Original(stored.sha256)).await.unwrap()).await
    });
    assert_eq!(read.await.unwrap(), b"spawned");
}
