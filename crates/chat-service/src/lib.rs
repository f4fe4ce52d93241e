//! The chat service: WebSocket connections, rooms and fan-out, the internal
//! HTTP API, and message storage.
//!
//! It trusts the gateway in front of it: a connection is accepted only with
//! the shared `x-internal-api-key`, and the user is whoever `x-user-id`
//! says. Clients never reach it directly.
//!
//! # Layout
//! - [`run`]: binds nothing itself; serves a listener until shutdown.
//! - `http`: routes, the internal API and the upgrade checks.
//! - `connection`: one task per WebSocket: reader, writer, ping, close.
//! - `session`: the protocol rules for one connection.
//! - `hub`: rooms, membership announcements and fan-out (synchronous).
//! - `sequencer`: the single writer that commits, then delivers, messages.
//! - `calls`: voice and video calls: ringing, signaling relay, call state.
//! - `files`: uploads and downloads of files attached to messages, and the
//!   janitor deleting what nothing refers to.
//! - [`store`]: `seq` assignment and history on memory, SQLite or PostgreSQL.
//! - [`config`]: settings and their flags.
//!
//! # Shutdown
//! When `shutdown` resolves the service stops accepting, closes every
//! WebSocket with 1001, waits for connection tasks (bounded), lets the
//! writer commit what it had accepted, and returns.

mod calls;
mod cluster;
mod config;
mod connection;
mod delivery;
mod error;
mod files;
mod http;
mod hub;
mod metrics;
mod presence;
mod sequencer;
mod session;
mod state;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cluster::ClusterConfig;
pub use config::{redact_url, CallLimits, Config, Limits, ServiceArgs};
pub use error::ServiceError;
pub use files::FilesConfig;
pub use metrics::install_recorder as install_metrics_recorder;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::sequencer::Sequencer;
use crate::state::Shared;
use crate::store::Store;

/// How long shutdown waits for connections to close before giving up.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves the chat service on `listener` until `shutdown` resolves.
///
/// Fails before serving if the store cannot be opened or migrated.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    config.check().map_err(ServiceError::Config)?;
    let store = Store::open(&config.database_url).await?;
    if config.cluster.is_none() {
        // Without a broker, a second process on the database would deliver
        // only its own commits: refused instead.
        store.claim_sole_use().await?;
    }

    let prometheus = config
        .metrics
        .clone()
        .unwrap_or_else(metrics::install_recorder);
    let metrics = Arc::new(Metrics::new());
    let hub = Arc::new(Hub::new(metrics.clone()));
    let cluster_stop = CancellationToken::new();
    let cluster = match &config.cluster {
        Some(settings) => Some(
            cluster::Cluster::start(
                settings.clone(),
                hub.clone(),
                store.clone(),
                cluster_stop.clone(),
            )
            .map_err(|e| ServiceError::Config(e.to_string()))?,
        ),
        None => None,
    };
    let files = files::Files::open(&config.files).await?;
    let janitor = files.as_ref().map(|files| {
        tokio::spawn(files::janitor(
            store.clone(),
            files.store().clone(),
            config.files.clone(),
            cluster.clone(),
        ))
    });
    let bus: Arc<dyn delivery::Delivery> = match &cluster {
        Some(cluster) => cluster.clone(),
        None => hub.clone(),
    };
    let (sequencer, writer) = Sequencer::start(store.clone(), bus.clone(), metrics.clone());
    let presence = Arc::new(presence::Presence::new(
        bus.clone(),
        store.clone(),
        config.limits.presence_grace,
        cluster.clone(),
    ));
    let retention = config
        .message_retention_days
        .map(|days| tokio::spawn(prune_forever(store.clone(), days)));
    let token = CancellationToken::new();
    let calls = calls::Calls::new(
        config.limits.calls.clone(),
        bus.clone(),
        sequencer.clone(),
        token.clone(),
        cluster.clone(),
    );
    if let Some(cluster) = &cluster {
        cluster.hold_calls(&calls);
    }
    let shared = Arc::new(Shared {
        config,
        hub,
        bus,
        store: store.clone(),
        presence: presence.clone(),
        cluster: cluster.clone(),
        sequencer,
        calls,
        metrics,
        prometheus,
        shutdown: token.clone(),
        connections: TaskTracker::new(),
        files,
    });
    tracing::info!(
        address = %listener.local_addr()?,
        store = %redact_url(&shared.config.database_url),
        "chat service listening"
    );
    let app = http::router(shared.clone());
    let stop_token = token.clone();
    let limits = chat_edge::EdgeLimits {
        max_connections: shared.config.limits.max_connections,
        header_read_timeout: shared.config.limits.header_read_timeout,
        // Its peers are gateways, which read as their clients do; its own
        // sockets are bounded by their outbound queues and idle timeout.
        write_stall_timeout: None,
        refusal_body: http::ApiError::Busy.json_body(),
        refusals: ::metrics::counter!("chat_refused_connections_total"),
    };
    chat_edge::serve(listener, app, limits, async move {
        shutdown.await;
        stop_token.cancel();
    })
    .await?;

    token.cancel();
    shared.connections.close();
    if tokio::time::timeout(CLOSE_GRACE, shared.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    if let Some(retention) = retention {
        retention.abort();
    }
    if let Some(janitor) = janitor {
        janitor.abort();
    }
    presence.store_last_seen().await;
    drop(presence);
    shared.calls.stop().await;
    // Connections are gone; the cluster hears that this node leaves.
    cluster_stop.cancel();
    if let Some(cluster) = cluster {
        cluster.stopped().await;
    }
    // The writer ends once every sender is gone; it commits what it holds.
    drop(shared);
    let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
    store.close().await;
    tracing::info!("chat service stopped");
    Ok(())
}

async fn prune_forever(store: Store, days: u32) {
    let keep = chrono::Duration::days(i64::from(days));
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        let cutoff = chat_proto::time::now_millis() - keep.num_milliseconds();
        match store.prune(cutoff).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "pruned old messages"),
            Err(error) => tracing::warn!(%error, "pruning old messages failed"),
        }
    }
}
