//! Shared state of one running gateway.

use std::ops::Deref;
use std::sync::Arc;

use chat_proto::{rate_class, RateClass};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::admission::{ConnectLimiter, UserConnections};
use crate::auth::TokenVerifier;
use crate::config::{GatewayConfig, JwtKey};
use crate::shared_count::SharedCount;
use crate::upstream::Upstream;
use crate::GatewayError;

/// Cheap to clone: handlers and relay tasks each hold one.
#[derive(Clone)]
pub struct Gateway(Arc<Shared>);

pub struct Shared {
    pub config: GatewayConfig,
    pub verifier: TokenVerifier,
    pub upstream: Upstream,
    pub connect_limiter: ConnectLimiter,
    pub frame_limiter: DefaultKeyedRateLimiter<Arc<str>>,
    /// Signaling frames per user (`chat.call.signal`), apart from the rest.
    pub signal_limiter: DefaultKeyedRateLimiter<Arc<str>>,
    /// HTTP requests per user under `/chat/api`.
    pub api_limiter: DefaultKeyedRateLimiter<Arc<str>>,
    /// File downloads per user (`/chat/api/files/...`), apart from the rest.
    pub download_limiter: DefaultKeyedRateLimiter<Arc<str>>,
    pub user_connections: Arc<UserConnections>,
    pub metrics: PrometheusHandle,
    /// Flips to `true` when the gateway starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Never sent on: `run` waits for the receiver to see every clone of
    /// the gateway (router, relay tasks) dropped.
    pub relays_alive: mpsc::Sender<()>,
}

impl Deref for Gateway {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Gateway {
    /// With `REDIS_URL`, also the task keeping the shared counts: it ends
    /// once the gateway and every socket it admitted are gone.
    pub fn new(
        config: GatewayConfig,
        shutdown: watch::Receiver<bool>,
        relays_alive: mpsc::Sender<()>,
    ) -> Result<(Gateway, Option<JoinHandle<()>>), GatewayError> {
        if config.dev_login && !matches!(config.jwt.key, JwtKey::Secret(_)) {
            return Err(GatewayError::Config(
                "dev login needs an HS256 secret; it is never enabled with a public key".into(),
            ));
        }
        // First: the node gauges made below register with this recorder.
        let metrics = config
            .metrics
            .clone()
            .unwrap_or_else(crate::metrics::global_handle);
        crate::metrics::describe();
        let limits = &config.limits;
        let frame_quota = Quota::per_second(limits.frames_per_sec).allow_burst(limits.frame_burst);
        let upstream = Upstream::new(
            config.service_urls.clone(),
            &config.internal_api_key,
            limits.upstream_connect_timeout,
            &config.health,
        )?;
        let (shared_count, shared_count_task) = match &config.redis {
            Some(redis) => {
                let (count, task) = SharedCount::start(redis)?;
                (Some(count), Some(task))
            }
            None => (None, None),
        };
        let gateway = Gateway(Arc::new(Shared {
            verifier: TokenVerifier::new(&config.jwt)?,
            upstream,
            connect_limiter: ConnectLimiter::new(limits),
            frame_limiter: RateLimiter::keyed(frame_quota),
            signal_limiter: RateLimiter::keyed(
                Quota::per_second(limits.signals_per_sec).allow_burst(limits.signal_burst),
            ),
            api_limiter: RateLimiter::keyed(
                Quota::per_second(limits.api_requests_per_sec).allow_burst(limits.api_burst),
            ),
            download_limiter: RateLimiter::keyed(
                Quota::per_second(limits.downloads_per_sec).allow_burst(limits.download_burst),
            ),
            user_connections: Arc::new(UserConnections::new(shared_count)),
            metrics,
            shutdown,
            relays_alive,
            config,
        }));
        Ok((gateway, shared_count_task))
    }

    /// Counts a client's text or binary frame against its user's limit for
    /// the frame's class; past it, the class that was exceeded.
    pub fn check_frame(&self, user: &Arc<str>, frame: &Message) -> Result<(), RateClass> {
        let class = match frame {
            Message::Text(text) => rate_class(text),
            _ => RateClass::Chat,
        };
        let limiter = match class {
            RateClass::Chat => &self.frame_limiter,
            RateClass::Signal => &self.signal_limiter,
        };
        limiter.check_key(user).map_err(|_| class)
    }

    /// Forgets limiter state of idle keys so memory follows active users.
    pub fn forget_idle_keys(&self) {
        self.connect_limiter.forget_idle();
        self.frame_limiter.retain_recent();
        self.frame_limiter.shrink_to_fit();
        self.signal_limiter.retain_recent();
        self.signal_limiter.shrink_to_fit();
        self.api_limiter.retain_recent();
        self.api_limiter.shrink_to_fit();
        self.download_limiter.retain_recent();
        self.download_limiter.shrink_to_fit();
        self.metrics.run_upkeep();
    }
}
