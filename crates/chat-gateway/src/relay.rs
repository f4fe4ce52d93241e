//! The relay: one task per connection, one `select!` over both sockets.
//! Frames pass through as the same `Message` values (text stays the same
//! `Utf8Bytes`): the gateway never re-encodes chat JSON, and reads none of
//! it but what `chat_proto::rate_class` needs to pick a frame's limiter.

use std::future::Future;
use std::sync::LazyLock;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_edge::ConnectionSlot;
use chat_proto::api::DRAIN_PING;
use chat_proto::{ErrorCode, RateClass, ServerEvent};

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::admission::UserSlot;
use crate::nodes::NodeLease;
use crate::state::Gateway;
use crate::upstream::UpstreamSocket;

pub type ClientSocket = WebSocketStream<TokioIo<Upgraded>>;

/// The one frame the gateway writes itself, encoded by the protocol crate
/// like every other frame, once.
fn rate_limited_notice() -> Utf8Bytes {
    static NOTICE: LazyLock<Utf8Bytes> = LazyLock::new(|| {
        let event = ServerEvent::Error {
            message: "Rate limit exceeded",
            code: ErrorCode::RateLimited,
        };
        Utf8Bytes::from(event.to_frame())
    });
    NOTICE.clone()
}
/// Close code for a token that expired while the socket was open.
const TOKEN_EXPIRED: u16 = 4001;
/// How long a closing side gets to answer our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Client frames are small chat events; buffers stay small so that an idle
/// connection costs little, and anything over the limit is refused with 1009.
pub fn client_ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(256)
        // Bursts from the service are written in pieces of about this size.
        .write_buffer_size(2 * 1024)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// Everything a relay task owns besides the two sockets. Holding the
/// gateway also keeps `run` waiting for this task during shutdown.
pub struct RelayContext {
    pub gateway: Gateway,
    /// Keeps the socket counted under the gateway's connection cap.
    #[expect(dead_code, reason = "held for its Drop, never read")]
    pub connection: ConnectionSlot,
    pub slot: UserSlot,
    /// Counts the socket on its service node.
    pub node: NodeLease,
    pub expires_at: u64,
}

/// Why the relay loop stopped; decides which close frames go where.
enum Ending {
    Shutdown,
    TokenExpired,
    ClientIdle,
    ClientGone,
    ClientClosed(Option<CloseFrame>),
    ClientTooBig,
    /// The client did not take a write in time: it stopped reading.
    ClientStalled,
    Abuse,
    UpstreamClosed(Option<CloseFrame>),
    /// The service's socket ended without a close frame: its node stopped,
    /// died or cannot be reached.
    UpstreamLost,
    /// The service sent what is not WebSocket: a fault, not a restart.
    UpstreamBroken,
}

/// How a failed read from or write to the service ends the relay.
fn upstream_failed(error: &WsError) -> Ending {
    match error {
        WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing,
        ) => Ending::UpstreamLost,
        WsError::Protocol(_) | WsError::Capacity(_) | WsError::Utf8(_) => Ending::UpstreamBroken,
        _ => Ending::UpstreamLost,
    }
}

