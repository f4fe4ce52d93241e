//! Rooms, membership and fan-out: the in-process implementation of the
//! delivery seam ([`Delivery`]).
//!
//! The hub is plain synchronous state behind sharded mutexes: no method is
//! async, so no lock can be held across an `.await`. Every delivery takes
//! one already-encoded [`Frame`] and pushes clones of it (a reference count,
//! not a copy) into the recipients' bounded queues.
//!
//! The hub decides nothing about what rooms hear: it reports membership
//! changes (a user's first connection in a room, their last one leaving)
//! and the session announces them through the seam, under the user's
//! membership lock so one user's arrivals and departures keep their order.

mod conn;
mod room;

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat_proto::{RoomId, ServerEvent};

pub(crate) use conn::{ConnHandle, ConnId, Frame, OutboundQueue, Push};
pub(crate) use room::Departure;
use room::Room;

use crate::delivery::{Audience, Delivery};
use crate::metrics::Metrics;

const SHARDS: usize = 32;

pub(crate) struct Hub {
    shards: Box<[Mutex<HashMap<RoomId, Room>>]>,
    hasher: RandomState,
    rooms: AtomicUsize,
    connections: AtomicUsize,
    users: Mutex<HashMap<Arc<str>, UserConns>>,
    /// Connections watching each user's presence.
    watchers: Mutex<HashMap<Arc<str>, Vec<ConnHandle>>>,
    next_conn_id: AtomicU64,
    metrics: Arc<Metrics>,
}

