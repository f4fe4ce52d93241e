//! The baseline: a room broadcaster with no authentication, no validation and
//! no bookkeeping beyond room membership. It speaks just enough of the chat
//! protocol for the benchmark tool (`chat.join` -> `chat.joined`,
//! `chat.message` -> one serialized `chat.message` frame shared by every
//! member of the room, sender included), so whatever the real service costs
//! on top of this is the price of its checks, auth and bookkeeping.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

type Outbox = mpsc::UnboundedSender<Message>;

#[derive(Default)]
struct Room {
    members: Vec<(u64, Outbox)>,
    seq: u64,
}

#[derive(Default)]
struct Hub {
    rooms: Mutex<HashMap<String, Room>>,
    next_connection: AtomicU64,
}

#[derive(Deserialize)]
struct Incoming {
    event: String,
    #[serde(default)]
    data: IncomingData,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct IncomingData {
    room_id: Option<String>,
    message: Option<String>,
}

#[derive(Serialize)]
struct Outgoing<'a, T> {
    event: &'a str,
    data: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Joined<'a> {
    room_id: &'a str,
    last_seq: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Delivered<'a> {
    room_id: &'a str,
    user_id: &'a str,
    username: &'a str,
    message: &'a str,
    timestamp: String,
    id: String,
    seq: u64,
}

fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Accepts WebSocket connections on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hub = Arc::new(Hub::default());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(Arc::clone(&hub), stream));
            }
        }
    }
}

// The handshake callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn serve(hub: Arc<Hub>, stream: TcpStream) {
    let connection = hub.next_connection.fetch_add(1, Ordering::Relaxed);
    let mut user_id = None;
    let mut username = None;
    let capture = |request: &Request, response: Response| {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        user_id = header("x-user-id");
        username = header("x-username");
        Ok(response)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, capture, Some(websocket_config()))
            .await
    else {
        return;
    };
    let user_id = user_id.unwrap_or_else(|| connection.to_string());
    let username = username.unwrap_or_else(|| user_id.clone());

    let (mut sink, mut source) = ws.split();
    let (outbox, mut inbox) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        // Drain whatever is queued before flushing: one write per burst, not per frame.
        while let Some(first) = inbox.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            while let Ok(next) = inbox.try_recv() {
                if sink.feed(next).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    let mut joined: HashSet<String> = HashSet::new();
    while let Some(Ok(frame)) = source.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(incoming) = serde_json::from_str::<Incoming>(text.as_str()) else {
            continue;
        };
        let Some(room_id) = incoming.data.room_id else {
            continue;
        };
        match incoming.event.as_str() {
            "chat.join" => {
                let last_seq = {
                    let mut rooms = hub.rooms.lock().unwrap_or_else(PoisonError::into_inner);
                    let room = rooms.entry(room_id.clone()).or_default();
                    if joined.insert(room_id.clone()) {
                        room.members.push((connection, outbox.clone()));
                    }
                    room.seq
                };
                let reply = Outgoing {
                    event: "chat.joined",
                    data: Joined {
                        room_id: &room_id,
                        last_seq,
                    },
                };
                let _ = outbox.send(text_frame(&reply));
            }
            "chat.message" => {
                let Some(message) = incoming.data.message else {
                    continue;
                };
                let mut rooms = hub.rooms.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(room) = rooms.get_mut(&room_id) else {
                    continue;
                };
                room.seq += 1;
                let frame = text_frame(&Outgoing {
                    event: "chat.message",
                    data: Delivered {
                        room_id: &room_id,
                        user_id: &user_id,
                        username: &username,
                        message: &message,
                        timestamp: chrono::Utc::now()
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        id: room.seq.to_string(),
                        seq: room.seq,
                    },
                });
                for (_, member) in &room.members {
                    // Cloning a text message clones a reference to the same bytes.
                    let _ = member.send(frame.clone());
                }
            }
            _ => {}
        }
    }

    {
        let mut rooms = hub.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        for room_id in &joined {
            if let Some(room) = rooms.get_mut(room_id) {
                room.members.retain(|(member, _)| *member != connection);
                if room.members.is_empty() {
                    rooms.remove(room_id);
                }
            }
        }
    }
    drop(outbox);
    let _ = writer.await;
}

fn text_frame<T: Serialize>(value: &T) -> Message {
    let json = serde_json::to_string(value).unwrap_or_default();
    Message::Text(Utf8Bytes::from(json))
}
