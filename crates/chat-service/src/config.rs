//! Service settings: a plain [`Config`] for embedding and tests, and
//! [`ServiceArgs`] to read them from flags and the environment.

use std::time::Duration;

use chat_proto::ProtoLimits;
use metrics_exporter_prometheus::PrometheusHandle;

/// Bounds on what one connection may do and hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub proto: ProtoLimits,
    /// Largest frame or message accepted from a client; larger closes with
    /// 1009. It does not limit what the server sends.
    pub max_frame_bytes: usize,
    pub max_rooms_per_connection: usize,
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// Bytes queued for one client (broadcasts and replies alike) before it
    /// counts as a slow consumer.
    pub outbound_queue_bytes: usize,
    /// Most bytes of messages in one history page or recovery read; a
    /// fuller page is cut short and says `hasMore`.
    pub page_bytes: usize,
    /// Open connections (HTTP and WebSocket); past it new ones get 503.
    pub max_connections: usize,
    /// A peer must send its whole request head within this long.
    pub header_read_timeout: Duration,
    /// Most messages replayed by `chat.join {since}`; beyond it the client pages.
    pub recovery_cap: usize,
    /// How long a user whose last connection closed still shows as they
    /// were: a reload within it announces nothing.
    pub presence_grace: Duration,
    pub calls: CallLimits,
}

/// How calls ring, wait for a dropped participant, and fill up.
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// How long a call rings for those who have not answered.
    pub ring_timeout: Duration,
    /// How long a participant whose connection dropped has to accept the
    /// call again before they count as gone.
    pub reconnect_grace: Duration,
    /// Most participants in a call at once (a full mesh: each sends its
    /// media to every other).
    pub max_participants: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            ring_timeout: Duration::from_secs(30),
            reconnect_grace: Duration::from_secs(15),
            max_participants: 4,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            proto: ProtoLimits::default(),
            max_frame_bytes: 64 * 1024,
            max_rooms_per_connection: 100,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            outbound_queue_bytes: 1024 * 1024,
            page_bytes: 256 * 1024,
            max_connections: 100_000,
            header_read_timeout: Duration::from_secs(10),
            recovery_cap: 1000,
            presence_grace: Duration::from_secs(5),
            calls: CallLimits::default(),
        }
    }
}

#[derive(Clone)]
pub struct Config {
    /// Shared secret the gateway presents in `x-internal-api-key`.
    pub internal_api_key: String,
    /// `memory:`, `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    pub message_retention_days: Option<u32>,
    pub limits: Limits,
    /// Where `/metrics` renders from; `None` installs the process recorder.
    pub metrics: Option<PrometheusHandle>,
    /// Cluster mode: several nodes on one PostgreSQL, joined through Redis.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Files attached to messages.
    pub files: crate::FilesConfig,
}

impl Config {
    /// In-memory store and default limits: for tests and embedding.
    pub fn new(internal_api_key: impl Into<String>) -> Config {
        Config {
            internal_api_key: internal_api_key.into(),
            database_url: "memory:".into(),
            message_retention_days: None,
            limits: Limits::default(),
            metrics: None,
            cluster: None,
            files: crate::FilesConfig::default(),
        }
    }
}

