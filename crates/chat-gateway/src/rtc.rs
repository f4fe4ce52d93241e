//! ICE servers for WebRTC calls. Media flows between the browsers; what
//! they need from us is where the STUN and TURN servers are and, for TURN,
//! credentials. `GET /chat/api/rtc/ice-servers` hands them out per user:
//! time-limited TURN credentials in the TURN REST API convention that
//! coturn's `use-auth-secret` checks (username `"<expiry>:<user>"`,
//! credential `base64(HMAC-SHA1(secret, username))`), so the secret stays
//! here and in the TURN server and nothing is stored per user.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chat_proto::api::{IceServer, IceServersResponse};
use hmac::{Hmac, Mac};
use http::header::CACHE_CONTROL;
use sha1::{Digest, Sha1};

use crate::auth::Identity;
use crate::state::Gateway;
use crate::upstream::percent_encode;
use crate::GatewayError;

/// Shortest `TURN_SECRET` accepted: the HMAC-SHA1 key should be at least
/// as long as the hash (RFC 2104 section 3). Whoever has the secret can
/// mint credentials for the relay.
pub const MIN_TURN_SECRET_BYTES: usize = 20;
/// How long TURN credentials stay valid when `TURN_TTL_SECS` is not set.
pub const DEFAULT_TURN_TTL: Duration = Duration::from_secs(3600);
/// Longest user part of a TURN username, in bytes. STUN usernames must stay
/// under 509 bytes (RFC 8489 section 14.3), and browsers refuse longer ones.
const MAX_TURN_USER_BYTES: usize = 256;

/// The STUN and TURN servers calls use; empty when none are configured.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// `stun:host[:port]` URLs, handed out as they are.
    pub stun_urls: Vec<String>,
    pub turn: Option<TurnConfig>,
}

