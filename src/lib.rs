//! Shared plumbing for the thin binaries in `src/bin/`: logging setup and the
//! shutdown signal. Everything with behaviour lives in the library crates
//! under `crates/`; the binaries only parse settings, bind sockets and call
//! their library's `run(listener, config, shutdown)`.

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. `RUST_LOG` sets the filter
/// (default `info`); `json` switches to one JSON object per line for log
/// shippers.
pub fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM. The handlers are
/// installed when this is called, not when it is first polled: call it
/// before announcing readiness, so a signal sent right after the
/// announcement is a shutdown and not a kill. Needs a running runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).ok();
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                () = received(terminate.as_mut()) => {},
                () = received(interrupt.as_mut()) => {},
            }
            tracing::info!("shutdown signal received");
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    }
}

#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Whether logs should be JSON lines: `LOG_FORMAT=json`.
pub fn json_logs_requested() -> bool {
    std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}

/// Raises the soft open-files limit to the hard limit: every WebSocket is a
/// file descriptor, and the usual soft default (1024) is far below what a
/// chat server holds. Returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "could not raise the open-files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    };
    tracing::info!(limit, "open-files limit (each connection holds one or two)");
    limit
}

/// The most connections that fit the open-files limit when each holds
/// `files_per_connection` descriptors (a few are kept for the database,
/// listeners and logs); says so when that is below what was configured.
pub fn connections_within(open_files: u64, files_per_connection: u64, configured: usize) -> usize {
    const RESERVED: u64 = 64;
    let fits = open_files.saturating_sub(RESERVED) / files_per_connection.max(1);
    let fits = usize::try_from(fits).unwrap_or(usize::MAX).max(1);
    if fits < configured {
        tracing::warn!(
            configured,
            allowed = fits,
            open_files,
            "MAX_CONNECTIONS lowered to what the open-files limit allows"
        );
    }
    configured.min(fits)
}

/// Serves `GET /metrics` (Prometheus text) from `handle` on `listener` for
/// as long as the process runs: a scrape during shutdown still answers. The
/// binaries bind it on a loopback address of its own (`METRICS_ADDR`),
/// never on a port that faces clients.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    );
    axum::serve(listener, app).await
}

/// Binds `METRICS_ADDR` (empty: no metrics listener) and serves `handle`
/// there in the background; returns the bound address.
pub async fn spawn_metrics(
    addr: &str,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let Some(listener) = bind_metrics(addr).await? else {
        return Ok(None);
    };
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = serve_metrics(listener, handle).await {
            tracing::warn!(%error, "metrics listener failed");
        }
    });
    Ok(Some(bound))
}

/// Binds the metrics listener named by `METRICS_ADDR` (empty: none).
async fn bind_metrics(addr: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    use anyhow::Context;
    let addr = addr.trim();
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on METRICS_ADDR {addr} (set METRICS_ADDR= to turn metrics off)")
    })?;
    Ok(Some(listener))
}
