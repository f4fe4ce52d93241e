//! `chat`: the chat service and the gateway in one process, for a laptop or
//! a single small server; and `chat token` to mint access tokens.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "chat",
    version,
    about = "Real-time chat: the chat service and its gateway in one process",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print an HS256 access token signed with JWT_SECRET (for scripts and wscat).
    Token(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// User id (the `sub` claim).
    #[arg(long)]
    user: String,
    /// Display name (the `username` claim).
    #[arg(long)]
    username: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Gateway port (the one browsers use).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    port: u16,
    /// Gateway listen address [default: 0.0.0.0; 127.0.0.1 in development
    /// mode, when no JWT key is set].
    #[arg(long, env = "HOST")]
    host: Option<String>,
    /// Chat service port, bound to 127.0.0.1 only.
    #[arg(long, env = "SERVICE_PORT", default_value_t = 3002)]
    service_port: u16,
    /// Key between gateway and service; random when unset.
    #[arg(long, env = "INTERNAL_API_KEY", hide_env_values = true)]
    internal_api_key: Option<String>,
    /// Loopback address for Prometheus `/metrics` (gateway and service); empty turns it off.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9101")]
    metrics_addr: String,
    #[command(flatten)]
    service: chat_service::ServiceArgs,
    #[command(flatten)]
    gateway: chat_gateway::GatewayArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Token(args)) => token(args),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = args
        .jwt_secret
        .context("JWT_SECRET is required to sign tokens (the same secret the gateway uses)")?;
    anyhow::ensure!(
        secret.len() >= chat_gateway::MIN_HS256_SECRET_BYTES,
        "JWT_SECRET must be at least {} bytes (it has {}), as the gateway requires",
        chat_gateway::MIN_HS256_SECRET_BYTES,
        secret.len()
    );
    let token = chat_gateway::mint_hs256_token(
        secret.as_bytes(),
        &args.user,
        args.username.as_deref(),
        Duration::from_secs(args.ttl),
    )?;
    println!("{token}");
    Ok(())
}

#[tokio::main]
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    chat::init_tracing(chat::json_logs_requested());
    let shutdown = chat::shutdown_signal();
    let open_files = chat::raise_open_files_limit();
    // Unset means "make one up"; set but empty or short is refused below.
    let internal_key = args
        .internal_api_key
        .unwrap_or_else(chat_gateway::random_secret);
    let dev_login = !args.gateway.has_jwt_key();
    // Development login lets anyone in as anyone: never on a network
    // unless asked for by name.
    let host = args
        .host
        .unwrap_or_else(|| if dev_login { "127.0.0.1" } else { "0.0.0.0" }.to_owned());
    let mut gateway_args = args.gateway;
    // One REDIS_URL for both halves: the gateway counts per-user caps
    // there, the service joins its cluster.
    let service_config = args
        .service
        .into_config(internal_key.clone(), gateway_args.redis_url.clone());
    service_config.check().map_err(anyhow::Error::msg)?;

    // Bind both first so port 0 works and the printed URLs are real.
    let service_listener = TcpListener::bind(("127.0.0.1", args.service_port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.service_port))?;
    let service_addr = service_listener.local_addr()?;
    gateway_args.chat_service_url = format!("http://{service_addr}");

    let gateway_listener = TcpListener::bind((host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {host}:{}", args.port))?;
    let gateway_addr = gateway_listener.local_addr()?;

    let mut gateway_config = if dev_login {
        let secret = chat_gateway::random_secret().into_bytes();
        let mut config = gateway_args
            .into_config_with_key(internal_key.clone(), chat_gateway::JwtKey::Secret(secret))?;
        config.dev_login = true;
        config
    } else {
        gateway_args.into_config(internal_key.clone())?
    };
    // One recorder for the process: both /metrics pages show everything.
    // One process holds all three descriptors of a client: the browser's
    // socket, and both ends of the gateway-service socket.
    gateway_config.limits.max_connections =
        chat::connections_within(open_files, 3, gateway_config.limits.max_connections);
    let metrics = chat_service::install_metrics_recorder();
    let metrics_addr = chat::spawn_metrics(&args.metrics_addr, metrics.clone()).await?;
    gateway_config.metrics = Some(metrics.clone());
    let mut service_config = service_config;
    service_config.files.check().context("FILE_STORE_URL")?;
    service_config.metrics = Some(metrics);
    // One MAX_UPLOAD_BYTES for both halves.
    gateway_config.limits.max_upload_bytes = service_config.files.upload.max_upload_bytes;

    let (stop_gateway, gateway_stop) = watch::channel(false);
    let (stop_service, service_stop) = watch::channel(false);
    let service = tokio::spawn(chat_service::run(
        service_listener,
        service_config,
        stopped(service_stop),
    ));
    let gateway = tokio::spawn(chat_gateway::run(
        gateway_listener,
        gateway_config,
        stopped(gateway_stop),
    ));

    println!("chat-service listening on http://{service_addr}");
    println!("chat-gateway listening on http://{gateway_addr}");
    if let Some(addr) = metrics_addr {
        println!("metrics on http://{addr}/metrics");
    }
    print_open_hint(gateway_addr, dev_login);

    shutdown.await;
    // Gateway first: clients get 1001 from it rather than a relayed restart.
    let _ = stop_gateway.send(true);
    let gateway_result = gateway.await.context("gateway task failed")?;
    let _ = stop_service.send(true);
    let service_result = service.await.context("service task failed")?;
    gateway_result.context("gateway failed")?;
    service_result.context("chat service failed")?;
    Ok(())
}

fn print_open_hint(gateway_addr: SocketAddr, dev_login: bool) {
    let port = gateway_addr.port();
    if dev_login {
        tracing::warn!(
            address = %gateway_addr,
            "no JWT_SECRET or JWT_PUBLIC_KEY set: using a random secret with development login ON \
             (GET /dev/login?user=NAME logs anyone in); listening on {} only unless HOST is set",
            gateway_addr.ip()
        );
        println!("Open http://localhost:{port}/dev/login?user=alice");
    } else {
        println!("Open http://localhost:{port}/");
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}
