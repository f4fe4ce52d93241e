//! Authentication phase: find the access token, verify it with the one
//! configured algorithm, and turn its claims into an [`Identity`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use governor::clock::{Clock, DefaultClock};
use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{JwtConfig, JwtKey};
use crate::rejection::Rejection;
use crate::state::Gateway;
use crate::GatewayError;

pub const ACCESS_TOKEN_COOKIE: &str = "access_token";
/// Shortest HS256 secret accepted (RFC 7518 section 3.2: at least the hash
/// size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Who the verified token says the caller is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Arc<str>,
    pub username: Option<String>,
    /// Unix seconds after which the token (and any socket opened with it) is dead.
    pub expires_at: u64,
}

/// Why a request was not authenticated; `code()` is both the JSON error code
/// and the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no access token: send the access_token cookie or an Authorization: Bearer header")]
    MissingToken,
    #[error("access token is malformed")]
    Malformed,
    #[error("access token uses an algorithm this gateway does not accept")]
    WrongAlgorithm,
    #[error("access token signature is invalid")]
    BadSignature,
    #[error("access token has expired")]
    Expired,
    #[error("access token is not valid yet")]
    NotYetValid,
    #[error("access token has the wrong issuer")]
    WrongIssuer,
    #[error("access token has the wrong audience")]
    WrongAudience,
    #[error("access token lacks a required claim")]
    MissingClaim,
    #[error("access token names no usable user id (sub, userId or id: 1-128 characters, no control characters)")]
    InvalidSubject,
}

impl AuthFailure {
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::Malformed => "malformed_token",
            AuthFailure::WrongAlgorithm => "wrong_algorithm",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "token_expired",
            AuthFailure::NotYetValid => "token_not_yet_valid",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::MissingClaim => "missing_claim",
            AuthFailure::InvalidSubject => "invalid_subject",
        }
    }
}

/// Verifies tokens with exactly one algorithm, chosen from the configured key.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(config: &JwtConfig) -> Result<TokenVerifier, GatewayError> {
        let (key, algorithm) = match &config.key {
            JwtKey::Secret(secret) if secret.len() < MIN_HS256_SECRET_BYTES => {
                return Err(GatewayError::Config(format!(
                    "JWT_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes (it has {}): \
                     a shorter HS256 secret can be guessed; use e.g. `openssl rand -hex 32`",
                    secret.len()
                )))
            }
            JwtKey::Secret(secret) => (DecodingKey::from_secret(secret), Algorithm::HS256),
            JwtKey::PublicKeyPem(pem) => public_key(pem.as_bytes())?,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Without a configured audience an `aud` claim cannot be checked
            // against anything, so it is not a reason to refuse the token.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(TokenVerifier { key, validation })
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthFailure> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        let user_id = [claims.sub, claims.user_id, claims.id]
            .into_iter()
            .flatten()
            .find_map(claim_text)
            .ok_or(AuthFailure::InvalidSubject)?;
        // The service would refuse it; refusing here gives a clear 401.
        if !chat_proto::api::valid_user_id(&user_id) {
            return Err(AuthFailure::InvalidSubject);
        }
        let username = [claims.username, claims.name]
            .into_iter()
            .flatten()
            .find_map(|v| match v {
                Value::String(s) if !s.trim().is_empty() => Some(s),
                _ => None,
            });
        Ok(Identity {
            user_id: user_id.into(),
            username,
            expires_at: claims.exp.map_or(u64::MAX, |exp| exp.max(0.0) as u64),
        })
    }
}

fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), GatewayError> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(GatewayError::Config(
        "JWT_PUBLIC_KEY is neither an RSA nor a P-256 EC public key in PEM form".into(),
    ))
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<Value>,
    #[serde(rename = "userId")]
    user_id: Option<Value>,
    id: Option<Value>,
    username: Option<Value>,
    name: Option<Value>,
    exp: Option<f64>,
}

/// A user id claim may be a string or a number (`{"id": 42}`).
fn claim_text(value: Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn classify(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature => AuthFailure::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthFailure::WrongAlgorithm
        }
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => AuthFailure::MissingClaim,
        _ => AuthFailure::Malformed,
    }
}

/// The token from the `access_token` cookie (among any others), else from
/// `Authorization: Bearer`.
pub fn token_from_headers(headers: &HeaderMap) -> Option<&str> {
    cookie_token(headers).or_else(|| {
        let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    })
}

