//! One gateway in front of several real chat service nodes: new sockets by
//! least connections, health checks, the next node when one fails at
//! connect, a node that stops or dies and one that comes back.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;

async fn start_services(count: usize) -> Vec<Running> {
    let mut services = Vec::new();
    for _ in 0..count {
        services.push(start_service().await);
    }
    services
}

fn addrs(services: &[Running]) -> Vec<SocketAddr> {
    services.iter().map(|service| service.addr).collect()
}

/// A gateway with quick health checks in front of `nodes`.
async fn start_gateway_for(nodes: &[SocketAddr]) -> Running {
    let mut config = gateway_config_for(nodes);
    quick_health_checks(&mut config);
    start_gateway(config).await
}

async fn wait_until_healthy(node: SocketAddr, healthy: bool) {
    let expected = if healthy { 1.0 } else { 0.0 };
    eventually(
        &format!(
            "{node} to be reported {}",
            if healthy { "healthy" } else { "unhealthy" }
        ),
        WAIT,
        || async {
            (node_metric("gateway_upstream_healthy", node) == Some(expected)).then_some(())
        },
    )
    .await;
}

/// Which node holds the socket that joined `room`: the one whose system
/// message to the room reaches a connection.
async fn node_of(nodes: &[SocketAddr], room: &str) -> SocketAddr {
    let http = reqwest::Client::new();
    let mut holders = Vec::new();
    for node in nodes {
        let answer: serde_json::Value = http
            .post(format!("http://{node}/send-system-message"))
            .header("x-internal-api-key", KEY)
            .json(&json!({"roomId": room, "message": "where are you"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if answer["delivered"] == 1 {
            holders.push(*node);
        }
    }
    assert_eq!(holders.len(), 1, "{room} is held by {holders:?}");
    holders[0]
}

/// `count` users, each joined to a room of its own (`where-{name}`).
async fn connect_users(gateway: SocketAddr, prefix: &str, count: usize) -> Vec<(String, Client)> {
    let mut users = Vec::new();
    for n in 0..count {
        let name = format!("{prefix}{n}");
        let mut ws = connect_as(gateway, &name).await;
        join(&mut ws, &format!("where-{name}")).await;
        users.push((name, ws));
    }
    users
}

async fn still_relayed(ws: &mut Client, room: &str) {
    send_json(
        ws,
        json!({"event": "chat.message", "data": {"roomId": room, "message": "still here"}}),
    )
    .await;
    next_event(ws, "chat.message").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sockets_go_to_the_node_with_the_fewest() {
    let services = start_services(3).await;
    let nodes = addrs(&services);
    let gateway = start_gateway_for(&nodes).await;
    let mut users = connect_users(gateway.addr, "spread", 6).await;
    wait_for_connections(&nodes, &[2, 2, 2]).await;
    for node in &nodes {
        assert_eq!(
            node_metric("gateway_upstream_connections", *node),
            Some(2.0)
        );
    }

    // A node that loses a socket is the one the next socket goes to.
    let (name, mut leaving) = users.remove(0);
    let emptier = node_of(&nodes, &format!("where-{name}")).await;
    leaving.close(None).await.unwrap();
    close_code(&mut leaving).await;
    let index = nodes.iter().position(|node| *node == emptier).unwrap();
    let mut expected = [2, 2, 2];
    expected[index] = 1;
    wait_for_connections(&nodes, &expected).await;
    let _newcomer = connect_as(gateway.addr, "newcomer").await;
    wait_for_connections(&nodes, &[2, 2, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_sends_its_clients_elsewhere_until_it_is_back() {
    let mut services = start_services(3).await;
    let nodes = addrs(&services);
    let gateway = start_gateway_for(&nodes).await;
    let mut users = connect_users(gateway.addr, "stay", 6).await;
    wait_for_connections(&nodes, &[2, 2, 2]).await;
    let stopping = nodes[1];
    let mut placed = Vec::new();
    for (name, _) in &users {
        placed.push(node_of(&nodes, &format!("where-{name}")).await);
    }

    services.remove(1).stop().await;
    let others = [nodes[0], nodes[2]];
    for ((name, ws), node) in users.iter_mut().zip(&placed) {
        if *node == stopping {
            assert_eq!(close_code(ws).await, 1012, "{name} is told to come back");
            // Reconnecting lands on a node that is up: no 502.
            *ws = connect_as(gateway.addr, name).await;
            join(ws, &format!("where-{name}")).await;
        } else {
            still_relayed(ws, &format!("where-{name}")).await;
        }
    }
    wait_for_connections(&others, &[3, 3]).await;
    wait_until_healthy(stopping, false).await;

    // While it is down, new sockets go to the others, none refused.
    let _more = connect_users(gateway.addr, "more", 4).await;
    wait_for_connections(&others, &[5, 5]).await;
    assert_eq!(
        node_metric("gateway_upstream_connections", stopping),
        Some(0.0)
    );

    // Back on the same port: healthy again, and the emptiest node.
    let _back = start_service_on(stopping).await;
    wait_until_healthy(stopping, true).await;
    let _newcomers = connect_users(gateway.addr, "new", 2).await;
    wait_for_connections(&[stopping], &[2]).await;
}

/// A node whose process dies (no close frame, its port refusing) is the
/// same to clients: 1012, and the reconnect lands elsewhere.
#[test]
fn a_killed_node_sends_its_clients_elsewhere() {
    // The doomed node gets a runtime of its own, so it can die without
    // closing anything.
    let doomed_runtime = tokio::runtime::Runtime::new().unwrap();
    let doomed = doomed_runtime.block_on(start_service());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let services = start_services(2).await;
        let nodes = [doomed.addr, services[0].addr, services[1].addr];
        let gateway = start_gateway_for(&nodes).await;
        let mut users = connect_users(gateway.addr, "crash", 6).await;
        wait_for_connections(&nodes, &[2, 2, 2]).await;
        let mut placed = Vec::new();
        for (name, _) in &users {
            placed.push(node_of(&nodes, &format!("where-{name}")).await);
        }

        let dead = doomed.addr;
        std::mem::forget(doomed);
        doomed_runtime.shutdown_background();
        let others = [nodes[1], nodes[2]];
        for ((name, ws), node) in users.iter_mut().zip(&placed) {
            if *node == dead {
                assert_eq!(close_code(ws).await, 1012, "{name} is told to come back");
                *ws = connect_as(gateway.addr, name).await;
            }
        }
        wait_for_connections(&others, &[3, 3]).await;
        wait_until_healthy(dead, false).await;
        let _more = connect_users(gateway.addr, "after", 2).await;
        wait_for_connections(&others, &[4, 4]).await;
    });
}

#[tokio::test]
async fn no_node_up_is_a_502_until_one_is_back() {
    let mut services = start_services(2).await;
    let nodes = addrs(&services);
    let gateway = start_gateway_for(&nodes).await;
    let mut users = connect_users(gateway.addr, "down", 2).await;
    wait_for_connections(&nodes, &[1, 1]).await;
    for service in services.drain(..) {
        service.stop().await;
    }
    for (_, ws) in &mut users {
        assert_eq!(close_code(ws).await, 1012);
    }
    let (status, _, body) = refused(gateway.addr, &[("cookie", &cookie(&token("down0")))]).await;
    assert_eq!(status, 502);
    assert_eq!(body["code"], "upstream_unavailable");
    assert!(
        body["error"].as_str().unwrap().contains("chat service"),
        "{body}"
    );

    // Every node looks down, yet the first one back is used at once.
    let _back = start_service_on(nodes[0]).await;
    let _ws = connect_as(gateway.addr, "down0").await;
}

/// A node that refuses the gateway (here: another internal key) answers,
/// so it is up; the socket goes to the next node instead of a 502.
#[tokio::test]
async fn a_refusing_node_is_passed_over_at_connect() {
    let refusing = start_service_with(chat_service::Config::new("another-internal-key-0123")).await;
    let good = start_service().await;
    let gateway = start_gateway_for(&[refusing.addr, good.addr]).await;
    let _users = connect_users(gateway.addr, "refused", 4).await;
    wait_for_connections(&[good.addr], &[4]).await;
    assert_eq!(
        node_metric("gateway_upstream_healthy", refusing.addr),
        Some(1.0)
    );
}

/// The room API goes to healthy nodes only. The unhealthy one here takes
/// connections but never answers: a request sent there would hang.
#[tokio::test]
async fn room_api_requests_skip_an_unhealthy_node() {
    let service = start_service().await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let gateway = start_gateway_for(&[silent_addr, service.addr]).await;
    wait_until_healthy(silent_addr, false).await;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..6 {
        let response = http
            .get(format!("http://{}/chat/api/rooms/r/messages", gateway.addr))
            .bearer_auth(token("reader"))
            .send()
            .await
            .expect("answered by the healthy node");
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["roomId"], "r");
    }
    // Sockets too.
    let _users = connect_users(gateway.addr, "api", 3).await;
    wait_for_connections(&[service.addr], &[3]).await;
    drop(silent);
}
