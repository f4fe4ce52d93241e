//! Voice and video calls: the service rings, relays signaling between the
//! two connections of each pair, keeps the calls' state and records each
//! call that ends in its room's log. Media never passes through here.
//!
//! The rules live in [`registry`] (synchronous, behind a mutex, no I/O).
//! This shell acts on what they decide: every frame goes through the
//! delivery seam, each deadline is a tokio timer that reports back to the
//! registry, and an ended call's record goes to the sequencer like every
//! durable event.

mod registry;

use std::sync::Arc;

use chat_proto::call::{
    CallId, CallMedia, CallRecord, CallRing, CallStateEvent, RelayedSignal, Signal,
};
use chat_proto::{ErrorCode, ProtoError, RoomId, ServerEvent};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::CallLimits;
use crate::delivery::{Audience, Delivery, Within};
use crate::hub::{self, ConnHandle, ConnId};
use crate::sequencer::{Origin, Sequencer};
use crate::store::{NewCall, NewEvent};

use registry::{CallError, CallRegistry, CallView, LocalCalls, Timer, Update};
pub(crate) use registry::{Invitee, Party};

/// Where a callee's call rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rings {
    /// On every connection of the user (members-only rooms: their tabs
    /// ring whether they joined the room or not).
    Everywhere,
    /// On the user's connections in the room (a public room).
    InRoom,
}

/// What is asked of a call: by a connection of this node, or (in cluster
/// mode) sent by another node to the one that holds the call.
#[derive(Debug, Clone)]
pub(crate) enum CallOp {
    Start {
        room: RoomId,
        media: CallMedia,
        caller: Party,
        invitees: Vec<(Invitee, Rings)>,
    },
    Accept {
        call: CallId,
        who: Party,
    },
    Decline {
        call: CallId,
        who: Party,
    },
    Hangup {
        call: CallId,
        who: Party,
    },
    Signal {
        call: CallId,
        who: Party,
        to: Arc<str>,
        signal: Signal,
    },
    /// The connection closed.
    Dropped {
        user: Arc<str>,
        conn: ConnId,
    },
}

pub(crate) struct Calls {
    registry: Box<dyn CallRegistry>,
    limits: CallLimits,
    bus: Arc<dyn Delivery>,
    sequencer: Sequencer,
    /// Timers stop waiting when the service stops.
    shutdown: CancellationToken,
    /// In cluster mode: calls are held by the node where they started, and
    /// what is asked of one elsewhere is sent there.
    cluster: Option<Arc<Cluster>>,
}

fn refused(error: CallError) -> ProtoError {
    match error {
        CallError::NotFound => ProtoError::new(ErrorCode::NotFound, "No such call, or it ended"),
        CallError::Forbidden(why) => ProtoError::new(ErrorCode::Forbidden, why),
        CallError::Full => ProtoError::new(
            ErrorCode::CallFull,
            "This call has as many participants as it may have",
        ),
    }
}

/// Who asks, on which connection.
pub(crate) fn party(conn: &ConnHandle) -> Party {
    Party {
        user: conn.user_id.clone(),
        username: conn.username.clone(),
        conn: conn.id,
    }
}

/// The node a call id names (cluster mode prefixes ids with it).
pub(crate) fn owner_of(call: &str) -> Option<u64> {
    let (node, _) = call.split_once('.')?;
    u64::from_str_radix(node, 16).ok()
}

