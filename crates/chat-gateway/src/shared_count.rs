//! Each user's open sockets counted in Redis, so that the per-user cap
//! holds across every gateway sharing it (`REDIS_URL`).
//!
//! A user's key is a sorted set of socket ids (`{gateway}:{n}`), each scored
//! by when it stops counting. Admission is one script: forget what expired,
//! count, add below the cap. A gateway re-scores its own sockets every
//! third of the TTL, so those of a gateway that was killed stop counting
//! within one TTL; a closed socket is removed at once. Scores come from
//! Redis's clock, so the gateways' clocks need not agree.
//!
//! When Redis does not answer in time the gateway keeps serving: admission
//! falls back to this gateway's own count (a user may then hold up to the
//! cap on each gateway), logged once, counted in
//! `gateway_user_cap_fallbacks_total`, with `gateway_redis_up` at 0. Redis
//! is tried again every second; once it answers, every socket this gateway
//! holds is counted there again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

use crate::config::RedisConfig;
use crate::GatewayError;

const KEY_PREFIX: &str = "chat:user-sockets:";
/// While Redis does not answer, how often it is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Closed sockets waiting to be removed; past it one is left to expire.
const RELEASE_QUEUE: usize = 4096;
/// Users re-scored per script call: a call holds Redis while it runs.
const REFRESH_BATCH: usize = 256;

/// KEYS[1]: the user's set. ARGV: the cap, the socket id, the TTL in ms.
const ADMIT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// KEYS: users' sets. ARGV[1]: the TTL in ms; then for each key, how many
/// socket ids follow, and those ids.
const REFRESH: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local now = redis.call('TIME')
local ttl = tonumber(ARGV[1])
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl
local at = 2
for k = 1, #KEYS do
  local count = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, count do
    redis.call('ZADD', KEYS[k], until_ms, ARGV[at])
    at = at + 1
  end
  redis.call('PEXPIRE', KEYS[k], ttl)
end
return #KEYS
";

/// The gateway's handle; dropping it and every [`SharedEntry`] ends the
/// background task (after it removed what was released).
pub struct SharedCount {
    core: Arc<Core>,
    releases: mpsc::Sender<Release>,
}

/// What the handle and the background task share.
struct Core {
    redis: ConnectionManager,
    admit: Script,
    refresh: Script,
    /// Tells this gateway's socket ids from other gateways'.
    gateway_id: String,
    next_id: AtomicU64,
    /// This gateway's sockets, the ones re-scored by the heartbeat.
    live: Mutex<HashMap<u64, Live>>,
    /// False while Redis does not answer: admission is decided here.
    up: AtomicBool,
    ttl: Duration,
    timeout: Duration,
}

struct Live {
    user: Arc<str>,
    /// Admitted (by Redis, or here while it was down). An entry waiting
    /// for the admission script is not re-scored: that could count it
    /// before the script has counted the others.
    admitted: bool,
}

struct Release {
    user: Arc<str>,
    id: u64,
}

impl SharedCount {
    /// Needs a Tokio runtime. Connects lazily: a Redis that is down at
    /// start is the fallback, not an error.
    pub fn start(config: &RedisConfig) -> Result<(SharedCount, JoinHandle<()>), GatewayError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| GatewayError::Config(format!("REDIS_URL is not a Redis URL: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1);
        let redis = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| GatewayError::Config(format!("cannot set up Redis: {e}")))?;
        let core = Arc::new(Core {
            redis,
            admit: Script::new(ADMIT),
            refresh: Script::new(REFRESH),
            gateway_id: crate::random_secret()[..16].to_owned(),
            next_id: AtomicU64::new(0),
            live: Mutex::default(),
            up: AtomicBool::new(true),
            ttl: config.entry_ttl.max(Duration::from_millis(3)),
            timeout: config.timeout,
        });
        metrics::gauge!("gateway_redis_up").set(1.0);
        let (releases, queue) = mpsc::channel(RELEASE_QUEUE);
        let task = tokio::spawn(heartbeat(core.clone(), queue));
        Ok((SharedCount { core, releases }, task))
    }

    /// Counts a socket of `user` in Redis unless the user already has
    /// `max` there. `None`: at the cap. While Redis does not answer, the
    /// caller's own count (already checked) decides, and this admits.
    pub async fn admit(&self, user: &Arc<str>, max: u32) -> Option<SharedEntry> {
        let core = &self.core;
        let id = core.next_id.fetch_add(1, Ordering::Relaxed);
        // Tracked before the script runs: if this future is dropped midway
        // the entry's release still follows the script on the connection.
        let mut entry = SharedEntry::new(self, user.clone(), id);
        if !core.up.load(Ordering::Relaxed) {
            fell_back();
            entry.mark_admitted();
            return Some(entry);
        }
        let mut redis = core.redis.clone();
        let mut invocation = core.admit.key(key(user));
        invocation
            .arg(max)
            .arg(core.member(id))
            .arg(millis(core.ttl));
        match timeout(core.timeout, invocation.invoke_async::<i64>(&mut redis)).await {
            Ok(Ok(1)) => {
                entry.mark_admitted();
                Some(entry)
            }
            Ok(Ok(_)) => {
                entry.release_on_drop = false;
                None
            }
            Ok(Err(e)) => {
                core.went_down(&e.to_string());
                fell_back();
                entry.mark_admitted();
                Some(entry)
            }
            Err(_) => {
                core.went_down(&format!("no answer within {:?}", core.timeout));
                fell_back();
                entry.mark_admitted();
                Some(entry)
            }
        }
    }
}

