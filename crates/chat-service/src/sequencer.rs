//! The single writer: takes accepted messages in arrival order, commits
//! them in batches (group commit), and only then delivers them. One writer
//! per process gives each room one order, so `seq`s reach members
//! increasing and without gaps, and messages from one connection keep the
//! order they were sent in.

use std::sync::Arc;
use std::time::Instant;

use chat_proto::{ChatMessage, ErrorCode, RoomId, ServerEvent};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::hub::{self, ConnHandle, Hub};
use crate::metrics::Metrics;
use crate::store::{Accepted, NewMessage, Store};

/// Largest batch committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Accepted messages waiting for the writer before senders are slowed down.
const QUEUE_LEN: usize = 8192;

struct Submission {
    message: NewMessage,
    origin: Origin,
}

/// Who waits for a submission's outcome.
pub(crate) enum Origin {
    /// A client's message: its connection gets the echo or an error.
    Connection(ConnHandle),
    /// The internal API's system message: told how it went.
    Api(oneshot::Sender<Result<Delivered, NotStored>>),
}

/// A stored system message and how many connections it reached.
pub(crate) struct Delivered {
    pub(crate) message: ChatMessage,
    pub(crate) reached: usize,
}

/// Why a system message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    /// The database refused it.
    Refused,
    /// The database is unavailable.
    Unavailable,
}

#[derive(Clone)]
pub(crate) struct Sequencer {
    tx: mpsc::Sender<Submission>,
}

impl Sequencer {
    pub(crate) fn start(
        store: Store,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> (Sequencer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let task = tokio::spawn(write_loop(rx, store, hub, metrics));
        (Sequencer { tx }, task)
    }

    /// Queues a message for commit and delivery. Waits when the writer is
    /// behind, which slows the sender instead of growing memory.
    pub(crate) async fn submit(&self, message: NewMessage, origin: Origin) -> bool {
        self.tx.send(Submission { message, origin }).await.is_ok()
    }
}

/// Said to the sender of a message the database refused on its own:
/// sending it again would fail again, unlike `store_unavailable`.
fn refused_row() -> hub::Frame {
    hub::frame(&ServerEvent::Error {
        message: "Message refused by the message store; it was not delivered",
        code: ErrorCode::InvalidMessage,
    })
}

async fn write_loop(
    mut rx: mpsc::Receiver<Submission>,
    store: Store,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<Submission> = Vec::with_capacity(MAX_BATCH);
    let mut rooms: Vec<RoomId> = Vec::with_capacity(MAX_BATCH);
    let mut origins: Vec<Origin> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let started = Instant::now();
        // The messages move to the store (and maybe another thread); the
        // rooms stay here for delivery.
        let mut messages: Vec<NewMessage> = Vec::with_capacity(batch.len());
        for submission in batch.drain(..) {
            rooms.push(submission.message.room_id.clone());
            messages.push(submission.message);
            origins.push(submission.origin);
        }
        match store.append(messages).await {
            Ok(appended) => {
                metrics
                    .commit_seconds
                    .record(started.elapsed().as_secs_f64());
                // The store returns the batch in the order it was given.
                for ((room, origin), row) in rooms.iter().zip(origins.drain(..)).zip(appended) {
                    match row {
                        Ok(Accepted {
                            message,
                            repeated: false,
                        }) => {
                            let fanout_started = Instant::now();
                            let frame = hub::frame(&ServerEvent::stored(&message));
                            let reached = hub.broadcast(room, &frame, Some(message.seq));
                            metrics
                                .fanout_seconds
                                .record(fanout_started.elapsed().as_secs_f64());
                            origin.delivered(message, reached);
                        }
                        // A resend: the room has it; its sender gets the
                        // original's echo again, to match its pending copy.
                        Ok(Accepted {
                            message,
                            repeated: true,
                        }) => {
                            if let Origin::Connection(sender) = &origin {
                                sender.push(&hub::frame(&ServerEvent::stored(&message)));
                            }
                            origin.delivered(message, 0);
                        }
                        Err(_) => {
                            metrics.error(ErrorCode::InvalidMessage);
                            origin.not_stored(NotStored::Refused, &refused_row());
                        }
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, messages = origins.len(), "storing messages failed; senders told");
                let refusal = hub::frame(&ServerEvent::Error {
                    message: "Message could not be stored; it was not delivered",
                    code: ErrorCode::StoreUnavailable,
                });
                for origin in origins.drain(..) {
                    metrics.error(ErrorCode::StoreUnavailable);
                    origin.not_stored(NotStored::Unavailable, &refusal);
                }
            }
        }
        rooms.clear();
    }
}

impl Origin {
    /// Stored and delivered (or a resend answered).
    fn delivered(self, message: ChatMessage, reached: usize) {
        match self {
            Origin::Connection(sender) => sender.answered(),
            Origin::Api(reply) => {
                let _ = reply.send(Ok(Delivered { message, reached }));
            }
        }
    }

    /// Not stored: a connection is sent `error`, the API told why.
    fn not_stored(self, why: NotStored, error: &hub::Frame) {
        match self {
            Origin::Connection(sender) => {
                sender.push(error);
                sender.answered();
            }
            Origin::Api(reply) => {
                let _ = reply.send(Err(why));
            }
        }
    }
}
