//! Durable room events reach this node's members in `seq` order, with no
//! gap and no duplicate, whichever node committed them and however they
//! arrived: from this node's sequencer, from the broker, or read back from
//! the database. A room's `seq`s are gap-free in the database, so a gap in
//! what arrives is filled from there before what follows is delivered.
//!
//! Frames that arrive early are held, bounded in bytes; past the bound they
//! are dropped and read back from the database instead (they are committed
//! already: that is what published them).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chat_proto::{RoomEvent, RoomId};
use tokio::sync::oneshot;

use crate::delivery::{Audience, Delivery};
use crate::hub::{self, Frame, Hub};
use crate::store::Store;

/// Events read per step of a fill.
const FILL_PAGE: usize = 256;
/// Bytes held per room while a gap is being filled.
const HELD_BYTES: usize = 4 * 1024 * 1024;
/// A gap the database cannot fill yet is tried again this often, this many
/// times, before the room skips ahead (and says so).
const FILL_RETRY: Duration = Duration::from_millis(200);
const FILL_ATTEMPTS: u32 = 25;

pub(super) struct Orderer {
    rooms: Mutex<HashMap<RoomId, RoomOrder>>,
    hub: Arc<Hub>,
    store: Store,
    metrics: Arc<super::ClusterMetrics>,
}

#[derive(Default)]
struct RoomOrder {
    /// The highest `seq` delivered here; `None` until the room's state was
    /// read after subscribing.
    through: Option<u64>,
    held: BTreeMap<u64, Frame>,
    held_bytes: usize,
    filling: bool,
    ready: Vec<oneshot::Sender<()>>,
}

