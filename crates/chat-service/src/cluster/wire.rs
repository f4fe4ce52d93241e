//! What nodes tell each other over the broker: an already-encoded client
//! frame and where it goes, in a small binary envelope (the frame inside
//! is the bytes every recipient gets, encoded once by the node where the
//! event happened).
//!
//! Layout: `b'C'`, version, kind, then origin node, seq, except, conn as
//! big-endian u64, which of the user's connections (a byte, and the room
//! in the next part), then target, that room and payload, each as a u32
//! length and its bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use std::sync::Arc;

use chat_proto::call::{CallId, CallMedia, Signal};
use chat_proto::RoomId;

use crate::calls::{CallOp, Invitee, Party, Rings};
use crate::delivery::Within;

const MAGIC: u8 = b'C';
const VERSION: u8 = 1;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    /// A frame for a room's members: durable when `seq > 0`.
    Room = 1,
    /// A frame for a user's connections (those `within` says).
    User = 2,
    /// A presence change, for the connections watching `target`.
    Watch = 3,
    /// The user `payload` was taken out of the room `target`.
    Removal = 4,
    /// The room `target` has durable events up to `seq`: fetch what you miss.
    Hint = 5,
    /// A frame for one connection (`conn`) of the user `target`.
    Connection = 6,
    /// Something asked of a call this node holds (`payload`: [`CallOp`]).
    Call = 7,
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
            7 => Kind::Call,
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
    pub(super) within: Rooms,
    pub(super) payload: Bytes,
}

/// Which of a user's connections, by the rooms they are in (the owned
/// form of `delivery::Within`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rooms {
    Anywhere,
    Outside(String),
    Inside(String),
}

impl Rooms {
    pub(super) fn of(within: Within<'_>) -> Rooms {
        match within {
            Within::Anywhere => Rooms::Anywhere,
            Within::Outside(room) => Rooms::Outside(room.to_owned()),
            Within::Inside(room) => Rooms::Inside(room.to_owned()),
        }
    }

    pub(super) fn as_within(&self) -> Within<'_> {
        match self {
            Rooms::Anywhere => Within::Anywhere,
            Rooms::Outside(room) => Within::Outside(room),
            Rooms::Inside(room) => Within::Inside(room),
        }
    }

    fn parts(&self) -> (u8, &str) {
        match self {
            Rooms::Anywhere => (0, ""),
            Rooms::Outside(room) => (1, room),
            Rooms::Inside(room) => (2, room),
        }
    }
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
            within: Rooms::Anywhere,
            payload,
        }
    }

    pub(super) fn encode(&self) -> Bytes {
        let (within, room) = self.within.parts();
        let mut out = BytesMut::with_capacity(
            3 + 32 + 13 + self.target.len() + room.len() + self.payload.len(),
        );
        out.put_u8(MAGIC);
        out.put_u8(VERSION);
        out.put_u8(self.kind as u8);
        out.put_u64(self.origin);
        out.put_u64(self.seq);
        out.put_u64(self.except);
        out.put_u64(self.conn);
        out.put_u8(within);
        for part in [self.target.as_bytes(), room.as_bytes(), &self.payload] {
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
        let within = bytes.get_u8();
        let mut part = || -> Option<Bytes> {
            if bytes.remaining() < 4 {
                return None;
            }
            let len = bytes.get_u32() as usize;
            (bytes.remaining() >= len).then(|| bytes.split_to(len))
        };
        let target = String::from_utf8(part()?.to_vec()).ok()?;
        let room = String::from_utf8(part()?.to_vec()).ok()?;
        let payload = part()?;
        let within = match within {
            0 => Rooms::Anywhere,
            1 => Rooms::Outside(room),
            2 => Rooms::Inside(room),
            _ => return None,
        };
        Some(Envelope {
            kind,
            origin,
            seq,
            except,
            conn,
            target,
            within,
            payload,
        })
    }
}

/// Length-prefixed fields, for what nodes send each other beside frames.
struct Fields(BytesMut);

impl Fields {
    fn str(&mut self, text: &str) -> &mut Fields {
        self.0.put_u32(text.len() as u32);
        self.0.put_slice(text.as_bytes());
        self
    }

    fn u64(&mut self, value: u64) -> &mut Fields {
        self.0.put_u64(value);
        self
    }

    fn u8(&mut self, value: u8) -> &mut Fields {
        self.0.put_u8(value);
        self
    }

    fn party(&mut self, party: &Party) -> &mut Fields {
        self.str(&party.user).str(&party.username).u64(party.conn)
    }
}

struct Read(Bytes);

impl Read {
    fn str(&mut self) -> Option<String> {
        if self.0.remaining() < 4 {
            return None;
        }
        let len = self.0.get_u32() as usize;
        if self.0.remaining() < len {
            return None;
        }
        String::from_utf8(self.0.split_to(len).to_vec()).ok()
    }

    fn arc(&mut self) -> Option<Arc<str>> {
        self.str().map(Arc::from)
    }

    fn u64(&mut self) -> Option<u64> {
        (self.0.remaining() >= 8).then(|| self.0.get_u64())
    }

    fn u8(&mut self) -> Option<u8> {
        (self.0.remaining() >= 1).then(|| self.0.get_u8())
    }

