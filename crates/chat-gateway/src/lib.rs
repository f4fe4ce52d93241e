//! The chat gateway: authenticates browser WebSockets (JWT from the
//! `access_token` cookie or a bearer header), checks Origin, applies rate
//! limits, and relays frames to the chat service's `/ws` unchanged, on
//! the healthy service node relaying the fewest sockets.
//!
//! A request goes through phases, each able to refuse it with a JSON body:
//! connect rate (per client IP) -> Origin -> authentication -> per-user cap
//! (in Redis too, with `REDIS_URL`) -> upstream socket (the next node if one
//! fails) -> 101 and relay. The gateway never touches the store and never
//! interprets chat frames (it only asks `chat_proto::rate_class` which
//! limit a frame counts against); the service trusts the identity headers
//! it adds (`x-internal-api-key`, `x-user-id`, `x-username`,
//! percent-encoded).
//!
//! For calls it hands out ICE servers (`/chat/api/rtc/ice-servers`, with
//! time-limited TURN credentials), and counts signaling frames against a
//! per-user limit of their own.
//!
//! Files attached to messages are streamed to the service as they are
//! uploaded (`/chat/api/rooms/{id}/files`, Origin-checked, refused early
//! when too large) and back as they are downloaded (`/chat/api/files/{id}`).

mod admission;
mod auth;
mod config;
mod files;
mod metrics;
mod nodes;
mod rejection;
mod relay;
mod routes;
mod rtc;
mod shared_count;
mod state;
#[cfg(test)]
mod test_support;
mod upstream;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use admission::{normalize_origin, origin_allowed, ClientView, Scheme};
pub use auth::{
    cookie_token, mint_hs256_token, token_from_headers, AuthFailure, Identity, TokenVerifier,
    ACCESS_TOKEN_COOKIE, MIN_HS256_SECRET_BYTES,
};
pub use config::{GatewayArgs, GatewayConfig, HealthCheck, JwtConfig, JwtKey, Limits, RedisConfig};
pub use metrics::global_handle as metrics_handle;
pub use rejection::Rejection;
pub use rtc::{
    turn_credentials, turn_username, IceConfig, TurnConfig, TurnCredentials, DEFAULT_TURN_TTL,
    MIN_TURN_SECRET_BYTES,
};
pub use upstream::{percent_encode, ServiceUrl, UpstreamError};

/// Everything between `SIGTERM` and `run` returning: clients get 1001 and
/// this long to answer before their sockets are dropped.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(9);
const LIMITER_CLEANUP_EVERY: Duration = Duration::from_secs(60);
/// After the relays are gone: time to remove their sockets from Redis.
const SHARED_COUNT_FLUSH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Config(String),
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the gateway on `listener` until `shutdown` resolves, then stops
/// accepting, closes every relayed socket with 1001 and returns within ten
/// seconds.
pub async fn run(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let (gateway, shared_count) = state::Gateway::new(config, shutdown_rx.clone(), alive_tx)?;

    let janitor = {
        let gateway = gateway.clone();
        let mut shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(LIMITER_CLEANUP_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => gateway.forget_idle_keys(),
                    _ = shutdown.changed() => break,
                }
            }
        })
    };
    let health_checks = {
        let gateway = gateway.clone();
        let mut shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(gateway.config.health.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = async {
                        every.tick().await;
                        gateway.upstream.check_health().await;
                    } => {}
                    _ = shutdown.changed() => break,
                }
            }
        })
    };

    let edge_limits = chat_edge::EdgeLimits {
        max_connections: gateway.config.limits.max_connections,
        header_read_timeout: gateway.config.limits.header_read_timeout,
        // Responses (downloads) get the patience sockets get. A socket's
        // own bound, in the relay, goes first by a second, so a stalled
        // socket is still closed and counted as stalled.
        write_stall_timeout: Some(
            gateway.config.limits.client_write_timeout + Duration::from_secs(1),
        ),
        refusal_body: Rejection::AtCapacity.json_body(),
        refusals: ::metrics::counter!("gateway_rejections_total", "reason" => "connection_cap"),
    };
    let app = routes::router(gateway);
    let mut stopping = shutdown_rx.clone();
    let server = tokio::spawn(chat_edge::serve(listener, app, edge_limits, async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }));

    shutdown.await;
    tracing::info!("gateway shutting down");
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_BUDGET, async {
        let served = server.await;
        // Relay tasks each hold a sender; recv() ends once the last is gone.
        let _ = alive_rx.recv().await;
        served
    })
    .await;
    janitor.abort();
    health_checks.abort();
    if let Some(mut shared_count) = shared_count {
        // It ends once the closed sockets' releases are sent.
        if tokio::time::timeout(SHARED_COUNT_FLUSH, &mut shared_count)
            .await
            .is_err()
        {
            shared_count.abort();
            tracing::warn!("closed sockets not all removed from Redis in time; they expire there");
        }
    }
    match drained {
        Ok(Ok(result)) => result.map_err(GatewayError::Io),
        Ok(Err(join_error)) => Err(GatewayError::Io(std::io::Error::other(join_error))),
        Err(_) => {
            tracing::warn!("shutdown budget spent; dropping remaining connections");
            Ok(())
        }
    }
}

/// A random URL-safe secret, for generated internal keys and dev-login secrets.
pub fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 48)
}
