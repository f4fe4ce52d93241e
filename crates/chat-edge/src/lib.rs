//! The accept loop the gateway and the service share, in front of their
//! routers. `axum::serve` has no knobs for what a listener facing untrusted
//! peers needs, so this serves HTTP/1.1 itself with:
//! - a header-read timeout: a peer that trickles its request head
//!   (slowloris) is dropped instead of holding a socket forever;
//! - a cap on the request head's size (16 KiB; larger is answered 431);
//! - a cap on open connections, upgraded sockets included: past it, a new
//!   connection gets a 503 with a JSON body and is closed, so the process
//!   never runs out of file descriptors;
//! - optionally, a bound on how long a write may wait for the peer to take
//!   it, for listeners whose peers are untrusted clients.
//!
//! Handlers find the peer's address as axum's `ConnectInfo<SocketAddr>`
//! and the connection's [`ConnectionSlot`] in the request's extensions; a
//! handler that upgrades keeps the slot for as long as the socket lives.
//!
//! [`read_apart`] reads an upload's body on a task of its own, so that a
//! refusal sent before the body was read still reaches a peer that is
//! sending it.

mod body;
mod stall;

pub use body::{read_apart, BodyStream, BodyWatch, EarlyEnd};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// Largest request head read; hyper answers 431 past it. Browsers send a
/// few KiB (cookies included).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long the refusal to an over-cap connection may take to write.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// A connection's place under the cap. The HTTP connection holds it, and so
/// does a socket the connection was upgraded into: it counts until it
/// closes.
#[derive(Clone)]
pub struct ConnectionSlot(
    #[expect(dead_code, reason = "held for its Drop, never read")] Arc<OwnedSemaphorePermit>,
);

pub struct EdgeLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// A connection whose peer takes nothing for this long fails its write
    /// and closes, upgraded sockets included.
    pub write_stall_timeout: Option<Duration>,
    /// The JSON body of the 503 an over-cap connection gets.
    pub refusal_body: String,
    /// Counts those refusals.
    pub refusals: metrics::Counter,
}

/// Serves `app` on `listener` until `shutdown` resolves; open HTTP
/// exchanges then finish on their own (upgraded sockets are their
/// handlers' business).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: EdgeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusal: Arc<str> = refusal_response(&limits.refusal_body).into();
    let (stopping_tx, stopping) = watch::channel(false);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Chat frames are small and latency-bound: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            limits.refusals.increment(1);
            tokio::spawn(refuse(stream, refusal.clone()));
            continue;
        };
        let slot = ConnectionSlot(Arc::new(permit));
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(slot.clone());
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = http
            .serve_connection(
                TokioIo::new(stall::WriteStall::new(stream, limits.write_stall_timeout)),
                service,
            )
            .with_upgrades();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            // Errors here are the peer's (a reset, a bad request head, a
            // header timeout); hyper has answered what could be answered.
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                () = stopped(&mut stopping) => {}
            }
            // Finish the exchange in progress, take no new one.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    let _ = stopping_tx.send(true);
    Ok(())
}

async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

fn refusal_response(body: &str) -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Over the cap: say so in the protocol the peer speaks, then close.
async fn refuse(mut stream: TcpStream, response: Arc<str>) {
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Per-connection errors (the peer reset before we accepted) are no reason
/// to pause; anything else (out of file descriptors) is, briefly, rather
/// than spinning.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
