//! The all-in-one `chat` binary as a new user runs it: port 0 for both
//! listeners, the printed URLs, dev login, a socket through the gateway,
//! graceful exit on SIGTERM; and `chat token`.

mod binaries;

use binaries::refusal;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const CHAT: &str = env!("CARGO_BIN_EXE_chat");

fn chat_command() -> Command {
    let mut command = binaries::chat();
    command
        .env("METRICS_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

struct Started {
    child: Child,
    service_port: u16,
    gateway_port: u16,
    gateway_host: String,
    metrics_port: Option<u16>,
    open_line: String,
}

async fn start(mut command: Command) -> Started {
    let mut child = command.spawn().expect("chat starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let read = async {
        let mut found = (None, None, None, None);
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("chat-service listening on http://127.0.0.1:") {
                found.0 = Some(url.parse::<u16>().unwrap());
            } else if let Some(url) = line.strip_prefix("chat-gateway listening on http://") {
                let (host, port) = url.rsplit_once(':').unwrap();
                found.1 = Some((host.to_owned(), port.parse::<u16>().unwrap()));
            } else if let Some(url) = line.strip_prefix("metrics on http://127.0.0.1:") {
                found.2 = Some(url.trim_end_matches("/metrics").parse::<u16>().unwrap());
            } else if line.starts_with("Open http://localhost:") {
                found.3 = Some(line);
                break;
            }
        }
        found
    };
    let (service, gateway, metrics, open) = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("chat prints its URLs");
    let (gateway_host, gateway_port) = gateway.expect("gateway line");
    Started {
        child,
        service_port: service.expect("service line"),
        gateway_port,
        gateway_host,
        metrics_port: metrics,
        open_line: open.expect("open line"),
    }
}

/// One raw HTTP/1.1 exchange; returns the response head (status line and headers).
async fn http_head(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("response in time")
            .unwrap();
        response.extend_from_slice(&buffer[..n]);
        if n == 0 || response.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n")
}

async fn terminate(mut child: Child) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(12), child.wait())
        .await
        .expect("exits within the shutdown budget")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn all_in_one_with_dev_login_relays_a_socket() {
    let started = start(chat_command()).await;
    let port = started.gateway_port;
    assert_eq!(
        started.open_line,
        format!("Open http://localhost:{port}/dev/login?user=alice")
    );
    assert!(http_head(started.service_port, &get("/healthz", ""))
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(http_head(port, &get("/healthz", ""))
        .await
        .starts_with("HTTP/1.1 200"));

    let login = http_head(port, &get("/dev/login?user=alice", "")).await;
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie = login
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_owned();
    assert!(cookie.starts_with("access_token="));

    let upgrade = format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {cookie}\r\n"
    );
    let head = http_head(port, &get("/chat/ws", &upgrade)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let anonymous = http_head(port, &get("/chat/ws", &upgrade.replace(&cookie, "x=1"))).await;
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");

    terminate(started.child).await;
}

#[tokio::test]
async fn configured_secret_disables_dev_login_and_signs_chat_tokens() {
    let mut command = chat_command();
    command.env("JWT_SECRET", "all-in-one-secret-of-at-least-32-bytes");
    let started = start(command).await;
    let port = started.gateway_port;
    assert_eq!(started.open_line, format!("Open http://localhost:{port}/"));
    assert!(http_head(port, &get("/dev/login?user=alice", ""))
        .await
        .starts_with("HTTP/1.1 404"));

    let output = Command::new(CHAT)
        .args([
            "token",
            "--user",
            "42",
            "--username",
            "TestUser",
            "--ttl",
            "60",
        ])
        .env("JWT_SECRET", "all-in-one-secret-of-at-least-32-bytes")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3);
    let upgrade = format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: access_token={token}\r\n"
    );
    assert!(http_head(port, &get("/chat/ws", &upgrade))
        .await
        .starts_with("HTTP/1.1 101"));
    terminate(started.child).await;

    let missing = Command::new(CHAT)
        .args(["token", "--user", "42"])
        .env_remove("JWT_SECRET")
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("JWT_SECRET"));
}

