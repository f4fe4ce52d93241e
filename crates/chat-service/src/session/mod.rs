//! What one connection may do: the protocol's rules, applied to the
//! connection's own state (its rooms, the presence it watches) and the
//! shared hub, store and writer. `people.rs` holds what is about users
//! rather than rooms: direct conversations, presence, member lists;
//! `calls.rs` voice and video calls.

mod calls;
mod people;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chat_proto::ids::RoomAccess;
use chat_proto::{
    parse_client_frame, ClientEvent, DmPeer, ErrorCode, MessageId, MessageKind, ProtoError,
    RoomEvent, RoomId, ServerEvent,
};

use crate::delivery::{Audience, Delivery, Within};
use crate::hub::{self, ConnHandle, Frame, Hub, Push};
use crate::sequencer::Origin;
use crate::state::Shared;
use crate::store::{Actor, NewDeletion, NewEdit, NewEvent, NewMessage, NewReaction, StoreError};

/// Who is on the other end, as the gateway vouched.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) user_id: Arc<str>,
    /// The display name from the token, which outranks the client's own.
    pub(crate) username: Option<Arc<str>>,
}

pub(crate) use people::remove_locally;

pub(crate) struct Session {
    conn: ConnHandle,
    identity: Identity,
    rooms: HashSet<RoomId>,
    /// The other participant of each direct conversation joined.
    dm_peers: HashMap<RoomId, Arc<str>>,
    /// Users whose presence this connection watches.
    watching: HashSet<String>,
    /// In cluster mode, other nodes holding calls this connection took part
    /// in (told when it closes).
    call_nodes: HashSet<u64>,
    shared: Arc<Shared>,
}

/// Events read from the store per step of a recovery replay.
const RECOVERY_PAGE: usize = 64;

fn store_failed(error: StoreError) -> ProtoError {
    tracing::warn!(%error, "store request failed");
    ProtoError::new(
        ErrorCode::StoreUnavailable,
        "Message store unavailable, try again",
    )
}

impl Session {
    pub(crate) fn new(conn: ConnHandle, identity: Identity, shared: Arc<Shared>) -> Session {
        shared.presence.connected(&identity.user_id, &conn.username);
        Session {
            conn,
            identity,
            rooms: HashSet::new(),
            dm_peers: HashMap::new(),
            watching: HashSet::new(),
            call_nodes: HashSet::new(),
            shared,
        }
    }

