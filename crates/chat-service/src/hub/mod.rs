//! Rooms, membership and fan-out.
//!
//! The hub is plain synchronous state behind sharded mutexes: no method is
//! async, so no lock can be held across an `.await`. Every broadcast takes
//! one already-encoded [`Frame`] and pushes clones of it (a reference count,
//! not a copy) into the members' bounded queues.
//!
//! Membership rules live here because they decide who hears what: a user
//! is announced (`chat.userJoined`/`chat.userLeft`) when their first
//! connection enters a room and when their last one leaves it, so extra
//! tabs come and go silently.

mod conn;
mod room;

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat_proto::{RoomId, ServerEvent};

pub(crate) use conn::{ConnHandle, ConnId, Frame, OutboundQueue, Push};
use room::Room;

use crate::metrics::Metrics;

const SHARDS: usize = 32;

pub(crate) struct Hub {
    shards: Box<[Mutex<HashMap<RoomId, Room>>]>,
    hasher: RandomState,
    rooms: AtomicUsize,
    connections: AtomicUsize,
    users: Mutex<HashMap<Arc<str>, usize>>,
    next_conn_id: AtomicU64,
    metrics: Arc<Metrics>,
}

/// Counts for `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HubStats {
    pub(crate) connected_users: usize,
    pub(crate) connections: usize,
    pub(crate) rooms: usize,
}

/// A frame encoded once for several recipients.
pub(crate) fn frame(event: &ServerEvent<'_>) -> Frame {
    Frame::new(event.to_frame())
}

impl Hub {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Hub {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            rooms: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            users: Mutex::default(),
            next_conn_id: AtomicU64::new(1),
            metrics,
        }
    }

    fn shard(&self, room: &RoomId) -> MutexGuard<'_, HashMap<RoomId, Room>> {
        let index = self.hasher.hash_one(room) as usize % SHARDS;
        lock(&self.shards[index])
    }

    /// Registers a new connection for the user and returns its handle and
    /// the receiving end of its outbound queue (`queue_bytes` at most).
    pub(crate) fn connect(
        &self,
        user_id: Arc<str>,
        queue_bytes: usize,
    ) -> (ConnHandle, OutboundQueue) {
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        *lock(&self.users).entry(user_id.clone()).or_default() += 1;
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections.increment(1.0);
        ConnHandle::new(id, user_id, queue_bytes)
    }

    /// Forgets a connection. Its rooms must have been left already.
    pub(crate) fn disconnect(&self, conn: &ConnHandle) {
        let mut users = lock(&self.users);
        if let Entry::Occupied(mut entry) = users.entry(conn.user_id.clone()) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
        drop(users);
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.metrics.connections.decrement(1.0);
    }

    pub(crate) fn stats(&self) -> HubStats {
        HubStats {
            connected_users: lock(&self.users).len(),
            connections: self.connections.load(Ordering::Relaxed),
            rooms: self.rooms.load(Ordering::Relaxed),
        }
    }

    /// Adds the connection to the room, creating the room if needed. The new
    /// member starts *pending*: what the room broadcasts is held back for it
    /// until [`Hub::drain_pending`] hands it over, so a joiner can first be
    /// sent the messages it missed. Returns false if it was already a member.
    pub(crate) fn join(&self, room_id: &RoomId, conn: &ConnHandle) -> bool {
        let mut shard = self.shard(room_id);
        let room = shard.entry(room_id.clone()).or_insert_with(|| {
            self.rooms.fetch_add(1, Ordering::Relaxed);
            self.metrics.rooms.increment(1.0);
            Room::default()
        });
        if room.contains(conn.id) {
            return false;
        }
        if room.add(conn.clone()) {
            let announce = frame(&ServerEvent::UserJoined {
                user_id: &conn.user_id,
                room_id: room_id.as_str(),
            });
            self.fan_out(room, &announce, None, Some(conn.id));
        }
        true
    }

    /// Takes what was held back for a pending member, dropping messages with
    /// `seq <= skip_through` (the joiner has them already). When nothing is
    /// left, the member turns live and this returns an empty list.
    pub(crate) fn drain_pending(
        &self,
        room_id: &RoomId,
        conn_id: ConnId,
        skip_through: u64,
    ) -> Vec<Frame> {
        let mut shard = self.shard(room_id);
        match shard.get_mut(room_id) {
            Some(room) => room.drain_pending(conn_id, skip_through),
            None => Vec::new(),
        }
    }

    /// Removes the connection from the room. Returns false if it was not in it.
    pub(crate) fn leave(&self, room_id: &RoomId, conn: &ConnHandle) -> bool {
        let mut shard = self.shard(room_id);
        let Some(room) = shard.get_mut(room_id) else {
            return false;
        };
        let Some(departure) = room.remove(conn.id) else {
            return false;
        };
        if let Some(username) = &departure.typing_as {
            let stopped = frame(&ServerEvent::Typing {
                user_id: &conn.user_id,
                username,
                is_typing: false,
                room_id: room_id.as_str(),
            });
            self.fan_out(room, &stopped, None, None);
        }
        if departure.last_of_user {
            let left = frame(&ServerEvent::UserLeft {
                user_id: &conn.user_id,
                room_id: room_id.as_str(),
            });
            self.fan_out(room, &left, None, None);
        }
        if room.is_empty() {
            shard.remove(room_id);
            self.rooms.fetch_sub(1, Ordering::Relaxed);
            self.metrics.rooms.decrement(1.0);
        }
        true
    }

    /// Records the typing state and tells the other members. Returns false
    /// if the connection is not in the room.
    pub(crate) fn typing(
        &self,
        room_id: &RoomId,
        conn: &ConnHandle,
        username: &str,
        is_typing: bool,
    ) -> bool {
        let mut shard = self.shard(room_id);
        let Some(room) = shard.get_mut(room_id) else {
            return false;
        };
        if !room.set_typing(conn.id, is_typing.then(|| Arc::from(username))) {
            return false;
        }
        let event = frame(&ServerEvent::Typing {
            user_id: &conn.user_id,
            username,
            is_typing,
            room_id: room_id.as_str(),
        });
        self.fan_out(room, &event, None, Some(conn.id));
        true
    }

    /// Sends one frame to every member of the room. `seq` marks chat
    /// messages so a pending joiner can skip what it recovered. Returns how
    /// many connections it reached.
    pub(crate) fn broadcast(&self, room_id: &RoomId, frame: &Frame, seq: Option<u64>) -> usize {
        let mut shard = self.shard(room_id);
        match shard.get_mut(room_id) {
            Some(room) => self.fan_out(room, frame, seq, None),
            None => 0,
        }
    }

    /// Sends one frame to every member of the room but one connection.
    pub(crate) fn broadcast_except(
        &self,
        room_id: &RoomId,
        frame: &Frame,
        except: ConnId,
    ) -> usize {
        let mut shard = self.shard(room_id);
        match shard.get_mut(room_id) {
            Some(room) => self.fan_out(room, frame, None, Some(except)),
            None => 0,
        }
    }

    fn fan_out(
        &self,
        room: &mut Room,
        frame: &Frame,
        seq: Option<u64>,
        except: Option<ConnId>,
    ) -> usize {
        let (reached, evicted) = room.fan_out(frame, seq, except);
        self.metrics.deliveries.increment(reached as u64);
        if evicted > 0 {
            self.metrics.slow_consumers.increment(evicted as u64);
        }
        reached
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain
/// bookkeeping; the data is still the best we have, so keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