/// Metrics are served on a loopback listener of their own, never on the
/// port browsers use; in `chat` they show both halves.
#[tokio::test]
async fn metrics_stay_off_the_public_port() {
    let started = start(chat_command()).await;
    let metrics_port = started.metrics_port.expect("a metrics line");
    let head = http_head(metrics_port, &get("/metrics", "")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let public = http_head(started.gateway_port, &get("/metrics", "")).await;
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    // The service's own port wants the internal key for it.
    let service = http_head(started.service_port, &get("/metrics", "")).await;
    assert!(service.starts_with("HTTP/1.1 401"), "{service}");
    terminate(started.child).await;
}

/// Development login binds to loopback unless HOST says otherwise, and
/// says so.
#[tokio::test]
async fn dev_login_listens_on_loopback_unless_host_is_given() {
    let mut command = chat_command();
    command.env_remove("HOST");
    let started = start(command).await;
    assert_eq!(started.gateway_host, "127.0.0.1");
    terminate(started.child).await;

    let mut command = chat_command();
    command
        .env_remove("HOST")
        .env("JWT_SECRET", "all-in-one-secret-of-at-least-32-bytes")
        .env("PORT", "0");
    let started = start(command).await;
    assert_eq!(started.gateway_host, "0.0.0.0");
    terminate(started.child).await;
}

/// A secret that is set but empty or too short stops the program at start
/// with one line saying why; it never falls back to development login.
#[tokio::test]
async fn empty_or_short_secrets_are_refused_at_start() {
    for secret in ["", "short", "0123456789abcdef0123456789abcde"] {
        let mut command = chat_command();
        command.env("JWT_SECRET", secret);
        let stderr = refusal(command).await;
        assert!(
            stderr.contains("JWT_SECRET must be at least 32 bytes"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    for key in ["", "too-short"] {
        let mut chat = chat_command();
        chat.env("INTERNAL_API_KEY", key);
        let mut gateway = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
        gateway
            .env("INTERNAL_API_KEY", key)
            .env("JWT_SECRET", "all-in-one-secret-of-at-least-32-bytes")
            .env("PORT", "0")
            .env("METRICS_ADDR", "");
        let mut service = Command::new(env!("CARGO_BIN_EXE_chat-service"));
        service
            .env("INTERNAL_API_KEY", key)
            .env("PORT", "0")
            .env("DATABASE_URL", "memory:")
            .env("METRICS_ADDR", "");
        for command in [chat, gateway, service] {
            let stderr = refusal(command).await;
            assert!(
                stderr.contains("INTERNAL_API_KEY must be at least 16 bytes"),
                "{stderr}"
            );
        }
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
    command
        .env("INTERNAL_API_KEY", "a-long-enough-internal-key")
        .env("JWT_SECRET", "")
        .env("PORT", "0")
        .env("METRICS_ADDR", "");
    let stderr = refusal(command).await;
    assert!(
        stderr.contains("JWT_SECRET must be at least 32 bytes"),
        "{stderr}"
    );
    let short = Command::new(CHAT)
        .args(["token", "--user", "42"])
        .env("JWT_SECRET", "short")
        .output()
        .await
        .unwrap();
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 32 bytes"));
}

/// Cluster mode needs a database every node shares: with SQLite or memory
/// the service refuses at start, with one line saying why.
#[tokio::test]
async fn cluster_mode_on_a_store_nodes_cannot_share_is_refused() {
    for store in ["memory:", "sqlite://data/never-created.db"] {
        let mut service = Command::new(env!("CARGO_BIN_EXE_chat-service"));
        service
            .env("INTERNAL_API_KEY", "an-internal-key-of-16+")
            .env("PORT", "0")
            .env("DATABASE_URL", store)
            .env("REDIS_URL", "redis://127.0.0.1:1")
            .env("METRICS_ADDR", "");
        let mut chat = chat_command();
        chat.env("DATABASE_URL", store)
            .env("REDIS_URL", "redis://127.0.0.1:1");
        for command in [service, chat] {
            let stderr = refusal(command).await;
            assert!(
                stderr.contains("cluster mode (REDIS_URL) needs a PostgreSQL DATABASE_URL"),
                "{stderr}"
            );
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        }
    }
}
