//! Settings: the library's `GatewayConfig` and the `GatewayArgs` that the
//! binaries flatten into their command lines (every flag mirrored by an
//! environment variable).

use std::num::NonZeroU32;
use std::time::Duration;

use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::rtc::IceConfig;
use crate::upstream::ServiceUrl;
use crate::GatewayError;

/// Where the gateway's signing key for tokens comes from.
#[derive(Clone)]
pub enum JwtKey {
    /// Shared secret: HS256 only.
    Secret(Vec<u8>),
    /// PEM public key: RS256 for RSA keys, ES256 for P-256 keys.
    PublicKeyPem(String),
}

impl std::fmt::Debug for JwtKey {
    // Never print the secret itself into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(..)"),
            JwtKey::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

impl JwtConfig {
    pub fn hs256(secret: impl Into<Vec<u8>>) -> JwtConfig {
        JwtConfig {
            key: JwtKey::Secret(secret.into()),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
        }
    }
}

/// Rate limits, caps and timeouts. Defaults are the documented production
/// values; tests shrink them.
#[derive(Debug, Clone)]
pub struct Limits {
    pub frame_burst: NonZeroU32,
    pub frames_per_sec: NonZeroU32,
    /// Signaling frames (`chat.call.signal`) per user: a limiter of their
    /// own, since a call's ICE candidates arrive in bursts.
    pub signal_burst: NonZeroU32,
    pub signals_per_sec: NonZeroU32,
    /// Dropped (rate-limited) frames tolerated per `abuse_window` before the
    /// connection is closed with 1008.
    pub abuse_dropped_frames: u32,
    pub abuse_window: Duration,
    /// HTTP requests per user under `/chat/api`.
    pub api_burst: NonZeroU32,
    pub api_requests_per_sec: NonZeroU32,
    /// File downloads per user, counted apart (a page loads many
    /// thumbnails at once).
    pub download_burst: NonZeroU32,
    pub downloads_per_sec: NonZeroU32,
    pub connect_burst: NonZeroU32,
    pub connects_per_min: NonZeroU32,
    pub max_connections_per_user: u32,
    /// Largest client frame/message; larger ones close the socket with 1009.
    pub max_message_bytes: usize,
    /// A client that sends nothing (not even a pong) for this long is gone.
    pub client_idle_timeout: Duration,
    /// A client that does not take a write for this long has stopped
    /// reading; its socket is closed (1008) and its slot freed.
    pub client_write_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    /// Open connections, relayed sockets included; past it new ones get 503.
    pub max_connections: usize,
    /// A client must send its whole request head within this long.
    pub header_read_timeout: Duration,
    /// Largest file an upload may carry (`MAX_UPLOAD_BYTES`, as the
    /// service's): a body that cannot fit is refused before it is read.
    pub max_upload_bytes: u64,
    /// An upload whose body sends nothing for this long is ended.
    pub upload_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_burst: NonZeroU32::new(30).expect("non-zero"),
            frames_per_sec: NonZeroU32::new(10).expect("non-zero"),
            signal_burst: NonZeroU32::new(100).expect("non-zero"),
            signals_per_sec: NonZeroU32::new(20).expect("non-zero"),
            abuse_dropped_frames: 100,
            abuse_window: Duration::from_secs(60),
            api_burst: NonZeroU32::new(20).expect("non-zero"),
            api_requests_per_sec: NonZeroU32::new(5).expect("non-zero"),
            download_burst: NonZeroU32::new(200).expect("non-zero"),
            downloads_per_sec: NonZeroU32::new(50).expect("non-zero"),
            connect_burst: NonZeroU32::new(20).expect("non-zero"),
            connects_per_min: NonZeroU32::new(60).expect("non-zero"),
            max_connections_per_user: 20,
            max_message_bytes: 64 * 1024,
            client_idle_timeout: Duration::from_secs(90),
            client_write_timeout: Duration::from_secs(20),
            upstream_connect_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_upload_bytes: chat_proto::limits::DEFAULT_MAX_UPLOAD_BYTES,
            upload_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// How the gateway watches its service nodes (`GET /healthz` on each).
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub interval: Duration,
    /// A check not answered within this long has failed.
    pub timeout: Duration,
    /// Consecutive failed checks that make a node unhealthy (a failed
    /// connect does at once); one passed check makes it healthy again.
    pub unhealthy_after: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
        }
    }
}