impl Config {
    /// What would stop the service at start, as one line to show: a weak
    /// internal key; cluster mode on a store the nodes cannot share.
    pub fn check(&self) -> Result<(), String> {
        chat_proto::limits::check_internal_api_key(&self.internal_api_key)?;
        let postgres = self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://");
        if self.cluster.is_some() && !postgres {
            return Err(format!(
                "cluster mode (REDIS_URL) needs a PostgreSQL DATABASE_URL that every node shares; {} is not one",
                redact_url(&self.database_url)
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("internal_api_key", &"<redacted>")
            .field("database_url", &redact_url(&self.database_url))
            .field("message_retention_days", &self.message_retention_days)
            .field("limits", &self.limits)
            .field(
                "cluster",
                &self.cluster.as_ref().map(|c| redact_url(&c.redis_url)),
            )
            .field("files", &self.files)
            .finish()
    }
}

/// Hides a password in `scheme://user:password@host/...` for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The service's settings as flags mirrored by environment variables. The
/// listening address and the internal key are left to the binary, since the
/// all-in-one command shares them with the gateway.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Message store: `sqlite://PATH`, `postgres://...`, or `memory:` (no persistence).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/chat.db")]
    pub database_url: String,
    /// Delete messages older than this many days (kept forever when unset).
    #[arg(long, env = "MESSAGE_RETENTION_DAYS")]
    pub message_retention_days: Option<u32>,
    /// Longest message text in characters, after trimming.
    #[arg(long, env = "MAX_MESSAGE_CHARS", default_value_t = 4000)]
    pub max_message_chars: usize,
    /// Largest WebSocket frame in bytes; larger closes the connection with 1009.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    #[arg(long, env = "MAX_ROOMS_PER_CONNECTION", default_value_t = 100)]
    pub max_rooms_per_connection: usize,
    #[arg(long, env = "PING_INTERVAL_SECS", default_value_t = 30)]
    pub ping_interval_secs: u64,
    /// Close a connection silent for this long.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 90)]
    pub idle_timeout_secs: u64,
    /// Bytes queued per client (broadcasts and replies) before it is cut off as a slow consumer (close 1008).
    #[arg(long, env = "OUTBOUND_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub outbound_queue_bytes: usize,
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Most missed messages `chat.join {since}` replays before answering `recovered: false`.
    #[arg(long, env = "RECOVERY_CAP", default_value_t = 1000)]
    pub recovery_cap: usize,
    /// Cluster mode: a node that stops (killed) has its users shown offline by the others within this long.
    #[arg(long, env = "PRESENCE_TTL_SECS", default_value_t = 30)]
    pub presence_ttl_secs: u64,
    /// Seconds a call rings before those who have not answered missed it.
    #[arg(long, env = "CALL_RING_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub call_ring_secs: u64,
    /// Seconds a call participant whose connection dropped has to come back.
    #[arg(long, env = "CALL_RECONNECT_SECS", default_value_t = 15)]
    pub call_reconnect_secs: u64,
    /// Most participants in one call (a full mesh), at least 2.
    #[arg(long, env = "MAX_CALL_PARTICIPANTS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(2..=16))]
    pub max_call_participants: u64,
    /// Where uploaded files are kept: a directory, or
    /// `s3://BUCKET[/PREFIX]?endpoint=URL&region=REGION` for an S3-compatible store.
    #[arg(long, env = "FILE_STORE_URL", default_value = chat_files::DEFAULT_DISK_ROOT)]
    pub file_store_url: String,
    /// Largest file an upload may carry, in bytes.
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = chat_proto::limits::DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
    /// Comma-separated types accepted besides PNG, JPEG, GIF, WebP, PDF and plain text
    /// (as detected from the bytes, e.g. application/zip,audio/mpeg).
    #[arg(long, env = "UPLOAD_EXTRA_TYPES", value_delimiter = ',')]
    pub upload_extra_types: Vec<String>,
    /// Hours after which an upload never sent with a message is deleted.
    #[arg(long, env = "UPLOAD_ORPHAN_HOURS", default_value_t = 24)]
    pub upload_orphan_hours: u64,
}

impl ServiceArgs {
    /// The settings, with cluster mode on when `redis_url` is given (the
    /// binaries read `REDIS_URL` themselves: the all-in-one `chat` shares it
    /// with its gateway).
    pub fn into_config(self, internal_api_key: String, redis_url: Option<String>) -> Config {
        let defaults = Limits::default();
        Config {
            internal_api_key,
            database_url: self.database_url,
            message_retention_days: self.message_retention_days,
            limits: Limits {
                proto: ProtoLimits {
                    max_message_chars: self.max_message_chars,
                    ..defaults.proto
                },
                max_frame_bytes: self.max_frame_bytes,
                max_rooms_per_connection: self.max_rooms_per_connection,
                ping_interval: Duration::from_secs(self.ping_interval_secs.max(1)),
                idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
                outbound_queue_bytes: self.outbound_queue_bytes,
                page_bytes: defaults.page_bytes,
                max_connections: self.max_connections,
                header_read_timeout: defaults.header_read_timeout,
                recovery_cap: self.recovery_cap,
                presence_grace: defaults.presence_grace,
                calls: CallLimits {
                    ring_timeout: Duration::from_secs(self.call_ring_secs),
                    reconnect_grace: Duration::from_secs(self.call_reconnect_secs),
                    max_participants: self.max_call_participants as usize,
                },
            },
            metrics: None,
            cluster: redis_url
                .filter(|url| !url.trim().is_empty())
                .map(|redis_url| crate::cluster::ClusterConfig {
                    redis_url,
                    presence_ttl: Duration::from_secs(self.presence_ttl_secs.max(1)),
                }),
            files: crate::FilesConfig {
                store: Some(self.file_store_url),
                upload: chat_files::UploadConfig {
                    max_upload_bytes: self.max_upload_bytes,
                    extra_types: self
                        .upload_extra_types
                        .into_iter()
                        .map(|t| t.trim().to_owned())
                        .filter(|t| !t.is_empty())
                        .collect(),
                    ..chat_files::UploadConfig::default()
                },
                orphan_after: Duration::from_secs(self.upload_orphan_hours.max(1) * 3600),
                ..crate::FilesConfig::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://app:secret@db:5432/chat"),
            "postgres://app:***@db:5432/chat"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/chat"),
            "postgres://postgres@127.0.0.1/chat"
        );
        assert_eq!(redact_url("sqlite://data/chat.db"), "sqlite://data/chat.db");
    }
}
