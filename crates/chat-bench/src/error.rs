use std::net::SocketAddr;

use tokio_tungstenite::tungstenite;

/// Everything that can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid target URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("could not resolve {host:?}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error(
        "refusing to load {addr}: it is not a loopback address (pass --allow-non-loopback to insist)"
    )]
    NonLoopback { addr: SocketAddr },
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    #[error(
        "this run needs about {needed} open files but the limit is {limit}; \
         lower the connection count or raise the hard limit (ulimit -Hn)"
    )]
    TooManyFiles { needed: u64, limit: u64 },
    #[error("could not raise the open-files limit: {0}")]
    FileLimit(std::io::Error),
    #[error("could not mint a JWT: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("connection {index}: TCP connect failed: {source}")]
    Tcp {
        index: usize,
        source: std::io::Error,
    },
    #[error("connection {index}: WebSocket handshake failed: {source}")]
    Handshake {
        index: usize,
        source: Box<tungstenite::Error>,
    },
    #[error("connection {index}: join of room {room:?} failed: {reason}")]
    Join {
        index: usize,
        room: String,
        reason: String,
    },
    #[error("could not read memory of process {pid}: {reason}")]
    ProcessMemory { pid: u32, reason: String },
    #[error("a load task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