impl Calls {
    pub(crate) fn new(
        limits: CallLimits,
        bus: Arc<dyn Delivery>,
        sequencer: Sequencer,
        shutdown: CancellationToken,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Calls> {
        let registry = match &cluster {
            Some(cluster) => LocalCalls::with_prefix(format!("{:016x}.", cluster.node())),
            None => LocalCalls::new(),
        };
        Arc::new(Calls {
            registry: Box::new(registry),
            limits,
            bus,
            sequencer,
            shutdown,
            cluster,
        })
    }

    /// The node holding the call, when it is another one.
    fn elsewhere(&self, call: &str) -> Option<(&Arc<Cluster>, u64)> {
        let cluster = self.cluster.as_ref()?;
        let owner = owner_of(call)?;
        (owner != cluster.node()).then_some((cluster, owner))
    }

    /// Does what is asked, here or (in cluster mode) on the node that holds
    /// the call; returns the nodes it went to other than this one, so a
    /// connection that closes can tell them.
    pub(crate) async fn ask(self: &Arc<Self>, op: CallOp) -> Result<Option<u64>, ProtoError> {
        let call = match &op {
            CallOp::Start { room, .. } => {
                if let Some(cluster) = &self.cluster {
                    // One call per room over the cluster: the node that
                    // holds the room's calls takes the start.
                    if let Some(owner) = cluster.claim_calls(room).await {
                        if owner != cluster.node() {
                            cluster.send_call(owner, &op);
                            return Ok(Some(owner));
                        }
                    }
                }
                None
            }
            CallOp::Accept { call, .. }
            | CallOp::Decline { call, .. }
            | CallOp::Hangup { call, .. }
            | CallOp::Signal { call, .. } => Some(call.as_str()),
            CallOp::Dropped { .. } => None,
        };
        if let Some((cluster, owner)) = call.and_then(|call| self.elsewhere(call)) {
            cluster.send_call(owner, &op);
            return Ok(Some(owner));
        }
        self.here(op).map(|()| None)
    }

    /// What another node sends this one, for the calls it holds: done as
    /// if asked here; a refusal goes to the connection that asked.
    pub(crate) fn from_elsewhere(self: &Arc<Self>, op: CallOp) {
        let asked = match &op {
            CallOp::Start { caller, .. } => Some(caller.clone()),
            CallOp::Accept { who, .. }
            | CallOp::Decline { who, .. }
            | CallOp::Hangup { who, .. }
            | CallOp::Signal { who, .. } => Some(who.clone()),
            CallOp::Dropped { .. } => None,
        };
        if let Err(error) = self.here(op) {
            if let Some(who) = asked {
                let frame = hub::frame(&ServerEvent::Error {
                    message: &error.message,
                    code: error.code,
                });
                self.bus.deliver(
                    Audience::Connection {
                        user: &who.user,
                        conn: who.conn,
                    },
                    &frame,
                    None,
                );
            }
        }
    }

    fn here(self: &Arc<Self>, op: CallOp) -> Result<(), ProtoError> {
        match op {
            CallOp::Start {
                room,
                media,
                caller,
                invitees,
            } => self.start(&caller, &room, media, invitees),
            CallOp::Accept { call, who } => {
                let update =
                    self.registry
                        .accept(call.as_str(), &who, self.limits.max_participants);
                self.answered(update, &who)
            }
            CallOp::Decline { call, who } => {
                let update = self.registry.decline(call.as_str(), &who.user);
                self.answered(update, &who)
            }
            CallOp::Hangup { call, who } => {
                let update = self.registry.hangup(call.as_str(), &who.user);
                self.answered(update, &who)
            }
            CallOp::Signal {
                call,
                who,
                to,
                signal,
            } => self.signal(&who, &call, &to, &signal),
            CallOp::Dropped { user, conn } => {
                let asked = Party {
                    username: user.clone(),
                    user,
                    conn,
                };
                for update in self.registry.dropped(&asked.user, conn) {
                    self.apply(update, Some(&asked));
                }
                Ok(())
            }
        }
    }

    /// What one participant asked for was decided: refused, or applied.
    fn answered(
        self: &Arc<Self>,
        update: Result<Update, CallError>,
        who: &Party,
    ) -> Result<(), ProtoError> {
        self.apply(update.map_err(refused)?, Some(who));
        Ok(())
    }

    /// Calls the invitees (the session decided who may call, and whom), or
    /// joins the call the room has.
    fn start(
        self: &Arc<Self>,
        caller: &Party,
        room: &RoomId,
        media: CallMedia,
        invitees: Vec<(Invitee, Rings)>,
    ) -> Result<(), ProtoError> {
        let (people, rings): (Vec<Invitee>, Vec<Rings>) = invitees.into_iter().unzip();
        let called: Vec<Arc<str>> = people.iter().map(|i| i.user.clone()).collect();
        let update = self
            .registry
            .start(room, media, caller, people, self.limits.max_participants)
            .map_err(refused)?;
        if update.created {
            let ring = CallRing {
                call_id: &update.view.call_id,
                room_id: room.as_str(),
                user_id: &caller.user,
                username: &caller.username,
                media,
            };
            let frame = hub::frame(&ServerEvent::CallRing(&ring));
            // Only those the call lists ring (a crowded room rings its first
            // members).
            for (user, rings) in called.iter().zip(rings) {
                if !update.view.participants.iter().any(|p| p.user_id == *user) {
                    continue;
                }
                let within = match rings {
                    Rings::Everywhere => Within::Anywhere,
                    Rings::InRoom => Within::Inside(room.as_str()),
                };
                let audience = Audience::User {
                    user,
                    except: None,
                    within,
                };
                self.bus.deliver(audience, &frame, None);
            }
        }
        self.apply(update, Some(caller));
        Ok(())
    }

    /// Relays a signal to the one connection its addressee is in the call
    /// with, as it was sent.
    fn signal(
        &self,
        from: &Party,
        call: &CallId,
        to: &str,
        signal: &Signal,
    ) -> Result<(), ProtoError> {
        let target = self
            .registry
            .route(call.as_str(), &from.user, from.conn, to)
            .map_err(refused)?;
        let relayed = RelayedSignal {
            call_id: call.as_str(),
            from_user_id: &from.user,
            signal: signal.raw(),
        };
        let frame = hub::frame(&ServerEvent::CallSignal(&relayed));
        self.bus.deliver(
            Audience::Connection {
                user: to,
                conn: target,
            },
            &frame,
            None,
        );
        Ok(())
    }

    /// The connection closed: the calls it was in wait for the user to come
    /// back (`chat.call.accept` again) for the reconnect grace period;
    /// `elsewhere` are the nodes holding calls it took part in.
    pub(crate) fn connection_closed(
        self: &Arc<Self>,
        conn: &ConnHandle,
        elsewhere: impl IntoIterator<Item = u64>,
    ) {
        let dropped = CallOp::Dropped {
            user: conn.user_id.clone(),
            conn: conn.id,
        };
        if let Some(cluster) = &self.cluster {
            for node in elsewhere {
                cluster.send_call(node, &dropped);
            }
        }
        let _ = self.here(dropped);
    }

    /// The service is stopping: every call ends (`failed`) and is recorded
    /// while the writer still takes events.
    pub(crate) async fn stop(&self) {
        for update in self.registry.end_all() {
            self.tell(&update.view, None);
            if let Some(cluster) = &self.cluster {
                cluster.release_calls(&update.view.room).await;
            }
            if let Some(record) = update.ended {
                record_call(&self.sequencer, &update.view.room, record).await;
            }
        }
    }

    /// Tells the participants, starts the timers, records an ended call.
    /// An unchanged call is only told again to whoever asked.
    fn apply(self: &Arc<Self>, update: Update, asked: Option<&Party>) {
        self.tell(&update.view, asked.filter(|_| !update.changed));
        for timer in update.timers {
            self.schedule(timer);
        }
        if let Some(record) = update.ended {
            let sequencer = self.sequencer.clone();
            let room = update.view.room.clone();
            let cluster = self.cluster.clone();
            tokio::spawn(async move {
                if let Some(cluster) = cluster {
                    cluster.release_calls(&room).await;
                }
                record_call(&sequencer, &room, record).await
            });
        }
    }

    /// `chat.call.state` to each participant's connections (or to one
    /// connection only), each copy naming who it is for.
    fn tell(&self, view: &CallView, only: Option<&Party>) {
        let state = |you: &str| {
            hub::frame(&ServerEvent::CallState(&CallStateEvent {
                call_id: &view.call_id,
                room_id: view.room.as_str(),
                state: view.phase,
                media: view.media,
                participants: &view.participants,
                reason: view.reason,
                you,
            }))
        };
        if let Some(asked) = only {
            let audience = Audience::Connection {
                user: &asked.user,
                conn: asked.conn,
            };
            self.bus.deliver(audience, &state(&asked.user), None);
            return;
        }
        for participant in &view.participants {
            let user = &participant.user_id;
            let audience = Audience::User {
                user,
                except: None,
                within: Within::Anywhere,
            };
            self.bus.deliver(audience, &state(user), None);
        }
    }

    fn schedule(self: &Arc<Self>, timer: Timer) {
        let wait = match timer {
            Timer::Ring { .. } => self.limits.ring_timeout,
            Timer::Reconnect { .. } => self.limits.reconnect_grace,
        };
        let calls = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = calls.shutdown.cancelled() => return,
            }
            if let Some(update) = calls.registry.expired(&timer) {
                calls.apply(update, None);
            }
        });
    }
}

/// Stores the record in the room's log; the sequencer delivers it
/// (`chat.call.ended`) once committed.
async fn record_call(sequencer: &Sequencer, room: &RoomId, record: CallRecord) {
    let call_id = record.call_id.clone();
    let (told, outcome) = oneshot::channel();
    let event = NewEvent::CallEnded(NewCall {
        room_id: room.clone(),
        record,
    });
    if !sequencer.submit(event, Origin::Api(told), None).await {
        tracing::warn!(call = ?call_id, "a call ended as the service stopped; not recorded");
        return;
    }
    match outcome.await {
        Ok(Ok(_)) => {}
        Ok(Err(why)) => tracing::warn!(call = ?call_id, ?why, "recording a call failed"),
        Err(_) => tracing::warn!(call = ?call_id, "recording a call was abandoned"),
    }
}
