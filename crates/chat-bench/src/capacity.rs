//! Capacity: the highest fan-out rate with p99 within bound and no loss.
//!
//! The rate grows geometrically from `from` until a step fails (or `to` is
//! passed), then bisects between the last passing and the first failing
//! rate. Connections are opened once and reused; each step tags its messages
//! with its own phase so stragglers of a failed step do not count.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::client::SourceAddrs;
use crate::error::BenchError;
use crate::fanout::{PhaseReport, Shape, Swarm};
use crate::progress;
use crate::schedule;
use crate::stats::{thousands, Table};
use crate::target::Target;

/// Hard bound on the number of load steps of one search.
pub const MAX_STEPS: usize = 40;

#[derive(Clone, Debug)]
pub struct CapacityParams {
    /// Offered deliveries/s of the first step.
    pub from: f64,
    /// Highest offered deliveries/s to try.
    pub to: f64,
    pub factor: f64,
    pub refine: usize,
    /// Times a failing rate is tried again before it counts as failed (the
    /// machine is shared: one stray stall should not end the search).
    pub retries: usize,
    pub step_duration: Duration,
    pub drain: Duration,
    pub cooldown: Duration,
    pub max_p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub passed: bool,
    pub verdict: String,
    #[serde(flatten)]
    pub report: PhaseReport,
}

#[derive(Clone, Debug, Serialize)]
pub struct CapacityReport {
    pub max_p99_ms: f64,
    /// Measured deliveries/s of the best passing step.
    pub capacity_deliveries_per_sec: Option<f64>,
    pub steps: Vec<Step>,
}

impl CapacityParams {
    pub fn validate(&self) -> Result<(), BenchError> {
        let ok = self.from > 0.0 && self.to >= self.from && self.factor > 1.0;
        if !ok {
            return Err(BenchError::InvalidParams(
                "capacity needs 0 < --from <= --to and --factor > 1".into(),
            ));
        }
        if self.planned_steps() > MAX_STEPS {
            return Err(BenchError::InvalidParams(format!(
                "that search could take {} steps; at most {MAX_STEPS} (raise --factor or narrow --from/--to)",
                self.planned_steps()
            )));
        }
        Ok(())
    }

    /// The most steps the search can take.
    pub fn planned_steps(&self) -> usize {
        let climb = ((self.to / self.from).ln() / self.factor.ln()).floor() as usize + 1;
        (climb + self.refine) * (1 + self.retries)
    }

    /// Why a step fails the capacity criterion, if it does.
    pub fn verdict(&self, report: &PhaseReport) -> Option<String> {
        let offered_msgs =
            report.rate_per_publisher * (report.rooms * report.publishers_per_room) as f64;
        if report.disconnects > 0 {
            Some(format!("{} disconnects", report.disconnects))
        } else if report.errors > 0 {
            Some(format!("{} error events", report.errors))
        } else if report.lost > 0 {
            Some(format!("lost {}", report.lost))
        } else if report.latency.p99_ms > self.max_p99_ms {
            Some(format!(
                "p99 {:.1} ms > {} ms",
                report.latency.p99_ms, self.max_p99_ms
            ))
        } else if report.send_rate < 0.95 * offered_msgs {
            Some(format!(
                "sent {:.0}/s of {offered_msgs:.0}/s offered",
                report.send_rate
            ))
        } else {
            None
        }
    }
}

pub async fn run(
    targets: &[Arc<Target>],
    sources: &SourceAddrs,
    shape: Shape,
    params: &CapacityParams,
    concurrency: usize,
    quiet: bool,
) -> Result<CapacityReport, BenchError> {
    params.validate()?;
    let setup = progress::bar(shape.connections() as u64, "connecting", quiet);
    let swarm = Swarm::open(targets, sources, shape, concurrency, &setup).await?;
    setup.finish_and_clear();
    let publishers_total = swarm.shape().rooms * swarm.shape().publishers;
    let members = swarm.shape().members;

    let mut search = Search {
        swarm,
        params,
        publishers_total,
        members,
        quiet,
        steps: Vec::new(),
    };

    let mut passing: Option<f64> = None;
    let mut failing: Option<f64> = None;
    let mut offered = params.from;
    while offered <= params.to * 1.000_001 {
        if search.step(offered).await? {
            passing = Some(offered);
            offered *= params.factor;
        } else {
            failing = Some(offered);
            break;
        }
    }
    let broken = search
        .steps
        .last()
        .is_some_and(|s| s.report.disconnects > 0);
    if !broken {
        for _ in 0..params.refine {
            let (Some(low), Some(high)) = (passing, failing) else {
                break;
            };
            let middle = (low * high).sqrt();
            if search.step(middle).await? {
                passing = Some(middle);
            } else {
                failing = Some(middle);
                if search
                    .steps
                    .last()
                    .is_some_and(|s| s.report.disconnects > 0)
                {
                    break;
                }
            }
        }
    }

    let steps = search.steps;
    let capacity = steps
        .iter()
        .filter(|s| s.passed)
        .map(|s| s.report.deliveries_per_sec)
        .fold(None, |best: Option<f64>, v| {
            Some(best.map_or(v, |b| b.max(v)))
        });
    Ok(CapacityReport {
        max_p99_ms: params.max_p99_ms,
        capacity_deliveries_per_sec: capacity,
        steps,
    })
}