/// Per-user socket counts shared by every gateway on one Redis.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// A gateway's sockets stop counting this long after its last
    /// heartbeat (sent every third of it), so a killed gateway's vanish.
    pub entry_ttl: Duration,
    /// An answer slower than this counts as Redis being unreachable.
    pub timeout: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            entry_ttl: Duration::from_secs(30),
            timeout: Duration::from_millis(500),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    // The URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"..")
            .field("entry_ttl", &self.entry_ttl)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The service nodes; new sockets go to a healthy one with the fewest.
    pub service_urls: Vec<ServiceUrl>,
    pub health: HealthCheck,
    /// Count each user's sockets in Redis, across gateways; `None`: here only.
    pub redis: Option<RedisConfig>,
    pub internal_api_key: String,
    pub jwt: JwtConfig,
    /// Full origins (`https://app.example.com`) allowed besides the gateway's own host.
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    /// STUN and TURN servers handed out for calls.
    pub ice: IceConfig,
    /// Serve `GET /dev/login`. Only ever on with a generated HS256 secret.
    pub dev_login: bool,
    pub dev_login_ttl: Duration,
    /// Renders `/metrics`; when `None` the process-wide recorder is used.
    pub metrics: Option<PrometheusHandle>,
}

impl GatewayConfig {
    pub fn new(
        service_urls: Vec<ServiceUrl>,
        internal_api_key: impl Into<String>,
        jwt: JwtConfig,
    ) -> GatewayConfig {
        GatewayConfig {
            service_urls,
            health: HealthCheck::default(),
            redis: None,
            internal_api_key: internal_api_key.into(),
            jwt,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            ice: IceConfig::default(),
            dev_login: false,
            dev_login_ttl: Duration::from_secs(12 * 3600),
            metrics: None,
        }
    }
}

