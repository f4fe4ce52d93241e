//! The in-memory store: `seq`s and a bounded window of recent events per
//! room, lost on restart. Used when persistence is off (`memory:`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chat_proto::ids::RoomAccess;
use chat_proto::server::MAX_REACTION_USERS;
use chat_proto::{
    ChatMessage, DmConversation, HistoryItem, ReactionSummary, Receipt, RoomEvent, RoomId,
};

use super::files::MemoryFiles;
use super::rules::{self, Decision, Target};
use super::{
    Appended, Change, DmPage, HistoryPage, NewEvent, NewMessage, ReadState, CLIENT_ID_WINDOW_MS,
    MAX_UNREAD,
};

/// Events kept per room.
pub(super) const DEFAULT_KEEP_PER_ROOM: usize = 1000;

struct Entry {
    at_ms: i64,
    /// A message here is kept in its current state.
    event: RoomEvent,
}

#[derive(Default)]
struct RoomLog {
    last_seq: u64,
    recent: VecDeque<Entry>,
    /// Reactions of kept messages, per message id.
    reactions: HashMap<String, Reactions>,
}

/// Each emoji with who reacted so, in the order they did.
/// Each emoji with who reacted so and the reaction's `seq`, in the order
/// they did; emojis in the order of their oldest remaining reaction (as
/// the SQL store orders them).
type Reactions = Vec<(String, Vec<(Arc<str>, u64)>)>;

impl RoomLog {
    fn message(&self, id: &str) -> Option<&ChatMessage> {
        self.recent.iter().find_map(|entry| match &entry.event {
            RoomEvent::Message(message) if message.id == id => Some(message),
            _ => None,
        })
    }

    fn message_mut(&mut self, id: &str) -> Option<&mut ChatMessage> {
        self.recent
            .iter_mut()
            .find_map(|entry| match &mut entry.event {
                RoomEvent::Message(message) if message.id == id => Some(message),
                _ => None,
            })
    }

    fn earlier_send(&self, new: &NewMessage) -> Option<&ChatMessage> {
        let client_id = new.client_id.as_ref()?;
        self.recent
            .iter()
            .rev()
            .find_map(|entry| match &entry.event {
                RoomEvent::Message(m)
                    if m.client_id.as_ref() == Some(client_id)
                        && m.user_id == new.user_id
                        && m.timestamp_ms >= new.timestamp_ms - CLIENT_ID_WINDOW_MS =>
                {
                    Some(m)
                }
                _ => None,
            })
    }

    fn target(&self, id: &str) -> Option<Target> {
        let message = self.message(id)?;
        let reactions = self.reactions.get(id);
        Some(Target {
            room_id: message.room_id.clone(),
            author: message.user_id.clone(),
            kind: message.kind,
            deleted: message.deleted,
            emoji_counts: reactions
                .into_iter()
                .flatten()
                .map(|(emoji, users)| (emoji.clone(), users.len() as u64))
                .collect(),
            reacted: reactions
                .into_iter()
                .flatten()
                .flat_map(|(emoji, users)| users.iter().map(|(u, _)| (emoji.clone(), u.clone())))
                .collect(),
        })
    }

    fn summary(&self, message_id: &str) -> Vec<ReactionSummary> {
        self.reactions
            .get(message_id)
            .into_iter()
            .flatten()
            .map(|(emoji, users)| ReactionSummary {
                emoji: emoji.clone(),
                count: users.len() as u64,
                user_ids: users
                    .iter()
                    .take(MAX_REACTION_USERS)
                    .map(|(u, _)| u.to_string())
                    .collect(),
            })
            .collect()
    }

