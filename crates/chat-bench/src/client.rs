//! Opening lean client connections and joining rooms.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::BenchError;
use crate::target::Target;

pub type Ws = WebSocketStream<TcpStream>;

const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Small buffers: thousands of client connections share this process with
/// the server under test, and the generator must stay the cheaper side.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Which local address each client socket binds to. One address holds only
/// as many connections as the ephemeral port range, so large runs spread
/// over 127.0.0.2, 127.0.0.3, ...
#[derive(Clone, Debug)]
pub struct SourceAddrs {
    addrs: Vec<Option<IpAddr>>,
}

impl SourceAddrs {
    /// `explicit` forces that many addresses; otherwise enough addresses for
    /// `connections` at `per_address` each (the kernel's choice when one is enough).
    pub fn plan(
        connections: usize,
        per_address: usize,
        explicit: Option<usize>,
        target: SocketAddr,
    ) -> Result<SourceAddrs, BenchError> {
        let needed = explicit.unwrap_or_else(|| connections.div_ceil(per_address.max(1)));
        if needed <= 1 && explicit.is_none() {
            return Ok(SourceAddrs { addrs: vec![None] });
        }
        if !matches!(target.ip(), IpAddr::V4(v4) if v4.is_loopback()) {
            return Err(BenchError::InvalidParams(format!(
                "{needed} source addresses are needed, which only works for an IPv4 loopback target"
            )));
        }
        if needed > 250 {
            return Err(BenchError::InvalidParams(format!(
                "{needed} source addresses needed; at most 250 (127.0.0.2-127.0.0.251)"
            )));
        }
        let addrs = (0..needed)
            .map(|k| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + k as u8))))
            .collect();
        Ok(SourceAddrs { addrs })
    }

    pub fn for_connection(&self, index: usize) -> Option<IpAddr> {
        self.addrs[index % self.addrs.len()]
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

/// TCP connect (from `source` when given) and WebSocket upgrade as user `index`.
pub async fn open(target: &Target, source: Option<IpAddr>, index: usize) -> Result<Ws, BenchError> {
    let tcp = |source| BenchError::Tcp { index, source };
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(tcp)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(tcp)?;
    }
    let stream = socket.connect(target.addr).await.map_err(tcp)?;
    stream.set_nodelay(true).map_err(tcp)?;
    let request = target.request(index)?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(websocket_config()))
            .await
            .map_err(|e| BenchError::Handshake {
                index,
                source: Box::new(e),
            })?;
    Ok(ws)
}

/// Sends `chat.join` and waits for the matching `chat.joined`.
pub async fn join(ws: &mut Ws, index: usize, room: &str) -> Result<(), BenchError> {
    let failed = |reason: String| BenchError::Join {
        index,
        room: room.to_owned(),
        reason,
    };
    let frame = serde_json::json!({"event": "chat.join", "data": {"roomId": room}}).to_string();
    ws.send(Message::text(frame))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let confirmed = async {
        while let Some(frame) = ws.next().await {
            let text = match frame.map_err(|e| failed(e.to_string()))? {
                Message::Text(text) => text,
                Message::Close(close) => return Err(failed(format!("closed: {close:?}"))),
                _ => continue,
            };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
                continue;
            };
            match value["event"].as_str() {
                Some("chat.joined") if value["data"]["roomId"] == room => return Ok(()),
                Some("error") => return Err(failed(value["data"].to_string())),
                _ => {}
            }
        }
        Err(failed("connection closed".to_owned()))
    };
    tokio::time::timeout(JOIN_TIMEOUT, confirmed)
        .await
        .map_err(|_| failed("no chat.joined within 15 s".to_owned()))?
}

/// Opens a connection and joins `room`.
pub async fn open_joined(
    target: &Target,
    source: Option<IpAddr>,
    index: usize,
    room: &str,
) -> Result<Ws, BenchError> {
    let mut ws = open(target, source, index).await?;
    join(&mut ws, index, room).await?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:3000".parse().unwrap()
    }

    #[test]
    fn one_address_uses_the_kernel_default() {
        let plan = SourceAddrs::plan(5_000, 10_000, None, loopback()).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan.for_connection(17), None);
    }

    #[test]
    fn many_connections_spread_over_loopback_addresses() {
        let plan = SourceAddrs::plan(25_000, 10_000, None, loopback()).unwrap();
        assert_eq!(plan.len(), 3);
        let first: Vec<_> = (0..4).map(|i| plan.for_connection(i)).collect();
        assert_eq!(first[0], Some("127.0.0.2".parse().unwrap()));
        assert_eq!(first[2], Some("127.0.0.4".parse().unwrap()));
        assert_eq!(first[3], first[0]);
    }

    #[test]
    fn source_spreading_needs_an_ipv4_loopback_target() {
        let v6: SocketAddr = "[::1]:3000".parse().unwrap();
        assert!(SourceAddrs::plan(25_000, 10_000, None, v6).is_err());
        assert!(SourceAddrs::plan(10, 10_000, Some(2), loopback()).is_ok());
    }
}
