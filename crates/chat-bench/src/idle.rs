//! Idle memory: N joined connections held open, and what they cost the
//! server processes in resident memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::SourceAddrs;
use crate::error::BenchError;
use crate::progress;
use crate::setup::{open_all, Seat};
use crate::stats::{thousands, Table};
use crate::target::Target;

#[derive(Clone, Debug)]
pub struct IdleParams {
    pub connections: usize,
    pub room_size: usize,
    pub hold: Duration,
    pub pids: Vec<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProcessMemory {
    pub pid: u32,
    pub before_kb: u64,
    pub after_kb: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdleReport {
    pub target: &'static str,
    pub connections: usize,
    pub rooms: usize,
    pub setup_s: f64,
    pub hold_s: f64,
    pub processes: Vec<ProcessMemory>,
    pub growth_kb: i64,
    /// Resident growth of all given processes divided by the connections.
    pub bytes_per_connection: Option<f64>,
}

/// `VmRSS` in kB from the text of `/proc/PID/status`.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn resident_kb(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| {
        BenchError::ProcessMemory {
            pid,
            reason: e.to_string(),
        }
    })?;
    parse_vm_rss(&status).ok_or_else(|| BenchError::ProcessMemory {
        pid,
        reason: "no VmRSS line".into(),
    })
}

pub async fn run(
    targets: &[Arc<Target>],
    sources: &SourceAddrs,
    params: &IdleParams,
    concurrency: usize,
    quiet: bool,
) -> Result<IdleReport, BenchError> {
    let room_size = params.room_size.max(1);
    let before: Vec<u64> = params
        .pids
        .iter()
        .map(|pid| resident_kb(*pid))
        .collect::<Result<_, _>>()?;
    let seats = (0..params.connections)
        .map(|user| Seat {
            user,
            room: format!("idle-r{}", user / room_size),
            node: user % targets.len(),
        })
        .collect();
    let bar = progress::bar(params.connections as u64, "connecting", quiet);
    let started = Instant::now();
    let opened = open_all(targets, sources, seats, concurrency, &bar).await?;
    let setup = started.elapsed();
    bar.finish_and_clear();

    let hold = progress::bar(params.hold.as_secs(), "holding", quiet);
    for _ in 0..params.hold.as_secs() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        hold.inc(1);
    }
    tokio::time::sleep(params.hold - Duration::from_secs(params.hold.as_secs())).await;
    hold.finish_and_clear();

    let processes: Vec<ProcessMemory> = params
        .pids
        .iter()
        .zip(before)
        .map(|(pid, before_kb)| {
            Ok(ProcessMemory {
                pid: *pid,
                before_kb,
                after_kb: resident_kb(*pid)?,
            })
        })
        .collect::<Result<_, BenchError>>()?;
    drop(opened);
    let growth_kb: i64 = processes
        .iter()
        .map(|p| p.after_kb as i64 - p.before_kb as i64)
        .sum();
    let bytes_per_connection = (!processes.is_empty() && params.connections > 0)
        .then(|| growth_kb as f64 * 1024.0 / params.connections as f64);
    Ok(IdleReport {
        target: targets[0].kind(),
        connections: params.connections,
        rooms: params.connections.div_ceil(room_size),
        setup_s: setup.as_secs_f64(),
        hold_s: params.hold.as_secs_f64(),
        processes,
        growth_kb,
        bytes_per_connection,
    })
}

impl IdleReport {
    pub fn table(&self) -> String {
        let mut table = Table::new(&["pid", "before kB", "after kB", "growth kB"]);
        for p in &self.processes {
            table.row(vec![
                p.pid.to_string(),
                thousands(p.before_kb),
                thousands(p.after_kb),
                (p.after_kb as i64 - p.before_kb as i64).to_string(),
            ]);
        }
        let per = match self.bytes_per_connection {
            Some(bytes) => format!("{bytes:.0} bytes per connection"),
            None => "no --pid given: memory not measured".into(),
        };
        format!(
            "{} connections in {} rooms via {} (setup {:.2} s, held {:.0} s)\n{}{per}\n",
            thousands(self.connections as u64),
            self.rooms,
            self.target,
            self.setup_s,
            self.hold_s,
            if self.processes.is_empty() {
                String::new()
            } else {
                table.render()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status =
            "Name:\tchat-service\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12_345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn reads_its_own_memory() {
        assert!(resident_kb(std::process::id()).unwrap() > 0);
    }
}
