//! The calls of this process and the rules of their life: plain
//! synchronous state behind one mutex, no I/O. Every operation returns what
//! changed ([`Update`]) and the shell (`calls/mod.rs`) tells the
//! participants, schedules the timers and records the calls that ended.
//!
//! [`CallRegistry`] is the interface the shell uses; [`LocalCalls`] keeps
//! the calls in memory. A cluster would put another implementation behind
//! it (the state in a shared store, operations as its transactions), since
//! nothing here holds a connection: a participant's connection is its id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chat_proto::call::{
    CallMedia, CallParticipant, CallPhase, CallRecord, EndReason, ParticipantState,
};
use chat_proto::RoomId;

use crate::hub::ConnId;

/// Most people one call lists: those called, and those who joined
/// uninvited. A room with more members rings the first ones only.
pub(crate) const MAX_LISTED: usize = 50;

/// Someone taking part in an operation: who, under which name, on which
/// connection.
#[derive(Debug, Clone)]
pub(crate) struct Party {
    pub(crate) user: Arc<str>,
    pub(crate) username: Arc<str>,
    pub(crate) conn: ConnId,
}

/// Someone to call, with the name to show.
#[derive(Debug, Clone)]
pub(crate) struct Invitee {
    pub(crate) user: Arc<str>,
    pub(crate) username: Arc<str>,
}

/// A call as the participants are told it.
#[derive(Debug, Clone)]
pub(crate) struct CallView {
    pub(crate) call_id: Arc<str>,
    pub(crate) room: RoomId,
    pub(crate) phase: CallPhase,
    pub(crate) media: CallMedia,
    pub(crate) participants: Vec<CallParticipant>,
    pub(crate) reason: Option<EndReason>,
}

/// What the shell must do after an operation.
#[derive(Debug)]
pub(crate) struct Update {
    pub(crate) view: CallView,
    /// False when the operation changed nothing (a repeated answer): only
    /// whoever asked is told the state again.
    pub(crate) changed: bool,
    /// The call was created by this operation: the invitees ring.
    pub(crate) created: bool,
    pub(crate) timers: Vec<Timer>,
    /// The call ended: its record, to store in the room's log.
    pub(crate) ended: Option<CallRecord>,
}

/// A deadline the shell waits for, then reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The call stops ringing for those who have not answered.
    Ring { call_id: Arc<str> },
    /// A participant whose connection dropped is gone unless back by then;
    /// `generation` tells this drop from a later one.
    Reconnect {
        call_id: Arc<str>,
        user: Arc<str>,
        generation: u64,
    },
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No such call, or it ended.
    NotFound,
    Forbidden(&'static str),
    /// The call has the most participants it may have.
    Full,
}

/// The calls and their rules; see the module documentation.
pub(crate) trait CallRegistry: Send + Sync {
    /// Calls `invitees` in the room, or joins the call it has already
    /// (a room has one call at a time).
    fn start(
        &self,
        room: &RoomId,
        media: CallMedia,
        caller: &Party,
        invitees: Vec<Invitee>,
        max_participants: usize,
    ) -> Result<Update, CallError>;
    /// Joins on this connection (also: back after a dropped connection).
    fn accept(
        &self,
        call_id: &str,
        who: &Party,
        max_participants: usize,
    ) -> Result<Update, CallError>;
    fn decline(&self, call_id: &str, user: &str) -> Result<Update, CallError>;
    fn hangup(&self, call_id: &str, user: &str) -> Result<Update, CallError>;
    /// The connection a signal from `from` (on `from_conn`) to `to` goes to.
    fn route(
        &self,
        call_id: &str,
        from: &str,
        from_conn: ConnId,
        to: &str,
    ) -> Result<ConnId, CallError>;
    /// A connection closed: the calls it was in wait for the user to come
    /// back.
    fn dropped(&self, user: &str, conn: ConnId) -> Vec<Update>;
    /// A timer's deadline passed.
    fn expired(&self, timer: &Timer) -> Option<Update>;
    /// Ends every call (the service is stopping).
    fn end_all(&self) -> Vec<Update>;
}

