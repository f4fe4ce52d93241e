//! Fan-out load: R rooms x M members, P publishers per room.
//!
//! Publishers are members: the first P connections of each room both send
//! and receive (the protocol echoes a message to its sender too), so every
//! message is expected `members` times.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{SourceAddrs, Ws};
use crate::error::BenchError;
use crate::payload::{self, decode_frame, is_chat_message, now_ns};
use crate::schedule;
use crate::setup::{open_all, Seat};
use crate::stats::{thousands, LatencySummary, Recorder, BATCH};
use crate::target::Target;

/// Lead time between spawning the load tasks and the first send.
const START_LEAD: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub rooms: usize,
    pub members: usize,
    pub publishers: usize,
    pub payload: usize,
    /// Which of several nodes each member connects to.
    pub placement: Placement,
}

/// Where members go when there are several nodes (`--url a,b,...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Round robin over the nodes.
    Spread,
    /// Publishers on the first node, every other member on the others: every
    /// delivery crosses nodes.
    Apart,
    /// Each room's members all on one node, rooms round robin: rooms spread
    /// over the nodes.
    ByRoom,
}

impl Placement {
    /// The node of member `member` (of `members`, the first `publishers`
    /// publishing) of room `room`, among `nodes`.
    pub fn node(self, room: usize, member: usize, shape: &Shape, nodes: usize) -> usize {
        match self {
            _ if nodes <= 1 => 0,
            Placement::Spread => (room * shape.members + member) % nodes,
            Placement::Apart if member < shape.publishers => 0,
            Placement::Apart => 1 + (room * shape.members + member) % (nodes - 1),
            Placement::ByRoom => room % nodes,
        }
    }
}

impl Shape {
    pub fn connections(&self) -> usize {
        self.rooms * self.members
    }

    pub fn validate(&self) -> Result<(), BenchError> {
        if self.rooms == 0 || self.members == 0 || self.publishers == 0 {
            return Err(BenchError::InvalidParams(
                "rooms, members and publishers must be at least 1".into(),
            ));
        }
        if self.publishers > self.members {
            return Err(BenchError::InvalidParams(
                "publishers are members: --publishers cannot exceed --members".into(),
            ));
        }
        Ok(())
    }
}

/// The outcome of one timed load phase.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    pub target: &'static str,
    pub rooms: usize,
    pub members: usize,
    pub publishers_per_room: usize,
    pub payload_bytes: usize,
    pub rate_per_publisher: f64,
    pub offered_deliveries_per_sec: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub send_rate: f64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    pub deliveries_per_sec: f64,
    pub errors: u64,
    pub disconnects: u64,
    pub first_error: Option<String>,
    pub latency: LatencySummary,
}

type Sink = SplitSink<Ws, Message>;
type Source = SplitStream<Ws>;

struct RoomConnections {
    id: Arc<str>,
    sinks: Vec<Sink>,
    sources: Vec<Source>,
}

/// Joined connections, reusable across phases (capacity search).
pub struct Swarm {
    target_kind: &'static str,
    shape: Shape,
    rooms: Vec<RoomConnections>,
}

pub fn room_id(room: usize) -> String {
    format!("bench-r{room}")
}

impl Swarm {
    /// Opens every member connection and waits until all have joined.
    pub async fn open(
        targets: &[Arc<Target>],
        sources: &SourceAddrs,
        shape: Shape,
        concurrency: usize,
        progress: &ProgressBar,
    ) -> Result<Swarm, BenchError> {
        shape.validate()?;
        let nodes = targets.len();
        let seats = (0..shape.rooms)
            .flat_map(|room| {
                (0..shape.members).map(move |m| Seat {
                    user: room * shape.members + m,
                    room: room_id(room),
                    node: shape.placement.node(room, m, &shape, nodes),
                })
            })
            .collect();
        let opened = open_all(targets, sources, seats, concurrency, progress).await?;
        let mut connections = opened.connections.into_iter();
        let rooms = (0..shape.rooms)
            .map(|room| {
                let (sinks, sources) = connections
                    .by_ref()
                    .take(shape.members)
                    .map(StreamExt::split)
                    .unzip();
                RoomConnections {
                    id: room_id(room).into(),
                    sinks,
                    sources,
                }
            })
            .collect();
        Ok(Swarm {
            target_kind: targets[0].kind(),
            shape,
            rooms,
        })
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Runs one load phase: `rate` messages/s per publisher for `duration`,
    /// then up to `drain` for deliveries still in flight.
    pub async fn phase(
        &mut self,
        phase: u32,
        rate: f64,
        duration: Duration,
        drain: Duration,
        progress: &ProgressBar,
    ) -> Result<PhaseReport, BenchError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(BenchError::InvalidParams(format!("invalid rate {rate}")));
        }
        let recorder = Arc::new(Recorder::default());
        let start = Instant::now() + START_LEAD;
        let end = start + duration;
        let deadline = end + drain;
        let period = schedule::period(rate);
        let offsets = schedule::offsets(self.shape.rooms * self.shape.publishers, period);