/// Gateway settings shared by `chat-gateway` and the all-in-one `chat`.
/// Listening address and the internal key are the binaries' business.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Base URL of the chat service (plain HTTP; `/ws` is appended); several
    /// nodes separated by commas.
    #[arg(
        long,
        env = "CHAT_SERVICE_URL",
        default_value = "http://localhost:3002"
    )]
    pub chat_service_url: String,
    /// HS256 shared secret for access tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key for access tokens (RSA -> RS256, P-256 -> ES256).
    #[arg(long, env = "JWT_PUBLIC_KEY", hide_env_values = true)]
    pub jwt_public_key: Option<String>,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp`/`nbf`.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = 5)]
    pub jwt_leeway_secs: u64,
    /// Comma-separated origins allowed besides the gateway's own host.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Comma-separated IPs/CIDRs whose X-Forwarded-For is trusted.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Client frames per user allowed in a burst.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 30)]
    pub rate_limit_burst: u32,
    /// Client frames per user per second, sustained.
    #[arg(long, env = "RATE_LIMIT_PER_SEC", default_value_t = 10)]
    pub rate_limit_per_sec: u32,
    /// Signaling frames (chat.call.signal) per user allowed in a burst.
    #[arg(long, env = "SIGNAL_RATE_LIMIT_BURST", default_value_t = 100)]
    pub signal_rate_limit_burst: u32,
    /// Signaling frames per user per second, sustained.
    #[arg(long, env = "SIGNAL_RATE_LIMIT_PER_SEC", default_value_t = 20)]
    pub signal_rate_limit_per_sec: u32,
    /// HTTP requests per user under /chat/api allowed in a burst.
    #[arg(long, env = "API_RATE_LIMIT_BURST", default_value_t = 20)]
    pub api_rate_limit_burst: u32,
    /// HTTP requests per user per second under /chat/api, sustained.
    #[arg(long, env = "API_RATE_LIMIT_PER_SEC", default_value_t = 5)]
    pub api_rate_limit_per_sec: u32,
    /// File downloads (/chat/api/files/...) per user allowed in a burst.
    #[arg(long, env = "DOWNLOAD_RATE_LIMIT_BURST", default_value_t = 200)]
    pub download_rate_limit_burst: u32,
    /// File downloads per user per second, sustained.
    #[arg(long, env = "DOWNLOAD_RATE_LIMIT_PER_SEC", default_value_t = 50)]
    pub download_rate_limit_per_sec: u32,
    /// New connections per client IP allowed in a burst.
    #[arg(long, env = "CONNECT_RATE_BURST", default_value_t = 20)]
    pub connect_rate_burst: u32,
    /// New connections per client IP per minute, sustained.
    #[arg(long, env = "CONNECT_RATE_PER_MIN", default_value_t = 60)]
    pub connect_rate_per_min: u32,
    /// Open connections at most (each relayed socket holds two file
    /// descriptors); past it new connections get 503.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub gateway_max_connections: usize,
    /// Seconds a client has to send its whole request head.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to take a write before it counts as not reading.
    #[arg(long, env = "CLIENT_WRITE_TIMEOUT_SECS", default_value_t = 20)]
    pub client_write_timeout_secs: u64,
    /// Concurrent WebSocket connections per user.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 20)]
    pub max_connections_per_user: u32,
    /// Seconds between health checks of each service node.
    #[arg(long, env = "HEALTH_CHECK_INTERVAL_SECS", default_value_t = 2)]
    pub health_check_interval_secs: u64,
    /// Seconds a node has to answer a health check.
    #[arg(long, env = "HEALTH_CHECK_TIMEOUT_SECS", default_value_t = 1)]
    pub health_check_timeout_secs: u64,
    /// Consecutive failed health checks that make a node unhealthy.
    #[arg(long, env = "HEALTH_CHECK_FAILURES", default_value_t = 3)]
    pub health_check_failures: u32,
    /// Redis shared by the gateways, to hold the per-user cap across them.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Comma-separated STUN servers for calls (stun:host[:port]).
    #[arg(long, env = "STUN_URLS", value_delimiter = ',')]
    pub stun_urls: Vec<String>,
    /// Comma-separated TURN servers for calls
    /// (turn:host[:port][?transport=udp|tcp], turns:...); needs TURN_SECRET.
    #[arg(long, env = "TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
    /// The TURN servers' shared secret (coturn's static-auth-secret), for
    /// time-limited credentials.
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Seconds TURN credentials stay valid.
    #[arg(long, env = "TURN_TTL_SECS", default_value_t = crate::rtc::DEFAULT_TURN_TTL.as_secs())]
    pub turn_ttl_secs: u64,
}

impl GatewayArgs {
    /// Whether a JWT key setting is present at all. Present but empty is
    /// still present: it is refused when the config is built, never taken
    /// to mean "no key, development mode".
    pub fn has_jwt_key(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some()
    }

    /// Builds the config. A JWT key must be configured (exactly one kind).
    pub fn into_config(self, internal_api_key: String) -> Result<GatewayConfig, GatewayError> {
        let key = match (self.jwt_secret.clone(), self.jwt_public_key.clone()) {
            (Some(secret), None) => JwtKey::Secret(secret.into_bytes()),
            // Keys pasted into env files often carry literal `\n`.
            (None, Some(pem)) => JwtKey::PublicKeyPem(pem.replace("\\n", "\n")),
            (Some(_), Some(_)) => {
                return Err(GatewayError::Config(
                    "set only one of JWT_SECRET (HS256) and JWT_PUBLIC_KEY (RS256/ES256)".into(),
                ))
            }
            (None, None) => {
                return Err(GatewayError::Config(
                    "JWT_SECRET (HS256) or JWT_PUBLIC_KEY (PEM, RS256/ES256) is required to verify access tokens".into(),
                ))
            }
        };
        self.build(internal_api_key, key)
    }

    /// Builds the config with a given key, ignoring any configured one (the
    /// all-in-one command's generated development secret).
    pub fn into_config_with_key(
        self,
        internal_api_key: String,
        key: JwtKey,
    ) -> Result<GatewayConfig, GatewayError> {
        self.build(internal_api_key, key)
    }

    fn build(self, internal_api_key: String, key: JwtKey) -> Result<GatewayConfig, GatewayError> {
        chat_proto::limits::check_internal_api_key(&internal_api_key)
            .map_err(GatewayError::Config)?;
        let service_urls = ServiceUrl::parse_list(&self.chat_service_url)?;
        let jwt = JwtConfig {
            key,
            issuer: non_empty(self.jwt_issuer),
            audience: non_empty(self.jwt_audience),
            leeway: Duration::from_secs(self.jwt_leeway_secs),
        };
        // Refuse a bad key now, before the binary binds and announces itself.
        crate::auth::TokenVerifier::new(&jwt)?;
        let mut config = GatewayConfig::new(service_urls, internal_api_key, jwt);
        config.allowed_origins = self
            .allowed_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(|o| {
                crate::admission::normalize_origin(o).ok_or_else(|| {
                    GatewayError::Config(format!(
                        "ALLOWED_ORIGINS: `{o}` is not an origin like https://app.example.com"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        config.trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(parse_proxy)
            .collect::<Result<_, _>>()?;
        config.limits.frame_burst = positive("RATE_LIMIT_BURST", self.rate_limit_burst)?;
        config.limits.frames_per_sec = positive("RATE_LIMIT_PER_SEC", self.rate_limit_per_sec)?;
        config.limits.signal_burst =
            positive("SIGNAL_RATE_LIMIT_BURST", self.signal_rate_limit_burst)?;
        config.limits.signals_per_sec =
            positive("SIGNAL_RATE_LIMIT_PER_SEC", self.signal_rate_limit_per_sec)?;
        config.limits.api_burst = positive("API_RATE_LIMIT_BURST", self.api_rate_limit_burst)?;
        config.limits.api_requests_per_sec =
            positive("API_RATE_LIMIT_PER_SEC", self.api_rate_limit_per_sec)?;
        config.limits.download_burst =
            positive("DOWNLOAD_RATE_LIMIT_BURST", self.download_rate_limit_burst)?;
        config.limits.downloads_per_sec = positive(
            "DOWNLOAD_RATE_LIMIT_PER_SEC",
            self.download_rate_limit_per_sec,
        )?;
        config.limits.connect_burst = positive("CONNECT_RATE_BURST", self.connect_rate_burst)?;
        config.limits.connects_per_min =
            positive("CONNECT_RATE_PER_MIN", self.connect_rate_per_min)?;
        config.limits.max_connections_per_user =
            positive("MAX_CONNECTIONS_PER_USER", self.max_connections_per_user)?.get();
        config.limits.max_connections = self.gateway_max_connections.max(1);
        config.limits.header_read_timeout =
            positive_secs("HEADER_READ_TIMEOUT_SECS", self.header_read_timeout_secs)?;
        config.limits.client_write_timeout =
            positive_secs("CLIENT_WRITE_TIMEOUT_SECS", self.client_write_timeout_secs)?;
        config.health = HealthCheck {
            interval: positive_secs(
                "HEALTH_CHECK_INTERVAL_SECS",
                self.health_check_interval_secs,
            )?,
            timeout: positive_secs("HEALTH_CHECK_TIMEOUT_SECS", self.health_check_timeout_secs)?,
            unhealthy_after: positive("HEALTH_CHECK_FAILURES", self.health_check_failures)?.get(),
        };
        config.redis = match non_empty(self.redis_url) {
            Some(url) => {
                // Refuse a malformed URL now; an unreachable Redis is not fatal.
                redis::Client::open(url.as_str()).map_err(|e| {
                    GatewayError::Config(format!("REDIS_URL is not a Redis URL: {e}"))
                })?;
                Some(RedisConfig::new(url))
            }
            None => None,
        };
        config.ice = IceConfig::from_settings(
            &self.stun_urls,
            &self.turn_urls,
            self.turn_secret.as_deref(),
            self.turn_ttl_secs,
        )?;
        Ok(config)
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn positive(name: &str, value: u32) -> Result<NonZeroU32, GatewayError> {
    NonZeroU32::new(value).ok_or_else(|| GatewayError::Config(format!("{name} must be at least 1")))
}

fn positive_secs(name: &str, secs: u64) -> Result<Duration, GatewayError> {
    if secs == 0 {
        return Err(GatewayError::Config(format!("{name} must be at least 1")));
    }
    Ok(Duration::from_secs(secs))
}

fn parse_proxy(text: &str) -> Result<IpNet, GatewayError> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            GatewayError::Config(format!(
                "TRUSTED_PROXIES: `{text}` is not an IP address or CIDR"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }

    fn config(args: &[&str]) -> Result<GatewayConfig, GatewayError> {
        let secret = "a-test-secret-of-32-bytes-or-more";
        let base = ["gateway", "--jwt-secret", secret];
        Cli::try_parse_from(base.iter().chain(args))
            .unwrap()
            .gateway
            .into_config("an-internal-key-of-16+".into())
    }

    #[test]
    fn several_nodes_health_checks_and_redis() {
        let one = config(&["--chat-service-url", "http://localhost:3002"]).unwrap();
        assert_eq!(one.service_urls.len(), 1);
        assert_eq!(one.health.interval, Duration::from_secs(2));
        assert_eq!(one.health.timeout, Duration::from_secs(1));
        assert_eq!(one.health.unhealthy_after, 3);

        let several = config(&[
            "--chat-service-url",
            "http://10.0.0.1:3002, http://10.0.0.2:3002",
            "--health-check-interval-secs",
            "5",
            "--redis-url",
            "redis://:secret@127.0.0.1:6390/2",
        ])
        .unwrap();
        assert_eq!(several.service_urls.len(), 2);
        assert_eq!(several.health.interval, Duration::from_secs(5));
        let redis = several.redis.unwrap();
        assert!(!format!("{redis:?}").contains("secret"), "{redis:?}");

        for bad in [
            &["--health-check-failures", "0"][..],
            &["--health-check-timeout-secs", "0"],
            &["--redis-url", "http://not-redis"],
            &["--chat-service-url", "http://a:1,http://a:1"],
        ] {
            assert!(config(bad).is_err(), "{bad:?}");
        }
    }
}