struct Participant {
    user: Arc<str>,
    username: Arc<str>,
    state: ParticipantState,
    /// The connection it joined with, while joined.
    conn: Option<ConnId>,
    /// Bumped on every drop and return.
    generation: u64,
}

struct Call {
    id: Arc<str>,
    room: RoomId,
    media: CallMedia,
    started_at_ms: i64,
    /// When someone first accepted: the call is active from then on.
    answered_at_ms: Option<i64>,
    /// The caller first.
    participants: Vec<Participant>,
    /// How the last one to leave went, which names the end of a call that
    /// runs out of participants.
    last_departure: EndReason,
}

impl Call {
    fn phase(&self) -> CallPhase {
        match self.answered_at_ms {
            Some(_) => CallPhase::Active,
            None => CallPhase::Ringing,
        }
    }

    fn participant(&mut self, user: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| &*p.user == user)
    }

    fn count(&self, state: impl Fn(ParticipantState) -> bool) -> usize {
        self.participants.iter().filter(|p| state(p.state)).count()
    }

    fn listed(&self, at_end: bool) -> Vec<CallParticipant> {
        self.participants
            .iter()
            .map(|p| CallParticipant {
                user_id: p.user.clone(),
                username: p.username.clone(),
                state: if at_end { p.state.at_end() } else { p.state },
            })
            .collect()
    }

    fn view(&self, reason: Option<EndReason>) -> CallView {
        CallView {
            call_id: self.id.clone(),
            room: self.room.clone(),
            phase: if reason.is_some() {
                CallPhase::Ended
            } else {
                self.phase()
            },
            media: self.media,
            participants: self.listed(reason.is_some()),
            reason,
        }
    }

    /// Whether the call is over, and why: when nobody is left in it; when
    /// it never got going and nobody is still called; when fewer than two
    /// are left and nobody is still called.
    fn settled(&self) -> Option<EndReason> {
        let present = self.count(ParticipantState::is_present);
        let ringing = self.count(|s| s == ParticipantState::Ringing);
        if present == 0 {
            return Some(self.last_departure);
        }
        match self.phase() {
            CallPhase::Ringing if ringing == 0 => {
                let invited = self.participants.len() - 1;
                let declined = self.count(|s| s == ParticipantState::Declined);
                Some(if invited > 0 && declined == invited {
                    EndReason::Declined
                } else {
                    EndReason::Missed
                })
            }
            CallPhase::Active if present < 2 && ringing == 0 => Some(self.last_departure),
            _ => None,
        }
    }

    fn record(&self, reason: EndReason, ended_at_ms: i64) -> CallRecord {
        let caller = &self.participants[0];
        CallRecord {
            call_id: self.id.to_string(),
            room_id: self.room.as_str().to_owned(),
            media: self.media,
            user_id: caller.user.clone(),
            username: caller.username.clone(),
            started_at_ms: self.started_at_ms,
            ended_at_ms,
            duration_secs: self.answered_at_ms.map_or(0, |answered| {
                u64::try_from((ended_at_ms - answered + 500) / 1000).unwrap_or(0)
            }),
            participants: self.listed(true),
            reason,
            seq: 0,
        }
    }
}

#[derive(Default)]
struct Calls {
    calls: HashMap<Arc<str>, Call>,
    by_room: HashMap<RoomId, Arc<str>>,
    /// The calls each connection is joined to.
    by_conn: HashMap<ConnId, Vec<Arc<str>>>,
}

impl Calls {
    fn bind(&mut self, conn: ConnId, call_id: &Arc<str>) {
        let calls = self.by_conn.entry(conn).or_default();
        if !calls.contains(call_id) {
            calls.push(call_id.clone());
        }
    }

