//! The hub's view of one connection: an outbound queue bounded in bytes,
//! and a way to evict the connection when it falls behind.
//!
//! Every frame for a client goes through this queue, broadcasts and the
//! connection's own replies alike, so one budget bounds what a client that
//! stops reading can pin. Broadcasts never wait: a full queue evicts. Replies
//! wait for the client to read (that is what paces a recovery replay), but
//! only for so long: a connection that cannot take its own replies is
//! evicted too.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use chat_proto::RoomId;
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

    /// A frame from bytes that arrived from elsewhere; `None` if they are
    /// not UTF-8.
    pub(crate) fn from_bytes(bytes: bytes::Bytes) -> Option<Frame> {
        Utf8Bytes::try_from(bytes)
            .ok()
            .map(|text| Frame(Arc::new(text)))
    }

    /// The bytes to write; a reference count, not a copy.
    pub(crate) fn text(&self) -> Utf8Bytes {
        (*self.0).clone()
    }

    /// The same bytes, to carry elsewhere; a reference count, not a copy.
    pub(crate) fn bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(self.text())
    }

    /// What the frame counts against a queue's byte budget. A shared frame
    /// counts fully in every queue that holds it: that is what the client
    /// would pin if it were the last holder.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// State shared by a connection's handles and its writer.
#[derive(Default)]
struct Outbound {
    /// Bytes queued and not yet taken by the writer.
    queued: AtomicUsize,
    evicted: AtomicBool,
    /// Woken on eviction.
    eviction: Notify,
    /// Woken when the writer has taken frames, for replies waiting on room.
    drained: Notify,
    /// Messages this connection sent that the writer has not answered yet
    /// (echo or error): a closing connection waits for them.
    unanswered: AtomicUsize,
    answered: Notify,
    /// The connection said it is away.
    away: AtomicBool,
    /// Rooms the connection was taken out of (a removed membership) that
    /// its session has not yet forgotten.
    removed_from: Mutex<Vec<RoomId>>,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// The queue was over its budget: the connection is now evicted (first
    /// time only).
    Evicted {
        first: bool,
    },
    /// The connection is already gone or going.
    Gone,
}

/// Cheap to clone; held by every room the connection is in.
#[derive(Clone)]
pub(crate) struct ConnHandle {
    pub(crate) id: ConnId,
    pub(crate) user_id: Arc<str>,
    /// The name others see for the user on this connection when no
    /// message says otherwise: the token's, else the user id.
    pub(crate) username: Arc<str>,
    tx: mpsc::UnboundedSender<Frame>,
    outbound: Arc<Outbound>,
    budget: usize,
    membership: Arc<Mutex<()>>,
}

/// The writer's end of a connection's queue.
pub(crate) struct OutboundQueue {
    rx: mpsc::UnboundedReceiver<Frame>,
    outbound: Arc<Outbound>,
}

impl OutboundQueue {
    /// The next frame; `None` once every handle is gone.
    pub(crate) async fn recv(&mut self) -> Option<Frame> {
        let frame = self.rx.recv().await?;
        self.taken(&frame);
        Some(frame)
    }

    pub(crate) fn try_recv(&mut self) -> Option<Frame> {
        let frame = self.rx.try_recv().ok()?;
        self.taken(&frame);
        Some(frame)
    }

    fn taken(&self, frame: &Frame) {
        self.outbound
            .queued
            .fetch_sub(frame.len(), Ordering::AcqRel);
    }

    /// Lets replies waiting for room try again; called once per batch
    /// written, not per frame.
    pub(crate) fn wake_waiting_replies(&self) {
        self.outbound.drained.notify_waiters();
    }
}

impl ConnHandle {
    /// A connection whose queue holds at most `budget` bytes; a frame
    /// larger than the budget is still taken when the queue is empty, so
    /// no reply the server builds can be too big to ever send.
    pub(crate) fn new(
        id: ConnId,
        user_id: Arc<str>,
        username: Arc<str>,
        budget: usize,
        membership: Arc<Mutex<()>>,
    ) -> (ConnHandle, OutboundQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbound = Arc::new(Outbound::default());
        let handle = ConnHandle {
            id,
            user_id,
            username,
            tx,
            outbound: outbound.clone(),
            budget,
            membership,
        };
        (handle, OutboundQueue { rx, outbound })
    }

