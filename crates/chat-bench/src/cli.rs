//! Command line of `chat-bench`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "chat-bench",
    version,
    about = "Load generator for the chat protocol: fan-out latency and capacity, idle memory, connection setup rate."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// The gateway: JWT in the `access_token` cookie.
    Gateway,
    /// The chat service directly: internal key and user headers.
    Service,
}

#[derive(Args, Debug)]
pub struct CommonArgs {
    /// What to connect to.
    #[arg(long, value_enum, default_value_t = TargetKind::Service, global = true)]
    pub target: TargetKind,
    /// WebSocket URL [default: ws://127.0.0.1:3000/chat/ws for the gateway, ws://127.0.0.1:3002/ws for the service]; several, comma-separated, for the nodes of a cluster (connections go round robin, or as --placement says).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// HS256 secret the gateway verifies tokens with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
    /// The service's internal API key.
    #[arg(long, env = "INTERNAL_API_KEY", hide_env_values = true, global = true)]
    pub internal_key: Option<String>,
    /// `Origin` header to send to the gateway.
    #[arg(long, global = true)]
    pub origin: Option<String>,
    /// Allow a target that is not on loopback.
    #[arg(long, global = true)]
    pub allow_non_loopback: bool,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64, global = true)]
    pub concurrency: usize,
    /// Number of 127.0.0.x source addresses to spread client sockets over [default: as needed].
    #[arg(long, global = true)]
    pub source_addrs: Option<usize>,
    /// Connections per source address before another one is used.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub conns_per_source: usize,
    /// Print a JSON report on stdout instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ShapeArgs {
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Members per room (publishers included).
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Publishers per room; they are members of the room too.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Message text size in bytes (at least the timestamp stamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// With several `--url`s (nodes of a cluster): members spread round
    /// robin, or publishers on the first node and everyone else on the
    /// others (every delivery crosses nodes).
    #[arg(long, value_enum, default_value_t = crate::fanout::Placement::Spread)]
    pub placement: crate::fanout::Placement,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// R rooms x M members, P publishers per room at a steady rate.
    Fanout {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Messages per second per publisher.
        #[arg(
            long,
            required_unless_present = "deliveries",
            conflicts_with = "deliveries"
        )]
        rate: Option<f64>,
        /// Offered deliveries per second in total (sets the rate per publisher).
        #[arg(long)]
        deliveries: Option<f64>,
        /// Seconds of load.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds to wait for in-flight deliveries after the load stops.
        #[arg(long, default_value_t = 2.0)]
        drain: f64,
    },
    /// Highest deliveries/s with p99 within --max-p99-ms and no loss.
    Capacity {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Offered deliveries/s of the first step.
        #[arg(long, default_value_t = 20_000.0)]
        from: f64,
        /// Highest offered deliveries/s to try.
        #[arg(long, default_value_t = 3_200_000.0)]
        to: f64,
        /// Rate multiplier between climbing steps.
        #[arg(long, default_value_t = 1.3)]
        factor: f64,
        /// Bisection steps between the last pass and the first failure.
        #[arg(long, default_value_t = 3)]
        refine: usize,
        /// Times a failing rate is tried again before it counts as failed.
        #[arg(long, default_value_t = 1)]
        retries: usize,
        /// Seconds of load per step.
        #[arg(long, default_value_t = 5.0)]
        step_duration: f64,
        #[arg(long, default_value_t = 1.0)]
        drain: f64,
        /// Seconds of quiet between steps.
        #[arg(long, default_value_t = 1.0)]
        cooldown: f64,
        #[arg(long, default_value_t = 50.0)]
        max_p99_ms: f64,
    },
    /// Hold N joined connections; with --pid, resident memory growth per connection.
    Idle {
        #[arg(long, default_value_t = 5_000)]
        connections: usize,
        #[arg(long, default_value_t = 100)]
        room_size: usize,
        /// Seconds to hold the connections before measuring.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
        /// Server process to measure (repeatable: service and gateway).
        #[arg(long = "pid")]
        pids: Vec<u32>,
    },
    /// Connection setup rate (handshake + auth + upstream + join confirmed).
    Connect {
        #[arg(long, default_value_t = 5_000)]
        count: usize,
        #[arg(long, default_value_t = 100)]
        room_size: usize,
    },
}

/// Seconds from the command line as a duration (negative or NaN is zero).
pub fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from([
            "chat-bench",
            "fanout",
            "--rate",
            "5",
            "--target",
            "gateway",
            "--jwt-secret",
            "s",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.common.target, TargetKind::Gateway);
        assert!(cli.common.json);
        assert!(matches!(cli.command, Command::Fanout { rate: Some(r), .. } if r == 5.0));
    }

    #[test]
    fn fanout_needs_a_rate() {
        assert!(Cli::try_parse_from(["chat-bench", "fanout"]).is_err());
        assert!(Cli::try_parse_from(["chat-bench", "fanout", "--deliveries", "1000"]).is_ok());
    }
}
