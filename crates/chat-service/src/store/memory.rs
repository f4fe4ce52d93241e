//! The in-memory store: `seq`s and a bounded window of recent messages per
//! room, lost on restart. Used when persistence is off (`memory:`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chat_proto::{ChatMessage, Receipt, RoomId};

use super::{Accepted, Appended, HistoryPage, NewMessage, ReadState, CLIENT_ID_WINDOW_MS};

pub(super) const DEFAULT_KEEP_PER_ROOM: usize = 1000;

#[derive(Default)]
struct RoomLog {
    last_seq: u64,
    recent: VecDeque<ChatMessage>,
}

pub struct MemoryStore {
    keep_per_room: usize,
    rooms: Mutex<HashMap<RoomId, RoomLog>>,
    markers: Mutex<HashMap<RoomId, HashMap<String, u64>>>,
}

impl MemoryStore {
    pub(super) fn new(keep_per_room: usize) -> MemoryStore {
        MemoryStore {
            keep_per_room,
            rooms: Mutex::default(),
            markers: Mutex::default(),
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, RoomLog>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn append(&self, batch: &[NewMessage]) -> Vec<Appended> {
        let mut rooms = self.rooms();
        batch
            .iter()
            .map(|new| {
                let log = rooms.entry(new.room_id.clone()).or_default();
                // Only what is still kept can be recognised: a restart, or
                // a resend older than the window kept, stores it again.
                if let Some(original) = new.client_id.as_ref().and_then(|client_id| {
                    log.recent.iter().rev().find(|m| {
                        m.client_id.as_ref() == Some(client_id)
                            && m.user_id == new.user_id
                            && m.timestamp_ms >= new.timestamp_ms - CLIENT_ID_WINDOW_MS
                    })
                }) {
                    return Ok(Accepted {
                        message: original.clone(),
                        repeated: true,
                    });
                }
                log.last_seq += 1;
                let stored = new.stored(log.last_seq);
                if log.recent.len() == self.keep_per_room {
                    log.recent.pop_front();
                }
                if self.keep_per_room > 0 {
                    log.recent.push_back(stored.clone());
                }
                Ok(Accepted {
                    message: stored,
                    repeated: false,
                })
            })
            .collect()
    }

    pub(super) fn last_seq(&self, room: &RoomId) -> u64 {
        self.rooms().get(room).map_or(0, |log| log.last_seq)
    }

    pub(super) fn after(&self, room: &RoomId, since: u64, limit: usize) -> Vec<ChatMessage> {
        let rooms = self.rooms();
        let Some(log) = rooms.get(room) else {
            return Vec::new();
        };
        log.recent
            .iter()
            .filter(|m| m.seq > since)
            .take(limit)
            .cloned()
            .collect()
    }

    pub(super) fn page(&self, room: &RoomId, before: Option<u64>, limit: u32) -> HistoryPage {
        let rooms = self.rooms();
        let Some(log) = rooms.get(room) else {
            return HistoryPage {
                messages: Vec::new(),
                has_more: false,
            };
        };
        let older: Vec<&ChatMessage> = log
            .recent
            .iter()
            .filter(|m| before.is_none_or(|before| m.seq < before))
            .collect();
        let start = older.len().saturating_sub(limit as usize);
        HistoryPage {
            messages: older[start..].iter().map(|m| (*m).clone()).collect(),
            has_more: start > 0,
        }
    }

    fn markers(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, HashMap<String, u64>>> {
        self.markers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn mark_read(&self, room: &RoomId, user: &str, seq: u64) -> bool {
        let mut markers = self.markers();
        let marker = markers
            .entry(room.clone())
            .or_default()
            .entry(user.to_owned())
            .or_default();
        let moved = seq > *marker;
        *marker = (*marker).max(seq);
        moved
    }

    pub(super) fn read_state(&self, room: &RoomId, user: &str) -> ReadState {
        let read_seq = self
            .markers()
            .get(room)
            .and_then(|users| users.get(user))
            .copied()
            .unwrap_or(0);
        let unread = self.rooms().get(room).map_or(0, |log| {
            log.recent
                .iter()
                .filter(|m| m.seq > read_seq && &*m.user_id != user)
                .count() as u64
        });
        ReadState { read_seq, unread }
    }

    pub(super) fn receipts(&self, room: &RoomId) -> Vec<Receipt> {
        let mut receipts: Vec<Receipt> = self
            .markers()
            .get(room)
            .map(|users| {
                users
                    .iter()
                    .map(|(user_id, seq)| Receipt {
                        user_id: user_id.clone(),
                        seq: *seq,
                    })
                    .collect()
            })
            .unwrap_or_default();
        receipts.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        receipts
    }

    pub(super) fn prune(&self, cutoff_ms: i64) -> u64 {
        let mut removed = 0;
        for log in self.rooms().values_mut() {
            while log
                .recent
                .front()
                .is_some_and(|m| m.timestamp_ms < cutoff_ms)
            {
                log.recent.pop_front();
                removed += 1;
            }
        }
        removed
    }
}