    fn unbind(&mut self, conn: ConnId, call_id: &str) {
        if let Some(calls) = self.by_conn.get_mut(&conn) {
            calls.retain(|c| &**c != call_id);
            if calls.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
    }

    /// The update after a change to the call: it ends if it is settled.
    fn after_change(&mut self, call_id: &str, timers: Vec<Timer>, now_ms: i64) -> Update {
        let call = &self.calls[call_id];
        match call.settled() {
            None => Update {
                view: call.view(None),
                changed: true,
                created: false,
                timers,
                ended: None,
            },
            Some(reason) => self.end(call_id, reason, now_ms),
        }
    }

    fn end(&mut self, call_id: &str, reason: EndReason, now_ms: i64) -> Update {
        let call = self.calls.remove(call_id).expect("ending a known call");
        self.by_room.remove(&call.room);
        for conn in call.participants.iter().filter_map(|p| p.conn) {
            self.unbind(conn, call_id);
        }
        Update {
            view: call.view(Some(reason)),
            changed: true,
            created: false,
            timers: Vec::new(),
            ended: Some(call.record(reason, now_ms)),
        }
    }

    fn unchanged(&self, call_id: &str) -> Update {
        Update {
            view: self.calls[call_id].view(None),
            changed: false,
            created: false,
            timers: Vec::new(),
            ended: None,
        }
    }

    fn join(
        &mut self,
        call_id: &Arc<str>,
        who: &Party,
        invited_only: bool,
        max_participants: usize,
        now_ms: i64,
    ) -> Result<Update, CallError> {
        let call = self.calls.get_mut(call_id).ok_or(CallError::NotFound)?;
        let present = call.count(ParticipantState::is_present);
        let listed = call.participants.len();
        let index = match call.participants.iter().position(|p| p.user == who.user) {
            Some(index) => index,
            None if invited_only => return Err(CallError::Forbidden("You were not called")),
            None if present >= max_participants || listed >= MAX_LISTED => {
                return Err(CallError::Full)
            }
            None => {
                call.participants.push(Participant {
                    user: who.user.clone(),
                    username: who.username.clone(),
                    state: ParticipantState::Left,
                    conn: None,
                    generation: 0,
                });
                listed
            }
        };
        let participant = &mut call.participants[index];
        match participant.state {
            ParticipantState::Joined if participant.conn == Some(who.conn) => {
                return Ok(self.unchanged(call_id));
            }
            ParticipantState::Joined => {
                return Err(CallError::Forbidden(
                    "You are in this call on another connection: hang up there first",
                ))
            }
            ParticipantState::Reconnecting => {}
            _ if present >= max_participants => return Err(CallError::Full),
            _ => {}
        }
        participant.state = ParticipantState::Joined;
        participant.conn = Some(who.conn);
        participant.generation += 1;
        call.answered_at_ms = call.answered_at_ms.or(Some(now_ms));
        self.bind(who.conn, call_id);
        Ok(self.after_change(call_id, Vec::new(), now_ms))
    }

    /// The user leaves: a ringing one declines, one in the call hangs up.
    fn leave(&mut self, call_id: &str, user: &str, now_ms: i64) -> Result<Update, CallError> {
        let call = self.calls.get_mut(call_id).ok_or(CallError::NotFound)?;
        let participant = call
            .participant(user)
            .ok_or(CallError::Forbidden("You are not in this call"))?;
        let dropped_conn = match participant.state {
            ParticipantState::Ringing => {
                participant.state = ParticipantState::Declined;
                None
            }
            ParticipantState::Joined | ParticipantState::Reconnecting => {
                participant.state = ParticipantState::Left;
                participant.generation += 1;
                let conn = participant.conn.take();
                call.last_departure = EndReason::Hangup;
                conn
            }
            _ => return Ok(self.unchanged(call_id)),
        };
        if let Some(conn) = dropped_conn {
            self.unbind(conn, call_id);
        }
        Ok(self.after_change(call_id, Vec::new(), now_ms))
    }
}

/// The calls of this process, in memory.
pub(crate) struct LocalCalls {
    inner: Mutex<Calls>,
    /// Before each call id (time-ordered and unique): in cluster mode, the
    /// node that holds the call, so any node can send it what is for it.
    id_prefix: String,
    now_ms: fn() -> i64,
}

impl LocalCalls {
    pub(crate) fn new() -> LocalCalls {
        LocalCalls::with_prefix(String::new())
    }

    pub(crate) fn with_prefix(id_prefix: String) -> LocalCalls {
        LocalCalls {
            inner: Mutex::default(),
            id_prefix,
            now_ms: chat_proto::time::now_millis,
        }
    }

