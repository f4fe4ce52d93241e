//! What a node sends to Redis: one ordered queue, bounded in bytes, drained by
//! one sender task that pipelines publications and runs the shared-state
//! scripts; what an outage does to it, and writing this node's share of
//! the shared state again after one.

use super::*;

/// What goes to Redis, in order.
pub(super) enum Outgoing {
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
    pub(super) fn bytes(&self) -> usize {
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

impl Cluster {
    pub(super) fn queue(&self, outgoing: Outgoing) {
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

    pub(super) fn note_unpublished(&self, room: RoomId, seq: u64) {
        let mut unpublished = self.unpublished.lock().unwrap_or_else(|p| p.into_inner());
        let last = unpublished.entry(room).or_default();
        *last = (*last).max(seq);
    }

    pub(super) fn publish(
        &self,
        channel: String,
        envelope: Envelope,
        durable: Option<(RoomId, u64)>,
    ) {
        self.queue(Outgoing::Publish {
            channel,
            payload: envelope.encode(),
            durable,
        });
    }

    pub(super) fn went_down(&self, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::error!(node = self.node, error = why, "Redis unreachable: serving this node's connections alone, catching up when it is back");
            self.metrics.redis_up.set(0.0);
            self.metrics.outages.increment(1);
        }
    }

    pub(super) fn came_back(self: &Arc<Self>) {
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
    pub(super) async fn sender(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
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
}
