//! Cluster mode: several service nodes on one PostgreSQL, joined through
//! Redis. The second implementation of the delivery seam: a frame goes to
//! this node's connections through its hub, and the same bytes go over
//! Redis to the nodes that host the room or user it is for.
//!
//! - **Interest-based routing.** A node subscribes to `chat:room:{room}`
//!   while it hosts the room, `chat:user:{user}` while the user has a
//!   connection here, `chat:watch:{user}` while a connection here watches
//!   the user; so no node receives traffic for rooms it does not host.
//! - **Ordered and complete.** Durable events carry their room's `seq`;
//!   each node delivers them in order through [`order::Orderer`], filling
//!   any gap from the database (which has every committed `seq`). Missed
//!   publications (a Redis outage, a dropped subscriber) are caught up on
//!   reconnect, from hints the publisher sends after an outage, and by a
//!   periodic check of the followed rooms' last `seq`.
//! - **Redis down** does not stop a node: it keeps committing and
//!   delivering to its own connections, reconnects by itself, and catches
//!   up; the outage and the recovery are logged and in metrics.
//! - **Who is where** (arrivals and departures once per user over every
//!   node, presence over every node and tab, `/stats`) is shared state in
//!   Redis, changed by scripts that also publish the announcement, so each
//!   change is announced once and in one order. Each node renews a key of
//!   its own; when one stops (killed), the others clean up after it within
//!   `PRESENCE_TTL_SECS`: its users leave their rooms and go offline.

mod incoming;
mod liveness;
mod order;
mod outgoing;
mod scripts;
mod wire;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chat_proto::{PresenceStatus, RoomId, ServerEvent, UserPresence};
use futures_util::StreamExt;
use metrics::{counter, gauge, Counter, Gauge};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::incoming::{Channel, Link};
use self::order::Orderer;
use self::outgoing::Outgoing;
use self::scripts::*;
use self::wire::{Envelope, Kind, EVERY_NODE};
use crate::calls::{CallOp, Calls};
use crate::delivery::{Audience, Delivery};
use crate::hub::{self, ConnId, Frame, Hub, Interest, InterestListener};
use crate::store::Store;

/// Bytes waiting to go to Redis before new publications are dropped (and
/// caught up later from the database).
const OUTGOING_BYTES: usize = 64 * 1024 * 1024;
/// Publications sent to Redis in one round trip.
const PUBLISH_BATCH: usize = 256;
/// How long a command to Redis may take before Redis counts as down.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a join waits to follow its room before going on regardless.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);
/// How often the followed rooms' last `seq`s are checked against the
/// database: the net under every other way of catching up.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// How long a node's claim on a room's calls lasts unless it ends first.
const CALL_CLAIM_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub redis_url: String,
    /// A node that stops renewing its key is cleaned up after this long.
    pub presence_ttl: Duration,
}

pub(crate) struct ClusterMetrics {
    redis_up: Gauge,
    outages: Counter,
    published: Counter,
    published_bytes: Counter,
    publish_dropped: Counter,
    received: Counter,
    received_bytes: Counter,
    pub(super) duplicates: Counter,
    pub(super) gaps: Counter,
    pub(super) filled: Counter,
    pub(super) dropped_held: Counter,
    swept_nodes: Counter,
}

impl ClusterMetrics {
    fn new() -> ClusterMetrics {
        ClusterMetrics {
            redis_up: gauge!("chat_cluster_redis_up"),
            outages: counter!("chat_cluster_redis_outages_total"),
            published: counter!("chat_cluster_published_total"),
            published_bytes: counter!("chat_cluster_published_bytes_total"),
            publish_dropped: counter!("chat_cluster_publish_dropped_total"),
            received: counter!("chat_cluster_received_total"),
            received_bytes: counter!("chat_cluster_received_bytes_total"),
            duplicates: counter!("chat_cluster_duplicates_dropped_total"),
            gaps: counter!("chat_cluster_gaps_total"),
            filled: counter!("chat_cluster_backfilled_events_total"),
            dropped_held: counter!("chat_cluster_held_dropped_total"),
            swept_nodes: counter!("chat_cluster_swept_nodes_total"),
        }
    }
}