    fn calls(&self) -> MutexGuard<'_, Calls> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CallRegistry for LocalCalls {
    fn start(
        &self,
        room: &RoomId,
        media: CallMedia,
        caller: &Party,
        invitees: Vec<Invitee>,
        max_participants: usize,
    ) -> Result<Update, CallError> {
        let now_ms = (self.now_ms)();
        let mut calls = self.calls();
        if let Some(call_id) = calls.by_room.get(room).cloned() {
            return calls.join(&call_id, caller, false, max_participants, now_ms);
        }
        let call_id: Arc<str> =
            Arc::from(format!("{}{}", self.id_prefix, crate::session::new_id()));
        let mut participants = vec![Participant {
            user: caller.user.clone(),
            username: caller.username.clone(),
            state: ParticipantState::Joined,
            conn: Some(caller.conn),
            generation: 0,
        }];
        participants.extend(
            invitees
                .into_iter()
                .filter(|i| i.user != caller.user)
                .take(MAX_LISTED - 1)
                .map(|i| Participant {
                    user: i.user,
                    username: i.username,
                    state: ParticipantState::Ringing,
                    conn: None,
                    generation: 0,
                }),
        );
        let call = Call {
            id: call_id.clone(),
            room: room.clone(),
            media,
            started_at_ms: now_ms,
            answered_at_ms: None,
            participants,
            last_departure: EndReason::Hangup,
        };
        let view = call.view(None);
        calls.calls.insert(call_id.clone(), call);
        calls.by_room.insert(room.clone(), call_id.clone());
        calls.bind(caller.conn, &call_id);
        Ok(Update {
            view,
            changed: true,
            created: true,
            timers: vec![Timer::Ring { call_id }],
            ended: None,
        })
    }

    fn accept(
        &self,
        call_id: &str,
        who: &Party,
        max_participants: usize,
    ) -> Result<Update, CallError> {
        let now_ms = (self.now_ms)();
        let mut calls = self.calls();
        let call_id = calls
            .calls
            .get_key_value(call_id)
            .map(|(id, _)| id.clone())
            .ok_or(CallError::NotFound)?;
        calls.join(&call_id, who, true, max_participants, now_ms)
    }

    fn decline(&self, call_id: &str, user: &str) -> Result<Update, CallError> {
        let now_ms = (self.now_ms)();
        self.calls().leave(call_id, user, now_ms)
    }

    fn hangup(&self, call_id: &str, user: &str) -> Result<Update, CallError> {
        let now_ms = (self.now_ms)();
        self.calls().leave(call_id, user, now_ms)
    }

    fn route(
        &self,
        call_id: &str,
        from: &str,
        from_conn: ConnId,
        to: &str,
    ) -> Result<ConnId, CallError> {
        let mut calls = self.calls();
        let call = calls.calls.get_mut(call_id).ok_or(CallError::NotFound)?;
        let sender = call.participant(from).and_then(|p| p.conn);
        if sender != Some(from_conn) {
            return Err(CallError::Forbidden(
                "Only the connection in the call may signal: accept it first",
            ));
        }
        if from == to {
            return Err(CallError::Forbidden("A signal is for another participant"));
        }
        call.participant(to)
            .and_then(|p| p.conn)
            .ok_or(CallError::Forbidden(
                "That user is not connected to this call",
            ))
    }

    fn dropped(&self, user: &str, conn: ConnId) -> Vec<Update> {
        let now_ms = (self.now_ms)();
        let mut calls = self.calls();
        let Some(joined) = calls.by_conn.remove(&conn) else {
            return Vec::new();
        };
        let mut updates = Vec::new();
        for call_id in joined {
            let Some(call) = calls.calls.get_mut(&call_id) else {
                continue;
            };
            let Some(participant) = call.participant(user).filter(|p| p.conn == Some(conn)) else {
                continue;
            };
            participant.state = ParticipantState::Reconnecting;
            participant.conn = None;
            participant.generation += 1;
            let timer = Timer::Reconnect {
                call_id: call_id.clone(),
                user: participant.user.clone(),
                generation: participant.generation,
            };
            updates.push(calls.after_change(&call_id, vec![timer], now_ms));
        }
        updates
    }