/// TURN servers sharing one `static-auth-secret`.
#[derive(Clone)]
pub struct TurnConfig {
    urls: Vec<String>,
    secret: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for TurnConfig {
    // Never print the secret itself into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"..")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TurnConfig {
    /// Checks every URL (`turn:` or `turns:`), the secret's length and the
    /// lifetime of credentials.
    pub fn new(
        urls: Vec<String>,
        secret: impl Into<Vec<u8>>,
        ttl: Duration,
    ) -> Result<TurnConfig, GatewayError> {
        let secret = secret.into();
        check_turn_secret(&secret)?;
        if urls.is_empty() {
            return Err(GatewayError::Config(
                "TURN_SECRET is set but TURN_URLS is empty: list the TURN server's URLs, \
                 e.g. turn:turn.example.com:3478?transport=udp"
                    .into(),
            ));
        }
        for url in &urls {
            check_ice_url("TURN_URLS", url, &["turn", "turns"])?;
        }
        if ttl.is_zero() {
            return Err(GatewayError::Config(
                "TURN_TTL_SECS must be at least 1".into(),
            ));
        }
        Ok(TurnConfig { urls, secret, ttl })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl IceConfig {
    /// Builds the config from the settings as given (comma lists already
    /// split). Refuses, with one line, a URL of the wrong scheme or shape,
    /// a `TURN_SECRET` that is set but shorter than
    /// [`MIN_TURN_SECRET_BYTES`], and TURN URLs without a secret: browsers
    /// refuse a TURN server without credentials, which would break every
    /// call rather than only the relayed ones.
    pub fn from_settings(
        stun_urls: &[String],
        turn_urls: &[String],
        turn_secret: Option<&str>,
        turn_ttl_secs: u64,
    ) -> Result<IceConfig, GatewayError> {
        let listed = |urls: &[String]| -> Vec<String> {
            urls.iter()
                .map(|url| url.trim())
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let stun_urls = listed(stun_urls);
        for url in &stun_urls {
            check_ice_url("STUN_URLS", url, &["stun"])?;
        }
        let turn_urls = listed(turn_urls);
        let turn = match turn_secret {
            Some(secret) => Some(TurnConfig::new(
                turn_urls,
                secret,
                Duration::from_secs(turn_ttl_secs),
            )?),
            None if !turn_urls.is_empty() => {
                return Err(GatewayError::Config(
                    "TURN_URLS is set but TURN_SECRET is not: browsers refuse TURN servers \
                     without credentials; set TURN_SECRET to the TURN server's static-auth-secret"
                        .into(),
                ))
            }
            None => None,
        };
        Ok(IceConfig { stun_urls, turn })
    }

    /// What `user_id` is handed at `now_unix_secs`: the STUN servers, then
    /// the TURN servers with credentials valid for the configured lifetime.
    pub fn ice_servers(&self, user_id: &str, now_unix_secs: u64) -> IceServersResponse {
        let mut ice_servers = Vec::with_capacity(2);
        if !self.stun_urls.is_empty() {
            ice_servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let Some(turn) = &self.turn {
            let expires_at = now_unix_secs.saturating_add(turn.ttl.as_secs());
            let TurnCredentials {
                username,
                credential,
            } = turn_credentials(&turn.secret, user_id, expires_at);
            ice_servers.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        IceServersResponse { ice_servers }
    }
}

/// A TURN username and its password (WebRTC calls it `credential`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub credential: String,
}

/// Credentials for `user_id` that a TURN server sharing `secret` accepts
/// until `expires_at` (Unix seconds): username [`turn_username`],
/// credential `base64(HMAC-SHA1(secret, username))`.
pub fn turn_credentials(secret: &[u8], user_id: &str, expires_at: u64) -> TurnCredentials {
    let username = turn_username(user_id, expires_at);
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    TurnCredentials {
        username,
        credential,
    }
}

/// `"<expires_at>:<user>"`. coturn reads the expiry up to the first `:`
/// and takes the rest as the user (for its per-user quota and its logs),
/// so the user part may hold more colons. But coturn refuses a username
/// holding a space, tab, quote or backslash, or one containing both "union"
/// and "select" (a guard against SQL injection), so the user part is the id
/// percent-encoded as in the identity headers (ASCII, `:` as `%3A`); an id
/// that coturn would still refuse, or longer than 256 bytes encoded, goes as
/// `#` and the hex SHA-1 of the id (`#` never appears in an encoded id).
pub fn turn_username(user_id: &str, expires_at: u64) -> String {
    let encoded = percent_encode(user_id);
    let lower = encoded.to_ascii_lowercase();
    let refused_by_coturn = lower.contains("union") && lower.contains("select");
    if encoded.len() <= MAX_TURN_USER_BYTES && !refused_by_coturn {
        return format!("{expires_at}:{encoded}");
    }
    let digest = Sha1::digest(user_id.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{expires_at}:#{hex}")
}

fn check_turn_secret(secret: &[u8]) -> Result<(), GatewayError> {
    if secret.len() < MIN_TURN_SECRET_BYTES {
        return Err(GatewayError::Config(format!(
            "TURN_SECRET must be at least {MIN_TURN_SECRET_BYTES} bytes (it has {}): \
             anyone with it can use the relay; use e.g. `openssl rand -hex 32`, \
             the same value as the TURN server's static-auth-secret",
            secret.len()
        )));
    }
    Ok(())
}

/// `scheme:host[:port][?transport=udp|tcp]` (RFC 7064, RFC 7065), as a
/// browser's `RTCPeerConnection` accepts it: one it refuses would fail every
/// call, so a bad URL stops the gateway at start instead.
fn check_ice_url(setting: &str, url: &str, schemes: &[&str]) -> Result<(), GatewayError> {
    let refuse = |why: &str| GatewayError::Config(format!("{setting}: `{url}` {why}"));
    let expected = || {
        let shape = if schemes.contains(&"stun") {
            "stun:host[:port]".to_owned()
        } else {
            format!("{}:host[:port][?transport=udp|tcp]", schemes.join(":|"))
        };
        format!("is not a URL like {shape}")
    };
    // The URL parser would quietly drop tabs and line breaks; a browser would not.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse("must not contain spaces or control characters"));
    }
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(refuse(&expected()));
    };
    if !schemes.contains(&scheme) {
        return Err(refuse(&format!(
            "must start with {}",
            schemes
                .iter()
                .map(|s| format!("{s}:"))
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    let parsed = url::Url::parse(&format!("{scheme}://{address}"));
    let plain_host = parsed.as_ref().is_ok_and(|parsed| {
        parsed.host_str().is_some_and(|host| !host.is_empty())
            && parsed.username().is_empty()
            && parsed.password().is_none()
            && parsed.path().is_empty()
            && parsed.fragment().is_none()
    });
    if address.starts_with("//") || !plain_host {
        return Err(refuse(&expected()));
    }
    match query {
        None => Ok(()),
        Some("transport=udp" | "transport=tcp") if scheme != "stun" => Ok(()),
        Some(_) => Err(refuse(&expected())),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// `GET /chat/api/rtc/ice-servers`. Authenticated and rate-limited by the
/// `Identity` extractor like every `/chat/api` route; never cached, since
/// every answer carries fresh credentials.
pub(crate) async fn ice_servers(State(gateway): State<Gateway>, identity: Identity) -> Response {
    let body = gateway
        .config
        .ice
        .ice_servers(&identity.user_id, unix_now());
    ([(CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-turn-secret-of-some-length";

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn refusal(stun: &[&str], turn: &[&str], secret: Option<&str>, ttl: u64) -> String {
        match IceConfig::from_settings(&strings(stun), &strings(turn), secret, ttl) {
            Err(GatewayError::Config(line)) => line,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn credentials_follow_the_turn_rest_convention() {
        // printf '%s' '1700003600:alice' | openssl dgst -sha1 -hmac 'a-turn-secret-of-some-length' -binary | base64
        let credentials = turn_credentials(SECRET.as_bytes(), "alice", 1_700_003_600);
        assert_eq!(credentials.username, "1700003600:alice");
        assert_eq!(credentials.credential, "5qUKQCOZXdKTm9Va7tgPBX1sLcQ=");
    }

    #[test]
    fn user_ids_are_encoded_so_coturn_takes_every_one() {
        assert_eq!(turn_username("42", 7), "7:42");
        assert_eq!(turn_username("a:b", 7), "7:a%3Ab");
        assert_eq!(turn_username("李雷", 7), "7:%E6%9D%8E%E9%9B%B7");
        assert_eq!(turn_username("o'brien smith", 7), "7:o%27brien%20smith");
        assert_eq!(turn_username(r#"a"b\c"#, 7), "7:a%22b%5Cc");
        // coturn refuses any username with both words, in any case
        // (printf %s Reunion-Selection | sha1sum).
        let hashed = turn_username("Reunion-Selection", 7);
        assert_eq!(hashed, "7:#5e60d4dfb14845f26617ab23d63e775749ca3292");
        assert_eq!(turn_username("union-only", 7), "7:union-only");
        // Too long encoded: 128 characters of 3 bytes, 9 bytes each encoded.
        let long = "雷".repeat(128);
        let username = turn_username(&long, 1_700_003_600);
        assert_eq!(username.len(), "1700003600:#".len() + 40);
        assert_ne!(username, turn_username(&"雷".repeat(127), 1_700_003_600));
    }

    #[test]
    fn answers_list_stun_then_turn_with_fresh_credentials() {
        let config = IceConfig::from_settings(
            &strings(&["stun:stun.example.com:3478", " stun:[2001:db8::1] ", ""]),
            &strings(&[
                "turn:turn.example.com:3478?transport=udp",
                "turns:turn.example.com:443?transport=tcp",
            ]),
            Some(SECRET),
            600,
        )
        .unwrap();
        let answer = config.ice_servers("alice", 1_700_000_000);
        assert_eq!(answer.ice_servers.len(), 2);
        let stun = &answer.ice_servers[0];
        assert_eq!(
            stun.urls,
            ["stun:stun.example.com:3478", "stun:[2001:db8::1]"]
        );
        assert_eq!((&stun.username, &stun.credential), (&None, &None));
        let turn = &answer.ice_servers[1];
        assert_eq!(turn.urls.len(), 2);
        let expected = turn_credentials(SECRET.as_bytes(), "alice", 1_700_000_600);
        assert_eq!(turn.username.as_deref(), Some(expected.username.as_str()));
        assert_eq!(
            turn.credential.as_deref(),
            Some(expected.credential.as_str())
        );
        assert!(IceConfig::default()
            .ice_servers("alice", 1)
            .ice_servers
            .is_empty());
    }

    #[test]
    fn bad_settings_are_refused_with_one_line() {
        let turn = ["turn:127.0.0.1:3478"];
        for (line, says) in [
            (
                refusal(&[], &turn, Some(""), 60),
                "at least 20 bytes (it has 0)",
            ),
            (refusal(&[], &turn, Some("short"), 60), "(it has 5)"),
            (refusal(&[], &[], Some("short"), 60), "at least 20 bytes"),
            (refusal(&[], &turn, None, 60), "TURN_SECRET is not"),
            (refusal(&[], &[" "], Some(SECRET), 60), "TURN_URLS is empty"),
            (refusal(&[], &turn, Some(SECRET), 0), "TURN_TTL_SECS"),
            (
                refusal(&["turn:host"], &[], None, 60),
                "must start with stun:",
            ),
            (
                refusal(&["stun:host?transport=udp"], &[], None, 60),
                "stun:host[:port]",
            ),
            (
                refusal(&[], &["stun:host"], Some(SECRET), 60),
                "must start with turn: or turns:",
            ),
            (
                refusal(&[], &["https://host"], Some(SECRET), 60),
                "must start with turn:",
            ),
            (refusal(&[], &["turn:"], Some(SECRET), 60), "is not a URL"),
            (refusal(&[], &["turn"], Some(SECRET), 60), "is not a URL"),
            (
                refusal(&[], &["turn://host:3478"], Some(SECRET), 60),
                "is not a URL",
            ),
            (
                refusal(&[], &["turn:user@host"], Some(SECRET), 60),
                "is not a URL",
            ),
            (
                refusal(&[], &["turn:host/path"], Some(SECRET), 60),
                "is not a URL",
            ),
            (
                refusal(&[], &["turn:host:99999"], Some(SECRET), 60),
                "is not a URL",
            ),
            (
                refusal(&[], &["turn:host?transport=sctp"], Some(SECRET), 60),
                "?transport=udp|tcp",
            ),
            (
                refusal(&[], &["turn:ho\tst"], Some(SECRET), 60),
                "spaces or control characters",
            ),
        ] {
            assert!(line.contains(says), "{line:?} should say {says:?}");
            assert_eq!(line.lines().count(), 1, "{line:?}");
            assert!(!line.contains(SECRET), "{line:?}");
        }
    }

    #[test]
    fn nothing_configured_means_no_servers() {
        let config = IceConfig::from_settings(&strings(&[""]), &[], None, 3600).unwrap();
        assert!(config.stun_urls.is_empty() && config.turn.is_none());
    }

    #[test]
    fn the_secret_never_reaches_debug_output() {
        let turn = TurnConfig::new(strings(&["turn:h"]), SECRET, DEFAULT_TURN_TTL).unwrap();
        assert!(!format!("{turn:?}").contains(SECRET));
    }
}
