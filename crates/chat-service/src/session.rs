//! What one connection may do: the protocol's rules, applied to the
//! connection's own state (its rooms) and the shared hub, store and writer.

use std::collections::HashSet;
use std::sync::Arc;

use chat_proto::{
    parse_client_frame, ClientEvent, ErrorCode, MessageKind, ProtoError, RoomId, ServerEvent,
};

use crate::hub::{self, ConnHandle, Frame, Push};
use crate::sequencer::Origin;
use crate::state::Shared;
use crate::store::{NewMessage, StoreError};

/// Who is on the other end, as the gateway vouched.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) user_id: Arc<str>,
    /// The display name from the token, which outranks the client's own.
    pub(crate) username: Option<Arc<str>>,
}

pub(crate) struct Session {
    conn: ConnHandle,
    identity: Identity,
    rooms: HashSet<RoomId>,
    shared: Arc<Shared>,
}

/// Messages read from the store per step of a recovery replay.
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
        Session {
            conn,
            identity,
            rooms: HashSet::new(),
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
        match event {
            ClientEvent::Join { room_id, since } => self.join(room_id, since).await,
            ClientEvent::Leave { room_id } => self.leave(room_id),
            ClientEvent::Message {
                room_id,
                message,
                username,
                client_id,
            } => self.message(room_id, message, username, client_id).await,
            ClientEvent::Typing {
                room_id,
                username,
                is_typing,
            } => {
                let name = self.display_name(username);
                if self
                    .shared
                    .hub
                    .typing(&room_id, &self.conn, &name, is_typing)
                {
                    Ok(())
                } else {
                    Err(not_in_room(&room_id))
                }
            }
            ClientEvent::History {
                room_id,
                before,
                limit,
            } => self.history(room_id, before, limit).await,
            ClientEvent::Read { room_id, seq } => self.read(room_id, seq).await,
            ClientEvent::Receipts { room_id } => self.receipts(room_id).await,
        }
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
        self.shared.hub.join(&room_id, &self.conn);
        self.rooms.insert(room_id.clone());
        match self.recover(&room_id, since).await {
            Ok(delivered_through) => {
                self.go_live(&room_id, delivered_through).await;
                Ok(())
            }
            Err(error) => {
                self.shared.hub.leave(&room_id, &self.conn);
                self.rooms.remove(&room_id);
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
        // Read before the replay: every message up to here is committed and
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
        // messages may have been pruned).
        let whole = !unknown_or_too_far
            && (since == last_seq || page.first().is_some_and(|m| m.seq == since + 1));
        self.reply_joined(room_id, last_seq, Some(whole)).await?;
        if !whole {
            return Ok(last_seq);
        }
        let mut through = since;
        loop {
            let before = through;
            for message in page.iter().take_while(|m| m.seq <= last_seq) {
                if !self.send(hub::frame(&ServerEvent::stored(message))).await {
                    return Ok(through);
                }
                through = message.seq;
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
            last_seq,
            recovered,
            read_seq: read.read_seq,
            unread: read.unread,
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
        let frame = hub::frame(&ServerEvent::Read {
            room_id: room_id.as_str(),
            user_id: user,
            seq,
        });
        self.shared
            .hub
            .broadcast_except(&room_id, &frame, self.conn.id);
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
        self.shared.hub.leave(&room_id, &self.conn);
        Ok(())
    }

    async fn message(
        &mut self,
        room_id: RoomId,
        message: String,
        username: Option<String>,
        client_id: Option<String>,
    ) -> Result<(), ProtoError> {
        if !self.rooms.contains(&room_id) {
            return Err(not_in_room(&room_id));
        }
        let new = NewMessage {
            id: uuid::Uuid::now_v7().to_string(),
            room_id,
            user_id: self.identity.user_id.clone(),
            username: self.display_name(username),
            message,
            timestamp_ms: chat_proto::time::now_millis(),
            client_id,
            kind: MessageKind::User,
        };
        self.conn.expect_answer();
        let origin = Origin::Connection(self.conn.clone());
        if self.shared.sequencer.submit(new, origin).await {
            Ok(())
        } else {
            self.conn.answered();
            Err(ProtoError::new(
                ErrorCode::Unavailable,
                "The service is shutting down",
            ))
        }
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

    /// Disconnect means leaving every room, with the same announcements.
    pub(crate) fn leave_all(&mut self) {
        for room_id in self.rooms.drain() {
            self.shared.hub.leave(&room_id, &self.conn);
        }
    }
}

fn not_in_room(room_id: &RoomId) -> ProtoError {
    ProtoError::new(
        ErrorCode::NotInRoom,
        format!("Not in room {room_id}: join it first"),
    )
}
