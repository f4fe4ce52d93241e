//! The delivery seam: the one way a frame reaches connections, whether
//! the event behind it happened in this process or (with a broker) in
//! another. Its in-process implementation is the [`Hub`](crate::hub::Hub);
//! the cluster's ([`Cluster`](crate::cluster::Cluster)) delivers locally
//! through the hub and carries the same bytes over Redis to the processes
//! that host the room or user, which deliver them through theirs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chat_proto::{RoomEvent, RoomId};

use crate::hub::{self, ConnId, Frame};

/// Who a frame is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Audience<'a> {
    /// Every connection in the room but `except`.
    Room {
        room: &'a str,
        except: Option<ConnId>,
    },
    /// The user's connections but `except`, by the rooms they are in.
    User {
        user: &'a str,
        except: Option<ConnId>,
        within: Within<'a>,
    },
    /// Every connection watching the user's presence.
    Watchers { user: &'a str },
    /// One connection of the user (a call's signaling goes to the tab in
    /// the call, and nowhere else). Named by user and connection id, so a
    /// broker can route it to the process that holds the connection.
    Connection { user: &'a str, conn: ConnId },
}

/// Which of a user's connections, by whether they are in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Within<'a> {
    Anywhere,
    /// Those not in the room (those in it hear it as members).
    Outside(&'a str),
    /// Only those in the room.
    Inside(&'a str),
}

impl<'a> Within<'a> {
    /// The room it names, if any.
    pub(crate) fn room(self) -> Option<&'a str> {
        match self {
            Within::Anywhere => None,
            Within::Outside(room) | Within::Inside(room) => Some(room),
        }
    }
}

pub(crate) trait Delivery: Send + Sync {
    /// Delivers one encoded frame. `seq` marks a durable room event, so a
    /// member still replaying history skips what its replay holds (and,
    /// across processes, so events go out in `seq` order). Never waits: a
    /// recipient whose queue is full is cut off. Returns how many
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

    /// The user's first connection in this process entered the room
    /// (`arrived`), or their last one here left it. The room hears `frame`
    /// (`chat.userJoined` or `chat.userLeft`) when that makes the user
    /// arrive in or leave the room altogether (in every process).
    fn membership(
        &self,
        room: &RoomId,
        user: &Arc<str>,
        arrived: bool,
        frame: Frame,
        except: Option<ConnId>,
    );

    /// Resolves once whatever is committed in the room from now on reaches
    /// this process's members (at once, in one process).
    fn follow<'a>(&'a self, _room: &'a RoomId) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(std::future::ready(()))
    }

    /// The user is no longer a member of the room: their connections leave
    /// it, in every process.
    fn remove_member(&self, room: &RoomId, user: &str);
}
