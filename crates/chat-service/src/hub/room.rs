//! One room's members. Kept as a vector because the hot operation is
//! iterating every member for a broadcast; joins and leaves are rare.

use std::collections::HashMap;
use std::sync::Arc;

use super::{ConnHandle, ConnId, Frame, Push};

struct Member {
    conn: ConnHandle,
    /// The name under which this connection last said it was typing.
    typing_as: Option<Arc<str>>,
    /// Held-back frames while the member recovers history; `None` once live.
    pending: Option<Held>,
}

/// What the room said while a member was recovering. A joiner that cannot
/// take in its backlog while the room keeps talking is treated like any
/// slow consumer: what is held for it is bounded by its queue's budget.
#[derive(Default)]
struct Held {
    frames: Vec<(Option<u64>, Frame)>,
    bytes: usize,
}

#[derive(Default)]
pub(super) struct Room {
    members: Vec<Member>,
    /// Connections per user in this room, to announce users, not tabs.
    users: HashMap<Arc<str>, u32>,
}

/// A connection left a room.
pub(crate) struct Departure {
    /// No other connection of the user is in the room.
    pub(crate) last_of_user: bool,
    /// The name it was typing under, if it was.
    pub(crate) typing_as: Option<Arc<str>>,
}

impl Room {
    pub(super) fn contains(&self, conn_id: ConnId) -> bool {
        self.members.iter().any(|m| m.conn.id == conn_id)
    }

    /// The user's connections in this room.
    pub(super) fn connections_of(&self, user: &str) -> Vec<ConnId> {
        if !self.users.contains_key(user) {
            return Vec::new();
        }
        self.members
            .iter()
            .filter(|m| &*m.conn.user_id == user)
            .map(|m| m.conn.id)
            .collect()
    }

    /// The user's connections in this room.
    pub(super) fn handles_of(&self, user: &str) -> Vec<ConnHandle> {
        self.members
            .iter()
            .filter(|m| &*m.conn.user_id == user)
            .map(|m| m.conn.clone())
            .collect()
    }

    /// Each user in the room once, with the name of one of their
    /// connections, in the order they came.
    pub(super) fn users(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let mut seen: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(self.users.len());
        for member in &self.members {
            if !seen.iter().any(|(user, _)| *user == member.conn.user_id) {
                seen.push((member.conn.user_id.clone(), member.conn.username.clone()));
            }
        }
        seen
    }

    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Returns true when this is the user's first connection in the room.
    pub(super) fn add(&mut self, conn: ConnHandle) -> bool {
        let count = self.users.entry(conn.user_id.clone()).or_default();
        *count += 1;
        let first = *count == 1;
        self.members.push(Member {
            conn,
            typing_as: None,
            pending: Some(Held::default()),
        });
        first
    }

    pub(super) fn remove(&mut self, conn_id: ConnId) -> Option<Departure> {
        let index = self.members.iter().position(|m| m.conn.id == conn_id)?;
        let member = self.members.swap_remove(index);
        let user = &member.conn.user_id;
        let last_of_user = match self.users.get_mut(user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => {
                self.users.remove(user);
                true
            }
        };
        Some(Departure {
            last_of_user,
            typing_as: member.typing_as,
        })
    }

    pub(super) fn set_typing(&mut self, conn_id: ConnId, typing_as: Option<Arc<str>>) -> bool {
        match self.members.iter_mut().find(|m| m.conn.id == conn_id) {
            Some(member) => {
                member.typing_as = typing_as;
                true
            }
            None => false,
        }
    }

    pub(super) fn drain_pending(&mut self, conn_id: ConnId, skip_through: u64) -> Vec<Frame> {
        let Some(member) = self.members.iter_mut().find(|m| m.conn.id == conn_id) else {
            return Vec::new();
        };
        let held = member.pending.take().unwrap_or_default();
        let fresh: Vec<Frame> = held
            .frames
            .into_iter()
            .filter(|(seq, _)| seq.is_none_or(|seq| seq > skip_through))
            .map(|(_, frame)| frame)
            .collect();
        if !fresh.is_empty() {
            // Still pending: what arrives while these are sent is held too.
            member.pending = Some(Held::default());
        }
        fresh
    }

    /// Returns (connections reached, connections evicted just now).
    pub(super) fn fan_out(
        &mut self,
        frame: &Frame,
        seq: Option<u64>,
        except: Option<ConnId>,
    ) -> (usize, usize) {
        let mut reached = 0;
        let mut evicted = 0;
        for member in &mut self.members {
            if Some(member.conn.id) == except {
                continue;
            }
            if let Some(held) = &mut member.pending {
                if held.bytes + frame.len() > member.conn.budget() {
                    if member.conn.evict() {
                        evicted += 1;
                    }
                } else {
                    held.bytes += frame.len();
                    held.frames.push((seq, frame.clone()));
                    reached += 1;
                }
                continue;
            }
            match member.conn.push(frame) {
                Push::Queued => reached += 1,
                Push::Evicted { first: true } => evicted += 1,
                Push::Evicted { first: false } | Push::Gone => {}
            }
        }
        (reached, evicted)
    }
}
