//! Prometheus exposition. Metric names all start with `gateway_`:
//! - `gateway_connections` (gauge): sockets being relayed now
//! - `gateway_connections_total`: sockets ever relayed
//! - `gateway_auth_failures_total{reason}`
//! - `gateway_rejections_total{reason}`: origin, connect_rate, user_cap,
//!   connection_cap, file_too_large
//! - `gateway_rate_limited_frames_total{class}` (`chat`, `signal`),
//!   `gateway_abuse_closes_total`
//! - `gateway_upstream_errors_total{kind}`
//! - `gateway_upstream_healthy{node}` (gauge, 1 or 0),
//!   `gateway_upstream_connections{node}` (gauge): per service node
//! - `gateway_redis_up` (gauge, 1 or 0), `gateway_user_cap_fallbacks_total`:
//!   only with `REDIS_URL`

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Counts a request or connection refused before it reached the service.
pub(crate) fn rejected(reason: &'static str) {
    metrics::counter!("gateway_rejections_total", "reason" => reason).increment(1);
}

/// The process-wide recorder, installed on first use. Several gateways (and
/// a chat service) may live in one process, so an already-installed recorder
/// is not an error: this handle then renders only what reaches it.
pub fn global_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; gateway metrics go to that one"
                );
            }
            handle
        })
        .clone()
}

pub(crate) fn describe() {
    metrics::describe_gauge!("gateway_connections", "WebSocket connections being relayed");
    metrics::describe_counter!("gateway_connections_total", "WebSocket connections relayed");
    metrics::describe_counter!(
        "gateway_auth_failures_total",
        "Failed authentications by reason"
    );
    metrics::describe_counter!("gateway_rejections_total", "Refused connections by reason");
    metrics::describe_counter!(
        "gateway_rate_limited_frames_total",
        "Client frames dropped by the per-user frame rate limit"
    );
    metrics::describe_counter!(
        "gateway_rate_limited_requests_total",
        "HTTP requests under /chat/api refused by the per-user request rate limit"
    );
    metrics::describe_counter!(
        "gateway_stalled_clients_total",
        "Connections closed because the client stopped reading"
    );
    metrics::describe_counter!(
        "gateway_abuse_closes_total",
        "Connections closed with 1008 for sustained rate-limit abuse"
    );
    metrics::describe_counter!(
        "gateway_upstream_errors_total",
        "Chat service failures by kind"
    );
    metrics::describe_gauge!(
        "gateway_upstream_healthy",
        "Whether a chat service node gets new connections (1) or is skipped (0)"
    );
    metrics::describe_gauge!(
        "gateway_upstream_connections",
        "WebSocket connections relayed to (or being opened on) a chat service node"
    );
    metrics::describe_gauge!(
        "gateway_redis_up",
        "Whether per-user caps are counted in Redis (1) or on this gateway alone (0)"
    );
    metrics::describe_counter!(
        "gateway_user_cap_fallbacks_total",
        "Connections admitted on this gateway's own count because Redis did not answer"
    );
}
