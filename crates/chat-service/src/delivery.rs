//! The delivery seam: the one way a frame reaches connections, whether
//! the event behind it happened in this process or (with a broker) in
//! another. Its in-process implementation is the [`Hub`](crate::hub::Hub);
//! a cross-process one delivers locally through the hub and carries the
//! same bytes to the other processes, which deliver them through theirs.

use chat_proto::RoomEvent;

use crate::hub::{self, ConnId, Frame};

/// Who a frame is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Audience<'a> {
    /// Every connection in the room but `except`.
    Room {
        room: &'a str,
        except: Option<ConnId>,
    },
    /// Every connection of the user but `except` and, when `outside` names
    /// a room, but those in it (which hear it as members).
    User {
        user: &'a str,
        except: Option<ConnId>,
        outside: Option<&'a str>,
    },
    /// Every connection watching the user's presence.
    Watchers { user: &'a str },
    /// One connection of the user (a call's signaling goes to the tab in
    /// the call, and nowhere else). Named by user and connection id, so a
    /// broker can route it to the process that holds the connection.
    Connection { user: &'a str, conn: ConnId },
}

pub(crate) trait Delivery: Send + Sync {
    /// Delivers one encoded frame. `seq` marks a durable room event, so a
    /// member still replaying history skips what its replay holds. Never
    /// waits: a recipient whose queue is full is cut off. Returns how many
    /// connections of this process it reached.
    fn deliver(&self, audience: Audience<'_>, frame: &Frame, seq: Option<u64>) -> usize;

    /// Encodes a room event once and delivers it to the room.
    fn room_event(&self, event: &RoomEvent, except: Option<ConnId>) -> usize {
        let frame = hub::frame(&event.as_server_event());
        self.deliver(
            Audience::Room {
                room: event.room_id(),
                except,
            },
            &frame,
            event.seq(),
        )
    }
}
