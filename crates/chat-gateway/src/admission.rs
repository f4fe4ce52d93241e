//! Admission phases before a socket is relayed: client address, per-IP
//! connect rate, Origin check, per-user connection cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::header::{HOST, ORIGIN};
use http::HeaderMap;
use ipnet::IpNet;

use crate::config::Limits;

/// Lower-cases and drops a trailing slash so configured and sent origins compare equal.
pub fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Cross-site WebSocket hijacking defence. Non-browser clients send no
/// Origin; a browser's Origin must be the gateway's own host or listed.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = normalize_origin(origin);
    if allowed.contains(&origin) {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h.trim()))
}

/// The address to rate-limit. `X-Forwarded-For` is believed only when the
/// direct peer is a trusted proxy; then the right-most hop that is not itself
/// a trusted proxy is the client (hops further left are client-controlled).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|hop| hop.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

/// Per-IP limiter for new connections.
pub struct ConnectLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl ConnectLimiter {
    pub fn new(limits: &Limits) -> ConnectLimiter {
        let quota = Quota::per_minute(limits.connects_per_min).allow_burst(limits.connect_burst);
        ConnectLimiter {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// `Err(seconds)` to wait before the next attempt can succeed.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Counts open sockets per user to enforce the concurrent-connection cap.
#[derive(Default)]
pub struct UserConnections {
    open: Mutex<HashMap<Arc<str>, u32>>,
}

impl UserConnections {
    pub fn try_acquire(self: &Arc<Self>, user: &Arc<str>, max: u32) -> Option<UserSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(user.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            registry: self.clone(),
            user: user.clone(),
        })
    }
}

/// One admitted socket; dropping it frees the slot.
pub struct UserSlot {
    registry: Arc<UserConnections>,
    user: Arc<str>,
}

impl UserSlot {
    pub fn user(&self) -> &Arc<str> {
        &self.user
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut open = self.registry.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn origin_rules() {
        let allowed = vec![normalize_origin("https://App.example.com/")];
        assert!(origin_allowed(&headers(&[("host", "gw:3000")]), &allowed));
        assert!(origin_allowed(
            &headers(&[("host", "gw:3000"), ("origin", "http://gw:3000")]),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(&[("host", "gw:3000"), ("origin", "https://app.example.com")]),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "gw:3000"), ("origin", "https://evil.example")]),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "gw:3000"), ("origin", "null")]),
            &allowed
        ));
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.7")]);
        let untrusted_peer: IpAddr = "192.168.1.1".parse().unwrap();
        assert_eq!(client_ip(untrusted_peer, &xff, &trusted), untrusted_peer);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &xff, &trusted),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn user_slots_are_released() {
        let registry = Arc::new(UserConnections::default());
        let user: Arc<str> = "u".into();
        let first = registry.try_acquire(&user, 1).unwrap();
        assert!(registry.try_acquire(&user, 1).is_none());
        drop(first);
        assert!(registry.try_acquire(&user, 1).is_some());
    }
}