        let mut receivers = Vec::new();
        let mut publishers = Vec::new();
        for (room_index, room) in self.rooms.iter_mut().enumerate() {
            let room_receivers: Vec<_> = std::mem::take(&mut room.sources)
                .into_iter()
                .enumerate()
                .map(|(m, source)| {
                    let member = room_index * self.shape.members + m;
                    tokio::spawn(receive(
                        source,
                        member,
                        phase,
                        deadline,
                        Arc::clone(&recorder),
                    ))
                })
                .collect();
            receivers.push(room_receivers);
            let mut sinks = std::mem::take(&mut room.sinks);
            let rest = sinks.split_off(self.shape.publishers);
            let room_publishers: Vec<_> = sinks
                .into_iter()
                .enumerate()
                .map(|(p, sink)| {
                    let slot = schedule::publisher_slot(room_index, p, self.shape.rooms);
                    let schedule = Schedule {
                        start: start + offsets[slot],
                        period,
                        end,
                        deadline,
                    };
                    let sending = Sending {
                        room: Arc::clone(&room.id),
                        phase,
                        payload: self.shape.payload,
                    };
                    tokio::spawn(publish(sink, schedule, sending, Arc::clone(&recorder)))
                })
                .collect();
            publishers.push(room_publishers);
            room.sinks = rest;
        }

        let ticker = tokio::spawn(show_progress(
            progress.clone(),
            Arc::clone(&recorder),
            start,
            deadline,
        ));
        for (room, (room_publishers, room_receivers)) in self
            .rooms
            .iter_mut()
            .zip(publishers.into_iter().zip(receivers))
        {
            let mut sinks = Vec::with_capacity(self.shape.members);
            for publisher in room_publishers {
                sinks.push(publisher.await?);
            }
            sinks.append(&mut room.sinks);
            room.sinks = sinks;
            for receiver in room_receivers {
                room.sources.push(receiver.await?);
            }
        }
        ticker.abort();
        Ok(self.report(&recorder, rate, duration))
    }

    fn report(&self, recorder: &Recorder, rate: f64, duration: Duration) -> PhaseReport {
        let shape = &self.shape;
        let sent = recorder.sent.load(Ordering::Relaxed);
        let delivered = recorder.delivered.load(Ordering::Relaxed);
        let expected = sent * shape.members as u64;
        let lost = expected.saturating_sub(delivered);
        let seconds = duration.as_secs_f64();
        PhaseReport {
            target: self.target_kind,
            rooms: shape.rooms,
            members: shape.members,
            publishers_per_room: shape.publishers,
            payload_bytes: payload::encode(0, now_ns(), shape.payload).len(),
            rate_per_publisher: rate,
            offered_deliveries_per_sec: rate
                * (shape.rooms * shape.publishers * shape.members) as f64,
            duration_s: seconds,
            sent,
            send_rate: sent as f64 / seconds,
            expected,
            delivered,
            lost,
            loss_ratio: if expected == 0 {
                0.0
            } else {
                lost as f64 / expected as f64
            },
            deliveries_per_sec: delivered as f64 / seconds,
            errors: recorder.errors.load(Ordering::Relaxed),
            disconnects: recorder.disconnects.load(Ordering::Relaxed),
            first_error: recorder.first_error(),
            latency: LatencySummary::from_micros(&recorder.merged()),
        }
    }
}

struct Schedule {
    start: Instant,
    period: Duration,
    end: Instant,
    deadline: Instant,
}

struct Sending {
    room: Arc<str>,
    phase: u32,
    payload: usize,
}

