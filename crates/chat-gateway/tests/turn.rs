//! The credentials `/chat/api/rtc/ice-servers` hands out, against a real
//! coturn: accepted for every kind of user id, refused by a server with
//! another secret and once expired.

mod common;
mod coturn;

use std::net::SocketAddr;

use chat_gateway::{turn_credentials, IceConfig};
use chat_proto::api::IceServersResponse;
use common::*;
use coturn::{relay_through, Coturn};

const TURN_SECRET: &str = "turn-test-secret-shared-with-coturn";

async fn gateway_for(turn_url: String) -> (Running, Running) {
    let service = start_service().await;
    let mut config = gateway_config(service.addr);
    config.ice = IceConfig::from_settings(&[], &[turn_url], Some(TURN_SECRET), 300).unwrap();
    let gateway = start_gateway(config).await;
    (service, gateway)
}

/// The TURN entry's username and credential, as a browser would get them.
async fn turn_credentials_of(gateway: SocketAddr, user: &str) -> (String, String) {
    let body: IceServersResponse = reqwest::Client::new()
        .get(format!("http://{gateway}/chat/api/rtc/ice-servers"))
        .header("cookie", cookie(&token(user)))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let turn = body
        .ice_servers
        .into_iter()
        .find(|server| server.urls.iter().any(|url| url.starts_with("turn:")))
        .expect("a TURN server in the answer");
    (turn.username.unwrap(), turn.credential.unwrap())
}

#[tokio::test]
#[ignore = "needs coturn (apt-get install coturn); run with --include-ignored"]
async fn coturn_accepts_the_credentials_for_every_user_id() {
    let coturn = Coturn::start(TURN_SECRET);
    let (_service, gateway) = gateway_for(coturn.udp_url()).await;
    // Colons, non-ASCII, and what coturn refuses in a username unless
    // encoded: spaces, quotes, backslashes, "union" with "select", length.
    let long = "雷".repeat(128);
    let users = [
        "alice",
        "42",
        "李雷:ops",
        "o'brien smith",
        r#"back\slash "quoted""#,
        "Reunion-Selection",
        long.as_str(),
    ];
    let mut runs = Vec::new();
    for user in users {
        let (username, credential) = turn_credentials_of(gateway.addr, user).await;
        let coturn = &coturn;
        runs.push(async move { (user, relay_through(coturn, &username, &credential).await) });
    }
    for (user, result) in futures_util::future::join_all(runs).await {
        if let Err(why) = result {
            panic!(
                "coturn refused the credentials of {user:?}: {why}\n--- coturn ---\n{}",
                coturn.output()
            );
        }
    }
    assert!(!coturn.output().contains("wrong username"));
}

#[tokio::test]
#[ignore = "needs coturn (apt-get install coturn); run with --include-ignored"]
async fn coturn_refuses_them_with_another_secret_or_once_expired() {
    let stranger = Coturn::start("a-different-secret-than-the-gateways");
    let (_service, gateway) = gateway_for(stranger.udp_url()).await;
    let (username, credential) = turn_credentials_of(gateway.addr, "alice").await;

    let ours = Coturn::start(TURN_SECRET);
    let expired = turn_credentials(TURN_SECRET.as_bytes(), "alice", now() - 60);
    let expired_username = expired.username.clone();
    let fresh = turn_credentials(TURN_SECRET.as_bytes(), "alice", now() + 60);
    let (wrong_secret, expired, fresh) = tokio::join!(
        relay_through(&stranger, &username, &credential),
        relay_through(&ours, &expired.username, &expired.credential),
        relay_through(&ours, &fresh.username, &fresh.credential),
    );
    // Refused for the credentials (coturn found no key that verifies
    // them), not for anything else.
    let refused = |coturn: &Coturn, username: &str| {
        coturn
            .output()
            .contains(&format!("Cannot find credentials of user <{username}>"))
    };
    assert!(
        wrong_secret.is_err() && refused(&stranger, &username),
        "a server with another secret took them: {wrong_secret:?}\n{}",
        stranger.output()
    );
    assert!(
        expired.is_err() && refused(&ours, &expired_username),
        "expired credentials were taken: {expired:?}\n{}",
        ours.output()
    );
    // The same server takes fresh ones: the refusals above were about the
    // credentials, not a server that relays nothing.
    fresh.unwrap_or_else(|why| panic!("{why}\n--- coturn ---\n{}", ours.output()));
}
