//! What nodes tell each other over the broker: an already-encoded client
//! frame and where it goes, in a small binary envelope (the frame inside
//! is the bytes every recipient gets, encoded once by the node where the
//! event happened).
//!
//! Layout: `b'C'`, version, kind, then origin node, seq, except, conn as
//! big-endian u64, then target, outside and payload, each as a u32 length
//! and its bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const MAGIC: u8 = b'C';
const VERSION: u8 = 1;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    /// A frame for a room's members: durable when `seq > 0`.
    Room = 1,
    /// A frame for a user's connections (but those in `outside`).
    User = 2,
    /// A presence change, for the connections watching `target`.
    Watch = 3,
    /// The user `payload` was taken out of the room `target`.
    Removal = 4,
    /// The room `target` has durable events up to `seq`: fetch what you miss.
    Hint = 5,
    /// A frame for one connection (`conn`) of the user `target`.
    Connection = 6,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Room,
            2 => Kind::User,
            3 => Kind::Watch,
            4 => Kind::Removal,
            5 => Kind::Hint,
            6 => Kind::Connection,
            _ => return None,
        })
    }
}

/// The node id of envelopes that every node delivers, the publisher's
/// included (those the broker publishes from a script).
pub(super) const EVERY_NODE: u64 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Envelope {
    pub(super) kind: Kind,
    /// The node that delivered it locally already ([`EVERY_NODE`]: none).
    pub(super) origin: u64,
    pub(super) seq: u64,
    /// A connection not to deliver to (0: none).
    pub(super) except: u64,
    pub(super) conn: u64,
    pub(super) target: String,
    pub(super) outside: Option<String>,
    pub(super) payload: Bytes,
}

impl Envelope {
    pub(super) fn new(kind: Kind, origin: u64, target: &str, payload: Bytes) -> Envelope {
        Envelope {
            kind,
            origin,
            seq: 0,
            except: 0,
            conn: 0,
            target: target.to_owned(),
            outside: None,
            payload,
        }
    }

    pub(super) fn encode(&self) -> Bytes {
        let outside = self.outside.as_deref().unwrap_or("");
        let mut out = BytesMut::with_capacity(
            3 + 32 + 12 + self.target.len() + outside.len() + self.payload.len(),
        );
        out.put_u8(MAGIC);
        out.put_u8(VERSION);
        out.put_u8(self.kind as u8);
        out.put_u64(self.origin);
        out.put_u64(self.seq);
        out.put_u64(self.except);
        out.put_u64(self.conn);
        out.put_u8(u8::from(self.outside.is_some()));
        for part in [self.target.as_bytes(), outside.as_bytes(), &self.payload] {
            out.put_u32(part.len() as u32);
            out.put_slice(part);
        }
        out.freeze()
    }

    /// `None` for anything that is not an envelope of this version.
    pub(super) fn decode(mut bytes: Bytes) -> Option<Envelope> {
        if bytes.remaining() < 3 + 32 + 1 || bytes.get_u8() != MAGIC || bytes.get_u8() != VERSION {
            return None;
        }
        let kind = Kind::from_byte(bytes.get_u8())?;
        let origin = bytes.get_u64();
        let seq = bytes.get_u64();
        let except = bytes.get_u64();
        let conn = bytes.get_u64();
        let has_outside = bytes.get_u8() == 1;
        let mut part = || -> Option<Bytes> {
            if bytes.remaining() < 4 {
                return None;
            }
            let len = bytes.get_u32() as usize;
            (bytes.remaining() >= len).then(|| bytes.split_to(len))
        };
        let target = String::from_utf8(part()?.to_vec()).ok()?;
        let outside = String::from_utf8(part()?.to_vec()).ok()?;
        let payload = part()?;
        Some(Envelope {
            kind,
            origin,
            seq,
            except,
            conn,
            target,
            outside: has_outside.then_some(outside),
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let mut envelope = Envelope::new(Kind::User, 7, "李雷 a:b", Bytes::from_static(b"{}"));
        envelope.seq = 42;
        envelope.except = u64::MAX;
        envelope.outside = Some("dm:1".into());
        assert_eq!(Envelope::decode(envelope.encode()), Some(envelope.clone()));
        envelope.outside = None;
        envelope.kind = Kind::Hint;
        assert_eq!(Envelope::decode(envelope.encode()), Some(envelope.clone()));
        let encoded = envelope.encode();
        for cut in 0..encoded.len() {
            assert_eq!(Envelope::decode(encoded.slice(..cut)), None, "cut at {cut}");
        }
        assert_eq!(Envelope::decode(Bytes::from_static(b"hello")), None);
    }
}
