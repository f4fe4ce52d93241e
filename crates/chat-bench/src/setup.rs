//! Opening many joined connections with bounded concurrency.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::client::{open_joined, SourceAddrs, Ws};
use crate::error::BenchError;
use crate::target::Target;

/// A connection to open: the user index, the room it joins, and which of
/// the targets (nodes) it connects to.
#[derive(Clone, Debug)]
pub struct Seat {
    pub user: usize,
    pub room: String,
    pub node: usize,
}

/// Opened connections in `seats` order, each with its setup time.
pub struct Opened {
    pub connections: Vec<Ws>,
    pub setup_times: Vec<Duration>,
}

/// Opens and joins every seat, `concurrency` at a time, spread over worker
/// tasks so setup runs on every core. Stops at the first failure.
pub async fn open_all(
    targets: &[Arc<Target>],
    sources: &SourceAddrs,
    seats: Vec<Seat>,
    concurrency: usize,
    progress: &ProgressBar,
) -> Result<Opened, BenchError> {
    let seats = Arc::new(seats);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..concurrency.clamp(1, seats.len().max(1)))
        .map(|_| {
            let (targets, sources, seats, next, failed, progress) = (
                targets.to_vec(),
                sources.clone(),
                Arc::clone(&seats),
                Arc::clone(&next),
                Arc::clone(&failed),
                progress.clone(),
            );
            tokio::spawn(async move {
                let mut opened = Vec::new();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(seat) = seats.get(i) else { break };
                    let started = Instant::now();
                    let source = sources.for_connection(seat.user);
                    let target = &targets[seat.node % targets.len()];
                    match open_joined(target, source, seat.user, &seat.room).await {
                        Ok(ws) => opened.push((i, ws, started.elapsed())),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    progress.inc(1);
                }
                Ok(opened)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(seats.len());
    let mut first_error = None;
    for worker in workers {
        match worker.await? {
            Ok(opened) => all.extend(opened),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    all.sort_by_key(|(i, _, _)| *i);
    let (connections, setup_times) = all.into_iter().map(|(_, ws, t)| (ws, t)).unzip();
    Ok(Opened {
        connections,
        setup_times,
    })
}