async fn publish(
    mut sink: Sink,
    schedule: Schedule,
    sending: Sending,
    recorder: Arc<Recorder>,
) -> Sink {
    let mut ticks = tokio::time::interval_at(schedule.start.into(), schedule.period);
    // Burst keeps the offered rate when a tick is late (the timer is 1 ms
    // coarse); each message still carries its real send time.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    loop {
        let due = ticks.tick().await.into_std();
        if due >= schedule.end || Instant::now() >= schedule.end {
            break;
        }
        let text = payload::encode(sending.phase, now_ns(), sending.payload);
        let frame = format!(
            r#"{{"event":"chat.message","data":{{"roomId":"{}","message":"{text}"}}}}"#,
            sending.room
        );
        let sent =
            tokio::time::timeout_at(schedule.deadline.into(), sink.send(Message::text(frame)));
        match sent.await {
            Ok(Ok(())) => {
                recorder.sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(_)) => {
                recorder.disconnects.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Err(_) => break,
        }
    }
    sink
}

async fn receive(
    mut source: Source,
    member: usize,
    phase: u32,
    deadline: Instant,
    recorder: Arc<Recorder>,
) -> Source {
    let deadline_ns = now_ns()
        + deadline
            .saturating_duration_since(Instant::now())
            .as_nanos() as u64;
    let mut batch = Vec::with_capacity(BATCH);
    let stop = tokio::time::sleep_until(deadline.into());
    tokio::pin!(stop);
    loop {
        let frame = tokio::select! {
            biased;
            frame = source.next() => frame,
            () = &mut stop => break,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                let received = now_ns();
                if received >= deadline_ns {
                    break;
                }
                let bytes = text.as_bytes();
                match decode_frame(bytes) {
                    Some((tag, sent)) if tag == phase && is_chat_message(bytes) => {
                        batch.push(received.saturating_sub(sent) / 1000);
                        if batch.len() == BATCH {
                            recorder.record(member, &batch);
                            batch.clear();
                        }
                    }
                    Some(_) => {}
                    None => note_server_error(bytes, &recorder),
                }
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                recorder.disconnects.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    recorder.record(member, &batch);
    source
}

fn note_server_error(frame: &[u8], recorder: &Recorder) {
    if memchr::memmem::find(frame, b"error").is_none() {
        return;
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(frame) {
        if value["event"] == "error" {
            recorder.error(value["data"].to_string());
        }
    }
}

async fn show_progress(
    progress: ProgressBar,
    recorder: Arc<Recorder>,
    start: Instant,
    deadline: Instant,
) {
    let total = deadline.saturating_duration_since(start);
    progress.set_length(total.as_millis() as u64);
    progress.set_position(0);
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticks.tick().await;
        let elapsed = Instant::now().saturating_duration_since(start).min(total);
        progress.set_position(elapsed.as_millis() as u64);
        progress.set_message(format!(
            "sent {} delivered {}",
            recorder.sent.load(Ordering::Relaxed),
            recorder.delivered.load(Ordering::Relaxed)
        ));
    }
}

impl PhaseReport {
    pub fn table(&self) -> String {
        let mut lines = Vec::new();
        let mut row = |name: &str, value: String| lines.push(format!("{name:<15} {value}"));
        row("target", self.target.to_owned());
        row(
            "shape",
            format!(
                "{} rooms x {} members, {} publisher(s)/room, {} B",
                self.rooms, self.members, self.publishers_per_room, self.payload_bytes
            ),
        );
        row(
            "rate/publisher",
            format!("{:.1} msg/s", self.rate_per_publisher),
        );
        row(
            "offered",
            format!(
                "{} deliveries/s",
                thousands(self.offered_deliveries_per_sec as u64)
            ),
        );
        row("duration", format!("{:.1} s", self.duration_s));
        row(
            "sent",
            format!("{} ({:.0}/s)", thousands(self.sent), self.send_rate),
        );
        row("expected", thousands(self.expected));
        row("delivered", thousands(self.delivered));
        row(
            "lost",
            format!("{} ({:.4}%)", thousands(self.lost), self.loss_ratio * 100.0),
        );
        row("deliveries/s", thousands(self.deliveries_per_sec as u64));
        row("latency p50", format!("{:.3} ms", self.latency.p50_ms));
        row("latency p99", format!("{:.3} ms", self.latency.p99_ms));
        row("latency p99.9", format!("{:.3} ms", self.latency.p999_ms));
        row("latency max", format!("{:.3} ms", self.latency.max_ms));
        row("errors", self.errors.to_string());
        row("disconnects", self.disconnects.to_string());
        if let Some(error) = &self.first_error {
            row("first error", error.clone());
        }
        lines.join("\n") + "\n"
    }
}
