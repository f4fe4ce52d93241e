//! Which nodes are alive: each renews its own key (the heartbeat) and
//! cleans up after a node whose key expired (its users leave their rooms
//! and go offline); and the periodic check that followed rooms missed
//! nothing.

use super::*;

impl Cluster {
    /// Renews this node's key; cleans up after nodes that stopped renewing.
    pub(super) async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
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
    pub(super) async fn leave(self: &Arc<Self>) {
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
    pub(super) async fn reconcile(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(RECONCILE_EVERY);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.catch_up_all().await,
                () = shutdown.cancelled() => return,
            }
        }
    }
}