struct Search<'a> {
    swarm: Swarm,
    params: &'a CapacityParams,
    publishers_total: usize,
    members: usize,
    quiet: bool,
    steps: Vec<Step>,
}

impl Search<'_> {
    /// Tries `deliveries` offered per second, again up to `retries` times
    /// while it fails without dropping connections; true when a try passes.
    async fn step(&mut self, deliveries: f64) -> Result<bool, BenchError> {
        for _ in 0..self.params.retries {
            if self.try_rate(deliveries).await? {
                return Ok(true);
            }
            if self.steps.last().is_some_and(|s| s.report.disconnects > 0) {
                return Ok(false);
            }
        }
        self.try_rate(deliveries).await
    }

    async fn try_rate(&mut self, deliveries: f64) -> Result<bool, BenchError> {
        let rate = schedule::rate_for_deliveries(deliveries, self.publishers_total, self.members);
        let phase = u32::try_from(self.steps.len() + 1).unwrap_or(u32::MAX);
        let label = format!("{}/s", thousands(deliveries as u64));
        let bar = progress::bar(0, &label, self.quiet);
        let params = self.params;
        let report = self
            .swarm
            .phase(phase, rate, params.step_duration, params.drain, &bar)
            .await?;
        bar.finish_and_clear();
        let verdict = params.verdict(&report);
        let passed = verdict.is_none();
        self.steps.push(Step {
            passed,
            verdict: verdict.unwrap_or_else(|| "ok".into()),
            report,
        });
        tokio::time::sleep(params.cooldown).await;
        Ok(passed)
    }
}

impl CapacityReport {
    pub fn table(&self) -> String {
        let mut table = Table::new(&[
            "step",
            "offered/s",
            "delivered/s",
            "lost",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "verdict",
        ]);
        for (i, step) in self.steps.iter().enumerate() {
            let r = &step.report;
            table.row(vec![
                (i + 1).to_string(),
                thousands(r.offered_deliveries_per_sec as u64),
                thousands(r.deliveries_per_sec as u64),
                thousands(r.lost),
                format!("{:.3}", r.latency.p50_ms),
                format!("{:.3}", r.latency.p99_ms),
                format!("{:.3}", r.latency.p999_ms),
                format!("{:.3}", r.latency.max_ms),
                step.verdict.clone(),
            ]);
        }
        let verdict = match self.capacity_deliveries_per_sec {
            Some(capacity) => format!(
                "capacity (p99 <= {} ms, no loss): {} deliveries/s\n",
                self.max_p99_ms,
                thousands(capacity as u64)
            ),
            None => format!("no step passed (p99 <= {} ms, no loss)\n", self.max_p99_ms),
        };
        table.render() + &verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> CapacityParams {
        CapacityParams {
            from: 50_000.0,
            to: 1_000_000.0,
            factor: 1.5,
            refine: 3,
            retries: 0,
            step_duration: Duration::from_secs(5),
            drain: Duration::from_secs(1),
            cooldown: Duration::from_secs(1),
            max_p99_ms: 50.0,
        }
    }

    #[test]
    fn steps_are_bounded() {
        // 50k * 1.5^7 = 854k <= 1M < 50k * 1.5^8: eight climbing steps, three refinements.
        assert_eq!(params().planned_steps(), 11);
        assert!(params().validate().is_ok());
        let wide = CapacityParams {
            factor: 1.01,
            ..params()
        };
        assert!(wide.validate().is_err());
        let retrying = CapacityParams {
            retries: 1,
            ..params()
        };
        assert_eq!(retrying.planned_steps(), 22);
    }
}