/// Runs one admitted connection from the client's upgrade to the last close
/// frame. Everything lives in this one future (no nested by-value futures,
/// the rare close path boxed) because its size is most of a socket's cost.
pub async fn serve(on_upgrade: OnUpgrade, mut upstream: UpstreamSocket, ctx: RelayContext) {
    let gateway = &ctx.gateway;
    let limits = &gateway.config.limits;
    let user = ctx.slot.user();
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(side = "client", error = %e, "client upgrade failed");
            let _ = Box::pin(upstream.close(None)).await;
            return;
        }
    };
    let mut client = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(client_ws_config(limits.max_message_bytes)),
    )
    .await;
    metrics::gauge!("gateway_connections").increment(1.0);
    metrics::counter!("gateway_connections_total").increment(1);

    let expiry = instant_at(ctx.expires_at);
    let mut last_heard = Instant::now();
    let mut dropped = DropWindow::new(limits.abuse_window);
    let mut shutdown = gateway.shutdown.clone();
    // One timer serves both token expiry and client idleness.
    let timer = sleep_until(expiry.min(last_heard + limits.client_idle_timeout));
    tokio::pin!(timer);

    let ending = if *shutdown.borrow_and_update() {
        Ending::Shutdown
    } else {
        loop {
            tokio::select! {
                _ = shutdown.changed() => break Ending::Shutdown,
                () = &mut timer => {
                    let now = Instant::now();
                    let idle_at = last_heard + limits.client_idle_timeout;
                    if expiry <= now {
                        break Ending::TokenExpired;
                    }
                    if idle_at <= now {
                        break Ending::ClientIdle;
                    }
                    timer.as_mut().reset(expiry.min(idle_at));
                }
                frame = client.next() => {
                    last_heard = Instant::now();
                    // Pings are answered by tungstenite itself, which costs
                    // a write each: they count against the frame limit.
                    if matches!(frame, Some(Ok(Message::Ping(_))))
                        && gateway.frame_limiter.check_key(user).is_err()
                    {
                        metrics::counter!("gateway_rate_limited_frames_total", "class" => RateClass::Chat.name()).increment(1);
                        if dropped.record(last_heard) > limits.abuse_dropped_frames {
                            break Ending::Abuse;
                        }
                        continue;
                    }
                    match frame {
                        None => break Ending::ClientGone,
                        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                            break Ending::ClientTooBig
                        }
                        Some(Err(_)) => break Ending::ClientGone,
                        Some(Ok(Message::Close(frame))) => break Ending::ClientClosed(frame),
                        Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                            let Err(class) = gateway.check_frame(user, &message) else {
                                if let Err(e) = upstream.send(message).await {
                                    break upstream_failed(&e);
                                }
                                continue;
                            };
                            metrics::counter!("gateway_rate_limited_frames_total", "class" => class.name()).increment(1);
                            if dropped.record(last_heard) > limits.abuse_dropped_frames {
                                break Ending::Abuse;
                            }
                            let notice = client.send(Message::Text(rate_limited_notice()));
                            let patience = limits.client_write_timeout;
                            if let Err(ending) = bounded(notice, patience, expiry, &mut shutdown).await {
                                break ending;
                            }
                        }
                        // Pongs only prove liveness.
                        Some(Ok(_)) => {}
                    }
                }
                frame = upstream.next() => match frame {
                    None => break Ending::UpstreamLost,
                    Some(Err(e)) => break upstream_failed(&e),
                    Some(Ok(Message::Close(frame))) => break Ending::UpstreamClosed(frame),
                    // The service's pings go on to the client so a dead client
                    // stops answering and hits the idle timeout.
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_) | Message::Ping(_)))) => {
                        let burst = forward_burst(&mut client, &mut upstream, message);
                        let patience = limits.client_write_timeout;
                        match bounded(burst, patience, expiry, &mut shutdown).await {
                            Ok(None) => {}
                            Ok(Some(ending)) | Err(ending) => break ending,
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    };
    Box::pin(finish(ending, &mut client, &mut upstream, user, &ctx.node)).await;
    metrics::gauge!("gateway_connections").decrement(1.0);
    drop(ctx);
}

