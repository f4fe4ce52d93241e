//! Bodies read apart: handed on piece by piece, read to their end after
//! the consumer stops (within the limit), cut off past the limit or when
//! they stall.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use chat_edge::{read_apart, EarlyEnd};
use futures_util::StreamExt;

/// `pieces` pieces of `size` bytes, counting in `pulled` what was taken.
fn counted(pieces: usize, size: usize, pulled: Arc<AtomicU64>) -> Body {
    let stream = futures_util::stream::iter(0..pieces).map(move |_| {
        pulled.fetch_add(size as u64, Ordering::SeqCst);
        Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; size]))
    });
    Body::from_stream(stream)
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_body_is_handed_on_whole() {
    let pulled = Arc::new(AtomicU64::new(0));
    let (stream, watch) = read_apart(counted(10, 1000, pulled), 10_000, Duration::from_secs(5));
    let pieces: Vec<_> = stream.collect().await;
    assert_eq!(pieces.len(), 10);
    assert!(pieces
        .iter()
        .all(|piece| piece.as_ref().unwrap().len() == 1000));
    assert_eq!(watch.early_end(), None);
}

#[tokio::test]
async fn the_rest_is_read_after_the_consumer_stops_within_the_limit() {
    let pulled = Arc::new(AtomicU64::new(0));
    let (mut stream, watch) = read_apart(
        counted(100, 1000, pulled.clone()),
        100_000,
        Duration::from_secs(5),
    );
    stream.next().await.unwrap().unwrap();
    drop(stream);
    eventually("the whole body to be read", || {
        pulled.load(Ordering::SeqCst) == 100_000
    })
    .await;
    assert_eq!(watch.early_end(), None);

    // Past the limit, reading stops: the rest is never taken.
    let pulled = Arc::new(AtomicU64::new(0));
    let (stream, watch) = read_apart(
        counted(1000, 1000, pulled.clone()),
        50_000,
        Duration::from_secs(5),
    );
    drop(stream);
    eventually("reading to stop past the limit", || {
        watch.early_end() == Some(EarlyEnd::OverLimit)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        pulled.load(Ordering::SeqCst) <= 52_000,
        "{}",
        pulled.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn over_the_limit_or_stalled_is_an_error_and_says_which() {
    let pulled = Arc::new(AtomicU64::new(0));
    let (stream, watch) = read_apart(counted(10, 1000, pulled), 5_500, Duration::from_secs(5));
    let pieces: Vec<_> = stream.collect().await;
    assert_eq!(pieces.iter().filter(|p| p.is_ok()).count(), 5);
    assert!(pieces.last().unwrap().is_err());
    assert_eq!(watch.early_end(), Some(EarlyEnd::OverLimit));

    let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"a"))])
        .chain(futures_util::stream::pending());
    let (stream, watch) = read_apart(Body::from_stream(stalled), 100, Duration::from_millis(50));
    let pieces: Vec<_> = stream.collect().await;
    assert_eq!(pieces.len(), 2);
    assert_eq!(
        pieces[1].as_ref().unwrap_err().kind(),
        std::io::ErrorKind::TimedOut
    );
    assert_eq!(watch.early_end(), Some(EarlyEnd::Stalled));
}
