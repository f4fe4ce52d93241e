//! Latency recording shared by thousands of receiver tasks, and its summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track: 60 s, in microseconds.
const MAX_MICROS: u64 = 60_000_000;
const SHARDS: usize = 16;
/// Receivers record into a local batch and take a shard lock once per batch.
pub const BATCH: usize = 64;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

/// Latencies (µs) and counters of one measurement phase.
pub struct Recorder {
    shards: Vec<Mutex<Histogram<u64>>>,
    pub delivered: AtomicU64,
    pub sent: AtomicU64,
    pub errors: AtomicU64,
    pub disconnects: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            delivered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }
}

impl Recorder {
    /// Records a batch of latencies (µs) gathered by receiver `member`.
    pub fn record(&self, member: usize, micros: &[u64]) {
        if micros.is_empty() {
            return;
        }
        {
            let mut shard = self.shards[member % SHARDS]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for &value in micros {
                shard.saturating_record(value.clamp(1, MAX_MICROS));
            }
        }
        self.delivered
            .fetch_add(micros.len() as u64, Ordering::Relaxed);
    }

    /// Counts an `error` event from the server, keeping the first one to show.
    pub fn error(&self, data: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert(data);
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            // Same bounds on both sides, so adding cannot fail.
            let _ = all.add(&*shard);
        }
        all
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn from_micros(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// A plain text table with right-aligned numeric columns.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .take(columns)
                .map(|(i, cell)| {
                    if i == 0 {
                        format!("{cell:<width$}", width = widths[i])
                    } else {
                        format!("{cell:>width$}", width = widths[i])
                    }
                })
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let mut out = vec![line(&self.header), rule.join("  ")];
        out.extend(self.rows.iter().map(|row| line(row)));
        out.join("\n") + "\n"
    }
}

/// A count with thousands separators: 1234567 -> "1,234,567".
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let recorder = Recorder::default();
        let values: Vec<u64> = (1..=1000).map(|ms| ms * 1000).collect();
        for (member, chunk) in values.chunks(BATCH).enumerate() {
            recorder.record(member, chunk);
        }
        let summary = LatencySummary::from_micros(&recorder.merged());
        assert_eq!(summary.count, 1000);
        assert_eq!(recorder.delivered.load(Ordering::Relaxed), 1000);
        let close = |actual: f64, expected: f64| (actual - expected).abs() <= expected * 0.002;
        assert!(close(summary.p50_ms, 500.0), "{summary:?}");
        assert!(close(summary.p99_ms, 990.0), "{summary:?}");
        assert!(close(summary.p999_ms, 999.0), "{summary:?}");
        assert!(close(summary.max_ms, 1000.0), "{summary:?}");
    }

    #[test]
    fn empty_histogram_summarizes_to_zero() {
        let recorder = Recorder::default();
        assert_eq!(
            LatencySummary::from_micros(&recorder.merged()),
            LatencySummary::default()
        );
    }

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["target", "deliveries/s", "p99 ms"]);
        table.row(vec!["service".into(), thousands(812_345), "1.234".into()]);
        table.row(vec!["node".into(), thousands(80_000), "12.500".into()]);
        let expected = "\
target   deliveries/s  p99 ms
-------  ------------  ------
service       812,345   1.234
node           80,000  12.500
";
        assert_eq!(table.render(), expected);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
