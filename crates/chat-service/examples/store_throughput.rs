//! How many messages per second a store commits, in batches like the
//! sequencer's group commit. Part of the benchmarks in BENCHMARKS.md:
//!
//!     cargo run --release -p chat-service --example store_throughput -- \
//!         sqlite:///tmp/chat-bench.db 200000 256 10
//!
//! Arguments: DATABASE_URL, messages, batch size, rooms.

use std::time::Instant;

use chat_proto::{ProtoLimits, RoomId};
use chat_service::store::{NewMessage, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "sqlite:///tmp/chat-bench.db".into());
    let total: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let batch_size: usize = args.next().map_or(Ok(256), |a| a.parse())?;
    let rooms: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let store = Store::open(&url).await?;
    let room_ids: Vec<RoomId> = (0..rooms)
        .map(|r| RoomId::parse(&format!("bench-{r}"), &ProtoLimits::default()))
        .collect::<Result<_, _>>()?;
    let text = "x".repeat(64);
    let started = Instant::now();
    let mut written = 0;
    while written < total {
        let batch: Vec<NewMessage> = (0..batch_size.min(total - written))
            .map(|i| NewMessage {
                id: uuid::Uuid::now_v7().to_string(),
                room_id: room_ids[(written + i) % rooms].clone(),
                user_id: "bench".into(),
                username: "bench".into(),
                message: text.clone(),
                timestamp_ms: chat_proto::time::now_millis(),
                client_id: None,
                kind: chat_proto::MessageKind::User,
                attachments: Vec::new(),
            })
            .collect();
        written += store.append(batch).await?.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}: {written} messages in batches of {batch_size} over {rooms} rooms: {:.0} messages/s ({:.2} ms per commit)",
        chat_service::redact_url(&url),
        written as f64 / seconds,
        seconds * 1000.0 / (written as f64 / batch_size as f64).ceil()
    );
    store.close().await;
    Ok(())
}
