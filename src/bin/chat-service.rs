//! The chat service on its own, as the gateway's upstream.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use clap::Parser;

/// Chat service: rooms, messages and the internal API, behind the gateway.
#[derive(Debug, Parser)]
#[command(name = "chat-service", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: IpAddr,
    #[arg(long, env = "PORT", default_value_t = 3002)]
    port: u16,
    /// Shared secret the gateway sends in `x-internal-api-key` (required).
    #[arg(long, env = "INTERNAL_API_KEY", hide_env_values = true)]
    internal_api_key: Option<String>,
    /// Loopback address for Prometheus `/metrics` without the key; empty turns it off.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9102")]
    metrics_addr: String,
    /// Redis for cluster mode: several nodes on one PostgreSQL (needs a postgres:// DATABASE_URL).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    #[command(flatten)]
    service: chat_service::ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(key) = args.internal_api_key else {
        eprintln!("chat-service: INTERNAL_API_KEY is required (the secret the gateway presents in x-internal-api-key)");
        std::process::exit(2);
    };
    let mut config = args.service.into_config(key, args.redis_url);
    if let Err(why) = config.check() {
        eprintln!("chat-service: {why}");
        std::process::exit(2);
    }
    if let Err(why) = config.files.check() {
        eprintln!("chat-service: FILE_STORE_URL: {why}");
        std::process::exit(2);
    }
    chat::init_tracing(chat::json_logs_requested());
    let shutdown = chat::shutdown_signal();
    let open_files = chat::raise_open_files_limit();
    let address = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    println!(
        "chat-service listening on http://{}",
        listener.local_addr()?
    );
    let metrics = chat_service::install_metrics_recorder();
    if let Some(addr) = chat::spawn_metrics(&args.metrics_addr, metrics.clone()).await? {
        println!("metrics on http://{addr}/metrics");
    }
    config.limits.max_connections =
        chat::connections_within(open_files, 1, config.limits.max_connections);
    config.metrics = Some(metrics);
    if let Err(error) = chat_service::run(listener, config, shutdown).await {
        // One line, like every other refusal (another service on the
        // database, a store that cannot be opened).
        eprintln!("chat-service: {error}");
        std::process::exit(1);
    }
    Ok(())
}
