//! Origin check (cross-site WebSocket hijacking) and the development login.

mod common;

use common::*;

#[tokio::test]
async fn origin_cases() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.allowed_origins = vec!["https://app.example.com".into()];
    let gateway = start_gateway(config).await;
    let auth = cookie(&token("o"));
    let own = format!("http://{}", gateway.addr);

    assert!(
        connect(gateway.addr, &[("cookie", &auth)]).await.is_ok(),
        "no Origin"
    );
    assert!(
        connect(gateway.addr, &[("cookie", &auth), ("origin", &own)])
            .await
            .is_ok(),
        "same host"
    );
    assert!(
        connect(
            gateway.addr,
            &[("cookie", &auth), ("origin", "https://app.example.com")]
        )
        .await
        .is_ok(),
        "listed"
    );
    for origin in [
        "https://evil.example",
        "null",
        "http://app.example.com",
        "https://app.example.com.evil.example",
    ] {
        let (status, _, body) =
            refused(gateway.addr, &[("cookie", &auth), ("origin", origin)]).await;
        assert_eq!(status, 403, "{origin}");
        assert_eq!(body["code"], "origin_not_allowed");
    }
    // Refused before authentication: no token needed to be told 403.
    let (status, _, _) = refused(gateway.addr, &[("origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn dev_login_sets_a_safe_cookie_that_opens_a_socket() {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.dev_login = true;
    let gateway = start_gateway(config).await;
    let response = no_redirects()
        .get(format!("http://{}/dev/login?user=Jos%C3%A9", gateway.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/");
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    assert!(attributes[0].starts_with("access_token="));
    for expected in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attributes.contains(&expected), "{set_cookie}");
    }
    let mut ws = connect(gateway.addr, &[("cookie", attributes[0])])
        .await
        .unwrap();
    join(&mut ws, "dev").await;
    send_json(
        &mut ws,
        serde_json::json!({"event": "chat.message", "data": {"roomId": "dev", "message": "hi"}}),
    )
    .await;
    let echo = next_event(&mut ws, "chat.message").await;
    assert_eq!(echo["data"]["userId"], "José");

    let empty = no_redirects()
        .get(format!("http://{}/dev/login?user=", gateway.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 400);
}

#[tokio::test]
async fn dev_login_is_off_by_default_and_never_with_a_public_key() {
    let (_service, gateway) = start_pair().await;
    let response = no_redirects()
        .get(format!("http://{}/dev/login?user=alice", gateway.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers().get("set-cookie").is_none());

    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.jwt.key = chat_gateway::JwtKey::PublicKeyPem(include_str!("keys/rsa_public.pem").into());
    config.dev_login = true;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = chat_gateway::run(listener, config, async {}).await;
    assert!(matches!(
        refused,
        Err(chat_gateway::GatewayError::Config(_))
    ));
}
