//! What a connection may do about calls: who may start one and whom it
//! rings (decided here, with the room's rules), then the call itself (the
//! service's calls registry, `crate::calls`).

use std::sync::Arc;

use chat_proto::call::{CallMedia, CallRequest};
use chat_proto::client::RoomAccess;
use chat_proto::{ProtoError, RoomId};

use super::{not_in_room, store_failed, Session};
use crate::calls::{Invitee, Rings};

impl Session {
    pub(super) async fn call(&mut self, request: CallRequest) -> Result<(), ProtoError> {
        let calls = &self.shared.calls;
        match request {
            CallRequest::Start { room_id, media } => self.start_call(room_id, media).await,
            CallRequest::Accept { call_id } => calls.accept(&self.conn, &call_id),
            CallRequest::Decline { call_id } => calls.decline(&self.conn, &call_id),
            CallRequest::Hangup { call_id } => calls.hangup(&self.conn, &call_id),
            CallRequest::Signal {
                call_id,
                to_user_id,
                signal,
            } => calls.signal(&self.conn, &call_id, &to_user_id, &signal),
        }
    }

    /// Whoever may join a room may call in it: a public room's connected
    /// users are rung on their tabs in it, a members-only room's members on
    /// every tab (joined or not). A DM with someone who blocked you is
    /// refused like a message to them.
    async fn start_call(&mut self, room_id: RoomId, media: CallMedia) -> Result<(), ProtoError> {
        let me = self.identity.user_id.clone();
        let invitees: Vec<(Invitee, Rings)> = if room_id.access() == RoomAccess::Public {
            if !self.rooms.contains(&room_id) {
                return Err(not_in_room(&room_id));
            }
            let hub = &self.shared.hub;
            hub.users_in(&room_id)
                .into_iter()
                .filter(|(user, _)| *user != me)
                .map(|(user, username)| {
                    let tabs = hub
                        .connections_in(&room_id, &user)
                        .iter()
                        .map(|conn| conn.id)
                        .collect();
                    (Invitee { user, username }, Rings::On(tabs))
                })
                .collect()
        } else {
            if let Some(peer) = self.admit(&room_id).await? {
                self.check_not_blocked_by(&peer).await?;
            }
            let members = self
                .shared
                .store
                .members(&room_id)
                .await
                .map_err(store_failed)?;
            members
                .into_iter()
                .filter(|user| **user != *me)
                .map(|user| {
                    let username = self
                        .shared
                        .presence
                        .name_of(&user)
                        .unwrap_or_else(|| user.clone());
                    let invitee = Invitee {
                        user: Arc::from(user),
                        username: Arc::from(username),
                    };
                    (invitee, Rings::Everywhere)
                })
                .collect()
        };
        self.shared
            .calls
            .start(&self.conn, &room_id, media, invitees)
    }
}
