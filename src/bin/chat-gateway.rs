//! `chat-gateway`: the gateway alone, in front of a chat service running
//! elsewhere (`CHAT_SERVICE_URL`).

use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "chat-gateway",
    version,
    about = "Chat gateway: JWT auth, Origin check, rate limits, WebSocket relay to the chat service"
)]
struct Cli {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: String,
    /// Key the chat service expects in `x-internal-api-key`.
    #[arg(long, env = "INTERNAL_API_KEY", hide_env_values = true)]
    internal_api_key: Option<String>,
    /// Loopback address for Prometheus `/metrics`; empty turns it off.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9101")]
    metrics_addr: String,
    /// Largest file an upload may carry, in bytes (the service's limit: a
    /// body that cannot fit is refused here before it is read).
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = chat_proto::limits::DEFAULT_MAX_UPLOAD_BYTES)]
    max_upload_bytes: u64,
    #[command(flatten)]
    gateway: chat_gateway::GatewayArgs,
}

fn refuse(message: &str) -> ExitCode {
    eprintln!("chat-gateway: {message}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    chat::init_tracing(chat::json_logs_requested());
    let shutdown = chat::shutdown_signal();
    let open_files = chat::raise_open_files_limit();
    let Some(key) = cli.internal_api_key else {
        return refuse("INTERNAL_API_KEY is required (the key the chat service expects)");
    };
    let mut config = match cli.gateway.into_config(key) {
        Ok(config) => config,
        Err(e) => return refuse(&e.to_string()),
    };
    config.limits.max_upload_bytes = cli.max_upload_bytes;
    // A relayed socket holds two descriptors: the client's and the service's.
    config.limits.max_connections =
        chat::connections_within(open_files, 2, config.limits.max_connections);
    let listener = match TcpListener::bind((cli.host.as_str(), cli.port)).await {
        Ok(listener) => listener,
        Err(e) => return refuse(&format!("cannot listen on {}:{}: {e}", cli.host, cli.port)),
    };
    match listener.local_addr() {
        Ok(addr) => println!("chat-gateway listening on http://{addr}"),
        Err(e) => return refuse(&format!("cannot read the listening address: {e}")),
    }
    match chat::spawn_metrics(&cli.metrics_addr, chat_gateway::metrics_handle()).await {
        Ok(Some(addr)) => println!("metrics on http://{addr}/metrics"),
        Ok(None) => {}
        Err(e) => return refuse(&format!("{e:#}")),
    }
    match chat_gateway::run(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => refuse(&e.to_string()),
    }
}
