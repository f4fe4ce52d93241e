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

mod order;
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

use self::order::Orderer;
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

/// What goes to Redis, in order.
enum Outgoing {
    Publish {
        channel: String,
        payload: Bytes,
        /// A durable event: if this is lost, the room's followers are told
        /// to catch up to it after the outage.
        durable: Option<(RoomId, u64)>,
    },
    Membership {
        room: RoomId,
        user: Arc<str>,
        arrived: bool,
        /// Empty: change the state without announcing.
        envelope: Bytes,
        /// Delivered here if Redis cannot be asked.
        fallback: Option<(Frame, Option<ConnId>)>,
    },
    Presence {
        user: Arc<str>,
        connections: usize,
        away: usize,
        seen_ms: i64,
        name: Arc<str>,
        /// Online, away, offline; empty: change the state silently.
        envelopes: [Bytes; 3],
    },
    Hosted {
        room: RoomId,
        hosted: bool,
    },
}

impl Outgoing {
    fn bytes(&self) -> usize {
        match self {
            Outgoing::Publish { payload, .. } => payload.len() + 64,
            Outgoing::Membership { envelope, .. } => envelope.len() + 128,
            Outgoing::Presence { envelopes, .. } => {
                envelopes.iter().map(Bytes::len).sum::<usize>() + 128
            }
            Outgoing::Hosted { .. } => 64,
        }
    }
}

enum Link {
    Subscribe(Channel),
    Unsubscribe(Channel),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Channel {
    Room(RoomId),
    User(Arc<str>),
    Watch(Arc<str>),
    /// What other nodes send this one (for the calls it holds).
    Node(u64),
}

impl Channel {
    fn name(&self) -> String {
        match self {
            Channel::Room(room) => room_channel(room.as_str()),
            Channel::User(user) => user_channel(user),
            Channel::Watch(user) => watch_channel(user),
            Channel::Node(node) => node_channel(*node),
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

    fn queue(&self, outgoing: Outgoing) {
        let bytes = outgoing.bytes();
        if self.outgoing_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes > OUTGOING_BYTES {
            self.outgoing_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.metrics.publish_dropped.increment(1);
            if let Outgoing::Publish {
                durable: Some((room, seq)),
                ..
            } = outgoing
            {
                self.note_unpublished(room, seq);
            }
            return;
        }
        let _ = self.outgoing.send(outgoing);
    }

    fn note_unpublished(&self, room: RoomId, seq: u64) {
        let mut unpublished = self.unpublished.lock().unwrap_or_else(|p| p.into_inner());
        let last = unpublished.entry(room).or_default();
        *last = (*last).max(seq);
    }

    fn publish(&self, channel: String, envelope: Envelope, durable: Option<(RoomId, u64)>) {
        self.queue(Outgoing::Publish {
            channel,
            payload: envelope.encode(),
            durable,
        });
    }

    fn went_down(&self, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::error!(node = self.node, error = why, "Redis unreachable: serving this node's connections alone, catching up when it is back");
            self.metrics.redis_up.set(0.0);
            self.metrics.outages.increment(1);
        }
    }

    fn came_back(self: &Arc<Self>) {
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(
                node = self.node,
                "Redis reachable again: resynchronizing and catching up"
            );
            self.metrics.redis_up.set(1.0);
            tokio::spawn(self.clone().resync());
        }
    }

    /// Sends what is queued for Redis, in order, publications batched.
    async fn sender(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
        let membership = Script::new(MEMBERSHIP);
        let presence = Script::new(PRESENCE);
        let mut batch: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
        while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
            let bytes: usize = batch.iter().map(Outgoing::bytes).sum();
            self.outgoing_bytes.fetch_sub(bytes, Ordering::AcqRel);
            let mut publications = redis::pipe();
            let mut pending: Vec<Option<(RoomId, u64)>> = Vec::new();
            let mut pending_bytes = 0u64;
            for outgoing in batch.drain(..) {
                match outgoing {
                    Outgoing::Publish {
                        channel,
                        payload,
                        durable,
                    } => {
                        pending_bytes += payload.len() as u64;
                        publications.publish(channel, payload.as_ref()).ignore();
                        pending.push(durable);
                    }
                    other => {
                        // State changes keep their place among publications.
                        self.flush(&mut publications, &mut pending).await;
                        self.change_state(other, &membership, &presence).await;
                    }
                }
            }
            self.flush(&mut publications, &mut pending).await;
            self.metrics.published_bytes.increment(pending_bytes);
        }
    }

