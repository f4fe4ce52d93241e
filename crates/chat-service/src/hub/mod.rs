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
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use chat_proto::{RoomId, ServerEvent};

pub(crate) use conn::{ConnHandle, ConnId, Frame, OutboundQueue, Push};
pub(crate) use room::Departure;
use room::Room;

use crate::delivery::{Audience, Delivery, Within};
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
    /// Told when this process starts or stops hosting a room, a user or a
    /// watched user (a broker subscribes and unsubscribes by it).
    interest: OnceLock<Arc<dyn InterestListener>>,
}

/// What this process has connections for changed.
#[derive(Debug, Clone)]
pub(crate) enum Interest {
    RoomHosted(RoomId),
    RoomDropped(RoomId),
    UserHere(Arc<str>),
    UserGone(Arc<str>),
    Watching(Arc<str>),
    NotWatching(Arc<str>),
}

/// Called under the hub's locks: must only take note (queue), never wait
/// or call back into the hub.
pub(crate) trait InterestListener: Send + Sync {
    fn interest(&self, change: Interest);
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
            // Random high bits: connection ids are unique across processes,
            // so one can be named to another.
            next_conn_id: AtomicU64::new((u64::from(rand::random::<u32>()) << 32) | 1),
            metrics,
            interest: OnceLock::new(),
        }
    }

    /// Tells `listener` of every change of interest from now on.
    pub(crate) fn set_interest_listener(&self, listener: Arc<dyn InterestListener>) {
        let _ = self.interest.set(listener);
    }

    fn tell(&self, change: Interest) {
        if let Some(listener) = self.interest.get() {
            listener.interest(change);
        }
    }

    /// Whether any connection here is in the room.
    pub(crate) fn hosts_room(&self, room: &str) -> bool {
        self.shard(room).contains_key(room)
    }

    /// Whether the user has a connection here.
    pub(crate) fn hosts_user(&self, user: &str) -> bool {
        lock(&self.users).contains_key(user)
    }

    /// Whether a connection here watches the user.
    pub(crate) fn watches(&self, user: &str) -> bool {
        lock(&self.watchers).contains_key(user)
    }

    /// Each room hosted here with the users in it.
    pub(crate) fn memberships(&self) -> Vec<(RoomId, Vec<Arc<str>>)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            for (room_id, room) in lock(shard).iter() {
                all.push((
                    room_id.clone(),
                    room.users().into_iter().map(|(user, _)| user).collect(),
                ));
            }
        }
        all
    }

    /// Each user connected here, with their connections and how many of
    /// those are away.
    pub(crate) fn user_counts(&self) -> Vec<(Arc<str>, usize, usize)> {
        lock(&self.users)
            .iter()
            .map(|(user, conns)| {
                let away = conns.conns.iter().filter(|c| c.is_away()).count();
                (user.clone(), conns.conns.len(), away)
            })
            .collect()
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
        let user = users.entry(user_id.clone()).or_insert_with(|| {
            self.tell(Interest::UserHere(user_id.clone()));
            UserConns {
                conns: Vec::new(),
                membership: Arc::default(),
            }
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
                self.tell(Interest::UserGone(conn.user_id.clone()));
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
            self.tell(Interest::RoomHosted(room_id.clone()));
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
            self.tell(Interest::RoomDropped(room_id.clone()));
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
            let list = watchers.entry(Arc::from(user.as_str())).or_insert_with(|| {
                self.tell(Interest::Watching(Arc::from(user.as_str())));
                Vec::new()
            });
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
                    self.tell(Interest::NotWatching(Arc::from(user)));
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
                within,
            } => {
                let in_room: Vec<ConnId> = match within.room() {
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
                let recipients = user.conns.iter().filter(|c| {
                    Some(c.id) != except
                        && match within {
                            Within::Anywhere => true,
                            Within::Outside(_) => !in_room.contains(&c.id),
                            Within::Inside(_) => in_room.contains(&c.id),
                        }
                });
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

    fn membership(
        &self,
        room: &RoomId,
        _user: &Arc<str>,
        _arrived: bool,
        frame: Frame,
        except: Option<ConnId>,
    ) {
        self.deliver(
            Audience::Room {
                room: room.as_str(),
                except,
            },
            &frame,
            None,
        );
    }

    fn remove_member(&self, room: &RoomId, user: &str) {
        crate::session::remove_locally(self, self, room, user);
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain
/// bookkeeping; the data is still the best we have, so keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