    fn expired(&self, timer: &Timer) -> Option<Update> {
        let now_ms = (self.now_ms)();
        let mut calls = self.calls();
        match timer {
            Timer::Ring { call_id } => {
                let call = calls.calls.get_mut(call_id)?;
                let mut missed = false;
                for participant in &mut call.participants {
                    if participant.state == ParticipantState::Ringing {
                        participant.state = ParticipantState::Missed;
                        missed = true;
                    }
                }
                // A call nobody else could be called to ends now too.
                (missed || call.settled().is_some())
                    .then(|| calls.after_change(call_id, Vec::new(), now_ms))
            }
            Timer::Reconnect {
                call_id,
                user,
                generation,
            } => {
                let call = calls.calls.get_mut(call_id)?;
                let participant = call.participant(user)?;
                if participant.generation != *generation
                    || participant.state != ParticipantState::Reconnecting
                {
                    return None;
                }
                participant.state = ParticipantState::Left;
                call.last_departure = EndReason::Failed;
                Some(calls.after_change(call_id, Vec::new(), now_ms))
            }
        }
    }

    fn end_all(&self) -> Vec<Update> {
        let now_ms = (self.now_ms)();
        let mut calls = self.calls();
        let ids: Vec<Arc<str>> = calls.calls.keys().cloned().collect();
        ids.iter()
            .map(|id| calls.end(id, EndReason::Failed, now_ms))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::ProtoLimits;
    use ParticipantState::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name, &ProtoLimits::default()).unwrap()
    }

    fn party(user: &str, conn: ConnId) -> Party {
        Party {
            user: user.into(),
            username: user.to_uppercase().into(),
            conn,
        }
    }

    fn invitees(users: &[&str]) -> Vec<Invitee> {
        users
            .iter()
            .map(|u| Invitee {
                user: (*u).into(),
                username: u.to_uppercase().into(),
            })
            .collect()
    }

    fn states(update: &Update) -> Vec<(&str, ParticipantState)> {
        update
            .view
            .participants
            .iter()
            .map(|p| (&*p.user_id, p.state))
            .collect()
    }

    fn started(calls: &LocalCalls, callees: &[&str]) -> Arc<str> {
        let update = calls
            .start(
                &room("r"),
                CallMedia::Video,
                &party("ann", 1),
                invitees(callees),
                4,
            )
            .unwrap();
        assert!(update.created);
        update.view.call_id
    }

    #[test]
    fn a_call_rings_until_answered_then_ends_when_one_is_left() {
        let calls = LocalCalls::new();
        let id = started(&calls, &["bob", "ann"]);
        let accepted = calls.accept(&id, &party("bob", 2), 4).unwrap();
        assert_eq!(accepted.view.phase, CallPhase::Active);
        assert_eq!(states(&accepted), [("ann", Joined), ("bob", Joined)]);
        // Again on the same connection: nothing changes; elsewhere: refused.
        assert!(!calls.accept(&id, &party("bob", 2), 4).unwrap().changed);
        assert!(matches!(
            calls.accept(&id, &party("bob", 3), 4),
            Err(CallError::Forbidden(_))
        ));
        assert_eq!(calls.route(&id, "ann", 1, "bob"), Ok(2));
        assert_eq!(calls.route(&id, "bob", 2, "ann"), Ok(1));
        assert!(calls.route(&id, "bob", 3, "ann").is_err());
        assert!(calls.route(&id, "ann", 1, "ann").is_err());
        assert!(calls.route(&id, "ann", 1, "eve").is_err());
        let ended = calls.hangup(&id, "bob").unwrap();
        assert_eq!(ended.view.phase, CallPhase::Ended);
        assert_eq!(ended.view.reason, Some(EndReason::Hangup));
        let record = ended.ended.unwrap();
        assert_eq!(
            record
                .participants
                .iter()
                .map(|p| p.state)
                .collect::<Vec<_>>(),
            [Left, Left]
        );
        assert_eq!(
            calls.accept(&id, &party("bob", 2), 4).unwrap_err(),
            CallError::NotFound
        );
        assert_eq!(calls.route(&id, "ann", 1, "bob"), Err(CallError::NotFound));
    }

