//! What is being measured and how a connection to it authenticates.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};

use crate::error::BenchError;

/// How each connection proves who it is.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Through the gateway: a HS256 JWT in the `access_token` cookie.
    Gateway {
        jwt_secret: String,
        origin: Option<String>,
    },
    /// Straight to the service: the internal key plus the user headers the
    /// gateway would have added.
    Service { internal_key: String },
}

/// A resolved WebSocket endpoint.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub auth: Auth,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    username: &'a str,
    iat: u64,
    exp: u64,
}

impl Target {
    /// Parses and resolves `url`, refusing anything off loopback unless
    /// `allow_non_loopback`.
    pub async fn resolve(
        url: &str,
        auth: Auth,
        allow_non_loopback: bool,
    ) -> Result<Target, BenchError> {
        let invalid = |reason: &str| BenchError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URI"))?;
        if uri.scheme_str() != Some("ws") {
            return Err(invalid("only ws:// is supported"));
        }
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| BenchError::Resolve {
                host: host.to_owned(),
                source,
            })?
            .next()
            .ok_or_else(|| invalid("host resolves to nothing"))?;
        check_loopback(addr, allow_non_loopback)?;
        Ok(Target {
            url: url.to_owned(),
            addr,
            auth,
        })
    }

    /// The upgrade request for benchmark user number `user`.
    pub fn request(&self, user: usize) -> Result<Request, BenchError> {
        let user_id = user_id(user);
        let username = format!("bench{user}");
        let mut request =
            self.url
                .as_str()
                .into_client_request()
                .map_err(|e| BenchError::InvalidUrl {
                    url: self.url.clone(),
                    reason: e.to_string(),
                })?;
        let headers = request.headers_mut();
        let value = |text: &str| {
            HeaderValue::from_str(text).map_err(|e| BenchError::InvalidParams(e.to_string()))
        };
        match &self.auth {
            Auth::Gateway { jwt_secret, origin } => {
                let token = mint_jwt(jwt_secret, &user_id, &username)?;
                headers.insert("cookie", value(&format!("access_token={token}"))?);
                if let Some(origin) = origin {
                    headers.insert("origin", value(origin)?);
                }
            }
            Auth::Service { internal_key } => {
                headers.insert("x-internal-api-key", value(internal_key)?);
                // Both ids are plain ASCII, so their percent-encoding is themselves.
                headers.insert("x-user-id", value(&user_id)?);
                headers.insert("x-username", value(&username)?);
            }
        }
        Ok(request)
    }

    pub fn kind(&self) -> &'static str {
        match self.auth {
            Auth::Gateway { .. } => "gateway",
            Auth::Service { .. } => "service",
        }
    }
}

/// The user id of benchmark user `user`: one user per connection.
pub fn user_id(user: usize) -> String {
    format!("bench-{user}")
}

/// A HS256 token with the claims the gateway reads, valid for an hour.
pub fn mint_jwt(secret: &str, sub: &str, username: &str) -> Result<String, BenchError> {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub,
        username,
        iat,
        exp: iat + 3600,
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Load is only ever aimed at this machine unless explicitly allowed.
pub fn check_loopback(addr: SocketAddr, allow_non_loopback: bool) -> Result<(), BenchError> {
    if allow_non_loopback || is_loopback(addr.ip()) {
        Ok(())
    } else {
        Err(BenchError::NonLoopback { addr })
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_addresses_pass() {
        for ok in [
            "127.0.0.1:3000",
            "127.5.6.7:1",
            "[::1]:3000",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(check_loopback(addr(ok), false).is_ok(), "{ok}");
        }
    }

    #[test]
    fn other_addresses_are_refused_unless_allowed() {
        for bad in [
            "10.0.0.1:3000",
            "192.168.1.2:80",
            "8.8.8.8:53",
            "[2001:db8::1]:80",
            "0.0.0.0:80",
        ] {
            assert!(matches!(
                check_loopback(addr(bad), false),
                Err(BenchError::NonLoopback { .. })
            ));
            assert!(check_loopback(addr(bad), true).is_ok());
        }
    }

    #[tokio::test]
    async fn resolves_localhost_and_refuses_other_schemes() {
        let auth = Auth::Service {
            internal_key: "k".into(),
        };
        let target = Target::resolve("ws://localhost:3002/ws", auth.clone(), false)
            .await
            .unwrap();
        assert!(target.addr.ip().is_loopback());
        assert!(Target::resolve("wss://127.0.0.1/ws", auth.clone(), false)
            .await
            .is_err());
        assert!(matches!(
            Target::resolve("ws://10.1.2.3:80/ws", auth, false).await,
            Err(BenchError::NonLoopback { .. })
        ));
    }

    #[test]
    fn gateway_requests_carry_a_verifiable_cookie() {
        let target = Target {
            url: "ws://127.0.0.1:3000/chat/ws".into(),
            addr: addr("127.0.0.1:3000"),
            auth: Auth::Gateway {
                jwt_secret: "s3cret".into(),
                origin: Some("http://localhost:3000".into()),
            },
        };
        let request = target.request(5).unwrap();
        let cookie = request.headers()["cookie"].to_str().unwrap();
        let token = cookie.strip_prefix("access_token=").unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "bench-5");
        assert_eq!(decoded.claims["username"], "bench5");
        assert_eq!(request.headers()["origin"], "http://localhost:3000");
    }

    #[test]
    fn service_requests_carry_the_internal_headers() {
        let target = Target {
            url: "ws://127.0.0.1:3002/ws".into(),
            addr: addr("127.0.0.1:3002"),
            auth: Auth::Service {
                internal_key: "key".into(),
            },
        };
        let request = target.request(1).unwrap();
        assert_eq!(request.headers()["x-internal-api-key"], "key");
        assert_eq!(request.headers()["x-user-id"], "bench-1");
    }
}