    /// Applies a stored event to the kept state and keeps it.
    fn apply(&mut self, event: RoomEvent, at_ms: i64, keep: usize) {
        match &event {
            RoomEvent::Message(_) | RoomEvent::CallEnded(_) => {}
            RoomEvent::Edited(edit) => {
                if let Some(message) = self.message_mut(&edit.message_id) {
                    message.message.clone_from(&edit.message);
                    message.edited_at_ms = Some(edit.edited_at_ms);
                }
            }
            RoomEvent::Deleted(deletion) => {
                if let Some(message) = self.message_mut(&deletion.message_id) {
                    message.deleted = true;
                    message.message.clear();
                    message.attachments.clear();
                }
                for entry in &mut self.recent {
                    if let RoomEvent::Edited(edit) = &mut entry.event {
                        if edit.message_id == deletion.message_id {
                            edit.message.clear();
                        }
                    }
                }
                self.reactions.remove(&deletion.message_id);
            }
            RoomEvent::Reaction(change) => {
                let emojis = self.reactions.entry(change.message_id.clone()).or_default();
                let index = emojis.iter().position(|(e, _)| *e == change.emoji);
                let reaction = (change.user_id.clone(), change.seq);
                match (change.added, index) {
                    (true, Some(i)) => emojis[i].1.push(reaction),
                    (true, None) => emojis.push((change.emoji.clone(), vec![reaction])),
                    (false, Some(i)) => {
                        emojis[i].1.retain(|(u, _)| *u != change.user_id);
                        if emojis[i].1.is_empty() {
                            emojis.remove(i);
                        }
                        emojis.sort_by_key(|(_, users)| users.first().map(|(_, seq)| *seq));
                    }
                    (false, None) => {}
                }
            }
            _ => unreachable!("only durable events are kept"),
        }
        if self.recent.len() == keep {
            if let Some(Entry {
                event: RoomEvent::Message(gone),
                ..
            }) = self.recent.pop_front()
            {
                self.reactions.remove(&gone.id);
            }
        }
        if keep > 0 {
            self.recent.push_back(Entry { at_ms, event });
        }
    }
}

impl Directory {
    /// Marks the user's conversation active at `at_ms`, or just after the
    /// latest of their others: one list never holds two conversations
    /// active at the same time, so paging by time misses none.
    fn touch(&mut self, user: &str, room: &RoomId, at_ms: i64) {
        let mine = self.activity.entry(user.to_owned()).or_default();
        let latest = mine.values().copied().max();
        mine.insert(room.clone(), super::next_activity(latest, at_ms));
    }
}

pub struct MemoryStore {
    keep_per_room: usize,
    rooms: Mutex<HashMap<RoomId, RoomLog>>,
    markers: Mutex<HashMap<RoomId, HashMap<String, u64>>>,
    directory: Mutex<Directory>,
    /// Taken after `rooms` when both are.
    files: Mutex<MemoryFiles>,
    blobs_released: Arc<tokio::sync::Notify>,
}

/// Who belongs where, and who blocks whom.
#[derive(Default)]
struct Directory {
    members: HashMap<RoomId, Vec<String>>,
    /// Direct conversations and their two users.
    dms: HashMap<RoomId, [String; 2]>,
    /// Each user's conversations and when each was last active, as that
    /// user's list orders them.
    activity: HashMap<String, HashMap<RoomId, i64>>,
    blocks: HashSet<(String, String)>,
    last_seen: HashMap<String, i64>,
}

fn at_ms(event: &NewEvent) -> i64 {
    match event {
        NewEvent::Message(new) => new.timestamp_ms,
        NewEvent::Edit(edit) => edit.at_ms,
        NewEvent::Delete(deletion) => deletion.at_ms,
        NewEvent::React(reaction) => reaction.at_ms,
        NewEvent::CallEnded(call) => call.record.ended_at_ms,
    }
}

impl MemoryStore {
    pub(super) fn new(keep_per_room: usize) -> MemoryStore {
        MemoryStore {
            keep_per_room,
            rooms: Mutex::default(),
            markers: Mutex::default(),
            directory: Mutex::default(),
            files: Mutex::default(),
            blobs_released: Arc::default(),
        }
    }