    /// The user's membership lock, shared by all their connections: held
    /// while a room membership change is made and announced, so that one
    /// tab leaving as another joins cannot announce in the wrong order.
    /// Never held across an `.await`.
    pub(crate) fn membership(&self) -> MutexGuard<'_, ()> {
        lock(&self.membership)
    }

    /// Records whether the connection is away; returns what it was.
    pub(crate) fn set_away(&self, away: bool) -> bool {
        self.outbound.away.swap(away, Ordering::AcqRel)
    }

    pub(crate) fn is_away(&self) -> bool {
        self.outbound.away.load(Ordering::Acquire)
    }

    /// The connection was taken out of a room behind its session's back.
    pub(crate) fn removed_from(&self, room: RoomId) {
        lock(&self.outbound.removed_from).push(room);
    }

    /// The rooms it was taken out of since last asked.
    pub(crate) fn take_removals(&self) -> Vec<RoomId> {
        std::mem::take(&mut *lock(&self.outbound.removed_from))
    }

    pub(crate) fn is_evicted(&self) -> bool {
        self.outbound.evicted.load(Ordering::Acquire)
    }

    /// Resolves once the connection has been evicted.
    pub(crate) async fn evicted(&self) {
        loop {
            let notified = self.outbound.eviction.notified();
            if self.is_evicted() {
                return;
            }
            notified.await;
        }
    }

    /// Cuts the connection off as a slow consumer; true the first time, so
    /// the cut-off is counted once.
    pub(crate) fn evict(&self) -> bool {
        let first = !self.outbound.evicted.swap(true, Ordering::AcqRel);
        if first {
            self.outbound.eviction.notify_waiters();
        }
        first
    }

    /// Reserves room for `len` bytes if the queue has it.
    fn reserve(&self, len: usize) -> bool {
        let budget = self.budget;
        self.outbound
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued == 0 || queued + len <= budget).then_some(queued + len)
            })
            .is_ok()
    }

    fn enqueue(&self, frame: &Frame) -> Push {
        match self.tx.send(frame.clone()) {
            Ok(()) => Push::Queued,
            Err(_) => {
                self.outbound
                    .queued
                    .fetch_sub(frame.len(), Ordering::AcqRel);
                Push::Gone
            }
        }
    }

    /// For broadcasts. Never waits: a client that stops reading must not
    /// slow its room, so one over its budget is evicted.
    pub(crate) fn push(&self, frame: &Frame) -> Push {
        if self.is_evicted() {
            return Push::Gone;
        }
        if self.reserve(frame.len()) {
            self.enqueue(frame)
        } else {
            Push::Evicted {
                first: self.evict(),
            }
        }
    }

    /// For replies to the connection's own requests: waits until the client
    /// has read enough for the frame to fit, at most `patience`; a client
    /// that does not read that long is evicted.
    pub(crate) async fn reply(&self, frame: Frame, patience: Duration) -> Push {
        let waited = tokio::time::timeout(patience, async {
            loop {
                let drained = self.outbound.drained.notified();
                tokio::pin!(drained);
                // Registered before the check, so a drain in between is not missed.
                drained.as_mut().enable();
                if self.is_evicted() {
                    return Push::Gone;
                }
                if self.reserve(frame.len()) {
                    return self.enqueue(&frame);
                }
                tokio::select! {
                    () = drained => {}
                    () = self.evicted() => return Push::Gone,
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| Push::Evicted {
            first: self.evict(),
        })
    }

    /// A message from this connection went to the writer; its answer (the
    /// echo or an error) is owed.
    pub(crate) fn expect_answer(&self) {
        self.outbound.unanswered.fetch_add(1, Ordering::AcqRel);
    }

    /// The writer answered (queued the echo or the error).
    pub(crate) fn answered(&self) {
        if self.outbound.unanswered.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.outbound.answered.notify_waiters();
        }
    }

    /// Resolves once every message this connection sent has been answered.
    pub(crate) async fn all_answered(&self) {
        loop {
            let answered = self.outbound.answered.notified();
            if self.outbound.unanswered.load(Ordering::Acquire) == 0 {
                return;
            }
            answered.await;
        }
    }

    /// The queue's budget in bytes, which also bounds what is held back for
    /// the connection while it recovers.
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
