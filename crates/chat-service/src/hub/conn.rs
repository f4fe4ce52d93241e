//! The hub's view of one connection: a bounded outbound queue and a way to
//! evict the connection when that queue overflows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, Notify};

pub(crate) type ConnId = u64;

/// An encoded frame, encoded once per broadcast; clones share the bytes.
/// Queues hold it as one thin pointer: every connection keeps a few queue
/// blocks for its whole life, so the slot size is paid per idle client.
#[derive(Clone, Debug)]
pub(crate) struct Frame(Arc<Utf8Bytes>);

impl Frame {
    pub(crate) fn new(text: String) -> Frame {
        Frame(Arc::new(Utf8Bytes::from(text)))
    }

    /// The bytes to write; a reference count, not a copy.
    pub(crate) fn text(&self) -> Utf8Bytes {
        (*self.0).clone()
    }
}

/// Tells the connection's task to close because its client fell behind.
#[derive(Default)]
pub(crate) struct Eviction {
    evicted: AtomicBool,
    notify: Notify,
}

impl Eviction {
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Resolves once the connection has been evicted.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_evicted() {
                return;
            }
            notified.await;
        }
    }

    /// Returns true the first time only, so the cut-off is counted once.
    fn evict(&self) -> bool {
        let first = !self.evicted.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_waiters();
        }
        first
    }
}

/// Cheap to clone; held by every room the connection is in.
#[derive(Clone)]
pub(crate) struct ConnHandle {
    pub(crate) id: ConnId,
    pub(crate) user_id: Arc<str>,
    tx: mpsc::Sender<Frame>,
    eviction: Arc<Eviction>,
}

/// What happened to one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// The queue was full: the connection is now evicted (first time only).
    Evicted {
        first: bool,
    },
    /// The connection is already gone or going.
    Gone,
}

impl ConnHandle {
    pub(crate) fn new(
        id: ConnId,
        user_id: Arc<str>,
        queue_len: usize,
    ) -> (ConnHandle, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(queue_len.max(1));
        let handle = ConnHandle {
            id,
            user_id,
            tx,
            eviction: Arc::new(Eviction::default()),
        };
        (handle, rx)
    }

    pub(crate) fn eviction(&self) -> &Eviction {
        &self.eviction
    }

    /// Never waits: a client that stops reading must not slow its room.
    pub(crate) fn push(&self, frame: &Frame) -> Push {
        if self.eviction.is_evicted() {
            return Push::Gone;
        }
        match self.tx.try_send(frame.clone()) {
            Ok(()) => Push::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Push::Evicted {
                first: self.evict(),
            },
            Err(mpsc::error::TrySendError::Closed(_)) => Push::Gone,
        }
    }

    /// Cuts the connection off as a slow consumer; true the first time.
    pub(crate) fn evict(&self) -> bool {
        self.eviction.evict()
    }

    /// For replies to the connection's own requests: waits for room in the
    /// queue, since the reader is the one producing them and may pause.
    pub(crate) async fn send(&self, frame: Frame) {
        let _ = self.tx.send(frame).await;
    }
}
