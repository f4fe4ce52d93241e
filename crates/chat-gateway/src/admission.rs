//! Admission phases before a socket is relayed: client address, per-IP
//! connect rate, Origin check, per-user connection cap.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::header::{HOST, ORIGIN};
use http::{HeaderMap, Uri};
use ipnet::IpNet;

use crate::config::Limits;
use crate::shared_count::{SharedCount, SharedEntry};

/// The canonical form of an origin, `scheme://host[:port]`, lower-case and
/// without the scheme's default port, so configured and sent origins
/// compare equal. `None` for anything that is not an http(s) origin.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let uri: Uri = origin.trim().trim_end_matches('/').parse().ok()?;
    let scheme = Scheme::parse(uri.scheme_str()?)?;
    let authority = uri.authority()?;
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    Some(match authority.port_u16() {
        Some(port) if port != scheme.default_port() => format!("{}://{host}:{port}", scheme.name()),
        _ => format!("{}://{host}", scheme.name()),
    })
}

/// The scheme a browser used to reach us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Option<Scheme> {
        match text.trim().to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where a request comes from, as far as we can believe it: the direct peer,
/// or what trusted proxies say about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientView {
    /// The address to rate-limit.
    pub ip: IpAddr,
    /// The scheme the client used: this gateway speaks plain HTTP, so it is
    /// `https` only when a trusted proxy says so (`X-Forwarded-Proto`).
    pub scheme: Scheme,
}

impl ClientView {
    pub fn of(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientView {
        let peer = peer.to_canonical();
        if !is_trusted(&peer, trusted) {
            return ClientView {
                ip: peer,
                scheme: Scheme::Http,
            };
        }
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(Scheme::parse)
            .unwrap_or(Scheme::Http);
        ClientView {
            ip: forwarded_client(peer, headers, trusted),
            scheme,
        }
    }
}

fn is_trusted(ip: &IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// The client behind trusted proxies. Each proxy appends the address it
/// was reached from, so the list is read from the right: trusted proxies
/// are skipped, and the first entry that is not one is the client. Entries
/// further left were written by the client itself and mean nothing. An
/// entry that does not parse means the list cannot be believed: the peer
/// is used.
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        entries.extend(value.split(','));
    }
    let mut client = peer;
    for entry in entries.iter().rev() {
        let entry = entry.trim();
        let parsed = entry
            .parse::<IpAddr>()
            .or_else(|_| entry.parse::<SocketAddr>().map(|addr| addr.ip()));
        let Ok(ip) = parsed else {
            return peer;
        };
        client = ip.to_canonical();
        if !is_trusted(&client, trusted) {
            return client;
        }
    }
    client
}

/// Cross-site WebSocket hijacking defence. Non-browser clients send no
/// Origin; a browser's Origin must be listed, or be this gateway itself:
/// same scheme, host and port as the request.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String], scheme: Scheme) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(normalize_origin) else {
        return false;
    };
    if allowed.contains(&origin) {
        return true;
    }
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    normalize_origin(&format!("{}://{}", scheme.name(), host.trim()))
        .is_some_and(|own| own == origin)
}

/// The per-IP limiter's key: IPv6 clients get a /64 each (one host usually
/// has a whole one), so hopping addresses inside it does not help.
fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
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
        self.limiter.check_key(&rate_key(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Counts open sockets per user to enforce the concurrent-connection cap:
/// here, and across gateways too when they share a Redis.
#[derive(Default)]
pub struct UserConnections {
    open: Mutex<HashMap<Arc<str>, u32>>,
    shared: Option<SharedCount>,
}

impl UserConnections {
    pub fn new(shared: Option<SharedCount>) -> UserConnections {
        UserConnections {
            open: Mutex::default(),
            shared,
        }
    }

    /// This gateway's count first: a user at the cap here is at the cap
    /// everywhere, and is refused without asking Redis.
    pub async fn try_acquire(self: &Arc<Self>, user: &Arc<str>, max: u32) -> Option<UserSlot> {
        let mut slot = self.try_acquire_here(user, max)?;
        if let Some(shared) = &self.shared {
            slot.shared = Some(shared.admit(user, max).await?);
        }
        Some(slot)
    }

    fn try_acquire_here(self: &Arc<Self>, user: &Arc<str>, max: u32) -> Option<UserSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(user.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            registry: self.clone(),
            user: user.clone(),
            shared: None,
        })
    }
}

/// One admitted socket; dropping it frees the slot.
pub struct UserSlot {
    registry: Arc<UserConnections>,
    user: Arc<str>,
    /// Held for its Drop: the socket is uncounted in Redis too.
    shared: Option<SharedEntry>,
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