impl Orderer {
    pub(super) fn new(hub: Arc<Hub>, store: Store, metrics: Arc<super::ClusterMetrics>) -> Orderer {
        Orderer {
            rooms: Mutex::default(),
            hub,
            store,
            metrics,
        }
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<RoomId, RoomOrder>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once the room is followed from a known point: what is
    /// committed from then on reaches this node.
    pub(super) fn ready(&self, room: &RoomId) -> Option<oneshot::Receiver<()>> {
        let mut rooms = self.rooms();
        let order = rooms.entry(room.clone()).or_default();
        if order.through.is_some() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        order.ready.push(tx);
        Some(rx)
    }

    /// The room is followed from `last_seq` (read after subscribing): what
    /// is held beyond it goes out, in order.
    pub(super) fn start(self: &Arc<Self>, room: &RoomId, last_seq: u64) {
        let mut rooms = self.rooms();
        let order = rooms.entry(room.clone()).or_default();
        if order.through.is_some() {
            return;
        }
        order.through = Some(last_seq);
        for waiter in order.ready.drain(..) {
            let _ = waiter.send(());
        }
        let stale: Vec<u64> = order.held.range(..=last_seq).map(|(s, _)| *s).collect();
        for seq in stale {
            if let Some(frame) = order.held.remove(&seq) {
                order.held_bytes -= frame.len();
            }
        }
        self.drain(room.as_str(), order);
    }

    /// The rooms followed, and how far each was delivered.
    pub(super) fn followed(&self) -> Vec<(RoomId, u64)> {
        self.rooms()
            .iter()
            .filter_map(|(room, order)| order.through.map(|through| (room.clone(), through)))
            .collect()
    }

    /// The room is no longer hosted here.
    pub(super) fn forget(&self, room: &str) {
        self.rooms().remove(room);
    }

    /// A durable event: delivered now if it is the next one, held if
    /// something is missing before it (and the gap filled), dropped if it
    /// was delivered already. Returns the connections it reached now.
    pub(super) fn offer(self: &Arc<Self>, room: &str, seq: u64, frame: Frame) -> usize {
        let mut rooms = self.rooms();
        let Some(order) = rooms.get_mut(room) else {
            // Nobody here is in the room.
            return 0;
        };
        let Some(through) = order.through else {
            self.hold(order, seq, frame);
            return 0;
        };
        if seq <= through {
            self.metrics.duplicates.increment(1);
            return 0;
        }
        if seq == through + 1 && !order.filling {
            let reached = self.deliver(room, seq, &frame);
            order.through = Some(seq);
            return reached + self.drain(room, order);
        }
        self.hold(order, seq, frame);
        if !order.filling {
            self.metrics.gaps.increment(1);
            order.filling = true;
            if let Some((room_id, _)) = rooms.get_key_value(room) {
                tokio::spawn(self.clone().fill(room_id.clone()));
            }
        }
        0
    }

    /// Something tells us the room has events up to `last_seq`: fetch what
    /// we have not delivered.
    pub(super) fn catch_up(self: &Arc<Self>, room: &RoomId, last_seq: u64) {
        let mut rooms = self.rooms();
        let Some(order) = rooms.get_mut(room) else {
            return;
        };
        if order.through.is_some_and(|through| through < last_seq) && !order.filling {
            order.filling = true;
            tokio::spawn(self.clone().fill(room.clone()));
        }
    }

    fn hold(&self, order: &mut RoomOrder, seq: u64, frame: Frame) {
        if order.held.contains_key(&seq) {
            return;
        }
        if order.held_bytes + frame.len() > HELD_BYTES {
            // The database has it; the fill reads it back.
            self.metrics.dropped_held.increment(1);
            return;
        }
        order.held_bytes += frame.len();
        order.held.insert(seq, frame);
    }

    fn deliver(&self, room: &str, seq: u64, frame: &Frame) -> usize {
        self.hub
            .deliver(Audience::Room { room, except: None }, frame, Some(seq))
    }

    /// Delivers what is held right after `through`.
    fn drain(&self, room: &str, order: &mut RoomOrder) -> usize {
        let mut reached = 0;
        let Some(mut through) = order.through else {
            return 0;
        };
        while let Some(frame) = order.held.remove(&(through + 1)) {
            order.held_bytes -= frame.len();
            through += 1;
            reached += self.deliver(room, through, &frame);
        }
        order.through = Some(through);
        reached
    }

    /// Reads what is missing from the database, a page at a time, and
    /// delivers it in order with what is held.
    async fn fill(self: Arc<Self>, room: RoomId) {
        let mut attempts = 0;
        loop {
            let Some(through) = self.rooms().get(&room).and_then(|order| order.through) else {
                return;
            };
            let page = match self.store.after(&room, through, FILL_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, room = ?room.as_str(), "filling a gap failed; retrying");
                    tokio::time::sleep(FILL_RETRY).await;
                    continue;
                }
            };
            match self.fill_from(&room, &page, &mut attempts) {
                Filled::More => {}
                Filled::Done => return,
                Filled::Wait => tokio::time::sleep(FILL_RETRY).await,
            }
        }
    }

    /// Delivers a page read from the database, with what is held after it.
    fn fill_from(&self, room: &RoomId, page: &[RoomEvent], attempts: &mut u32) -> Filled {
        let mut rooms = self.rooms();
        let Some(order) = rooms.get_mut(room) else {
            return Filled::Done;
        };
        let Some(mut through) = order.through else {
            return Filled::Done;
        };
        for event in page {
            let Some(seq) = event.seq() else { continue };
            if seq != through + 1 {
                continue;
            }
            let frame = match order.held.remove(&seq) {
                Some(held) => {
                    order.held_bytes -= held.len();
                    held
                }
                None => frame_of(event),
            };
            self.deliver(room.as_str(), seq, &frame);
            self.metrics.filled.increment(1);
            through = seq;
        }
        order.through = Some(through);
        self.drain(room.as_str(), order);
        if page.len() == FILL_PAGE {
            return Filled::More;
        }
        let through = order.through.unwrap_or(through);
        let gap_left = order
            .held
            .keys()
            .next()
            .is_some_and(|first| *first > through + 1);
        if !gap_left {
            order.filling = false;
            return Filled::Done;
        }
        *attempts += 1;
        if *attempts < FILL_ATTEMPTS {
            return Filled::Wait;
        }
        // Never seen in practice: a seq the database does not have (pruned
        // meanwhile). Go on rather than stall the room.
        let first = *order.held.keys().next().expect("a gap means held frames");
        tracing::error!(room = ?room.as_str(), from = through, to = first, "gap the database cannot fill; skipping ahead");
        order.through = Some(first - 1);
        self.drain(room.as_str(), order);
        order.filling = false;
        Filled::Done
    }
}

enum Filled {
    /// The page was full: read the next.
    More,
    Done,
    /// Something is still missing: try again shortly.
    Wait,
}

fn frame_of(event: &RoomEvent) -> Frame {
    hub::frame(&event.as_server_event())
}