    async fn flush(
        self: &Arc<Self>,
        publications: &mut redis::Pipeline,
        pending: &mut Vec<Option<(RoomId, u64)>>,
    ) {
        if pending.is_empty() {
            return;
        }
        let mut redis = self.redis.clone();
        let sent = tokio::time::timeout(REDIS_TIMEOUT, publications.exec_async(&mut redis)).await;
        match sent {
            Ok(Ok(())) => {
                self.metrics.published.increment(pending.len() as u64);
                self.came_back();
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in time".to_owned(),
                };
                self.went_down(&why);
                self.metrics.publish_dropped.increment(pending.len() as u64);
                for (room, seq) in pending.drain(..).flatten() {
                    self.note_unpublished(room, seq);
                }
            }
        }
        pending.clear();
        *publications = redis::pipe();
    }

    async fn change_state(
        self: &Arc<Self>,
        change: Outgoing,
        membership: &Script,
        presence: &Script,
    ) {
        let mut redis = self.redis.clone();
        let outcome: Result<(), String> = match change {
            Outgoing::Membership {
                room,
                user,
                arrived,
                envelope,
                fallback,
            } => {
                let mut call = membership.key(membership_key(room.as_str(), &user));
                call.key(node_members_key(self.node))
                    .key(room_users_key(room.as_str()))
                    .key(room_channel(room.as_str()))
                    .arg(self.node)
                    .arg(if arrived { 1 } else { 0 })
                    .arg(member_entry(room.as_str(), &user))
                    .arg(envelope.as_ref())
                    .arg(&*user);
                match tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async::<i64>(&mut redis))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    failed => {
                        // Alone, this node still tells its own connections.
                        if let Some((frame, except)) = fallback {
                            self.hub.deliver(
                                Audience::Room {
                                    room: room.as_str(),
                                    except,
                                },
                                &frame,
                                None,
                            );
                        }
                        Err(describe(failed))
                    }
                }
            }
            Outgoing::Presence {
                user,
                connections,
                away,
                seen_ms,
                name,
                envelopes,
            } => {
                let mut call = presence.key(presence_key(&user));
                call.key(node_users_key(self.node))
                    .key(watch_channel(&user))
                    .arg(self.node)
                    .arg(connections)
                    .arg(away)
                    .arg(&*user)
                    .arg(seen_ms)
                    .arg(&*name);
                for envelope in &envelopes {
                    call.arg(envelope.as_ref());
                }
                match tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async::<String>(&mut redis))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    failed => Err(describe(failed)),
                }
            }
            Outgoing::Hosted { room, hosted } => {
                let command = if hosted { "SADD" } else { "SREM" };
                let done = tokio::time::timeout(
                    REDIS_TIMEOUT,
                    redis::cmd(command)
                        .arg(node_rooms_key(self.node))
                        .arg(room.as_str())
                        .exec_async(&mut redis),
                )
                .await;
                match done {
                    Ok(Ok(())) => Ok(()),
                    failed => Err(describe(failed)),
                }
            }
            Outgoing::Publish { .. } => unreachable!("publications are pipelined"),
        };
        match outcome {
            Ok(()) => self.came_back(),
            Err(why) => self.went_down(&why),
        }
    }

    /// After an outage: this node's share of the shared state is written
    /// again from what it hosts (silently: nobody is announced twice), and
    /// the rooms it could not publish to are told how far they go.
    async fn resync(self: Arc<Self>) {
        let mut redis = self.redis.clone();
        let stale: Vec<String> = redis::cmd("SMEMBERS")
            .arg(node_members_key(self.node))
            .query_async(&mut redis)
            .await
            .unwrap_or_default();
        let here: HashSet<String> = self
            .hub
            .memberships()
            .iter()
            .flat_map(|(room, users)| users.iter().map(|user| member_entry(room.as_str(), user)))
            .collect();
        for (room, users) in self.hub.memberships() {
            self.queue(Outgoing::Hosted {
                room: room.clone(),
                hosted: true,
            });
            for user in users {
                self.queue(Outgoing::Membership {
                    room: room.clone(),
                    user,
                    arrived: true,
                    envelope: Bytes::new(),
                    fallback: None,
                });
            }
        }
        for entry in stale.into_iter().filter(|entry| !here.contains(entry)) {
            if let Some((room, user)) = entry.split_once('\0') {
                if let Ok(room) = RoomId::parse(room, &chat_proto::ProtoLimits::default()) {
                    self.queue(Outgoing::Membership {
                        room,
                        user: user.into(),
                        arrived: false,
                        envelope: Bytes::new(),
                        fallback: None,
                    });
                }
            }
        }
        for (user, connections, away) in self.hub.user_counts() {
            self.queue(Outgoing::Presence {
                name: user.clone(),
                user,
                connections,
                away,
                seen_ms: chat_proto::time::now_millis(),
                envelopes: [Bytes::new(), Bytes::new(), Bytes::new()],
            });
        }
        let unpublished: Vec<(RoomId, u64)> = self
            .unpublished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (room, seq) in unpublished {
            let mut hint = Envelope::new(Kind::Hint, self.node, room.as_str(), Bytes::new());
            hint.seq = seq;
            self.publish(room_channel(room.as_str()), hint, None);
        }
    }

    /// Holds the subscriptions: follows what the hub hosts, reconnects after
    /// an outage (then catches every followed room up from the database).
    async fn subscriber(
        self: Arc<Self>,
        client: redis::Client,
        mut links: mpsc::UnboundedReceiver<Link>,
        shutdown: CancellationToken,
    ) {
        let mut wanted: HashSet<Channel> = HashSet::from([Channel::Node(self.node)]);
        let mut first = true;
        loop {
            let connected = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub()).await;
            let pubsub = match connected {
                Ok(Ok(pubsub)) => pubsub,
                failed => {
                    self.went_down(&describe(failed));
                    // Rooms still get followed (from the database) while
                    // there is no broker.
                    while let Ok(link) = links.try_recv() {
                        self.apply_link(&mut wanted, link, None).await;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            };
            let (mut sink, mut stream) = pubsub.split();
            let names: Vec<String> = wanted.iter().map(Channel::name).collect();
            let mut resubscribed = true;
            for chunk in names.chunks(512) {
                if sink.subscribe(chunk).await.is_err() {
                    resubscribed = false;
                    break;
                }
            }
            if !resubscribed {
                continue;
            }
            if !first {
                tracing::info!(
                    node = self.node,
                    channels = names.len(),
                    "resubscribed after an outage; catching up"
                );
                self.came_back();
                self.catch_up_all().await;
            }
            first = false;
            loop {
                tokio::select! {
                    link = links.recv() => {
                        let Some(link) = link else { return };
                        self.apply_link(&mut wanted, link, Some(&mut sink)).await;
                    }
                    message = stream.next() => {
                        let Some(message) = message else { break };
                        let payload: Vec<u8> = message.get_payload_bytes().to_vec();
                        self.metrics.received.increment(1);
                        self.metrics.received_bytes.increment(payload.len() as u64);
                        self.receive(Bytes::from(payload));
                    }
                    () = shutdown.cancelled() => return,
                }
            }
            self.went_down("the subscription connection closed");
        }
    }

    async fn apply_link(
        self: &Arc<Self>,
        wanted: &mut HashSet<Channel>,
        link: Link,
        sink: Option<&mut redis::aio::PubSubSink>,
    ) {
        match link {
            Link::Subscribe(channel) => {
                let new = wanted.insert(channel.clone());
                if let (true, Some(sink)) = (new, sink) {
                    if let Err(error) = sink.subscribe(channel.name()).await {
                        self.went_down(&error.to_string());
                    }
                }
                if let Channel::Room(room) = channel {
                    // Read after subscribing: whatever is committed later is
                    // published later, and reaches us.
                    let cluster = self.clone();
                    tokio::spawn(async move {
                        let last_seq = loop {
                            match cluster.store.last_seq(&room).await {
                                Ok(last) => break last,
                                Err(error) => {
                                    tracing::warn!(%error, "reading a room's last seq failed; retrying");
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                            }
                        };
                        cluster.orderer.start(&room, last_seq);
                    });
                }
            }
            Link::Unsubscribe(channel) => {
                // Only if nothing here wants it again meanwhile.
                let still = match &channel {
                    Channel::Room(room) => self.hub.hosts_room(room.as_str()),
                    Channel::User(user) => self.hub.hosts_user(user),
                    Channel::Watch(user) => self.hub.watches(user),
                    Channel::Node(_) => true,
                };
                if still || !wanted.remove(&channel) {
                    return;
                }
                if let Channel::Room(room) = &channel {
                    self.orderer.forget(room.as_str());
                }
                if let Some(sink) = sink {
                    if let Err(error) = sink.unsubscribe(channel.name()).await {
                        self.went_down(&error.to_string());
                    }
                }
            }
        }
    }

    /// Every followed room, caught up with the database.
    async fn catch_up_all(self: &Arc<Self>) {
        let followed = self.orderer.followed();
        for (room, through) in followed {
            match self.store.last_seq(&room).await {
                Ok(last) if last > through => self.orderer.catch_up(&room, last),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "catching up a room failed"),
            }
        }
    }

    /// An envelope from another node (or from a script).
    fn receive(self: &Arc<Self>, bytes: Bytes) {
        let Some(envelope) = Envelope::decode(bytes) else {
            tracing::warn!("an unreadable message on a chat channel; ignored");
            return;
        };
        if envelope.origin == self.node {
            return;
        }
        let except = (envelope.except != 0).then_some(envelope.except);
        match envelope.kind {
            Kind::Room if envelope.seq > 0 => {
                if let Some(frame) = Frame::from_bytes(envelope.payload) {
                    self.orderer.offer(&envelope.target, envelope.seq, frame);
                }
            }
            Kind::Room => {
                if let Some(frame) = Frame::from_bytes(envelope.payload) {
                    self.hub.deliver(
                        Audience::Room {
                            room: &envelope.target,
                            except,
                        },
                        &frame,
                        None,
                    );
                }
            }
            Kind::User => {
                if let Some(frame) = Frame::from_bytes(envelope.payload) {
                    self.hub.deliver(
                        Audience::User {
                            user: &envelope.target,
                            except,
                            within: envelope.within.as_within(),
                        },
                        &frame,
                        None,
                    );
                }
            }
            Kind::Watch => {
                if let Some(frame) = Frame::from_bytes(envelope.payload) {
                    self.hub.deliver(
                        Audience::Watchers {
                            user: &envelope.target,
                        },
                        &frame,
                        None,
                    );
                }
            }
            Kind::Connection => {
                if let Some(frame) = Frame::from_bytes(envelope.payload) {
                    self.hub.deliver(
                        Audience::Connection {
                            user: &envelope.target,
                            conn: envelope.conn,
                        },
                        &frame,
                        None,
                    );
                }
            }
            Kind::Removal => {
                let (Ok(room), Ok(user)) = (
                    RoomId::parse(&envelope.target, &chat_proto::ProtoLimits::default()),
                    std::str::from_utf8(&envelope.payload),
                ) else {
                    return;
                };
                crate::session::remove_locally(&self.hub, self.as_ref(), &room, user);
            }
            Kind::Call => {
                let calls = self.calls.get().and_then(std::sync::Weak::upgrade);
                match (wire::decode_call(envelope.payload), calls) {
                    (Some(op), Some(calls)) => calls.from_elsewhere(op),
                    (None, _) => {
                        tracing::warn!("an unreadable call request from another node; ignored")
                    }
                    (Some(_), None) => {}
                }
            }
            Kind::Hint => {
                if let Ok(room) =
                    RoomId::parse(&envelope.target, &chat_proto::ProtoLimits::default())
                {
                    self.orderer.catch_up(&room, envelope.seq);
                }
            }
        }
    }

    /// Renews this node's key; cleans up after nodes that stopped renewing.
    async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        let beat = Script::new(HEARTBEAT);
        let every = (self.config.presence_ttl / 3).max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => {
                    self.leave().await;
                    return;
                }
            }
            let mut redis = self.redis.clone();
            let connections = self.hub.stats().connections;
            let mut call = beat.key(node_key(self.node));
            call.key(NODES)
                .arg(self.node)
                .arg(connections)
                .arg(self.config.presence_ttl.as_millis() as u64);
            match tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async::<i64>(&mut redis)).await {
                Ok(Ok(_)) => self.came_back(),
                failed => {
                    self.went_down(&describe(failed));
                    continue;
                }
            }
            if let Err(error) = self.sweep().await {
                tracing::warn!(%error, "cleaning up after stopped nodes failed");
            }
        }
    }

    /// For each node that stopped renewing its key: its users leave their
    /// rooms and go offline, once (one node cleans up each).
    async fn sweep(self: &Arc<Self>) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let nodes: Vec<u64> = redis::cmd("SMEMBERS")
            .arg(NODES)
            .query_async(&mut redis)
            .await?;
        for node in nodes.into_iter().filter(|node| *node != self.node) {
            let alive: bool = redis::cmd("EXISTS")
                .arg(node_key(node))
                .query_async(&mut redis)
                .await?;
            if alive {
                continue;
            }
            let claimed: Option<String> = redis::cmd("SET")
                .arg(format!("chat:sweep:{node}"))
                .arg(self.node)
                .arg("NX")
                .arg("PX")
                .arg(60_000)
                .query_async(&mut redis)
                .await?;
            if claimed.is_none() {
                continue;
            }
            self.clean_up_after(node).await?;
            self.metrics.swept_nodes.increment(1);
        }
        Ok(())
    }

    async fn clean_up_after(self: &Arc<Self>, node: u64) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(node_members_key(node))
            .query_async(&mut redis)
            .await?;
        let users: Vec<String> = redis::cmd("SMEMBERS")
            .arg(node_users_key(node))
            .query_async(&mut redis)
            .await?;
        tracing::warn!(
            node,
            users = users.len(),
            rooms = members.len(),
            "a node stopped: its users leave and go offline"
        );
        let membership = Script::new(MEMBERSHIP);
        for entry in &members {
            let Some((room, user)) = entry.split_once('\0') else {
                continue;
            };
            let left = hub::frame(&ServerEvent::UserLeft {
                user_id: user,
                room_id: room,
            });
            let envelope = Envelope::new(Kind::Room, EVERY_NODE, room, left.bytes()).encode();
            let mut call = membership.key(membership_key(room, user));
            call.key(node_members_key(node))
                .key(room_users_key(room))
                .key(room_channel(room))
                .arg(node)
                .arg(0)
                .arg(entry)
                .arg(envelope.as_ref())
                .arg(user);
            call.invoke_async::<i64>(&mut redis).await?;
        }
        let presence = Script::new(PRESENCE);
        let now = chat_proto::time::now_millis();
        for user in &users {
            let envelopes = watch_envelopes(user, Some(now));
            let mut call = presence.key(presence_key(user));
            call.key(node_users_key(node))
                .key(watch_channel(user))
                .arg(node)
                .arg(0)
                .arg(0)
                .arg(user)
                .arg(now)
                .arg(user);
            for envelope in &envelopes {
                call.arg(envelope.as_ref());
            }
            call.invoke_async::<String>(&mut redis).await?;
            // Stored too, as this node would have on its way out.
            let _ = self
                .store
                .change(crate::store::Change::LastSeen {
                    user: user.clone(),
                    at_ms: now,
                })
                .await;
        }
        redis::pipe()
            .del(node_members_key(node))
            .del(node_users_key(node))
            .del(node_rooms_key(node))
            .srem(NODES, node)
            .exec_async(&mut redis)
            .await
    }

    /// Stopping: this node's share of the shared state goes, so the others
    /// need not wait for its key to expire.
    async fn leave(self: &Arc<Self>) {
        let mut redis = self.redis.clone();
        let _ = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::pipe()
                .del(node_key(self.node))
                .exec_async(&mut redis),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.clean_up_after(self.node)).await;
    }

    /// The net under every other way of catching up: followed rooms whose
    /// last `seq` in the database is past what was delivered here.
    async fn reconcile(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(RECONCILE_EVERY);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.catch_up_all().await,
                () = shutdown.cancelled() => return,
            }
        }
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