    pub(crate) async fn on_text(&mut self, text: &str) {
        self.shared.metrics.messages_in.increment(1);
        let outcome = match parse_client_frame(text, &self.shared.config.limits.proto) {
            Ok(event) => {
                let span = tracing::debug_span!("event", name = event.name());
                let _entered = span.enter();
                self.handle(event).await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            self.reply_error(&error).await;
        }
    }

    pub(crate) async fn on_binary(&mut self) {
        self.shared.metrics.messages_in.increment(1);
        let error = ProtoError::new(
            ErrorCode::InvalidFormat,
            "Invalid message format: binary frames are not supported, send JSON text",
        );
        self.reply_error(&error).await;
    }

    async fn reply_error(&self, error: &ProtoError) {
        self.shared.metrics.error(error.code);
        // Debug-formatted: messages quote what the client sent.
        tracing::debug!(code = error.code.as_str(), message = ?error.message, "rejected frame");
        let frame = hub::frame(&ServerEvent::Error {
            message: &error.message,
            code: error.code,
        });
        self.send(frame).await;
    }

    /// Queues a reply to this connection's own request, waiting while the
    /// client reads what is ahead of it, but no longer than the idle
    /// timeout: a client that cannot take its own replies is cut off like
    /// any slow consumer. False when the connection is gone or going.
    async fn send(&self, frame: Frame) -> bool {
        let patience = self.shared.config.limits.idle_timeout;
        match self.conn.reply(frame, patience).await {
            Push::Queued => true,
            Push::Evicted { first } => {
                if first {
                    self.shared.metrics.slow_consumers.increment(1);
                }
                false
            }
            Push::Gone => false,
        }
    }

    async fn handle(&mut self, event: ClientEvent) -> Result<(), ProtoError> {
        // Rooms the application took this connection out of meanwhile.
        for room in self.conn.take_removals() {
            self.rooms.remove(&room);
            self.dm_peers.remove(&room);
        }
        match event {
            ClientEvent::Join { room_id, since } => self.join(room_id, since).await,
            ClientEvent::Leave { room_id } => self.leave(room_id),
            ClientEvent::Message {
                room_id,
                message,
                username,
                client_id,
                attachments,
            } => {
                self.message(room_id, message, username, client_id, attachments)
                    .await
            }
            ClientEvent::Typing {
                room_id,
                username,
                is_typing,
            } => self.typing(room_id, username, is_typing),
            ClientEvent::History {
                room_id,
                before,
                limit,
            } => self.history(room_id, before, limit).await,
            ClientEvent::Read { room_id, seq } => self.read(room_id, seq).await,
            ClientEvent::Receipts { room_id } => self.receipts(room_id).await,
            ClientEvent::Edit {
                room_id,
                message_id,
                message,
            } => {
                let edit = NewEdit {
                    id: new_id(),
                    room_id,
                    message_id: message_id.into_string(),
                    user_id: self.identity.user_id.clone(),
                    message,
                    at_ms: chat_proto::time::now_millis(),
                };
                self.submit(NewEvent::Edit(edit)).await
            }
            ClientEvent::Delete {
                room_id,
                message_id,
            } => {
                let deletion = NewDeletion {
                    id: new_id(),
                    room_id,
                    message_id: message_id.into_string(),
                    by: Actor::User(self.identity.user_id.clone()),
                    at_ms: chat_proto::time::now_millis(),
                };
                self.submit(NewEvent::Delete(deletion)).await
            }
            ClientEvent::React {
                room_id,
                message_id,
                emoji,
                added,
            } => self.react(room_id, message_id, emoji, added).await,
            ClientEvent::DmOpen { user_id } => self.dm_open(user_id).await,
            ClientEvent::DmList { before, limit } => self.dm_list(before, limit).await,
            ClientEvent::Status { away } => {
                self.status(away);
                Ok(())
            }
            ClientEvent::Presence {
                user_ids,
                subscribe,
            } => self.presence(user_ids, subscribe).await,
            ClientEvent::Members { room_id } => self.members(room_id).await,
            ClientEvent::Call(request) => self.call(request).await,
        }
    }

    async fn react(
        &self,
        room_id: RoomId,
        message_id: MessageId,
        emoji: String,
        added: bool,
    ) -> Result<(), ProtoError> {
        let reaction = NewReaction {
            id: new_id(),
            room_id,
            message_id: message_id.into_string(),
            user_id: self.identity.user_id.clone(),
            emoji,
            added,
            at_ms: chat_proto::time::now_millis(),
        };
        self.submit(NewEvent::React(reaction)).await
    }

    /// Hands a durable event to the sequencer: the connection is answered
    /// (with the room's copy, or an error) once it is committed.
    async fn submit(&self, event: NewEvent) -> Result<(), ProtoError> {
        if !self.rooms.contains(event.room_id()) {
            return Err(not_in_room(event.room_id()));
        }
        // A new message in a direct conversation also reaches both users'
        // connections that are not in it.
        let dm = match (&event, self.dm_peers.get(event.room_id())) {
            (NewEvent::Message(_), Some(peer)) => {
                Some([self.identity.user_id.clone(), peer.clone()])
            }
            _ => None,
        };
        self.conn.expect_answer();
        let origin = Origin::Connection(self.conn.clone());
        if self.shared.sequencer.submit(event, origin, dm).await {
            Ok(())
        } else {
            self.conn.answered();
            Err(ProtoError::new(
                ErrorCode::Unavailable,
                "The service is shutting down",
            ))
        }
    }

    fn typing(
        &self,
        room_id: RoomId,
        username: Option<String>,
        is_typing: bool,
    ) -> Result<(), ProtoError> {
        let name = self.display_name(username);
        if !self
            .shared
            .hub
            .set_typing(&room_id, &self.conn, is_typing.then(|| name.clone()))
        {
            return Err(not_in_room(&room_id));
        }
        let event = RoomEvent::Typing {
            room_id: room_id.as_str().to_owned(),
            user_id: self.identity.user_id.clone(),
            username: name,
            is_typing,
        };
        self.shared.bus.room_event(&event, Some(self.conn.id));
        Ok(())
    }

    /// Enters the room and, for the user's first connection in it, tells
    /// the others; under the user's membership lock (see [`depart`]).
    fn enter(&self, room_id: &RoomId) {
        let _membership = self.conn.membership();
        if self.shared.hub.join(room_id, &self.conn) == Some(true) {
            let joined = hub::frame(&ServerEvent::UserJoined {
                user_id: &self.identity.user_id,
                room_id: room_id.as_str(),
            });
            let user = &self.identity.user_id;
            self.shared
                .bus
                .membership(room_id, user, true, joined, Some(self.conn.id));
        }
    }

    fn exit(&self, room_id: &RoomId) {
        depart(
            &self.shared.hub,
            self.shared.bus.as_ref(),
            room_id,
            &self.conn,
        );
    }

    /// Whether the user may be in the room: anyone in a public room, members
    /// in a private one, the two participants in a direct conversation
    /// (whose other participant this returns). A refusal says nothing of
    /// whether the room exists.
    async fn admit(&self, room_id: &RoomId) -> Result<Option<Arc<str>>, ProtoError> {
        let store = &self.shared.store;
        let user = &self.identity.user_id;
        let admitted = match room_id.access() {
            RoomAccess::Public => return Ok(None),
            RoomAccess::Private => store
                .is_member(room_id, user)
                .await
                .map_err(store_failed)?
                .then_some(None),
            RoomAccess::Direct => store
                .dm_peer(room_id, user)
                .await
                .map_err(store_failed)?
                .map(|peer| Some(Arc::from(peer))),
        };
        admitted.ok_or_else(forbidden_room)
    }

    /// Joins, then replays what the client missed (when it says `since`)
    /// before handing over the live messages that arrived meanwhile.
    async fn join(&mut self, room_id: RoomId, since: Option<u64>) -> Result<(), ProtoError> {
        let store = &self.shared.store;
        if self.rooms.contains(&room_id) {
            let last_seq = store.last_seq(&room_id).await.map_err(store_failed)?;
            self.reply_joined(&room_id, last_seq, None)
                .await
                .map_err(store_failed)?;
            return Ok(());
        }
        if self.rooms.len() >= self.shared.config.limits.max_rooms_per_connection {
            return Err(ProtoError::new(
                ErrorCode::TooManyRooms,
                format!(
                    "A connection may be in at most {} rooms",
                    self.shared.config.limits.max_rooms_per_connection
                ),
            ));
        }
        let dm_peer = self.admit(&room_id).await?;
        self.enter(&room_id);
        // Everything committed from here on reaches this process before
        // the replay's end is read.
        self.shared.bus.follow(&room_id).await;
        // A membership removed while this join was on its way must not be
        // missed: the removal only finds connections already in the room.
        if room_id.access() == RoomAccess::Private {
            let still = self
                .shared
                .store
                .is_member(&room_id, &self.identity.user_id)
                .await;
            if !matches!(still, Ok(true)) {
                self.exit(&room_id);
                return Err(still.map_or_else(store_failed, |_| forbidden_room()));
            }
        }
        self.rooms.insert(room_id.clone());
        if let Some(peer) = dm_peer {
            self.dm_peers.insert(room_id.clone(), peer);
        }
        match self.recover(&room_id, since).await {
            Ok(delivered_through) => {
                self.go_live(&room_id, delivered_through).await;
                Ok(())
            }
            Err(error) => {
                self.exit(&room_id);
                self.rooms.remove(&room_id);
                self.dm_peers.remove(&room_id);
                Err(store_failed(error))
            }
        }
    }

    /// Sends `chat.joined` and any replay; returns the highest `seq` the
    /// client now has, so held-back live copies of those are dropped.
    ///
    /// The replay is read and queued a page at a time, as the client takes
    /// it in: a joiner asking for everything holds one page, not the whole
    /// backlog.
    async fn recover(&self, room_id: &RoomId, since: Option<u64>) -> Result<u64, StoreError> {
        let store = &self.shared.store;
        // Read before the replay: every event up to here is committed and
        // so either in the replay or (if newer) held back for this member.
        let last_seq = store.last_seq(room_id).await?;
        let Some(since) = since else {
            self.reply_joined(room_id, last_seq, None).await?;
            return Ok(last_seq);
        };
        let cap = self.shared.config.limits.recovery_cap as u64;
        let unknown_or_too_far = since > last_seq || last_seq - since > cap;
        let mut page = if unknown_or_too_far || since == last_seq {
            Vec::new()
        } else {
            store.after(room_id, since, RECOVERY_PAGE).await?
        };
        // A replay is only whole if it starts right after `since` (older
        // events may have been pruned).
        let whole = !unknown_or_too_far
            && (since == last_seq || page.first().and_then(RoomEvent::seq) == Some(since + 1));
        self.reply_joined(room_id, last_seq, Some(whole)).await?;
        if !whole {
            return Ok(last_seq);
        }
        let mut through = since;
        loop {
            let before = through;
            for event in page.iter() {
                let Some(seq) = event.seq().filter(|seq| *seq <= last_seq) else {
                    break;
                };
                if !self.send(hub::frame(&event.as_server_event())).await {
                    return Ok(through);
                }
                through = seq;
            }
            // Done, or nothing left to read up to `last_seq` (pruned while
            // replaying): what is held back takes over from here.
            if through >= last_seq || through == before {
                return Ok(through);
            }
            page = store.after(room_id, through, RECOVERY_PAGE).await?;
        }
    }

    async fn go_live(&self, room_id: &RoomId, delivered_through: u64) {
        loop {
            let held = self
                .shared
                .hub
                .drain_pending(room_id, self.conn.id, delivered_through);
            if held.is_empty() {
                return;
            }
            for frame in held {
                if !self.send(frame).await {
                    return;
                }
            }
        }
    }

    async fn reply_joined(
        &self,
        room_id: &RoomId,
        last_seq: u64,
        recovered: Option<bool>,
    ) -> Result<(), StoreError> {
        let read = self
            .shared
            .store
            .read_state(room_id, &self.identity.user_id)
            .await?;
        let frame = hub::frame(&ServerEvent::Joined {
            room_id: room_id.as_str(),
            user_id: &self.identity.user_id,
            last_seq,
            recovered,
            read_seq: read.read_seq,
            unread: read.unread,
            dm: self
                .dm_peers
                .get(room_id)
                .map(|peer| DmPeer { user_id: peer }),
        });
        self.send(frame).await;
        Ok(())
    }

    /// Moves the user's read marker forward (never back, never past the
    /// room's last `seq`) and tells the room, the user's other tabs
    /// included; a marker that does not move says nothing.
    async fn read(&self, room_id: RoomId, seq: u64) -> Result<(), ProtoError> {
        if !self.rooms.contains(&room_id) {
            return Err(not_in_room(&room_id));
        }
        let store = &self.shared.store;
        let last_seq = store.last_seq(&room_id).await.map_err(store_failed)?;
        let seq = seq.min(last_seq);
        let user = &self.identity.user_id;
        if seq == 0
            || !store
                .mark_read(&room_id, user, seq)
                .await
                .map_err(store_failed)?
        {
            return Ok(());
        }
        let read = RoomEvent::Read {
            room_id: room_id.as_str().to_owned(),
            user_id: user.clone(),
            seq,
        };
        let frame = hub::frame(&read.as_server_event());
        let bus = &self.shared.bus;
        let except = Some(self.conn.id);
        bus.deliver(
            Audience::Room {
                room: room_id.as_str(),
                except,
            },
            &frame,
            None,
        );
        // The reader's tabs that are not in the room learn it too (their
        // unread counts go down).
        bus.deliver(
            Audience::User {
                user,
                except,
                within: Within::Outside(room_id.as_str()),
            },
            &frame,
            None,
        );
        Ok(())
    }

    async fn receipts(&self, room_id: RoomId) -> Result<(), ProtoError> {
        if !self.rooms.contains(&room_id) {
            return Err(not_in_room(&room_id));
        }
        let receipts = self
            .shared
            .store
            .receipts(&room_id)
            .await
            .map_err(store_failed)?;
        let frame = hub::frame(&ServerEvent::Receipts {
            room_id: room_id.as_str(),
            receipts: &receipts,
        });
        self.send(frame).await;
        Ok(())
    }

    fn leave(&mut self, room_id: RoomId) -> Result<(), ProtoError> {
        if !self.rooms.remove(&room_id) {
            return Err(not_in_room(&room_id));
        }
        self.dm_peers.remove(&room_id);
        self.exit(&room_id);
        Ok(())
    }

    async fn message(
        &mut self,
        room_id: RoomId,
        message: String,
        username: Option<String>,
        client_id: Option<String>,
        attachments: Vec<String>,
    ) -> Result<(), ProtoError> {
        if let Some(peer) = self.dm_peers.get(&room_id) {
            self.check_not_blocked_by(peer).await?;
        }
        let new = NewMessage {
            id: new_id(),
            room_id,
            user_id: self.identity.user_id.clone(),
            username: self.display_name(username),
            message,
            timestamp_ms: chat_proto::time::now_millis(),
            client_id,
            kind: MessageKind::User,
            attachments,
        };
        self.submit(NewEvent::Message(new)).await
    }

    async fn history(
        &self,
        room_id: RoomId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<(), ProtoError> {
        if !self.rooms.contains(&room_id) {
            return Err(not_in_room(&room_id));
        }
        let page = self
            .shared
            .history_page(&room_id, before, limit)
            .await
            .map_err(store_failed)?;
        let frame = hub::frame(&ServerEvent::History {
            room_id: room_id.as_str(),
            messages: &page.messages,
            has_more: page.has_more,
        });
        self.send(frame).await;
        Ok(())
    }

    /// The token's name, else the client's, else the user id.
    fn display_name(&self, from_client: Option<String>) -> Arc<str> {
        match (&self.identity.username, from_client) {
            (Some(vouched), _) => vouched.clone(),
            (None, Some(own)) => Arc::from(own),
            (None, None) => self.identity.user_id.clone(),
        }
    }

    /// Disconnect means leaving every room, with the same announcements,
    /// and no longer watching anyone.
    pub(crate) fn leave_all(&mut self) {
        for room_id in std::mem::take(&mut self.rooms) {
            self.exit(&room_id);
        }
        self.dm_peers.clear();
        let watching = std::mem::take(&mut self.watching);
        self.shared
            .hub
            .unwatch(watching.iter().map(String::as_str), &self.conn);
        self.shared
            .presence
            .disconnected(&self.identity.user_id, self.conn.is_away());
        let call_nodes = std::mem::take(&mut self.call_nodes);
        self.shared.calls.connection_closed(&self.conn, call_nodes);
    }
}

/// Takes the connection out of the room, telling the others when the user
/// stops typing and when this was their last connection in it; under the
/// user's membership lock, so that one tab leaving as another joins is
/// announced in the order it happened. False if it was not in the room.
fn depart(hub: &Hub, bus: &dyn Delivery, room_id: &RoomId, conn: &ConnHandle) -> bool {
    let _membership = conn.membership();
    let Some(departure) = hub.leave(room_id, conn) else {
        return false;
    };
    let room = room_id.as_str();
    if let Some(username) = departure.typing_as {
        let stopped = RoomEvent::Typing {
            room_id: room.to_owned(),
            user_id: conn.user_id.clone(),
            username,
            is_typing: false,
        };
        bus.room_event(&stopped, None);
    }
    if departure.last_of_user {
        let left = hub::frame(&ServerEvent::UserLeft {
            user_id: &conn.user_id,
            room_id: room,
        });
        bus.membership(room_id, &conn.user_id, false, left, None);
    }
    true
}

fn forbidden_room() -> ProtoError {
    ProtoError::new(ErrorCode::Forbidden, "Not a member of this room")
}

/// A new event or message id: time-ordered, unique.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn not_in_room(room_id: &RoomId) -> ProtoError {
    ProtoError::new(
        ErrorCode::NotInRoom,
        format!("Not in room {room_id}: join it first"),
    )
}