pub(crate) struct Cluster {
    /// This node's id, random at each start (never [`EVERY_NODE`]).
    node: u64,
    hub: Arc<Hub>,
    store: Store,
    orderer: Arc<Orderer>,
    links: mpsc::UnboundedSender<Link>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    outgoing_bytes: Arc<AtomicUsize>,
    redis: ConnectionManager,
    up: AtomicBool,
    /// Rooms whose durable events could not be published, and how far.
    unpublished: Mutex<HashMap<RoomId, u64>>,
    metrics: Arc<ClusterMetrics>,
    config: ClusterConfig,
    /// The heartbeat, which on shutdown takes this node out of the cluster.
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The calls this node holds, for what other nodes send about them.
    calls: std::sync::OnceLock<std::sync::Weak<Calls>>,
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("REDIS_URL is not a Redis URL: {0}")]
    BadUrl(redis::RedisError),
}

impl Cluster {
    /// Starts the node's links to Redis. Redis being down at start is an
    /// outage like any other, not an error.
    pub(crate) fn start(
        config: ClusterConfig,
        hub: Arc<Hub>,
        store: Store,
        shutdown: CancellationToken,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let client =
            redis::Client::open(config.redis_url.as_str()).map_err(ClusterError::BadUrl)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(ClusterError::BadUrl)?;
        let metrics = Arc::new(ClusterMetrics::new());
        metrics.redis_up.set(1.0);
        let (links, link_queue) = mpsc::unbounded_channel();
        let (outgoing, outgoing_queue) = mpsc::unbounded_channel();
        let node = loop {
            let id = rand::random::<u64>() >> 1;
            if id != EVERY_NODE {
                break id;
            }
        };
        let cluster = Arc::new(Cluster {
            node,
            orderer: Arc::new(Orderer::new(hub.clone(), store.clone(), metrics.clone())),
            hub: hub.clone(),
            store,
            links,
            outgoing,
            outgoing_bytes: Arc::default(),
            redis,
            up: AtomicBool::new(true),
            unpublished: Mutex::default(),
            metrics,
            config,
            heartbeat: Mutex::default(),
            calls: std::sync::OnceLock::new(),
        });
        hub.set_interest_listener(cluster.clone());
        tracing::info!(node = cluster.node, "cluster mode: joined through Redis");
        tokio::spawn(
            cluster
                .clone()
                .subscriber(client, link_queue, shutdown.clone()),
        );
        tokio::spawn(cluster.clone().sender(outgoing_queue));
        let heartbeat = tokio::spawn(cluster.clone().heartbeat(shutdown.clone()));
        *cluster.heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Some(heartbeat);
        tokio::spawn(cluster.clone().reconcile(shutdown));
        Ok(cluster)
    }

    /// Presence of this node's users changed: the cluster works out their
    /// status over every node and tells the watchers.
    pub(crate) fn presence_changed(
        &self,
        user: &Arc<str>,
        name: &Arc<str>,
        connections: usize,
        away: usize,
        seen_ms: Option<i64>,
    ) {
        let seen = seen_ms.unwrap_or_else(chat_proto::time::now_millis);
        self.queue(Outgoing::Presence {
            user: user.clone(),
            connections,
            away,
            seen_ms: seen,
            name: name.clone(),
            envelopes: watch_envelopes(user, seen_ms),
        });
    }

