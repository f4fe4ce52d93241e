//! The binaries cargo built, started as the suites that run them as
//! processes need them: loopback, port 0, the memory store, no metrics
//! listener, and no secret taken from the caller's environment.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a binary may take to start, or to refuse to.
const START_WAIT: Duration = Duration::from_secs(30);

/// The all-in-one `chat`.
pub fn chat() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat"));
    command
        .env_remove("JWT_SECRET")
        .env_remove("JWT_PUBLIC_KEY")
        .env_remove("INTERNAL_API_KEY")
        .env("PORT", "0")
        .env("SERVICE_PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("DATABASE_URL", "memory:")
        .env("METRICS_ADDR", "")
        .env("RUST_LOG", "warn");
    command
}

/// Runs a command that must refuse to start; what it printed on stderr.
pub async fn refusal(mut command: Command) -> String {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = tokio::time::timeout(START_WAIT, command.output())
        .await
        .expect("exits at once")
        .unwrap();
    assert!(!output.status.success(), "started anyway");
    String::from_utf8(output.stderr).unwrap()
}

/// Starts `command`; the port of its "chat-gateway listening on" line.
pub async fn gateway_port(command: &mut Command) -> (Child, u16) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(START_WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(address) = line.strip_prefix("chat-gateway listening on http://") {
                return address.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
            }
        }
        panic!("no listening line");
    })
    .await
    .expect("prints its address");
    (child, port)
}