/// A connected user's connections, for what is addressed to the user.
struct UserConns {
    conns: Vec<ConnHandle>,
    /// Shared by the user's connections: held while a membership change
    /// is made and announced.
    membership: Arc<Mutex<()>>,
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
            watchers: Mutex::default(),
            next_conn_id: AtomicU64::new(1),
            metrics,
        }
    }

    /// The shard of a room; `RoomId` hashes as its text, so either finds it.
    fn shard(&self, room: &str) -> MutexGuard<'_, HashMap<RoomId, Room>> {
        let index = self.hasher.hash_one(room) as usize % SHARDS;
        lock(&self.shards[index])
    }

    /// Registers a new connection for the user and returns its handle and
    /// the receiving end of its outbound queue (`queue_bytes` at most).
    pub(crate) fn connect(
        &self,
        user_id: Arc<str>,
        username: Arc<str>,
        queue_bytes: usize,
    ) -> (ConnHandle, OutboundQueue) {
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let mut users = lock(&self.users);
        let user = users.entry(user_id.clone()).or_insert_with(|| UserConns {
            conns: Vec::new(),
            membership: Arc::default(),
        });
        let (conn, queue) =
            ConnHandle::new(id, user_id, username, queue_bytes, user.membership.clone());
        user.conns.push(conn.clone());
        drop(users);
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections.increment(1.0);
        (conn, queue)
    }

    /// Forgets a connection. Its rooms must have been left already.
    /// Returns true if it was the user's last connection.
    pub(crate) fn disconnect(&self, conn: &ConnHandle) -> bool {
        let mut users = lock(&self.users);
        let mut last = false;
        if let Entry::Occupied(mut entry) = users.entry(conn.user_id.clone()) {
            entry.get_mut().conns.retain(|c| c.id != conn.id);
            if entry.get().conns.is_empty() {
                entry.remove();
                last = true;
            }
        }
        drop(users);
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.metrics.connections.decrement(1.0);
        last
    }

    pub(crate) fn stats(&self) -> HubStats {
        HubStats {
            connected_users: lock(&self.users).len(),
            connections: self.connections.load(Ordering::Relaxed),
            rooms: self.rooms.load(Ordering::Relaxed),
        }
    }

    /// Adds the connection to the room, creating the room if needed. The new
    /// member starts *pending*: what the room is sent is held back for it
    /// until [`Hub::drain_pending`] hands it over, so a joiner can first be
    /// sent the events it missed. Returns `Some(first)`, `first` when no
    /// other connection of the user is in the room, or `None` if it was a
    /// member already.
    pub(crate) fn join(&self, room_id: &RoomId, conn: &ConnHandle) -> Option<bool> {
        let mut shard = self.shard(room_id.as_str());
        let room = shard.entry(room_id.clone()).or_insert_with(|| {
            self.rooms.fetch_add(1, Ordering::Relaxed);
            self.metrics.rooms.increment(1.0);
            Room::default()
        });
        if room.contains(conn.id) {
            return None;
        }
        Some(room.add(conn.clone()))
    }

    /// Takes what was held back for a pending member, dropping events with
    /// `seq <= skip_through` (the joiner has them already). When nothing is
    /// left, the member turns live and this returns an empty list.
    pub(crate) fn drain_pending(
        &self,
        room_id: &RoomId,
        conn_id: ConnId,
        skip_through: u64,
    ) -> Vec<Frame> {
        let mut shard = self.shard(room_id.as_str());
        match shard.get_mut(room_id) {
            Some(room) => room.drain_pending(conn_id, skip_through),
            None => Vec::new(),
        }
    }

    /// Removes the connection from the room; `None` if it was not in it.
    pub(crate) fn leave(&self, room_id: &RoomId, conn: &ConnHandle) -> Option<Departure> {
        let mut shard = self.shard(room_id.as_str());
        let room = shard.get_mut(room_id)?;
        let departure = room.remove(conn.id)?;
        if room.is_empty() {
            shard.remove(room_id);
            self.rooms.fetch_sub(1, Ordering::Relaxed);
            self.metrics.rooms.decrement(1.0);
        }
        Some(departure)
    }

    /// The user's connections in the room.
    pub(crate) fn connections_in(&self, room_id: &RoomId, user: &str) -> Vec<ConnHandle> {
        let shard = self.shard(room_id.as_str());
        shard
            .get(room_id)
            .map(|room| room.handles_of(user))
            .unwrap_or_default()
    }

    /// The users connected to the room, each with a name to show.
    pub(crate) fn users_in(&self, room_id: &RoomId) -> Vec<(Arc<str>, Arc<str>)> {
        let shard = self.shard(room_id.as_str());
        shard
            .get(room_id)
            .map(|room| room.users())
            .unwrap_or_default()
    }

    /// The connection starts watching the users' presence.
    pub(crate) fn watch(&self, users: &[String], conn: &ConnHandle) {
        let mut watchers = lock(&self.watchers);
        for user in users {
            let list = watchers.entry(Arc::from(user.as_str())).or_default();
            if !list.iter().any(|c| c.id == conn.id) {
                list.push(conn.clone());
            }
        }
    }

    /// The connection stops watching the users' presence.
    pub(crate) fn unwatch<'a>(&self, users: impl IntoIterator<Item = &'a str>, conn: &ConnHandle) {
        let mut watchers = lock(&self.watchers);
        for user in users {
            if let Entry::Occupied(mut list) = watchers.entry(Arc::from(user)) {
                list.get_mut().retain(|c| c.id != conn.id);
                if list.get().is_empty() {
                    list.remove();
                }
            }
        }
    }

    /// Records whether the connection is typing in the room (and under
    /// which name). Returns false if the connection is not in the room.
    pub(crate) fn set_typing(
        &self,
        room_id: &RoomId,
        conn: &ConnHandle,
        typing_as: Option<Arc<str>>,
    ) -> bool {
        let mut shard = self.shard(room_id.as_str());
        match shard.get_mut(room_id) {
            Some(room) => room.set_typing(conn.id, typing_as),
            None => false,
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
        self.count(reached, evicted)
    }

    /// Pushes the frame to each connection, counting as a room's fan-out.
    fn push_each<'a>(&self, conns: impl Iterator<Item = &'a ConnHandle>, frame: &Frame) -> usize {
        let (mut reached, mut evicted) = (0, 0);
        for conn in conns {
            match conn.push(frame) {
                Push::Queued => reached += 1,
                Push::Evicted { first: true } => evicted += 1,
                Push::Evicted { first: false } | Push::Gone => {}
            }
        }
        self.count(reached, evicted)
    }

    fn count(&self, reached: usize, evicted: usize) -> usize {
        self.metrics.deliveries.increment(reached as u64);
        if evicted > 0 {
            self.metrics.slow_consumers.increment(evicted as u64);
        }
        reached
    }
}

impl Delivery for Hub {
    fn deliver(&self, audience: Audience<'_>, frame: &Frame, seq: Option<u64>) -> usize {
        match audience {
            Audience::Room { room, except } => {
                let mut shard = self.shard(room);
                match shard.get_mut(room) {
                    Some(members) => self.fan_out(members, frame, seq, except),
                    None => 0,
                }
            }
            Audience::User {
                user,
                except,
                outside,
            } => {
                let members: Vec<ConnId> = match outside {
                    Some(room) => self
                        .shard(room)
                        .get(room)
                        .map(|room| room.connections_of(user))
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                let users = lock(&self.users);
                let Some(user) = users.get(user) else {
                    return 0;
                };
                let recipients = user
                    .conns
                    .iter()
                    .filter(|c| Some(c.id) != except && !members.contains(&c.id));
                self.push_each(recipients, frame)
            }
            Audience::Watchers { user } => {
                let watchers = lock(&self.watchers);
                self.push_each(watchers.get(user).into_iter().flatten(), frame)
            }
            Audience::Connection { user, conn } => {
                let users = lock(&self.users);
                let Some(user) = users.get(user) else {
                    return 0;
                };
                self.push_each(user.conns.iter().filter(|c| c.id == conn), frame)
            }
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain
/// bookkeeping; the data is still the best we have, so keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