    /// Each user's status and last seen over every node; `None` when Redis
    /// cannot say.
    pub(crate) async fn presence_of(
        &self,
        users: &[String],
    ) -> Option<Vec<(PresenceStatus, Option<i64>, Option<String>)>> {
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("HMGET")
                .arg(presence_key(user))
                .arg("status")
                .arg("seen")
                .arg("name");
        }
        let answers: Vec<(Option<String>, Option<i64>, Option<String>)> =
            match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut redis)).await {
                Ok(Ok(answers)) => answers,
                failed => {
                    self.went_down(&describe(failed));
                    return None;
                }
            };
        Some(
            answers
                .into_iter()
                .map(|(status, seen, name)| {
                    let status = match status.as_deref() {
                        Some("online") => PresenceStatus::Online,
                        Some("away") => PresenceStatus::Away,
                        _ => PresenceStatus::Offline,
                    };
                    (status, seen, name)
                })
                .collect(),
        )
    }

    /// The users in a (public) room on any node.
    pub(crate) async fn users_in(&self, room: &RoomId) -> Option<Vec<String>> {
        let mut redis = self.redis.clone();
        let users: Result<Result<Vec<String>, _>, _> = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("SMEMBERS")
                .arg(room_users_key(room.as_str()))
                .query_async(&mut redis),
        )
        .await;
        match users {
            Ok(Ok(mut users)) => {
                users.sort();
                Some(users)
            }
            _ => None,
        }
    }

    /// Counts over every live node: distinct users, connections, rooms.
    pub(crate) async fn stats(&self) -> Option<(usize, usize, usize)> {
        let mut redis = self.redis.clone();
        let counted = tokio::time::timeout(
            REDIS_TIMEOUT,
            Script::new(STATS)
                .prepare_invoke()
                .invoke_async::<(usize, usize, usize)>(&mut redis),
        )
        .await;
        match counted {
            Ok(Ok(counts)) => Some(counts),
            _ => None,
        }
    }

    /// This node's id in the cluster.
    pub(crate) fn node(&self) -> u64 {
        self.node
    }

    /// The calls this node holds, to hand what other nodes send about them.
    pub(crate) fn hold_calls(&self, calls: &Arc<Calls>) {
        let _ = self.calls.set(Arc::downgrade(calls));
    }

    /// Sends what is asked of a call to the node holding it.
    pub(crate) fn send_call(&self, node: u64, op: &CallOp) {
        let envelope = Envelope::new(Kind::Call, self.node, "", wire::encode_call(op));
        self.publish(node_channel(node), envelope, None);
    }

    /// The node holding the room's calls (one call per room over the
    /// cluster): the one that already does, if it is alive, else this one.
    /// `None` if Redis cannot say (the call is then held here).
    pub(crate) async fn claim_calls(&self, room: &RoomId) -> Option<u64> {
        let mut redis = self.redis.clone();
        let claim = Script::new(CLAIM_CALLS);
        let mut call = claim.key(calls_key(room.as_str()));
        call.arg(self.node).arg(CALL_CLAIM_TTL.as_millis() as u64);
        match tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async::<String>(&mut redis)).await {
            Ok(Ok(node)) => node.parse().ok(),
            _ => None,
        }
    }

    /// Whether this node holds (or now takes) the cluster-wide lease on a
    /// chore that one node at a time must do, for `ttl`; false when Redis
    /// cannot say (the chore waits).
    pub(crate) async fn lease(&self, chore: &str, ttl: Duration) -> bool {
        let mut redis = self.redis.clone();
        let lease = Script::new(LEASE);
        let mut call = lease.key(format!("chat:lease:{chore}"));
        call.arg(self.node).arg(ttl.as_millis() as u64);
        matches!(
            tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async::<i64>(&mut redis)).await,
            Ok(Ok(1))
        )
    }

    /// The room's call ended here: the next one may start anywhere.
    pub(crate) async fn release_calls(&self, room: &RoomId) {
        let mut redis = self.redis.clone();
        let release = Script::new(RELEASE_CALLS);
        let mut call = release.key(calls_key(room.as_str()));
        call.arg(self.node);
        let _ = tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async::<i64>(&mut redis)).await;
    }

    /// Resolves once the node has left the cluster (after its shutdown
    /// token was cancelled), within a bound.
    pub(crate) async fn stopped(&self) {
        let heartbeat = self
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(heartbeat) = heartbeat {
            let _ = tokio::time::timeout(Duration::from_secs(10), heartbeat).await;
        }
    }
}

/// The envelopes a watcher may be sent for the user: online, away, offline.
fn watch_envelopes(user: &str, seen_ms: Option<i64>) -> [Bytes; 3] {
    [
        PresenceStatus::Online,
        PresenceStatus::Away,
        PresenceStatus::Offline,
    ]
    .map(|status| {
        let presence = UserPresence {
            user_id: user.to_owned(),
            status,
            last_seen_ms: seen_ms,
        };
        let frame = hub::frame(&ServerEvent::PresenceChanged(&presence));
        Envelope::new(Kind::Watch, EVERY_NODE, user, frame.bytes()).encode()
    })
}