/// The token in the `access_token` cookie, if the request carries one: what
/// a browser sends by itself, whichever site made the request.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| name.trim() == ACCESS_TOKEN_COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Signs an HS256 token the gateway accepts (dev login, `chat token`).
pub fn mint_hs256_token(
    secret: &[u8],
    user_id: &str,
    username: Option<&str>,
    ttl: Duration,
) -> Result<String, GatewayError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut claims = serde_json::json!({
        "sub": user_id,
        "iat": now,
        "exp": now + ttl.as_secs(),
    });
    if let Some(name) = username {
        claims["username"] = Value::String(name.to_owned());
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| GatewayError::Config(format!("cannot sign token: {e}")))
}

impl Gateway {
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Rejection> {
        let result = token_from_headers(headers)
            .ok_or(AuthFailure::MissingToken)
            .and_then(|token| self.verifier.verify(token));
        result.map_err(|failure| {
            metrics::counter!("gateway_auth_failures_total", "reason" => failure.code())
                .increment(1);
            Rejection::Unauthorized(failure)
        })
    }
}

/// Extractor for plain HTTP routes (everything under `/chat/api`): rejects
/// with a JSON 401, and with 429 past the user's request rate. Every
/// authenticated HTTP route takes this extractor, so none is unlimited.
/// Downloads of files (`/chat/api/files/...`) count against a limit of
/// their own: a page shows many thumbnails at once.
impl FromRequestParts<Gateway> for Identity {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, Rejection> {
        let identity = gateway.authenticate(&parts.headers)?;
        let is_download = parts
            .uri
            .path()
            .strip_prefix(chat_proto::api::FILES_PATH)
            .is_some_and(|rest| rest.starts_with('/'));
        let limiter = if is_download {
            &gateway.download_limiter
        } else {
            &gateway.api_limiter
        };
        if let Err(not_until) = limiter.check_key(&identity.user_id) {
            metrics::counter!("gateway_rate_limited_requests_total").increment(1);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(Rejection::RequestRateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            });
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    const SECRET: &[u8] = b"a-test-secret-of-32-bytes-or-more";

    #[test]
    fn short_secrets_are_refused() {
        for short in ["", "s", "0123456789012345678901234567890"] {
            let refused = TokenVerifier::new(&JwtConfig::hs256(short));
            assert!(refused.is_err(), "{short:?}");
        }
        assert!(TokenVerifier::new(&JwtConfig::hs256("01234567890123456789012345678901")).is_ok());
    }

    #[test]
    fn cookie_is_found_among_others_and_wins_over_bearer() {
        let map = headers(&[
            ("cookie", "theme=dark; access_token=abc.def.ghi; lang=en"),
            ("authorization", "Bearer other"),
        ]);
        assert_eq!(token_from_headers(&map), Some("abc.def.ghi"));
    }

    #[test]
    fn bearer_is_used_without_cookie() {
        let map = headers(&[("cookie", "theme=dark"), ("authorization", "bearer  tok ")]);
        assert_eq!(token_from_headers(&map), Some("tok"));
        assert_eq!(
            token_from_headers(&headers(&[("authorization", "Basic x")])),
            None
        );
    }

    #[test]
    fn id_claims_fall_back_in_order() {
        let verifier = TokenVerifier::new(&JwtConfig::hs256(SECRET)).unwrap();
        let sign = |claims: Value| {
            jsonwebtoken::encode(
                &Header::default(),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap()
        };
        let exp = 4_000_000_000u64;
        let id = verifier
            .verify(&sign(serde_json::json!({"id": 42, "exp": exp})))
            .unwrap();
        assert_eq!(&*id.user_id, "42");
        let id = verifier
            .verify(&sign(
                serde_json::json!({"userId": "u", "id": 1, "name": "N", "exp": exp}),
            ))
            .unwrap();
        assert_eq!((&*id.user_id, id.username.as_deref()), ("u", Some("N")));
        let err = verifier
            .verify(&sign(serde_json::json!({"exp": exp})))
            .unwrap_err();
        assert_eq!(err, AuthFailure::InvalidSubject);
        for forged in ["a\nINFO forged line", "nul\u{0}", "esc\u{1b}[2J"] {
            let err = verifier
                .verify(&sign(serde_json::json!({"sub": forged, "exp": exp})))
                .unwrap_err();
            assert_eq!(err, AuthFailure::InvalidSubject, "{forged:?}");
        }
    }

    #[test]
    fn minted_tokens_verify() {
        let token =
            mint_hs256_token(SECRET, "李雷", Some("José"), Duration::from_secs(60)).unwrap();
        let id = TokenVerifier::new(&JwtConfig::hs256(SECRET))
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(
            (&*id.user_id, id.username.as_deref()),
            ("李雷", Some("José"))
        );
    }
}