    #[test]
    fn all_declining_or_nobody_answering_ends_a_ringing_call() {
        let calls = LocalCalls::new();
        let id = started(&calls, &["bob", "cat"]);
        assert!(calls.decline(&id, "bob").unwrap().ended.is_none());
        let ended = calls.decline(&id, "cat").unwrap();
        assert_eq!(ended.view.reason, Some(EndReason::Declined));

        let id = started(&calls, &["bob", "cat"]);
        calls.decline(&id, "bob").unwrap();
        let timer = Timer::Ring {
            call_id: id.clone(),
        };
        let ended = calls.expired(&timer).unwrap();
        assert_eq!(ended.view.reason, Some(EndReason::Missed));
        assert_eq!(
            states(&ended),
            [("ann", Left), ("bob", Declined), ("cat", Missed)]
        );
        assert!(calls.expired(&timer).is_none(), "a call ends once");

        let id = started(&calls, &["bob"]);
        let cancelled = calls.hangup(&id, "ann").unwrap();
        assert_eq!(cancelled.view.reason, Some(EndReason::Hangup));
        assert_eq!(cancelled.ended.unwrap().duration_secs, 0);
    }

    #[test]
    fn a_dropped_participant_has_until_the_grace_period_ends() {
        let calls = LocalCalls::new();
        let id = started(&calls, &["bob"]);
        calls.accept(&id, &party("bob", 2), 4).unwrap();
        let [dropped] = <[Update; 1]>::try_from(calls.dropped("bob", 2)).unwrap();
        assert_eq!(states(&dropped), [("ann", Joined), ("bob", Reconnecting)]);
        let [first] = <[Timer; 1]>::try_from(dropped.timers).unwrap();
        // Back on another connection in time: the first timer is stale.
        calls.accept(&id, &party("bob", 5), 4).unwrap();
        assert!(calls.expired(&first).is_none());
        assert_eq!(calls.route(&id, "ann", 1, "bob"), Ok(5));
        let [again] = <[Update; 1]>::try_from(calls.dropped("bob", 5)).unwrap();
        assert!(calls.dropped("bob", 5).is_empty());
        let ended = calls.expired(&again.timers[0]).unwrap();
        assert_eq!(ended.view.reason, Some(EndReason::Failed));
    }

    #[test]
    fn a_room_has_one_call_and_a_call_has_room_for_so_many() {
        let calls = LocalCalls::new();
        let id = started(&calls, &["bob", "cat", "dan"]);
        calls.accept(&id, &party("bob", 2), 3).unwrap();
        // A second start in the room joins the call, invited or not.
        let joined = calls
            .start(
                &room("r"),
                CallMedia::Audio,
                &party("eve", 9),
                Vec::new(),
                3,
            )
            .unwrap();
        assert!(!joined.created);
        assert_eq!(joined.view.call_id, id);
        assert_eq!(joined.view.media, CallMedia::Video);
        assert_eq!(
            calls.accept(&id, &party("cat", 3), 3).unwrap_err(),
            CallError::Full
        );
        assert!(matches!(
            calls.accept(&id, &party("zed", 4), 3),
            Err(CallError::Forbidden(_))
        ));
        // One leaving makes room; the call goes on with two.
        calls.hangup(&id, "eve").unwrap();
        let update = calls.accept(&id, &party("cat", 3), 3).unwrap();
        assert_eq!(
            states(&update),
            [
                ("ann", Joined),
                ("bob", Joined),
                ("cat", Joined),
                ("dan", Ringing),
                ("eve", Left)
            ]
        );
        let rung = calls
            .expired(&Timer::Ring {
                call_id: id.clone(),
            })
            .unwrap();
        assert!(rung.ended.is_none());
        calls.hangup(&id, "ann").unwrap();
        let ended = calls.hangup(&id, "bob").unwrap();
        assert_eq!(ended.view.reason, Some(EndReason::Hangup));
        let record = ended.ended.unwrap();
        assert_eq!(record.user_id.as_ref(), "ann");
        assert_eq!(
            record
                .participants
                .iter()
                .map(|p| p.state)
                .collect::<Vec<_>>(),
            [Left, Left, Left, Missed, Left]
        );
    }
}
