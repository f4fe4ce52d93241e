//! A tiny real run: the benchmark against the minimal broadcaster on an
//! ephemeral loopback port.

use std::sync::Arc;
use std::time::Duration;

use chat_bench::client::SourceAddrs;
use chat_bench::fanout::{Shape, Swarm};
use chat_bench::target::{Auth, Target};
use indicatif::ProgressBar;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

async fn broadcaster() -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(minimal_broadcaster::run(listener, async {
        let _ = stopped.await;
    }));
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_fanout_delivers_everything() {
    let (url, stop) = broadcaster().await;
    let auth = Auth::Service {
        internal_key: "unused".into(),
    };
    let target = Arc::new(Target::resolve(&url, auth, false).await.unwrap());
    let sources = SourceAddrs::plan(10, 10_000, None, target.addr).unwrap();
    let shape = Shape {
        rooms: 2,
        members: 5,
        publishers: 2,
        payload: 64,
        placement: chat_bench::fanout::Placement::Spread,
    };
    let hidden = ProgressBar::hidden();
    let mut swarm = Swarm::open(std::slice::from_ref(&target), &sources, shape, 8, &hidden)
        .await
        .unwrap();

    let report = swarm
        .phase(
            1,
            20.0,
            Duration::from_secs(1),
            Duration::from_millis(300),
            &hidden,
        )
        .await
        .unwrap();
    // 2 rooms x 2 publishers x 20/s for 1 s, each echoed to all 5 members.
    assert!((76..=80).contains(&report.sent), "{report:?}");
    assert_eq!(report.expected, report.sent * 5);
    assert_eq!(report.delivered, report.expected, "{report:?}");
    assert_eq!(report.lost, 0);
    assert_eq!(report.latency.count, report.delivered);
    assert!(report.latency.max_ms < 300.0, "{report:?}");
    assert_eq!(report.payload_bytes, 64);

    // The same connections carry a second phase; its stamps are its own.
    let second = swarm
        .phase(
            2,
            10.0,
            Duration::from_millis(500),
            Duration::from_millis(200),
            &hidden,
        )
        .await
        .unwrap();
    assert_eq!(second.delivered, second.sent * 5, "{second:?}");
    assert_eq!(second.disconnects, 0);
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rate_over_two_source_addresses() {
    let (url, stop) = broadcaster().await;
    let auth = Auth::Service {
        internal_key: "unused".into(),
    };
    let target = Arc::new(Target::resolve(&url, auth, false).await.unwrap());
    let sources = SourceAddrs::plan(40, 20, None, target.addr).unwrap();
    assert_eq!(sources.len(), 2);
    let report =
        chat_bench::connect_rate::run(std::slice::from_ref(&target), &sources, 40, 10, 8, true)
            .await
            .unwrap();
    assert_eq!(report.connections, 40);
    assert_eq!(report.latency.count, 40);
    assert!(report.connections_per_sec > 0.0);
    let _ = stop.send(());
}
