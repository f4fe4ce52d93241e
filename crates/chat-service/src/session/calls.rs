//! What a connection may do about calls: who may start one and whom it
//! rings (decided here, with the room's rules), then the call itself (the
//! service's calls, `crate::calls`, which in cluster mode sends what is
//! asked to the node holding the call).

use std::sync::Arc;

use chat_proto::call::{CallMedia, CallRequest};
use chat_proto::ids::RoomAccess;
use chat_proto::{ProtoError, RoomId};

use super::{not_in_room, store_failed, Session};
use crate::calls::{party, CallOp, Invitee, Rings};

impl Session {
    pub(super) async fn call(&mut self, request: CallRequest) -> Result<(), ProtoError> {
        let who = party(&self.conn);
        let op = match request {
            CallRequest::Start { room_id, media } => return self.start_call(room_id, media).await,
            CallRequest::Accept { call_id } => CallOp::Accept { call: call_id, who },
            CallRequest::Decline { call_id } => CallOp::Decline { call: call_id, who },
            CallRequest::Hangup { call_id } => CallOp::Hangup { call: call_id, who },
            CallRequest::Signal {
                call_id,
                to_user_id,
                signal,
            } => CallOp::Signal {
                call: call_id,
                who,
                to: Arc::from(to_user_id),
                signal,
            },
        };
        self.ask_calls(op).await
    }

    async fn ask_calls(&mut self, op: CallOp) -> Result<(), ProtoError> {
        if let Some(node) = self.shared.calls.ask(op).await? {
            self.call_nodes.insert(node);
        }
        Ok(())
    }

    /// Whoever may join a room may call in it: a public room's connected
    /// users (on any node) are rung on their tabs in it, a members-only
    /// room's members on every tab (joined or not). A DM with someone who
    /// blocked you is refused like a message to them.
    async fn start_call(&mut self, room_id: RoomId, media: CallMedia) -> Result<(), ProtoError> {
        let me = self.identity.user_id.clone();
        let (users, rings): (Vec<String>, Rings) = if room_id.access() == RoomAccess::Public {
            if !self.rooms.contains(&room_id) {
                return Err(not_in_room(&room_id));
            }
            let users = match self.shared.presence.users_in(&room_id).await {
                Some(users) => users,
                None => self
                    .shared
                    .hub
                    .users_in(&room_id)
                    .into_iter()
                    .map(|(user, _)| user.to_string())
                    .collect(),
            };
            (users, Rings::InRoom)
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
            (members, Rings::Everywhere)
        };
        let users: Vec<String> = users.into_iter().filter(|user| **user != *me).collect();
        let names = self.shared.presence.names_of(&users).await;
        let invitees = users
            .into_iter()
            .zip(names)
            .map(|(user, name)| {
                let invitee = Invitee {
                    username: Arc::from(name.unwrap_or_else(|| user.clone())),
                    user: Arc::from(user),
                };
                (invitee, rings)
            })
            .collect();
        let op = CallOp::Start {
            room: room_id,
            media,
            caller: party(&self.conn),
            invitees,
        };
        self.ask_calls(op).await
    }
}
