//! `chat-bench`: a load generator for the chat protocol. It connects through
//! the gateway (minting tokens from the JWT secret) or straight to the
//! service (with the internal key) and measures fan-out latency and
//! capacity, idle memory per connection and the connection setup rate.
//!
//! Only loopback targets are accepted unless explicitly allowed.

pub mod capacity;
pub mod cli;
pub mod client;
pub mod connect_rate;
pub mod error;
pub mod fanout;
pub mod fdlimit;
pub mod idle;
pub mod payload;
pub mod progress;
pub mod schedule;
pub mod setup;
pub mod stats;
pub mod target;

use std::sync::Arc;

use serde::Serialize;

pub use cli::Cli;
pub use error::BenchError;

use capacity::CapacityParams;
use cli::{seconds, Command, CommonArgs, ShapeArgs, TargetKind};
use client::SourceAddrs;
use fanout::{Shape, Swarm};
use idle::IdleParams;
use target::{Auth, Target};

/// Runs the command and prints its report (a table, or JSON with `--json`).
pub async fn run(cli: Cli) -> Result<(), BenchError> {
    let file_limit = fdlimit::raise()?;
    let common = &cli.common;
    let targets = resolve_targets(common).await?;
    let target = &targets[0];
    let connections = match &cli.command {
        Command::Fanout { shape, .. } | Command::Capacity { shape, .. } => {
            shape.rooms * shape.members
        }
        Command::Idle { connections, .. } => *connections,
        Command::Connect { count, .. } => *count,
    };
    fdlimit::ensure(connections, file_limit)?;
    let sources = SourceAddrs::plan(
        connections,
        common.conns_per_source,
        common.source_addrs,
        target.addr,
    )?;
    let quiet = common.quiet || common.json;
    match cli.command {
        Command::Fanout {
            shape,
            rate,
            deliveries,
            duration,
            drain,
        } => {
            let shape = to_shape(&shape);
            let rate = match (rate, deliveries) {
                (Some(rate), _) => rate,
                (None, Some(total)) => schedule::rate_for_deliveries(
                    total,
                    shape.rooms * shape.publishers,
                    shape.members,
                ),
                (None, None) => {
                    return Err(BenchError::InvalidParams("--rate or --deliveries".into()))
                }
            };
            let setup = progress::bar(connections as u64, "connecting", quiet);
            let mut swarm =
                Swarm::open(&targets, &sources, shape, common.concurrency, &setup).await?;
            setup.finish_and_clear();
            let bar = progress::bar(0, "fanout", quiet);
            let report = swarm
                .phase(1, rate, seconds(duration), seconds(drain), &bar)
                .await?;
            bar.finish_and_clear();
            print(common.json, &report, || report.table())
        }
        Command::Capacity {
            shape,
            from,
            to,
            factor,
            refine,
            retries,
            step_duration,
            drain,
            cooldown,
            max_p99_ms,
        } => {
            let params = CapacityParams {
                from,
                to,
                factor,
                refine,
                retries,
                step_duration: seconds(step_duration),
                drain: seconds(drain),
                cooldown: seconds(cooldown),
                max_p99_ms,
            };
            let report = capacity::run(
                &targets,
                &sources,
                to_shape(&shape),
                &params,
                common.concurrency,
                quiet,
            )
            .await?;
            print(common.json, &report, || report.table())
        }
        Command::Idle {
            connections,
            room_size,
            hold,
            pids,
        } => {
            let params = IdleParams {
                connections,
                room_size,
                hold: seconds(hold),
                pids,
            };
            let report = idle::run(&targets, &sources, &params, common.concurrency, quiet).await?;
            print(common.json, &report, || report.table())
        }
        Command::Connect { count, room_size } => {
            let report = connect_rate::run(
                &targets,
                &sources,
                count,
                room_size,
                common.concurrency,
                quiet,
            )
            .await?;
            print(common.json, &report, || report.table())
        }
    }
}

/// Every node `--url` names (comma-separated), in order.
async fn resolve_targets(common: &CommonArgs) -> Result<Vec<Arc<Target>>, BenchError> {
    let mut targets = Vec::new();
    for url in common.url.as_deref().unwrap_or("").split(',') {
        targets.push(Arc::new(resolve_target(common, url.trim()).await?));
    }
    Ok(targets)
}

async fn resolve_target(common: &CommonArgs, url: &str) -> Result<Target, BenchError> {
    let missing =
        |what: &str| BenchError::InvalidParams(format!("{what} is required for this target"));
    let (default_url, auth) = match common.target {
        TargetKind::Gateway => (
            "ws://127.0.0.1:3000/chat/ws",
            Auth::Gateway {
                jwt_secret: common
                    .jwt_secret
                    .clone()
                    .ok_or_else(|| missing("--jwt-secret"))?,
                origin: common.origin.clone(),
            },
        ),
        TargetKind::Service => (
            "ws://127.0.0.1:3002/ws",
            Auth::Service {
                internal_key: common
                    .internal_key
                    .clone()
                    .ok_or_else(|| missing("--internal-key"))?,
            },
        ),
    };
    let url = if url.is_empty() { default_url } else { url };
    Target::resolve(url, auth, common.allow_non_loopback).await
}

fn to_shape(args: &ShapeArgs) -> Shape {
    Shape {
        placement: args.placement,
        rooms: args.rooms,
        members: args.members,
        publishers: args.publishers,
        payload: args.payload,
    }
}

fn print<T: Serialize>(
    json: bool,
    report: &T,
    table: impl FnOnce() -> String,
) -> Result<(), BenchError> {
    if json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| BenchError::InvalidParams(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", table());
    }
    Ok(())
}
