//! Where users are: `online` while any connection is open and not away,
//! `away` when every open connection said so, `offline` with none. Changes
//! go to the connections watching the user, through the delivery seam.
//!
//! Going offline is damped: the last connection closing starts a grace
//! period (5 s by default) and only its end, with no connection back,
//! makes the user offline; a tab reload announces nothing. `lastSeen` is
//! when the last connection closed, stored when the user goes offline (and
//! for everyone still connected when the service stops).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chat_proto::{PresenceStatus, ServerEvent, UserPresence};

use crate::cluster::Cluster;
use crate::delivery::{Audience, Delivery};
use crate::hub;
use crate::store::{Change, Store};

pub(crate) struct Presence {
    users: Mutex<HashMap<Arc<str>, UserState>>,
    grace: Duration,
    bus: Arc<dyn Delivery>,
    store: Store,
    /// In cluster mode, a user's status is worked out over every node (and
    /// announced) there; this node only reports its own connections.
    cluster: Option<Arc<Cluster>>,
}

struct UserState {
    /// The name of the user's latest connection.
    username: Arc<str>,
    connections: usize,
    away: usize,
    /// What watchers were last told (or would be, for a user nobody watches).
    announced: PresenceStatus,
    /// When the last connection closed, while going offline or offline.
    last_seen_ms: Option<i64>,
    /// Bumped on every connect, so a grace period that a reconnect
    /// interrupted ends without effect.
    generation: u64,
}

impl UserState {
    fn status(&self) -> PresenceStatus {
        match (self.connections, self.away) {
            (0, _) => PresenceStatus::Offline,
            (open, away) if away >= open => PresenceStatus::Away,
            _ => PresenceStatus::Online,
        }
    }
}

impl Presence {
    pub(crate) fn new(
        bus: Arc<dyn Delivery>,
        store: Store,
        grace: Duration,
        cluster: Option<Arc<Cluster>>,
    ) -> Presence {
        Presence {
            users: Mutex::default(),
            grace,
            bus,
            store,
            cluster,
        }
    }

    fn users(&self) -> MutexGuard<'_, HashMap<Arc<str>, UserState>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the user's watchers, under the lock so that changes of one
    /// user reach them in the order they happened.
    fn announce(&self, user: &Arc<str>, state: &mut UserState) {
        if let Some(cluster) = &self.cluster {
            cluster.presence_changed(
                user,
                &state.username,
                state.connections,
                state.away,
                state.last_seen_ms,
            );
            return;
        }
        let status = state.status();
        if status == state.announced {
            return;
        }
        state.announced = status;
        let presence = UserPresence {
            user_id: user.to_string(),
            status,
            last_seen_ms: state.last_seen_ms,
        };
        let frame = hub::frame(&ServerEvent::PresenceChanged(&presence));
        self.bus.deliver(Audience::Watchers { user }, &frame, None);
    }

    pub(crate) fn connected(&self, user: &Arc<str>, username: &Arc<str>) {
        let mut users = self.users();
        let state = users.entry(user.clone()).or_insert_with(|| UserState {
            username: username.clone(),
            connections: 0,
            away: 0,
            announced: PresenceStatus::Offline,
            last_seen_ms: None,
            generation: 0,
        });
        state.connections += 1;
        state.generation += 1;
        state.username = username.clone();
        self.announce(user, state);
    }

    /// The name a user last connected under, while this process knows it.
    pub(crate) fn name_of(&self, user: &str) -> Option<String> {
        self.users()
            .get(user)
            .map(|state| state.username.to_string())
    }

    /// Names to show for these users: from the cluster, else from this
    /// process; `None` where nobody knows one.
    pub(crate) async fn names_of(&self, users: &[String]) -> Vec<Option<String>> {
        if let Some(cluster) = &self.cluster {
            if let Some(shared) = cluster.presence_of(users).await {
                return shared.into_iter().map(|(_, _, name)| name).collect();
            }
        }
        users.iter().map(|user| self.name_of(user)).collect()
    }

    /// The users in a public room on any node, in cluster mode.
    pub(crate) async fn users_in(&self, room: &chat_proto::RoomId) -> Option<Vec<String>> {
        match &self.cluster {
            Some(cluster) => cluster.users_in(room).await,
            None => None,
        }
    }

    /// A connection said it is away (or back).
    pub(crate) fn set_away(&self, user: &Arc<str>, away: bool) {
        let mut users = self.users();
        let Some(state) = users.get_mut(user) else {
            return;
        };
        if away {
            state.away += 1;
        } else {
            state.away = state.away.saturating_sub(1);
        }
        self.announce(user, state);
    }