fn fell_back() {
    metrics::counter!("gateway_user_cap_fallbacks_total").increment(1);
}

fn key(user: &str) -> String {
    format!("{KEY_PREFIX}{user}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    fn member(&self, id: u64) -> String {
        format!("{}:{id}", self.gateway_id)
    }

    fn went_down(&self, reason: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            metrics::gauge!("gateway_redis_up").set(0.0);
            tracing::warn!(
                reason,
                "Redis does not answer: per-user caps are counted on this gateway alone until it does"
            );
        }
    }

    fn came_back(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            metrics::gauge!("gateway_redis_up").set(1.0);
            tracing::info!("Redis answers again: per-user caps hold across gateways again");
        }
    }

    /// Re-scores every admitted socket of this gateway (which also counts
    /// again, after an outage, those admitted meanwhile); a ping when there
    /// are none, so that an outage's end is noticed.
    async fn refresh(&self) -> Result<(), String> {
        let mut by_user: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        {
            let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            for (id, entry) in live.iter().filter(|(_, entry)| entry.admitted) {
                by_user.entry(entry.user.clone()).or_default().push(*id);
            }
        }
        let mut redis = self.redis.clone();
        let answered = timeout(self.timeout, async {
            if by_user.is_empty() {
                return redis::cmd("PING").query_async::<()>(&mut redis).await;
            }
            let users: Vec<_> = by_user.into_iter().collect();
            for batch in users.chunks(REFRESH_BATCH) {
                let mut invocation = self.refresh.prepare_invoke();
                invocation.arg(millis(self.ttl));
                for (user, ids) in batch {
                    invocation.key(key(user)).arg(ids.len());
                    for id in ids {
                        invocation.arg(self.member(*id));
                    }
                }
                invocation.invoke_async::<()>(&mut redis).await?;
            }
            Ok(())
        })
        .await;
        match answered {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn release(&self, batch: &[Release]) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for release in batch {
            pipe.zrem(key(&release.user), self.member(release.id))
                .ignore();
        }
        let mut redis = self.redis.clone();
        match timeout(self.timeout, pipe.exec_async(&mut redis)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// Removes released sockets as they come, and re-scores the live ones
/// every third of the TTL (every second while Redis does not answer). One
/// task does both, so a release always follows the heartbeat that may
/// have re-scored its socket.
async fn heartbeat(core: Arc<Core>, mut releases: mpsc::Receiver<Release>) {
    let every = |core: &Core| {
        if core.up.load(Ordering::Relaxed) {
            core.ttl / 3
        } else {
            RETRY_EVERY
        }
    };
    let mut next_refresh = Instant::now() + every(&core);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            first = releases.recv() => {
                let Some(first) = first else { break };
                batch.push(first);
                while batch.len() < RELEASE_QUEUE {
                    match releases.try_recv() {
                        Ok(release) => batch.push(release),
                        Err(_) => break,
                    }
                }
                // While Redis is down these are left to expire.
                if core.up.load(Ordering::Relaxed) {
                    if let Err(reason) = core.release(&batch).await {
                        core.went_down(&reason);
                    }
                }
                batch.clear();
            }
            () = sleep_until(next_refresh) => {
                match core.refresh().await {
                    Ok(()) => core.came_back(),
                    Err(reason) => core.went_down(&reason),
                }
                next_refresh = Instant::now() + every(&core);
            }
        }
    }
}

/// One socket counted in Redis; dropping it removes it there.
pub struct SharedEntry {
    core: Arc<Core>,
    releases: mpsc::Sender<Release>,
    user: Arc<str>,
    id: u64,
    release_on_drop: bool,
}

impl SharedEntry {
    fn new(count: &SharedCount, user: Arc<str>, id: u64) -> SharedEntry {
        count
            .core
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Live {
                    user: user.clone(),
                    admitted: false,
                },
            );
        SharedEntry {
            core: count.core.clone(),
            releases: count.releases.clone(),
            user,
            id,
            release_on_drop: true,
        }
    }

    fn mark_admitted(&self) {
        let mut live = self.core.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = live.get_mut(&self.id) {
            entry.admitted = true;
        }
    }
}

impl Drop for SharedEntry {
    fn drop(&mut self) {
        self.core
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        if self.release_on_drop {
            // A full queue (Redis slow for long): the entry expires instead.
            let _ = self.releases.try_send(Release {
                user: self.user.clone(),
                id: self.id,
            });
        }
    }
}
