//! The single writer: takes accepted durable events (messages, edits,
//! deletions, reactions) in arrival order, commits them in batches (group
//! commit), and only then delivers them through the delivery seam. One
//! writer per process gives each room one order, so `seq`s reach members
//! increasing and without gaps, and events from one connection keep the
//! order they were sent in.

use std::sync::Arc;
use std::time::Instant;

use chat_proto::{ErrorCode, RoomEvent, ServerEvent};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::delivery::{Audience, Delivery, Within};
use crate::hub::{self, ConnHandle};
use crate::metrics::Metrics;
use crate::store::{Appended, NewEvent, Refusal, Store};

/// Largest batch committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Accepted events waiting for the writer before senders are slowed down.
const QUEUE_LEN: usize = 8192;

struct Submission {
    event: NewEvent,
    origin: Origin,
    /// For a message in a direct conversation, its two participants: their
    /// connections not in it are sent `chat.dm.incoming`.
    dm: Option<[Arc<str>; 2]>,
}

/// Who waits for a submission's outcome.
pub(crate) enum Origin {
    /// A client's event: its connection gets the echo or an error.
    Connection(ConnHandle),
    /// The internal API (system messages, moderation): told how it went.
    Api(oneshot::Sender<Result<Delivered, NotStored>>),
}

/// A stored event and how many connections it reached.
pub(crate) struct Delivered {
    pub(crate) event: RoomEvent,
    pub(crate) reached: usize,
}

/// Why an event was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotStored {
    /// Refused for what it asks, or by the database for what it holds.
    Refused(Refusal),
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
        bus: Arc<dyn Delivery>,
        metrics: Arc<Metrics>,
    ) -> (Sequencer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let task = tokio::spawn(write_loop(rx, store, bus, metrics));
        (Sequencer { tx }, task)
    }

    /// Queues an event for commit and delivery. Waits when the writer is
    /// behind, which slows the sender instead of growing memory.
    pub(crate) async fn submit(
        &self,
        event: NewEvent,
        origin: Origin,
        dm: Option<[Arc<str>; 2]>,
    ) -> bool {
        self.tx.send(Submission { event, origin, dm }).await.is_ok()
    }
}

/// What the sender of a refused event is told.
fn refusal_error(refusal: &Refusal) -> (ErrorCode, &'static str) {
    match refusal {
        Refusal::NotFound => (ErrorCode::NotFound, "No such message in this room"),
        Refusal::Forbidden => (
            ErrorCode::Forbidden,
            "Only the author of a message may change it",
        ),
        Refusal::TooManyReactions => (
            ErrorCode::TooManyReactions,
            "This message has the most distinct reactions it may have",
        ),
        Refusal::InvalidAttachment => (
            ErrorCode::InvalidAttachment,
            "Attach only files you uploaded to this room and have not sent yet",
        ),
        // Sending it again would fail again, unlike `store_unavailable`.
        Refusal::Rejected(_) => (
            ErrorCode::InvalidMessage,
            "Refused by the message store; it was not delivered",
        ),
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<Submission>,
    store: Store,
    bus: Arc<dyn Delivery>,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<Submission> = Vec::with_capacity(MAX_BATCH);
    let mut origins: Vec<(Origin, Option<[Arc<str>; 2]>)> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let started = Instant::now();
        // The events move to the store (and maybe another thread).
        let mut events: Vec<NewEvent> = Vec::with_capacity(batch.len());
        for submission in batch.drain(..) {
            events.push(submission.event);
            origins.push((submission.origin, submission.dm));
        }
        match store.append(events).await {
            Ok(appended) => {
                metrics
                    .commit_seconds
                    .record(started.elapsed().as_secs_f64());
                // The store returns the batch in the order it was given.
                for ((origin, dm), row) in origins.drain(..).zip(appended) {
                    match row {
                        Appended::Stored(event) => {
                            let fanout_started = Instant::now();
                            let mut reached = bus.room_event(&event, None);
                            if let (Some(participants), RoomEvent::Message(message)) = (&dm, &event)
                            {
                                reached += notify_participants(bus.as_ref(), participants, message);
                            }
                            metrics
                                .fanout_seconds
                                .record(fanout_started.elapsed().as_secs_f64());
                            origin.delivered(event, reached);
                        }
                        // A resend: the room has it; its sender gets the
                        // original's echo again, to match its pending copy.
                        Appended::Repeated(message) => {
                            let event = RoomEvent::Message(message);
                            if let Origin::Connection(sender) = &origin {
                                sender.push(&hub::frame(&event.as_server_event()));
                            }
                            origin.delivered(event, 0);
                        }
                        Appended::Unchanged => origin.unchanged(),
                        Appended::Refused(refusal) => {
                            let (code, message) = refusal_error(&refusal);
                            metrics.error(code);
                            let error = hub::frame(&ServerEvent::Error { message, code });
                            origin.not_stored(NotStored::Refused(refusal), &error);
                        }
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, events = origins.len(), "storing events failed; senders told");
                let refusal = hub::frame(&ServerEvent::Error {
                    message: "Could not be stored; it was not delivered",
                    code: ErrorCode::StoreUnavailable,
                });
                for (origin, _) in origins.drain(..) {
                    metrics.error(ErrorCode::StoreUnavailable);
                    origin.not_stored(NotStored::Unavailable, &refusal);
                }
            }
        }
    }
}

/// A direct message reaches both participants even where they are not in
/// the conversation: each of their connections outside it gets
/// `chat.dm.incoming`, once, naming the other participant.
fn notify_participants(
    bus: &dyn Delivery,
    participants: &[Arc<str>; 2],
    message: &chat_proto::ChatMessage,
) -> usize {
    let mut reached = 0;
    for (user, peer) in [
        (&participants[0], &participants[1]),
        (&participants[1], &participants[0]),
    ] {
        let frame = hub::frame(&ServerEvent::DmIncoming {
            room_id: &message.room_id,
            user_id: &message.user_id,
            username: &message.username,
            message,
            dm: chat_proto::DmPeer { user_id: peer },
        });
        reached += bus.deliver(
            Audience::User {
                user,
                except: None,
                within: Within::Outside(&message.room_id),
            },
            &frame,
            None,
        );
    }
    reached
}

impl Origin {
    /// Stored and delivered (or a resend answered).
    fn delivered(self, event: RoomEvent, reached: usize) {
        match self {
            Origin::Connection(sender) => sender.answered(),
            Origin::Api(reply) => {
                let _ = reply.send(Ok(Delivered { event, reached }));
            }
        }
    }

    /// Nothing to store and nothing to say (a no-op).
    fn unchanged(self) {
        match self {
            Origin::Connection(sender) => sender.answered(),
            Origin::Api(reply) => {
                let _ = reply.send(Err(NotStored::Refused(Refusal::NotFound)));
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
