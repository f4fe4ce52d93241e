//! Connection setup rate: WebSocket handshake, authentication, the
//! gateway's upstream connection and a confirmed join, `concurrency` at a time.

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::SourceAddrs;
use crate::error::BenchError;
use crate::progress;
use crate::setup::{open_all, Seat};
use crate::stats::{thousands, LatencySummary, Table};
use crate::target::Target;

#[derive(Clone, Debug, Serialize)]
pub struct ConnectReport {
    pub target: &'static str,
    pub connections: usize,
    pub concurrency: usize,
    pub elapsed_s: f64,
    pub connections_per_sec: f64,
    pub latency: LatencySummary,
}

pub async fn run(
    targets: &[Arc<Target>],
    sources: &SourceAddrs,
    count: usize,
    room_size: usize,
    concurrency: usize,
    quiet: bool,
) -> Result<ConnectReport, BenchError> {
    let seats = (0..count)
        .map(|user| Seat {
            user,
            room: format!("connect-r{}", user / room_size.max(1)),
            node: user % targets.len(),
        })
        .collect();
    let bar = progress::bar(count as u64, "connecting", quiet);
    let started = Instant::now();
    let opened = open_all(targets, sources, seats, concurrency, &bar).await?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    drop(opened.connections);

    let mut histogram: Histogram<u64> =
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid");
    for time in &opened.setup_times {
        histogram.saturating_record(time.as_micros().max(1) as u64);
    }
    Ok(ConnectReport {
        target: targets[0].kind(),
        connections: count,
        concurrency,
        elapsed_s: elapsed.as_secs_f64(),
        connections_per_sec: count as f64 / elapsed.as_secs_f64(),
        latency: LatencySummary::from_micros(&histogram),
    })
}

impl ConnectReport {
    pub fn table(&self) -> String {
        let mut table = Table::new(&[
            "target",
            "conns",
            "concurrency",
            "conn/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
        ]);
        table.row(vec![
            self.target.to_owned(),
            thousands(self.connections as u64),
            self.concurrency.to_string(),
            thousands(self.connections_per_sec as u64),
            format!("{:.3}", self.latency.p50_ms),
            format!("{:.3}", self.latency.p99_ms),
            format!("{:.3}", self.latency.p999_ms),
            format!("{:.3}", self.latency.max_ms),
        ]);
        table.render()
    }
}
