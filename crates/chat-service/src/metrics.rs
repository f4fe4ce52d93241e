//! Prometheus metrics. Handles are resolved once at start so the hot path
//! only touches atomics, never the registry.

use std::collections::HashMap;
use std::sync::OnceLock;

use chat_proto::ErrorCode;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub(crate) struct Metrics {
    pub(crate) connections: Gauge,
    pub(crate) rooms: Gauge,
    pub(crate) messages_in: Counter,
    pub(crate) deliveries: Counter,
    pub(crate) slow_consumers: Counter,
    pub(crate) fanout_seconds: Histogram,
    pub(crate) commit_seconds: Histogram,
    errors: HashMap<ErrorCode, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            connections: gauge!("chat_connections"),
            rooms: gauge!("chat_rooms"),
            messages_in: counter!("chat_messages_in_total"),
            deliveries: counter!("chat_messages_out_total"),
            slow_consumers: counter!("chat_slow_consumer_disconnects_total"),
            fanout_seconds: histogram!("chat_fanout_seconds"),
            commit_seconds: histogram!("chat_store_commit_seconds"),
            errors: ErrorCode::ALL
                .iter()
                .map(|code| {
                    (
                        *code,
                        counter!("chat_errors_total", "code" => code.as_str()),
                    )
                })
                .collect(),
        }
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(counter) = self.errors.get(&code) {
            counter.increment(1);
        }
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its
/// handle. If another recorder was installed first (by a program embedding
/// this library), metrics go there and this handle renders an empty page.
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                        0.05, 0.1, 0.25, 0.5, 1.0,
                    ],
                )
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
