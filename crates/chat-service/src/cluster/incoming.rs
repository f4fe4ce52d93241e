//! What a node takes from Redis: the channels it subscribes to as its
//! interests change, the subscriber task that keeps them across outages,
//! and each publication received, handed to the orderer or the hub.

use super::*;

pub(super) enum Link {
    Subscribe(Channel),
    Unsubscribe(Channel),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Channel {
    Room(RoomId),
    User(Arc<str>),
    Watch(Arc<str>),
    /// What other nodes send this one (for the calls it holds).
    Node(u64),
}

impl Channel {
    pub(super) fn name(&self) -> String {
        match self {
            Channel::Room(room) => room_channel(room.as_str()),
            Channel::User(user) => user_channel(user),
            Channel::Watch(user) => watch_channel(user),
            Channel::Node(node) => node_channel(*node),
        }
    }
}

impl Cluster {
    /// Holds the subscriptions: follows what the hub hosts, reconnects after
    /// an outage (then catches every followed room up from the database).
    pub(super) async fn subscriber(
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
    pub(super) async fn catch_up_all(self: &Arc<Self>) {
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
    pub(super) fn receive(self: &Arc<Self>, bytes: Bytes) {
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
}
