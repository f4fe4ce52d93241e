//! The per-user connection cap across two gateways sharing a Redis of the
//! test's own: held across them, freed across them, vanishing with a killed
//! gateway, and falling back to each gateway's own count while Redis is
//! gone.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chat_gateway::{GatewayConfig, RedisConfig};
use chat_testkit::RedisServer;
use common::*;

const CAP: u32 = 2;

fn capped_config(service: SocketAddr, redis: &RedisServer, entry_ttl: Duration) -> GatewayConfig {
    let mut config = gateway_config(service);
    config.limits.max_connections_per_user = CAP;
    let mut shared = RedisConfig::new(redis.url());
    shared.entry_ttl = entry_ttl;
    config.redis = Some(shared);
    config
}

async fn refused_as(gateway: SocketAddr, user: &str) {
    let (status, _, body) = refused(gateway, &[("cookie", &cookie(&token(user)))]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_connections")),
        "{body}"
    );
}

/// Connects as soon as a slot is free (freeing one is noticed
/// asynchronously); panics if none is within `within`.
async fn admitted_within(gateway: SocketAddr, user: &str, within: Duration) -> Client {
    let auth = cookie(&token(user));
    eventually(&format!("a slot for {user}"), within, || {
        let auth = auth.clone();
        async move { connect(gateway, &[("cookie", &auth)]).await.ok() }
    })
    .await
}

/// How many of `user`'s sockets Redis counts (expired ones included).
async fn counted(redis: &RedisServer, user: &str) -> usize {
    let mut connection = redis.connection().await;
    redis::cmd("ZCARD")
        .arg(format!("chat:user-sockets:{user}"))
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (apt-get install redis-server); run with --include-ignored"]
async fn the_cap_holds_across_gateways() {
    let redis = RedisServer::start().await;
    let service = start_service().await;
    let ttl = Duration::from_secs(30);
    let first = start_gateway(capped_config(service.addr, &redis, ttl)).await;
    let second = start_gateway(capped_config(service.addr, &redis, ttl)).await;

    let mut one = connect_as(first.addr, "capped").await;
    let _two = connect_as(first.addr, "capped").await;
    refused_as(second.addr, "capped").await;
    assert_eq!(counted(&redis, "capped").await, 2);
    // Another user is not affected.
    let _other = connect_as(second.addr, "someone-else").await;

    // Closing one on the first gateway frees a slot on the second.
    futures_util::SinkExt::close(&mut one).await.unwrap();
    close_code(&mut one).await;
    let _three = admitted_within(second.addr, "capped", WAIT).await;
    refused_as(first.addr, "capped").await;
    refused_as(second.addr, "capped").await;
    assert_eq!(counted(&redis, "capped").await, 2);

    // A gateway that stops removes its sockets from Redis as it goes.
    first.stop().await;
    let _four = admitted_within(second.addr, "capped", WAIT).await;
}

/// A gateway that is killed cannot remove its sockets; they stop counting
/// once its heartbeat has not renewed them for a TTL.
#[test]
#[ignore = "needs redis-server (apt-get install redis-server); run with --include-ignored"]
fn a_killed_gateways_sockets_stop_counting() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (redis, service) =
        runtime.block_on(async { (RedisServer::start().await, start_service().await) });
    let ttl = Duration::from_secs(1);
    // The doomed gateway gets a runtime of its own, so it can die without
    // closing anything.
    let doomed_runtime = tokio::runtime::Runtime::new().unwrap();
    let doomed = doomed_runtime.block_on(start_gateway(capped_config(service.addr, &redis, ttl)));
    runtime.block_on(async {
        let survivor = start_gateway(capped_config(service.addr, &redis, ttl)).await;
        let mut held = Vec::new();
        for _ in 0..CAP {
            held.push(connect_as(doomed.addr, "orphaned").await);
        }
        refused_as(survivor.addr, "orphaned").await;
        // While the gateway lives its heartbeat renews them.
        let first_expiry = expiries(&redis, "orphaned").await;
        eventually("the heartbeat to renew the sockets", WAIT, || async {
            let renewed = expiries(&redis, "orphaned").await;
            (renewed.len() == first_expiry.len()
                && renewed
                    .iter()
                    .zip(&first_expiry)
                    .all(|(new, old)| new > old))
            .then_some(())
        })
        .await;
        refused_as(survivor.addr, "orphaned").await;

        std::mem::forget(doomed);
        doomed_runtime.shutdown_background();
        for ws in &mut held {
            close_code(ws).await;
        }
        let _back = admitted_within(survivor.addr, "orphaned", WAIT).await;
    });
}

/// When each of `user`'s sockets stops counting, in Redis's milliseconds.
async fn expiries(redis: &RedisServer, user: &str) -> Vec<u64> {
    let mut connection = redis.connection().await;
    let scored: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(format!("chat:user-sockets:{user}"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut by_member = scored;
    by_member.sort();
    by_member.into_iter().map(|(_, expiry)| expiry).collect()
}

/// Redis killed: the gateways keep serving, each counting on its own;
/// Redis back (empty): the heartbeats count every open socket there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (apt-get install redis-server); run with --include-ignored"]
async fn without_redis_each_gateway_counts_its_own() {
    let redis = RedisServer::start().await;
    let port = redis.port;
    let service = start_service().await;
    let ttl = Duration::from_secs(3);
    let first = start_gateway(capped_config(service.addr, &redis, ttl)).await;
    let second = start_gateway(capped_config(service.addr, &redis, ttl)).await;
    let _a = connect_as(first.addr, "fallback").await;
    let _b = connect_as(second.addr, "fallback").await;
    refused_as(first.addr, "fallback").await;

    let fallbacks_before = metric("gateway_user_cap_fallbacks_total").unwrap_or(0.0);
    redis.kill();
    // The gateway's own count decides: one more here, then no more.
    let _c = connect_as(first.addr, "fallback").await;
    refused_as(first.addr, "fallback").await;
    let _d = connect_as(second.addr, "fallback").await;
    refused_as(second.addr, "fallback").await;
    let _other = connect_as(second.addr, "unrelated").await;
    assert!(metric("gateway_user_cap_fallbacks_total").unwrap() > fallbacks_before);
    // And it still relays.
    let mut ws = connect_as(first.addr, "still-serving").await;
    join(&mut ws, "r").await;

    // Back, with nothing in it: both gateways count their sockets there again.
    let redis = RedisServer::start_on(port).await;
    eventually(
        "every open socket of the user to be counted in Redis again",
        Duration::from_secs(10),
        || async { (counted(&redis, "fallback").await == 4).then_some(()) },
    )
    .await;
    refused_as(first.addr, "fallback").await;
    refused_as(second.addr, "fallback").await;
}
