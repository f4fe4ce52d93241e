//! One WebSocket connection: a reader that applies the protocol and a
//! writer that drains the connection's bounded queue, polled together in
//! one task so an idle connection costs one task and two small buffers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use chat_proto::api::DRAIN_PING;
use futures_util::{SinkExt, StreamExt};

use crate::hub::OutboundQueue;
use crate::session::{Identity, Session};
use crate::state::Shared;

/// Frames written per flush: batching writes is what makes fan-out cheap,
/// bounding the batch keeps pings and closes timely.
const FRAMES_PER_FLUSH: usize = 64;

/// Longest wait for a client to answer our close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// Close codes the service uses (RFC 6455 section 7.4.1).
mod close_code {
    pub(super) const NORMAL: u16 = 1000;
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const POLICY: u16 = 1008;
    pub(super) const TOO_BIG: u16 = 1009;
}

/// Why a connection ended, which decides how it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientClosed,
    SocketError,
    TooBig,
    Idle,
    SlowConsumer,
    Shutdown,
    /// The gateway in front is shutting down and asked for what it is owed.
    Drained,
}

impl End {
    fn close_frame(self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            End::ClientClosed | End::SocketError => return None,
            End::TooBig => (close_code::TOO_BIG, "frame too large"),
            End::Idle => (close_code::NORMAL, "idle timeout"),
            End::SlowConsumer => (close_code::POLICY, "slow consumer"),
            End::Shutdown => (close_code::GOING_AWAY, "server shutting down"),
            End::Drained => (close_code::GOING_AWAY, "gateway shutting down"),
        };
        Some(CloseFrame {
            code,
            reason: reason.into(),
        })
    }
}

pub(crate) async fn serve(socket: WebSocket, identity: Identity, shared: Arc<Shared>) {
    let limits = &shared.config.limits;
    let username = identity
        .username
        .clone()
        .unwrap_or_else(|| identity.user_id.clone());
    let (conn, mut queue) = shared.hub.connect(
        identity.user_id.clone(),
        username,
        limits.outbound_queue_bytes,
    );
    tracing::debug!(conn = conn.id, "connected");
    let mut session = Session::new(conn.clone(), identity, shared.clone());
    let (mut sink, mut stream) = socket.split();
    let started = Instant::now();
    let last_heard_ms = AtomicU64::new(0);

    let reader = async {
        while let Some(received) = stream.next().await {
            last_heard_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            match received {
                // Boxed: the handler's futures (store queries included) are
                // large, and an idle connection should not carry their
                // space in its task all the time.
                Ok(Message::Text(text)) => Box::pin(session.on_text(text.as_str())).await,
                Ok(Message::Binary(_)) => Box::pin(session.on_binary()).await,
                Ok(Message::Ping(payload)) if payload.as_ref() == DRAIN_PING => {
                    // Everything this socket sent was read before this ping;
                    // wait for its answers to be queued, then close.
                    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, conn.all_answered()).await;
                    return End::Drained;
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(Message::Close(_)) => return End::ClientClosed,
                Err(error) => return classify(&error),
            }
        }
        End::ClientClosed
    };
    let writer = write_loop(
        &mut sink,
        &mut queue,
        limits.ping_interval,
        limits.idle_timeout,
        || Duration::from_millis(last_heard_ms.load(Ordering::Relaxed)),
        started,
    );
    let end = tokio::select! {
        end = reader => end,
        end = writer => end,
        () = conn.evicted() => End::SlowConsumer,
        () = shared.shutdown.cancelled() => End::Shutdown,
    };
    // The writer timing out on a client is an eviction the hub has not
    // counted yet (`evict` is true only the first time).
    if end == End::SlowConsumer && conn.evict() {
        shared.metrics.slow_consumers.increment(1);
    }
    tracing::debug!(conn = conn.id, ?end, "disconnecting");
    if end == End::Shutdown {
        // Still a member: the echoes of messages being committed reach this
        // queue, and go out before the close frame.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, conn.all_answered()).await;
    }
    session.leave_all();
    shared.hub.disconnect(&conn);
    if let Some(close) = end.close_frame() {
        // The closing handshake, bounded: a client that stopped reading
        // gets no more time, and one that answers lets its socket close
        // cleanly instead of being reset with the close frame unread.
        // What is queued already (echoes of accepted messages) goes first,
        // unless the client is too slow to take it.
        let flush_queue = !matches!(end, End::SlowConsumer | End::TooBig);
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
            while let Some(frame) = queue.try_recv().filter(|_| flush_queue) {
                sink.feed(Message::Text(frame.text())).await?;
            }
            sink.send(Message::Close(Some(close))).await?;
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
            Ok::<(), axum::Error>(())
        })
        .await;
    }
}

async fn write_loop<S, F>(
    sink: &mut S,
    queue: &mut OutboundQueue,
    ping_interval: Duration,
    idle_timeout: Duration,
    last_heard: F,
    started: Instant,
) -> End
where
    S: SinkExt<Message> + Unpin,
    F: Fn() -> Duration,
{
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    loop {
        tokio::select! {
            first = queue.recv() => {
                let Some(first) = first else {
                    return End::Shutdown;
                };
                // A client that cannot take a batch within the idle timeout
                // is as gone as one that stopped talking.
                let written = tokio::time::timeout(idle_timeout, async {
                    sink.feed(Message::Text(first.text())).await?;
                    for _ in 1..FRAMES_PER_FLUSH {
                        match queue.try_recv() {
                            Some(frame) => sink.feed(Message::Text(frame.text())).await?,
                            None => break,
                        }
                    }
                    queue.wake_waiting_replies();
                    sink.flush().await
                })
                .await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return End::SocketError,
                    Err(_) => return End::SlowConsumer,
                }
            }
            _ = ping.tick() => {
                if started.elapsed().saturating_sub(last_heard()) >= idle_timeout {
                    return End::Idle;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return End::SocketError;
                }
            }
        }
    }
}

fn classify(error: &axum::Error) -> End {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner =
        std::error::Error::source(error).and_then(|source| source.downcast_ref::<WsError>());
    match inner {
        Some(WsError::Capacity(_)) => End::TooBig,
        _ => End::SocketError,
    }
}
