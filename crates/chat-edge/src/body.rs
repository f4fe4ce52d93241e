//! Request bodies read by a task of their own, for uploads.
//!
//! A server that answers before it has read a body (a refusal) and then
//! closes the connection makes the peer's kernel reset it, and a peer still
//! sending loses the answer with it. So the body is read apart: its pieces
//! go one at a time to whoever consumes it, and once that consumer is gone
//! the rest is read and dropped, up to the body's limit in all and as long
//! as pieces keep coming, so that the peer can finish sending and read the
//! answer. A body over its limit is not read further: that answer closes
//! the connection.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// The pieces of a body read apart.
pub type BodyStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Why a body read apart ended before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyEnd {
    /// More than the limit arrived.
    OverLimit,
    /// Nothing arrived for the idle time.
    Stalled,
}

/// Tells how the body ended, once its stream has ended.
#[derive(Debug, Clone, Default)]
pub struct BodyWatch(Arc<OnceLock<EarlyEnd>>);

impl BodyWatch {
    /// Why the body stopped early, if it did.
    pub fn early_end(&self) -> Option<EarlyEnd> {
        self.0.get().copied()
    }
}

/// Reads `body` on a task of its own: at most `limit` bytes, each piece
/// within `idle` of the one before. The stream yields the pieces, or an
/// error once the body is over the limit, stalls or breaks off; dropping
/// it early leaves the task reading and dropping the rest (within the same
/// bounds).
pub fn read_apart(body: Body, limit: u64, idle: Duration) -> (BodyStream, BodyWatch) {
    let watch = BodyWatch::default();
    let ended = watch.clone();
    // One piece waiting: memory stays at about two pieces per body.
    let (pieces, received) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        let mut body = body.into_data_stream();
        let mut read = 0u64;
        let mut consumer = Some(pieces);
        loop {
            let failure = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => {
                    let _ = ended.0.set(EarlyEnd::Stalled);
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "the body stalled")
                }
                Ok(None) => return,
                Ok(Some(Err(error))) => std::io::Error::other(error),
                Ok(Some(Ok(piece))) => {
                    read = read.saturating_add(piece.len() as u64);
                    if read > limit {
                        let _ = ended.0.set(EarlyEnd::OverLimit);
                        std::io::Error::other("the body is over its limit")
                    } else {
                        if let Some(to) = &consumer {
                            if to.send(Ok(piece)).await.is_err() {
                                consumer = None;
                            }
                        }
                        continue;
                    }
                }
            };
            if let Some(to) = consumer.take() {
                let _ = to.send(Err(failure)).await;
            }
            return;
        }
    });
    let stream = futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|item| (item, received))
    });
    (stream.boxed(), watch)
}