    fn party(&mut self) -> Option<Party> {
        Some(Party {
            user: self.arc()?,
            username: self.arc()?,
            conn: self.u64()?,
        })
    }

    fn call(&mut self) -> Option<CallId> {
        CallId::parse(&self.str()?).ok()
    }
}

pub(super) fn encode_call(op: &CallOp) -> Bytes {
    let mut out = Fields(BytesMut::with_capacity(256));
    match op {
        CallOp::Start {
            room,
            media,
            caller,
            invitees,
        } => {
            out.u8(1)
                .str(room.as_str())
                .u8(u8::from(*media == CallMedia::Video))
                .party(caller)
                .u64(invitees.len() as u64);
            for (invitee, rings) in invitees {
                out.str(&invitee.user)
                    .str(&invitee.username)
                    .u8(u8::from(*rings == Rings::InRoom));
            }
        }
        CallOp::Accept { call, who } => {
            out.u8(2).str(call.as_str()).party(who);
        }
        CallOp::Decline { call, who } => {
            out.u8(3).str(call.as_str()).party(who);
        }
        CallOp::Hangup { call, who } => {
            out.u8(4).str(call.as_str()).party(who);
        }
        CallOp::Signal {
            call,
            who,
            to,
            signal,
        } => {
            out.u8(5)
                .str(call.as_str())
                .party(who)
                .str(to)
                .str(signal.as_text());
        }
        CallOp::Dropped { user, conn } => {
            out.u8(6).str(user).u64(*conn);
        }
    }
    out.0.freeze()
}

pub(super) fn decode_call(bytes: Bytes) -> Option<CallOp> {
    let mut read = Read(bytes);
    Some(match read.u8()? {
        1 => {
            let room = RoomId::parse(&read.str()?, &chat_proto::ProtoLimits::default()).ok()?;
            let media = if read.u8()? == 1 {
                CallMedia::Video
            } else {
                CallMedia::Audio
            };
            let caller = read.party()?;
            let count = read.u64()?.min(1024);
            let mut invitees = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let invitee = Invitee {
                    user: read.arc()?,
                    username: read.arc()?,
                };
                let rings = if read.u8()? == 1 {
                    Rings::InRoom
                } else {
                    Rings::Everywhere
                };
                invitees.push((invitee, rings));
            }
            CallOp::Start {
                room,
                media,
                caller,
                invitees,
            }
        }
        2 => CallOp::Accept {
            call: read.call()?,
            who: read.party()?,
        },
        3 => CallOp::Decline {
            call: read.call()?,
            who: read.party()?,
        },
        4 => CallOp::Hangup {
            call: read.call()?,
            who: read.party()?,
        },
        5 => CallOp::Signal {
            call: read.call()?,
            who: read.party()?,
            to: read.arc()?,
            signal: Signal::from_text(read.str()?).ok()?,
        },
        6 => CallOp::Dropped {
            user: read.arc()?,
            conn: read.u64()?,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let mut envelope = Envelope::new(Kind::User, 7, "李雷 a:b", Bytes::from_static(b"{}"));
        envelope.seq = 42;
        envelope.except = u64::MAX;
        envelope.within = Rooms::Outside("dm:1".into());
        assert_eq!(Envelope::decode(envelope.encode()), Some(envelope.clone()));
        envelope.within = Rooms::Inside("lobby".into());
        assert_eq!(Envelope::decode(envelope.encode()), Some(envelope.clone()));
        envelope.within = Rooms::Anywhere;
        envelope.kind = Kind::Hint;
        assert_eq!(Envelope::decode(envelope.encode()), Some(envelope.clone()));
        let encoded = envelope.encode();
        for cut in 0..encoded.len() {
            assert_eq!(Envelope::decode(encoded.slice(..cut)), None, "cut at {cut}");
        }
        assert_eq!(Envelope::decode(Bytes::from_static(b"hello")), None);
    }

    #[test]
    fn call_requests_round_trip() {
        let who = Party {
            user: "李雷".into(),
            username: "Li Lei".into(),
            conn: 42,
        };
        let call = CallId::parse("00000000000000ff.0190").unwrap();
        let ops = [
            CallOp::Start {
                room: RoomId::parse("lobby", &chat_proto::ProtoLimits::default()).unwrap(),
                media: CallMedia::Video,
                caller: who.clone(),
                invitees: vec![(
                    Invitee {
                        user: "bob".into(),
                        username: "Bob".into(),
                    },
                    Rings::InRoom,
                )],
            },
            CallOp::Hangup {
                call: call.clone(),
                who: who.clone(),
            },
            CallOp::Signal {
                call,
                who,
                to: "bob".into(),
                signal: Signal::from_text(r#"{"type":"offer","sdp":"v=0"}"#.into()).unwrap(),
            },
            CallOp::Dropped {
                user: "bob".into(),
                conn: 7,
            },
        ];
        for op in ops {
            let encoded = encode_call(&op);
            let decoded = decode_call(encoded.clone()).expect("decodes");
            assert_eq!(encode_call(&decoded), encoded);
            for cut in 0..encoded.len() {
                assert!(decode_call(encoded.slice(..cut)).is_none(), "cut at {cut}");
            }
        }
    }
}