    fn allowed(origin: &str, host: &str, list: &[String], scheme: Scheme) -> bool {
        origin_allowed(
            &headers(&[("host", host), ("origin", origin)]),
            list,
            scheme,
        )
    }

    #[test]
    fn origin_rules() {
        let list = vec![normalize_origin("https://App.example.com/").unwrap()];
        assert!(origin_allowed(
            &headers(&[("host", "gw:3000")]),
            &list,
            Scheme::Http
        ));
        assert!(allowed("http://gw:3000", "gw:3000", &list, Scheme::Http));
        assert!(allowed(
            "https://app.example.com",
            "gw:3000",
            &list,
            Scheme::Http
        ));
        assert!(allowed(
            "https://app.example.com:443",
            "gw:3000",
            &list,
            Scheme::Http
        ));
        assert!(!allowed(
            "https://evil.example",
            "gw:3000",
            &list,
            Scheme::Http
        ));
        assert!(!allowed("null", "gw:3000", &list, Scheme::Http));
        // Scheme and port count, not just the host.
        assert!(!allowed("https://gw:3000", "gw:3000", &list, Scheme::Http));
        assert!(!allowed("http://gw", "gw", &list, Scheme::Https));
        assert!(allowed("https://gw", "gw", &list, Scheme::Https));
        assert!(allowed("https://gw", "gw:443", &list, Scheme::Https));
        assert!(allowed("http://gw", "gw:80", &list, Scheme::Http));
        assert!(!allowed("http://gw:8080", "gw", &list, Scheme::Http));
        assert!(!allowed(
            "http://gw:3000/path",
            "gw:3000",
            &list,
            Scheme::Http
        ));
        assert!(!allowed("ws://gw:3000", "gw:3000", &list, Scheme::Http));
    }

    #[test]
    fn forwarded_proto_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let map = headers(&[("x-forwarded-proto", "https")]);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(ClientView::of(proxy, &map, &trusted).scheme, Scheme::Https);
        assert_eq!(
            ClientView::of(stranger, &map, &trusted).scheme,
            Scheme::Http
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let client = |peer: &str, xff: &[&str]| {
            let pairs: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            ClientView::of(ip(peer), &headers(&pairs), &trusted).ip
        };
        let xff = ["1.1.1.1, 2.2.2.2, 10.0.0.7"];
        assert_eq!(client("192.168.1.1", &xff), ip("192.168.1.1"));
        assert_eq!(client("10.0.0.1", &xff), ip("2.2.2.2"));
        assert_eq!(client("10.0.0.1", &[]), ip("10.0.0.1"));
        // Several header lines read as one list.
        assert_eq!(
            client("10.0.0.1", &["1.1.1.1", "3.3.3.3, 10.0.0.9"]),
            ip("3.3.3.3")
        );
        // Garbage anywhere we would have to read through: the peer.
        assert_eq!(client("10.0.0.1", &["1.1.1.1, garbage"]), ip("10.0.0.1"));
        assert_eq!(client("10.0.0.1", &["garbage, 10.0.0.5"]), ip("10.0.0.1"));
        // Garbage left of the client is the client's own writing, ignored.
        assert_eq!(client("10.0.0.1", &["garbage, 4.4.4.4"]), ip("4.4.4.4"));
        // A spoofed entry to the left does not win.
        assert_eq!(client("10.0.0.1", &["6.6.6.6, 5.5.5.5"]), ip("5.5.5.5"));
        assert_eq!(client("10.0.0.1", &["5.5.5.5:4711"]), ip("5.5.5.5"));
        assert_eq!(client("10.0.0.1", &["::ffff:5.5.5.5"]), ip("5.5.5.5"));
    }

    #[test]
    fn ipv6_clients_share_a_limit_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(rate_key(a), rate_key(b));
        assert_ne!(rate_key(a), rate_key(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(rate_key(v4), v4);
        let limiter = ConnectLimiter::new(&Limits {
            connect_burst: std::num::NonZeroU32::new(2).unwrap(),
            ..Limits::default()
        });
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(b).is_ok());
        assert!(
            limiter.check(b).is_err(),
            "a third address in the same /64 is limited"
        );
        assert!(limiter.check(c).is_ok());
    }

    #[tokio::test]
    async fn user_slots_are_released() {
        let registry = Arc::new(UserConnections::default());
        let user: Arc<str> = "u".into();
        let first = registry.try_acquire(&user, 1).await.unwrap();
        assert!(registry.try_acquire(&user, 1).await.is_none());
        drop(first);
        assert!(registry.try_acquire(&user, 1).await.is_some());
    }
}