    /// A connection closed (`was_away` if it had said it was away). The
    /// last one starts the grace period.
    pub(crate) fn disconnected(self: &Arc<Self>, user: &Arc<str>, was_away: bool) {
        let mut users = self.users();
        let Some(state) = users.get_mut(user) else {
            return;
        };
        state.connections = state.connections.saturating_sub(1);
        if was_away {
            state.away = state.away.saturating_sub(1);
        }
        if state.connections > 0 {
            self.announce(user, state);
            return;
        }
        let closed_at = chat_proto::time::now_millis();
        state.last_seen_ms = Some(closed_at);
        let generation = state.generation;
        drop(users);
        let presence = self.clone();
        let user = user.clone();
        tokio::spawn(async move {
            tokio::time::sleep(presence.grace).await;
            presence.grace_ended(&user, generation, closed_at).await;
        });
    }

    async fn grace_ended(&self, user: &Arc<str>, generation: u64, closed_at: i64) {
        {
            let mut users = self.users();
            let Some(state) = users.get_mut(user) else {
                return;
            };
            if state.generation != generation || state.connections > 0 {
                return;
            }
            self.announce(user, state);
        }
        // Stored before the state is forgotten, so no answer in between
        // loses `lastSeen`.
        let change = Change::LastSeen {
            user: user.to_string(),
            at_ms: closed_at,
        };
        if let Err(error) = self.store.change(change).await {
            tracing::warn!(%error, user = ?user, "storing last seen failed");
        }
        let mut users = self.users();
        if users
            .get(user)
            .is_some_and(|state| state.generation == generation && state.connections == 0)
        {
            users.remove(user);
        }
    }

    /// Each user's presence now (over every node in cluster mode), with a
    /// name to show, `lastSeen` from memory or the store.
    pub(crate) async fn of(&self, users: &[String]) -> Vec<UserPresence> {
        if let Some(cluster) = &self.cluster {
            if let Some(shared) = cluster.presence_of(users).await {
                let unseen: Vec<&str> = users
                    .iter()
                    .zip(&shared)
                    .filter(|(_, (_, seen, _))| seen.is_none())
                    .map(|(user, _)| user.as_str())
                    .collect();
                let stored = if unseen.is_empty() {
                    HashMap::new()
                } else {
                    self.store.last_seen(&unseen).await.unwrap_or_default()
                };
                return users
                    .iter()
                    .zip(shared)
                    .map(|(user, (status, seen, _))| UserPresence {
                        user_id: user.clone(),
                        status,
                        last_seen_ms: seen.or_else(|| stored.get(user).copied()),
                    })
                    .collect();
            }
        }
        self.of_here(users).await
    }

    /// Presence as this process alone knows it.
    async fn of_here(&self, users: &[String]) -> Vec<UserPresence> {
        let mut known: Vec<UserPresence> = Vec::with_capacity(users.len());
        let mut unknown: Vec<&str> = Vec::new();
        {
            let states = self.users();
            for user in users {
                match states.get(user.as_str()) {
                    Some(state) => known.push(UserPresence {
                        user_id: user.clone(),
                        // Within the grace period a user still shows as
                        // they were last announced.
                        status: if state.connections == 0 {
                            state.announced
                        } else {
                            state.status()
                        },
                        last_seen_ms: state.last_seen_ms,
                    }),
                    None => unknown.push(user),
                }
            }
        }
        let stored = if unknown.is_empty() {
            HashMap::new()
        } else {
            self.store
                .last_seen(&unknown)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "reading last seen failed");
                    HashMap::new()
                })
        };
        for user in unknown {
            known.push(UserPresence {
                user_id: user.to_owned(),
                status: PresenceStatus::Offline,
                last_seen_ms: stored.get(user).copied(),
            });
        }
        // In the order asked for.
        let order: HashMap<&str, usize> = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.as_str(), i))
            .collect();
        known.sort_by_key(|p| order.get(p.user_id.as_str()).copied().unwrap_or(usize::MAX));
        known
    }

    /// The service is stopping: everyone still here was last seen now.
    pub(crate) async fn store_last_seen(&self) {
        let now = chat_proto::time::now_millis();
        let users: Vec<(Arc<str>, i64)> = self
            .users()
            .iter()
            .map(|(user, state)| {
                let seen = if state.connections > 0 {
                    now
                } else {
                    state.last_seen_ms.unwrap_or(now)
                };
                (user.clone(), seen)
            })
            .collect();
        for (user, at_ms) in users {
            let change = Change::LastSeen {
                user: user.to_string(),
                at_ms,
            };
            if let Err(error) = self.store.change(change).await {
                tracing::warn!(%error, "storing last seen at shutdown failed");
                return;
            }
        }
    }
}
