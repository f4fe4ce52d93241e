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

use crate::config::CallLimits;
use crate::delivery::{Audience, Delivery};
use crate::hub::{self, ConnHandle, ConnId};
use crate::sequencer::{Origin, Sequencer};
use crate::store::{NewCall, NewEvent};

pub(crate) use registry::Invitee;
use registry::{CallError, CallRegistry, CallView, LocalCalls, Party, Timer, Update};

/// Where a callee's call rings.
#[derive(Debug, Clone)]
pub(crate) enum Rings {
    /// On every connection of the user (members-only rooms: their tabs
    /// ring whether they joined the room or not).
    Everywhere,
    /// On these connections (a public room: the user's tabs in it).
    On(Vec<ConnId>),
}

pub(crate) struct Calls {
    registry: Box<dyn CallRegistry>,
    limits: CallLimits,
    bus: Arc<dyn Delivery>,
    sequencer: Sequencer,
    /// Timers stop waiting when the service stops.
    shutdown: CancellationToken,
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

fn party(conn: &ConnHandle) -> Party {
    Party {
        user: conn.user_id.clone(),
        username: conn.username.clone(),
        conn: conn.id,
    }
}

impl Calls {
    pub(crate) fn new(
        limits: CallLimits,
        bus: Arc<dyn Delivery>,
        sequencer: Sequencer,
        shutdown: CancellationToken,
    ) -> Arc<Calls> {
        Arc::new(Calls {
            registry: Box::new(LocalCalls::new()),
            limits,
            bus,
            sequencer,
            shutdown,
        })
    }

    /// Calls the invitees (the session decided who may call, and whom), or
    /// joins the call the room has.
    pub(crate) fn start(
        self: &Arc<Self>,
        caller: &ConnHandle,
        room: &RoomId,
        media: CallMedia,
        invitees: Vec<(Invitee, Rings)>,
    ) -> Result<(), ProtoError> {
        let (people, rings): (Vec<Invitee>, Vec<Rings>) = invitees.into_iter().unzip();
        let called: Vec<Arc<str>> = people.iter().map(|i| i.user.clone()).collect();
        let update = self
            .registry
            .start(
                room,
                media,
                &party(caller),
                people,
                self.limits.max_participants,
            )
            .map_err(refused)?;
        if update.created {
            let ring = CallRing {
                call_id: &update.view.call_id,
                room_id: room.as_str(),
                user_id: &caller.user_id,
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
                match rings {
                    Rings::Everywhere => {
                        let everywhere = Audience::User {
                            user,
                            except: None,
                            outside: None,
                        };
                        self.bus.deliver(everywhere, &frame, None);
                    }
                    Rings::On(conns) => {
                        for conn in conns {
                            self.bus
                                .deliver(Audience::Connection { user, conn }, &frame, None);
                        }
                    }
                }
            }
        }
        self.apply(update, Some(caller));
        Ok(())
    }

    pub(crate) fn accept(
        self: &Arc<Self>,
        conn: &ConnHandle,
        call: &CallId,
    ) -> Result<(), ProtoError> {
        let update = self
            .registry
            .accept(call.as_str(), &party(conn), self.limits.max_participants)
            .map_err(refused)?;
        self.apply(update, Some(conn));
        Ok(())
    }

    pub(crate) fn decline(
        self: &Arc<Self>,
        conn: &ConnHandle,
        call: &CallId,
    ) -> Result<(), ProtoError> {
        let update = self
            .registry
            .decline(call.as_str(), &conn.user_id)
            .map_err(refused)?;
        self.apply(update, Some(conn));
        Ok(())
    }

    pub(crate) fn hangup(
        self: &Arc<Self>,
        conn: &ConnHandle,
        call: &CallId,
    ) -> Result<(), ProtoError> {
        let update = self
            .registry
            .hangup(call.as_str(), &conn.user_id)
            .map_err(refused)?;
        self.apply(update, Some(conn));
        Ok(())
    }

    /// Relays a signal to the one connection its addressee is in the call
    /// with, as it was sent.
    pub(crate) fn signal(
        &self,
        conn: &ConnHandle,
        call: &CallId,
        to: &str,
        signal: &Signal,
    ) -> Result<(), ProtoError> {
        let target = self
            .registry
            .route(call.as_str(), &conn.user_id, conn.id, to)
            .map_err(refused)?;
        let relayed = RelayedSignal {
            call_id: call.as_str(),
            from_user_id: &conn.user_id,
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
    /// back (`chat.call.accept` again) for the reconnect grace period.
    pub(crate) fn connection_closed(self: &Arc<Self>, conn: &ConnHandle) {
        for update in self.registry.dropped(&conn.user_id, conn.id) {
            self.apply(update, Some(conn));
        }
    }

    /// The service is stopping: every call ends (`failed`) and is recorded
    /// while the writer still takes events.
    pub(crate) async fn stop(&self) {
        for update in self.registry.end_all() {
            self.tell(&update.view, None);
            if let Some(record) = update.ended {
                record_call(&self.sequencer, &update.view.room, record).await;
            }
        }
    }

    /// Tells the participants, starts the timers, records an ended call.
    /// An unchanged call is only told again to whoever asked.
    fn apply(self: &Arc<Self>, update: Update, asked: Option<&ConnHandle>) {
        self.tell(&update.view, asked.filter(|_| !update.changed));
        for timer in update.timers {
            self.schedule(timer);
        }
        if let Some(record) = update.ended {
            let sequencer = self.sequencer.clone();
            let room = update.view.room.clone();
            tokio::spawn(async move { record_call(&sequencer, &room, record).await });
        }
    }

    /// `chat.call.state` to each participant's connections (or to one
    /// connection only), each copy naming who it is for.
    fn tell(&self, view: &CallView, only: Option<&ConnHandle>) {
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
        if let Some(conn) = only {
            let audience = Audience::Connection {
                user: &conn.user_id,
                conn: conn.id,
            };
            self.bus.deliver(audience, &state(&conn.user_id), None);
            return;
        }
        for participant in &view.participants {
            let user = &participant.user_id;
            let audience = Audience::User {
                user,
                except: None,
                outside: None,
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
