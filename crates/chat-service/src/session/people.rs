//! What a connection may ask about people: direct conversations, presence
//! and who is in a room; and taking a user out of a private room.

use std::sync::Arc;

use chat_proto::client::MAX_PRESENCE_SUBSCRIPTIONS;
use chat_proto::ids::RoomAccess;
use chat_proto::{ErrorCode, Member, ProtoError, RoomId, ServerEvent};

use super::{depart, forbidden_room, not_in_room, store_failed, Session};
use crate::delivery::Delivery;
use crate::hub::{self, Hub};
use crate::store::{dm_room_id, Change};

impl Session {
    /// Joins the one conversation between the user and `peer`, creating it
    /// on first use (the same room whoever opens it).
    pub(super) async fn dm_open(&mut self, peer: String) -> Result<(), ProtoError> {
        let me = self.identity.user_id.clone();
        if *peer == *me {
            return Err(ProtoError::new(
                ErrorCode::InvalidUser,
                "A conversation needs someone else: that is your own user id",
            ));
        }
        self.check_not_blocked_by(&peer).await?;
        let room = dm_room_id(&me, &peer);
        let open = Change::OpenDm {
            room: room.clone(),
            users: [me.to_string(), peer],
            at_ms: chat_proto::time::now_millis(),
        };
        self.shared.store.change(open).await.map_err(store_failed)?;
        self.join(room, None).await
    }

    /// Refuses when `peer` has blocked direct messages from the user.
    pub(super) async fn check_not_blocked_by(&self, peer: &str) -> Result<(), ProtoError> {
        let blocked = self
            .shared
            .store
            .is_blocked(&self.identity.user_id, peer)
            .await
            .map_err(store_failed)?;
        if blocked {
            return Err(ProtoError::new(
                ErrorCode::Forbidden,
                "This user does not take direct messages from you",
            ));
        }
        Ok(())
    }

    pub(super) async fn dm_list(&self, before: Option<i64>, limit: u32) -> Result<(), ProtoError> {
        let page = self
            .shared
            .store
            .dm_page(&self.identity.user_id, before, limit)
            .await
            .map_err(store_failed)?;
        let frame = hub::frame(&ServerEvent::DmList {
            conversations: &page.conversations,
            has_more: page.has_more,
        });
        self.send(frame).await;
        Ok(())
    }

    /// This connection is away, or back.
    pub(super) fn status(&self, away: bool) {
        if self.conn.set_away(away) != away {
            self.shared.presence.set_away(&self.identity.user_id, away);
        }
    }

    /// Answers where the users are; starts or stops watching them first, so
    /// no change between the answer and the watch is missed.
    pub(super) async fn presence(
        &mut self,
        user_ids: Vec<String>,
        subscribe: Option<bool>,
    ) -> Result<(), ProtoError> {
        match subscribe {
            Some(true) => {
                let new: Vec<String> = user_ids
                    .iter()
                    .filter(|user| !self.watching.contains(*user))
                    .cloned()
                    .collect();
                if self.watching.len() + new.len() > MAX_PRESENCE_SUBSCRIPTIONS {
                    return Err(ProtoError::new(
                        ErrorCode::TooManySubscriptions,
                        format!(
                            "A connection may watch at most {MAX_PRESENCE_SUBSCRIPTIONS} users"
                        ),
                    ));
                }
                self.shared.hub.watch(&new, &self.conn);
                self.watching.extend(new);
            }
            Some(false) => {
                self.shared
                    .hub
                    .unwatch(user_ids.iter().map(String::as_str), &self.conn);
                for user in &user_ids {
                    self.watching.remove(user);
                }
            }
            None => {}
        }
        let users = self.shared.presence.of(&user_ids).await;
        self.send(hub::frame(&ServerEvent::Presence { users: &users }))
            .await;
        Ok(())
    }

    /// Who is in the room: for private and direct rooms the members (only
    /// a member may ask), for public rooms the users connected to it (only
    /// one in it may ask).
    pub(super) async fn members(&self, room_id: RoomId) -> Result<(), ProtoError> {
        let people: Vec<(String, Option<Arc<str>>)> = if room_id.access() == RoomAccess::Public {
            if !self.rooms.contains(&room_id) {
                return Err(not_in_room(&room_id));
            }
            match self.shared.presence.users_in(&room_id).await {
                // Every node's users, in cluster mode.
                Some(users) => users.into_iter().map(|user| (user, None)).collect(),
                None => self
                    .shared
                    .hub
                    .users_in(&room_id)
                    .into_iter()
                    .map(|(user, name)| (user.to_string(), Some(name)))
                    .collect(),
            }
        } else {
            let store = &self.shared.store;
            if !store
                .is_member(&room_id, &self.identity.user_id)
                .await
                .map_err(store_failed)?
            {
                return Err(forbidden_room());
            }
            store
                .members(&room_id)
                .await
                .map_err(store_failed)?
                .into_iter()
                .map(|user| (user, None))
                .collect()
        };
        let ids: Vec<String> = people.iter().map(|(user, _)| user.clone()).collect();
        let presence = self.shared.presence.of(&ids).await;
        let names = self.shared.presence.names_of(&ids).await;
        let members: Vec<Member> = people
            .into_iter()
            .zip(presence)
            .zip(names)
            .map(|(((user_id, name), presence), known)| Member {
                username: name
                    .map(|name| name.to_string())
                    .or(known)
                    .unwrap_or_else(|| user_id.clone()),
                user_id,
                status: presence.status,
            })
            .collect();
        let frame = hub::frame(&ServerEvent::Members {
            room_id: room_id.as_str(),
            members: &members,
        });
        self.send(frame).await;
        Ok(())
    }
}

/// A user's membership of a private room was removed: each of their
/// connections in it in this process leaves it at once and is told
/// `chat.removed`; the others see them leave. Returns how many connections
/// it took out.
pub(crate) fn remove_locally(hub: &Hub, bus: &dyn Delivery, room_id: &RoomId, user: &str) -> usize {
    let removed = hub::frame(&ServerEvent::Removed {
        room_id: room_id.as_str(),
    });
    let mut taken_out = 0;
    for conn in hub.connections_in(room_id, user) {
        if depart(hub, bus, room_id, &conn) {
            conn.removed_from(room_id.clone());
            conn.push(&removed);
            taken_out += 1;
        }
    }
    taken_out
}
