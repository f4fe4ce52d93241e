//! Authentication before the upgrade: every way a token can be wrong.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

const RSA_PRIVATE: &str = include_str!("keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa_public.pem");
const EC_PRIVATE: &str = include_str!("keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("keys/ec_public.pem");

/// The user id the service saw, read back from a message echo.
async fn echoed_user(ws: &mut Client) -> (String, String) {
    join(ws, "auth-room").await;
    send_json(
        ws,
        json!({"event": "chat.message", "data": {"roomId": "auth-room", "message": "hi"}}),
    )
    .await;
    let echo = next_event(ws, "chat.message").await;
    (
        echo["data"]["userId"].as_str().unwrap().to_owned(),
        echo["data"]["username"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn hs256_tokens_from_cookie_or_bearer_and_claim_fallbacks() {
    let (_service, gateway) = start_pair().await;
    let addr = gateway.addr;

    let mut ws = connect(addr, &[("cookie", &cookie(&token("alice")))])
        .await
        .unwrap();
    assert_eq!(echoed_user(&mut ws).await, ("alice".into(), "alice".into()));

    let bearer = format!("Bearer {}", token("bob"));
    let mut ws = connect(addr, &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(echoed_user(&mut ws).await.0, "bob");

    // No sub: userId, then a numeric id; display name from `name`.
    let t = sign(&json!({"userId": "u-7", "id": 1, "name": "Seven", "exp": now() + 60}));
    let mut ws = connect(addr, &[("authorization", &format!("Bearer {t}"))])
        .await
        .unwrap();
    assert_eq!(echoed_user(&mut ws).await, ("u-7".into(), "Seven".into()));
    let t = sign(&json!({"id": 42, "exp": now() + 60}));
    let mut ws = connect(addr, &[("authorization", &format!("Bearer {t}"))])
        .await
        .unwrap();
    assert_eq!(echoed_user(&mut ws).await.0, "42");
}

#[tokio::test]
async fn bad_tokens_are_refused_with_json_before_upgrading() {
    let (_service, gateway) = start_pair().await;
    let addr = gateway.addr;
    let exp = now() + 600;
    let valid = token("mallory");
    let (head, payload, _sig) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        )
    };
    // {"alg":"none","typ":"JWT"}
    let none_alg = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let rs256 = sign_with(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        &json!({"sub": "x", "exp": exp}),
    );
    let hs384 = sign_with(
        Algorithm::HS384,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &json!({"sub": "x", "exp": exp}),
    );
    let other_secret = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"not-the-secret"),
        &json!({"sub": "x", "exp": exp}),
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("no token", String::new(), "missing_token"),
        ("none alg", none_alg, "malformed_token"),
        ("other alg (RS256)", rs256, "wrong_algorithm"),
        ("other alg (HS384)", hs384, "wrong_algorithm"),
        ("bad signature", other_secret, "bad_signature"),
        (
            "tampered payload",
            format!("{head}.{payload}x.{_sig}"),
            "bad_signature",
        ),
        ("malformed", "not-a-jwt".into(), "malformed_token"),
        (
            "expired",
            sign(&json!({"sub": "x", "exp": now() - 30})),
            "token_expired",
        ),
        (
            "not yet valid",
            sign(&json!({"sub": "x", "exp": exp, "nbf": now() + 300})),
            "token_not_yet_valid",
        ),
        ("no exp", sign(&json!({"sub": "x"})), "missing_claim"),
        (
            "no user id",
            sign(&json!({"name": "n", "exp": exp})),
            "invalid_subject",
        ),
    ];
    for (what, token, code) in cases {
        let headers: Vec<(&str, String)> = if token.is_empty() {
            vec![("cookie", "theme=dark".into())]
        } else {
            vec![("cookie", cookie(&token))]
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, _, body) = refused(addr, &headers).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}"
        );
    }

    let metrics = metrics_text();
    assert!(
        metrics.contains("gateway_auth_failures_total{reason=\"bad_signature\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.jwt.issuer = Some("https://auth.example".into());
    config.jwt.audience = Some("chat".into());
    let gateway = start_gateway(config).await;
    let exp = now() + 600;
    let cases = [
        (
            json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": "chat"}),
            0,
        ),
        (
            json!({"sub": "a", "exp": exp, "iss": "https://evil.example", "aud": "chat"}),
            401,
        ),
        (
            json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": "other"}),
            401,
        ),
        (json!({"sub": "a", "exp": exp, "aud": "chat"}), 401),
        (
            json!({"sub": "a", "exp": exp, "iss": "https://auth.example"}),
            401,
        ),
    ];
    for (claims, expected) in cases {
        let result = connect(gateway.addr, &[("cookie", &cookie(&sign(&claims)))]).await;
        match expected {
            0 => assert!(result.is_ok(), "{claims}"),
            status => assert_eq!(result.err(), Some(status), "{claims}"),
        }
    }
    let (_, _, body) = refused(
        gateway.addr,
        &[(
            "cookie",
            &cookie(&sign(
                &json!({"sub": "a", "exp": exp, "iss": "https://evil.example", "aud": "chat"}),
            )),
        )],
    )
    .await;
    assert_eq!(body["code"], "wrong_issuer");
}

#[tokio::test]
async fn public_keys_select_rs256_or_es256_only() {
    let service = start_service().await;
    let claims = json!({"sub": "pk-user", "exp": now() + 600});
    let rs = sign_with(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        &claims,
    );
    let es = sign_with(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        &claims,
    );
    // An attacker signing with the public key as an HMAC secret.
    let confused = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        &claims,
    );

    let mut config = gateway_config(service.addr);
    config.jwt.key = chat_gateway::JwtKey::PublicKeyPem(RSA_PUBLIC.into());
    let rsa_gateway = start_gateway(config).await;
    assert!(connect(rsa_gateway.addr, &[("cookie", &cookie(&rs))])
        .await
        .is_ok());
    assert_eq!(
        connect(rsa_gateway.addr, &[("cookie", &cookie(&es))])
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        connect(rsa_gateway.addr, &[("cookie", &cookie(&confused))])
            .await
            .err(),
        Some(401)
    );

    let mut config = gateway_config(service.addr);
    config.jwt.key = chat_gateway::JwtKey::PublicKeyPem(EC_PUBLIC.into());
    let ec_gateway = start_gateway(config).await;
    assert!(connect(ec_gateway.addr, &[("cookie", &cookie(&es))])
        .await
        .is_ok());
    assert_eq!(
        connect(ec_gateway.addr, &[("cookie", &cookie(&rs))])
            .await
            .err(),
        Some(401)
    );
}

#[tokio::test]
async fn token_expiry_closes_the_socket_with_4001() {
    let (_service, gateway) = start_pair().await;
    let t = sign(&json!({"sub": "short", "exp": now() + 2}));
    let mut ws = connect(gateway.addr, &[("cookie", &cookie(&t))])
        .await
        .unwrap();
    join(&mut ws, "r").await;
    let started = std::time::Instant::now();
    let frame = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap()
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                break frame.unwrap()
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(frame.code), 4001);
    assert_eq!(frame.reason.as_str(), "token expired");
    assert!(started.elapsed() <= std::time::Duration::from_secs(4));
}