/// A write to the client, bounded: a client that stopped reading must not
/// hold its relay (a task, two sockets, a user slot) longer than
/// `patience`, nor past its token's expiry or the gateway's shutdown.
async fn bounded<T>(
    write: impl Future<Output = Result<T, WsError>>,
    patience: Duration,
    expiry: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<T, Ending> {
    // Almost every write completes at once (the socket has room): only a
    // write that has to wait pays for a timer.
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(written) = first {
        return written.map_err(|_| Ending::ClientGone);
    }
    let deadline = Instant::now() + patience;
    tokio::select! {
        written = timeout_at(deadline.min(expiry), write) => match written {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(Ending::ClientGone),
            Err(_) if expiry <= Instant::now() => Err(Ending::TokenExpired),
            Err(_) => Err(Ending::ClientStalled),
        },
        _ = shutdown.changed() => Err(Ending::Shutdown),
    }
}

/// Most frames written to the client per flush.
const BURST: usize = 64;

/// Writes `first` and whatever else the service has already sent, then
/// flushes once: a room's burst costs one write to the client, not one per
/// frame. Returns how the relay ends if the service closed mid-burst.
async fn forward_burst(
    client: &mut ClientSocket,
    upstream: &mut UpstreamSocket,
    first: Message,
) -> Result<Option<Ending>, WsError> {
    client.feed(first).await?;
    let mut ending = None;
    for _ in 1..BURST {
        match upstream.next().now_or_never() {
            None => break,
            Some(Some(Ok(
                message @ (Message::Text(_) | Message::Binary(_) | Message::Ping(_)),
            ))) => client.feed(message).await?,
            Some(Some(Ok(Message::Close(frame)))) => {
                ending = Some(Ending::UpstreamClosed(frame));
                break;
            }
            Some(Some(Ok(_))) => {}
            Some(None) => {
                ending = Some(Ending::UpstreamLost);
                break;
            }
            Some(Some(Err(e))) => {
                ending = Some(upstream_failed(&e));
                break;
            }
        }
    }
    client.flush().await?;
    Ok(ending)
}

async fn finish(
    ending: Ending,
    client: &mut ClientSocket,
    upstream: &mut UpstreamSocket,
    user: &str,
    node: &NodeLease,
) {
    let going_away = || close(CloseCode::Away, "going away");
    match ending {
        Ending::Shutdown => {
            // Ask the service for what it owes (the echoes of messages it
            // accepted from this socket) and pass it on before closing: a
            // close frame upstream would end that socket at once.
            let _ = upstream.send(Message::Ping(DRAIN_PING.into())).await;
            let _ = timeout(CLOSE_GRACE, forward_until_closed(client, upstream)).await;
            close_client(client, close(CloseCode::Away, "server shutting down")).await;
        }
        Ending::TokenExpired => {
            tracing::info!(user = ?user, "closing socket: token expired");
            let _ = upstream.send(going_away()).await;
            close_client(
                client,
                close(CloseCode::from(TOKEN_EXPIRED), "token expired"),
            )
            .await;
            await_close(upstream).await;
        }
        Ending::ClientIdle => {
            tracing::debug!(user = ?user, "closing socket: client silent too long");
            let _ = upstream.send(going_away()).await;
            close_client(client, close(CloseCode::Away, "idle timeout")).await;
            await_close(upstream).await;
        }
        Ending::ClientGone => {
            tracing::debug!(
                user = ?user,
                side = "client",
                "client disconnected without a close frame"
            );
            let _ = upstream.send(going_away()).await;
            await_close(upstream).await;
        }
        Ending::ClientClosed(frame) => {
            // tungstenite has queued the echo to the client; flushing sends it.
            let _ = client.flush().await;
            let _ = upstream.send(Message::Close(frame)).await;
            await_close(upstream).await;
        }
        Ending::ClientStalled => {
            tracing::info!(user = ?user, side = "client", "closing socket: client stopped reading");
            metrics::counter!("gateway_stalled_clients_total").increment(1);
            let _ = upstream.send(going_away()).await;
            close_client(client, close(CloseCode::Policy, "not reading")).await;
            await_close(upstream).await;
        }
        Ending::ClientTooBig => {
            tracing::info!(user = ?user, side = "client", "client frame over the size limit");
            let _ = upstream.send(going_away()).await;
            let _ = client.send(close(CloseCode::Size, "message too big")).await;
            // The rest of the oversized frame is still unread; discard raw
            // bytes so the close frame is not lost to a reset connection.
            discard_until_eof(client.get_mut()).await;
            await_close(upstream).await;
        }
        Ending::Abuse => {
            tracing::warn!(
                user = ?user,
                side = "client",
                "closing socket: sustained rate-limit abuse"
            );
            metrics::counter!("gateway_abuse_closes_total").increment(1);
            let _ = upstream.send(going_away()).await;
            close_client(client, close(CloseCode::Policy, "rate limit exceeded")).await;
            await_close(upstream).await;
        }
        Ending::UpstreamClosed(frame) => {
            let _ = upstream.flush().await;
            if frame.as_ref().is_some_and(|f| node_restarting(f.code)) {
                // Before the client hears it, so its reconnect goes elsewhere.
                node.node()
                    .mark_unhealthy("it is shutting down or restarting (1001/1012)");
            }
            close_client(client, Message::Close(frame.map(client_facing))).await;
        }
        Ending::UpstreamLost => {
            tracing::warn!(user = ?user, node = %node.node().label(), side = "upstream", "chat service connection lost");
            metrics::counter!("gateway_upstream_errors_total", "kind" => "lost").increment(1);
            node.node()
                .mark_unhealthy("a relayed socket dropped without a close frame");
            close_client(client, service_restarting()).await;
        }
        Ending::UpstreamBroken => {
            tracing::error!(user = ?user, node = %node.node().label(), side = "upstream", "chat service broke the WebSocket protocol");
            metrics::counter!("gateway_upstream_errors_total", "kind" => "protocol").increment(1);
            close_client(client, close(CloseCode::Error, "upstream protocol error")).await;
        }
    }
}

fn node_restarting(code: CloseCode) -> bool {
    matches!(code, CloseCode::Away | CloseCode::Restart)
}

/// A node going away (shutdown, restart, a crash, a lost network) is a
/// restart from the client's point of view: reconnecting soon lands on a
/// node that is up.
fn client_facing(frame: CloseFrame) -> CloseFrame {
    if node_restarting(frame.code) {
        CloseFrame {
            code: CloseCode::Restart,
            reason: SERVICE_RESTARTING.into(),
        }
    } else {
        frame
    }
}

const SERVICE_RESTARTING: &str = "service restarting, reconnect";

fn service_restarting() -> Message {
    close(CloseCode::Restart, SERVICE_RESTARTING)
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Sends our close frame and waits for the client's, both bounded: a
/// client that stopped reading gets no more of our time.
async fn close_client(client: &mut ClientSocket, frame: Message) {
    if let Ok(Ok(())) = timeout(CLOSE_GRACE, client.send(frame)).await {
        await_close(client).await;
    }
}

/// Passes what the service still sends on to the client until the service
/// closes its socket.
async fn forward_until_closed(client: &mut ClientSocket, upstream: &mut UpstreamSocket) {
    while let Some(Ok(message)) = upstream.next().await {
        if message.is_close() {
            break;
        }
        if (message.is_text() || message.is_binary()) && client.feed(message).await.is_err() {
            return;
        }
    }
    let _ = client.flush().await;
}

/// Reads until the peer's close reply (or the grace period ends).
async fn await_close<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut WebSocketStream<S>) {
    let _ = timeout(CLOSE_GRACE, async {
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
}

async fn discard_until_eof<S: AsyncRead + Unpin>(io: &mut S) {
    let mut sink = [0u8; 1024];
    let _ = timeout(CLOSE_GRACE, async {
        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

fn instant_at(unix_secs: u64) -> Instant {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let remaining = Duration::from_secs(unix_secs).saturating_sub(now_unix);
    // Far-future tokens: a year out is "never" for a socket.
    Instant::now() + remaining.min(Duration::from_secs(365 * 24 * 3600))
}

/// Counts dropped frames in a fixed window.
struct DropWindow {
    window: Duration,
    started: Instant,
    count: u32,
}

impl DropWindow {
    fn new(window: Duration) -> DropWindow {
        DropWindow {
            window,
            started: Instant::now(),
            count: 0,
        }
    }

    fn record(&mut self, now: Instant) -> u32 {
        if now.duration_since(self.started) >= self.window {
            self.started = now;
            self.count = 0;
        }
        self.count += 1;
        self.count
    }
}
