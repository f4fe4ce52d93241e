//! A request's headers as an attacker writes them, through every phase of
//! the gateway that reads headers before a socket is admitted: the client
//! address and scheme behind trusted proxies, the Origin check, finding the
//! token (cookie or bearer) and verifying it. None may panic, and what they
//! decide must be consistent.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use chat_gateway::{origin_allowed, token_from_headers, ClientView, JwtConfig, TokenVerifier};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzzing-secret-of-at-least-32-bytes!";

static VERIFIER: LazyLock<TokenVerifier> =
    LazyLock::new(|| TokenVerifier::new(&JwtConfig::hs256(SECRET)).expect("valid key"));

/// Each line `name: value` becomes a header, when it can be one.
fn headers(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    map
}

fuzz_target!(|data: &[u8]| {
    let map = headers(data);
    let trusted = ["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let view = ClientView::of(peer, &map, &trusted);
    // Whatever the headers say, an untrusted peer is itself.
    let stranger = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(ClientView::of(stranger, &map, &trusted).ip, stranger);
    let allowed = vec!["https://app.example.com".to_owned()];
    let _ = origin_allowed(&map, &allowed, view.scheme);
    if let Some(token) = token_from_headers(&map) {
        assert!(!token.is_empty());
        if let Ok(identity) = VERIFIER.verify(token) {
            assert!(!identity.user_id.is_empty());
            assert!(!identity.user_id.chars().any(char::is_control));
        }
    }
});