    pub(super) fn files(&self) -> MutexGuard<'_, MemoryFiles> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn blobs_released(&self) -> Arc<tokio::sync::Notify> {
        self.blobs_released.clone()
    }

    /// Files of uploads never sent and older than the cutoff, and of
    /// messages no longer kept (deleted, pruned, or past the window).
    fn sweep_files(&self, unsent_before_ms: i64) -> bool {
        let rooms = self.rooms();
        let mut files = self.files();
        files.remove_where(|file| match &file.message_id {
            None => file.created_at_ms < unsent_before_ms,
            Some(id) => rooms
                .get(&file.room_id)
                .and_then(|log| log.message(id))
                .is_none_or(|message| message.deleted),
        });
        true
    }

    fn directory(&self) -> MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn change(&self, change: Change) -> bool {
        match change {
            Change::MarkRead { room, user, seq } => self.mark_read(&room, &user, seq),
            Change::AddMember { room, user, .. } => {
                let mut directory = self.directory();
                let members = directory.members.entry(room).or_default();
                let added = !members.contains(&user);
                if added {
                    members.push(user);
                }
                added
            }
            Change::RemoveMember { room, user } => {
                let mut directory = self.directory();
                let members = directory.members.entry(room).or_default();
                let before = members.len();
                members.retain(|member| *member != user);
                members.len() != before
            }
            Change::OpenDm { room, users, at_ms } => {
                let mut directory = self.directory();
                if directory.dms.contains_key(&room) {
                    return false;
                }
                directory.members.insert(room.clone(), users.to_vec());
                for user in &users {
                    directory.touch(user, &room, at_ms);
                }
                directory.dms.insert(room, users);
                true
            }
            Change::Block { user, blocked, .. } => self.directory().blocks.insert((user, blocked)),
            Change::Unblock { user, blocked } => self.directory().blocks.remove(&(user, blocked)),
            Change::LastSeen { user, at_ms } => {
                self.directory().last_seen.insert(user, at_ms);
                true
            }
            Change::AddFile(file) => self.files().add(*file),
            Change::SweepFiles { unsent_before_ms } => self.sweep_files(unsent_before_ms),
            Change::ForgetBlob(hash) => self.files().forget(&hash),
        }
    }

    pub(super) fn is_member(&self, room: &RoomId, user: &str) -> bool {
        self.directory()
            .members
            .get(room)
            .is_some_and(|members| members.iter().any(|m| m == user))
    }

    pub(super) fn members(&self, room: &RoomId) -> Vec<String> {
        self.directory()
            .members
            .get(room)
            .cloned()
            .unwrap_or_default()
    }

    pub(super) fn dm_peer(&self, room: &RoomId, user: &str) -> Option<String> {
        let directory = self.directory();
        let [a, b] = directory.dms.get(room)?;
        match user {
            _ if a == user => Some(b.clone()),
            _ if b == user => Some(a.clone()),
            _ => None,
        }
    }

    pub(super) fn dm_page(&self, user: &str, before_ms: Option<i64>, limit: u32) -> DmPage {
        let directory = self.directory();
        let mut mine: Vec<(RoomId, String, i64)> = directory
            .activity
            .get(user)
            .into_iter()
            .flatten()
            .filter(|(_, at)| before_ms.is_none_or(|before| **at < before))
            .filter_map(|(room, at)| {
                let [a, b] = directory.dms.get(room)?;
                let peer = if a == user { b } else { a };
                Some((room.clone(), peer.clone(), *at))
            })
            .collect();
        drop(directory);
        mine.sort_by(|x, y| y.2.cmp(&x.2).then_with(|| y.0.cmp(&x.0)));
        let has_more = mine.len() > limit as usize;
        mine.truncate(limit as usize);
        let conversations = mine
            .into_iter()
            .map(|(room, peer, at)| {
                let read = self.read_state(&room, user);
                let rooms = self.rooms();
                let log = rooms.get(&room);
                let last_message = log.and_then(|log| {
                    log.recent
                        .iter()
                        .rev()
                        .find_map(|entry| match &entry.event {
                            RoomEvent::Message(m) => Some(m.clone()),
                            _ => None,
                        })
                });
                DmConversation {
                    room_id: room.as_str().to_owned(),
                    user_id: peer,
                    last_seq: log.map_or(0, |log| log.last_seq),
                    read_seq: read.read_seq,
                    unread: read.unread,
                    last_message,
                    last_activity_ms: at,
                }
            })
            .collect();
        DmPage {
            conversations,
            has_more,
        }
    }

    pub(super) fn is_blocked(&self, user: &str, by: &str) -> bool {
        self.directory()
            .blocks
            .contains(&(by.to_owned(), user.to_owned()))
    }

    pub(super) fn last_seen(&self, users: &[&str]) -> HashMap<String, i64> {
        let directory = self.directory();
        users
            .iter()
            .filter_map(|user| {
                directory
                    .last_seen
                    .get(*user)
                    .map(|at| ((*user).to_owned(), *at))
            })
            .collect()
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<RoomId, RoomLog>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn append(&self, batch: &[NewEvent]) -> Vec<Appended> {
        let mut rooms = self.rooms();
        let mut files = self.files();
        let mut released = false;
        // Only what is still kept can be recognised: after a restart, or
        // past the window kept, a resend is stored again and an old
        // message cannot be edited.
        let mut targets: HashMap<String, Target> = HashMap::new();
        for event in batch {
            if let Some(id) = event.target() {
                if let Some(target) = rooms.get(event.room_id()).and_then(|log| log.target(id)) {
                    targets.insert(id.to_owned(), target);
                }
            }
        }
        let mut answers = Vec::with_capacity(batch.len());
        for event in batch {
            let log = rooms.entry(event.room_id().clone()).or_default();
            if let NewEvent::Message(new) = event {
                if let Some(original) = log.earlier_send(new) {
                    answers.push(Appended::Repeated(original.clone()));
                    continue;
                }
            }
            let decision = rules::decide([event], &mut targets, &mut files.records).remove(0);
            answers.push(match decision {
                Decision::Store => {
                    log.last_seq += 1;
                    let mut stored = event.stored(log.last_seq);
                    if let (NewEvent::Message(new), RoomEvent::Message(message)) =
                        (event, &mut stored)
                    {
                        message.attachments = new
                            .attachments
                            .iter()
                            .filter_map(|id| files.records.get(id))
                            .map(|file| file.attachment())
                            .collect();
                    }
                    if let NewEvent::Delete(deletion) = event {
                        let gone = Some(deletion.message_id.as_str());
                        released |= files.remove_where(|file| file.message_id.as_deref() == gone);
                    }
                    if let NewEvent::Message(new) = event {
                        if new.room_id.access() == RoomAccess::Direct {
                            let mut directory = self.directory();
                            if let Some(users) = directory.dms.get(&new.room_id).cloned() {
                                for user in &users {
                                    directory.touch(user, &new.room_id, new.timestamp_ms);
                                }
                            }
                        }
                    }
                    log.apply(stored.clone(), at_ms(event), self.keep_per_room);
                    Appended::Stored(stored)
                }
                Decision::Unchanged => Appended::Unchanged,
                Decision::Refuse(refusal) => Appended::Refused(refusal),
            });
        }
        if released {
            self.blobs_released.notify_one();
        }
        answers
    }

    pub(super) fn last_seq(&self, room: &RoomId) -> u64 {
        self.rooms().get(room).map_or(0, |log| log.last_seq)
    }

    pub(super) fn after(&self, room: &RoomId, since: u64, limit: usize) -> Vec<RoomEvent> {
        let rooms = self.rooms();
        let Some(log) = rooms.get(room) else {
            return Vec::new();
        };
        log.recent
            .iter()
            .filter(|entry| entry.event.seq().is_some_and(|seq| seq > since))
            .take(limit)
            .map(|entry| entry.event.clone())
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
        let older: Vec<&RoomEvent> = log
            .recent
            .iter()
            .map(|entry| &entry.event)
            .filter(|event| matches!(event, RoomEvent::Message(_) | RoomEvent::CallEnded(_)))
            .filter(|event| before.is_none_or(|before| event.seq() < Some(before)))
            .collect();
        let start = older.len().saturating_sub(limit as usize);
        HistoryPage {
            messages: older[start..]
                .iter()
                .map(|event| match event {
                    RoomEvent::Message(m) => HistoryItem::Message(ChatMessage {
                        reactions: (!m.deleted).then(|| log.summary(&m.id)),
                        ..m.clone()
                    }),
                    RoomEvent::CallEnded(call) => HistoryItem::Call(call.clone()),
                    _ => unreachable!("only messages and calls are listed"),
                })
                .collect(),
            has_more: start > 0,
        }
    }

    fn markers(&self) -> MutexGuard<'_, HashMap<RoomId, HashMap<String, u64>>> {
        self.markers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_read(&self, room: &RoomId, user: &str, seq: u64) -> bool {
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
                .filter(|entry| match &entry.event {
                    RoomEvent::Message(m) => m.seq > read_seq && !m.deleted && &*m.user_id != user,
                    _ => false,
                })
                .take(MAX_UNREAD as usize)
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
            while log.recent.front().is_some_and(|e| e.at_ms < cutoff_ms) {
                if let Some(Entry {
                    event: RoomEvent::Message(gone),
                    ..
                }) = log.recent.pop_front()
                {
                    log.reactions.remove(&gone.id);
                }
                removed += 1;
            }
        }
        removed
    }
}
