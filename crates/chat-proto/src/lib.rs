//! The chat wire protocol: the only crate that knows the JSON shape.
//!
//! Every frame is a text frame holding `{"event": "...", "data": {...}}`.
//! Clients send [`ClientEvent`]s, parsed and validated by [`parse_client_frame`];
//! the server answers with [`ServerEvent`]s, encoded once by
//! [`ServerEvent::to_frame`] and shared byte-for-byte with every recipient.
//!
//! # Layout
//! - [`api`]: bodies of the service's HTTP API.
//! - [`call`]: voice and video calls: requests, their answers, the record.
//! - [`client`]: parsing and validating what clients send.
//! - [`server`]: the events the server sends and their encoding.
//! - [`error`]: machine-readable error codes and the protocol error type.
//! - [`limits`]: the configurable bounds that validation enforces.
//! - [`rate`]: which rate limit a client frame counts against.
//! - [`time`]: timestamps in the format of JavaScript's `toISOString()`.
//!
//! Unknown fields in client data are ignored so that newer clients keep
//! working against older servers; unknown events are rejected with
//! `unknown_event` so that typos are visible.

pub mod api;
pub mod call;
pub mod client;
pub mod error;
pub mod ids;
pub mod limits;
pub mod rate;
pub mod server;
pub mod time;

pub use client::{parse_client_frame, ClientEvent};
pub use error::{ErrorCode, ProtoError};
pub use ids::{MessageId, RoomId};
pub use limits::ProtoLimits;
pub use rate::{rate_class, RateClass};
pub use server::{
    Attachment, ChatMessage, DmConversation, DmPeer, HistoryItem, Member, MessageDeletion,
    MessageEdit, MessageKind, PresenceStatus, ReactionChange, ReactionSummary, Receipt, RoomEvent,
    ServerEvent, UserPresence,
};