fn describe<T, E: std::fmt::Display, U>(outcome: Result<Result<T, E>, U>) -> String {
    match outcome {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no answer in time".to_owned(),
    }
}

impl InterestListener for Cluster {
    fn interest(&self, change: Interest) {
        let link = match change {
            Interest::RoomHosted(room) => {
                self.queue(Outgoing::Hosted {
                    room: room.clone(),
                    hosted: true,
                });
                Link::Subscribe(Channel::Room(room))
            }
            Interest::RoomDropped(room) => {
                self.queue(Outgoing::Hosted {
                    room: room.clone(),
                    hosted: false,
                });
                Link::Unsubscribe(Channel::Room(room))
            }
            Interest::UserHere(user) => Link::Subscribe(Channel::User(user)),
            Interest::UserGone(user) => Link::Unsubscribe(Channel::User(user)),
            Interest::Watching(user) => Link::Subscribe(Channel::Watch(user)),
            Interest::NotWatching(user) => Link::Unsubscribe(Channel::Watch(user)),
        };
        let _ = self.links.send(link);
    }
}

impl Delivery for Cluster {
    fn deliver(&self, audience: Audience<'_>, frame: &Frame, seq: Option<u64>) -> usize {
        match audience {
            Audience::Room { room, except } => {
                let mut envelope = Envelope::new(Kind::Room, self.node, room, frame.bytes());
                envelope.except = except.unwrap_or(0);
                if let Some(seq) = seq {
                    envelope.seq = seq;
                    let room_id = RoomId::parse(room, &chat_proto::ProtoLimits::default()).ok();
                    self.publish(room_channel(room), envelope, room_id.map(|r| (r, seq)));
                    // In order with what other nodes committed.
                    return self.orderer.offer(room, seq, frame.clone());
                }
                self.publish(room_channel(room), envelope, None);
                self.hub.deliver(audience, frame, None)
            }
            Audience::User {
                user,
                except,
                within,
            } => {
                let mut envelope = Envelope::new(Kind::User, self.node, user, frame.bytes());
                envelope.except = except.unwrap_or(0);
                envelope.within = wire::Rooms::of(within);
                self.publish(user_channel(user), envelope, None);
                self.hub.deliver(audience, frame, None)
            }
            Audience::Watchers { user } => {
                let envelope = Envelope::new(Kind::Watch, self.node, user, frame.bytes());
                self.publish(watch_channel(user), envelope, None);
                self.hub.deliver(audience, frame, None)
            }
            Audience::Connection { user, conn } => {
                let reached = self.hub.deliver(audience, frame, None);
                if reached == 0 {
                    let mut envelope =
                        Envelope::new(Kind::Connection, self.node, user, frame.bytes());
                    envelope.conn = conn;
                    self.publish(user_channel(user), envelope, None);
                }
                reached
            }
        }
    }

    fn membership(
        &self,
        room: &RoomId,
        user: &Arc<str>,
        arrived: bool,
        frame: Frame,
        except: Option<ConnId>,
    ) {
        let mut envelope = Envelope::new(Kind::Room, EVERY_NODE, room.as_str(), frame.bytes());
        envelope.except = except.unwrap_or(0);
        self.queue(Outgoing::Membership {
            room: room.clone(),
            user: user.clone(),
            arrived,
            envelope: envelope.encode(),
            fallback: Some((frame, except)),
        });
    }

    fn follow<'a>(&'a self, room: &'a RoomId) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if let Some(ready) = self.orderer.ready(room) {
                if tokio::time::timeout(FOLLOW_WAIT, ready).await.is_err() {
                    tracing::warn!(room = ?room.as_str(), "following a room took too long; going on");
                }
            }
        })
    }

    fn remove_member(&self, room: &RoomId, user: &str) {
        let envelope = Envelope::new(
            Kind::Removal,
            self.node,
            room.as_str(),
            Bytes::copy_from_slice(user.as_bytes()),
        );
        self.publish(room_channel(room.as_str()), envelope, None);
        crate::session::remove_locally(&self.hub, self, room, user);
    }
}
