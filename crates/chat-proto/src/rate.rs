//! Which rate limit a client frame counts against. The gateway relays
//! frames without parsing them, but a call's signaling comes in bursts
//! (tens of ICE candidates within a second) that the chat limit would cut,
//! so it asks this module for the frame's class and keeps a limiter per
//! class.

use std::borrow::Cow;

use serde::Deserialize;

/// The event that carries WebRTC signaling between two users of a call:
/// `chat.call.signal {callId, toUserId, signal}`.
pub const CALL_SIGNAL_EVENT: &str = "chat.call.signal";

/// The rate limit a client frame is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum RateClass {
    /// Everything but signaling, and every frame that is not a well-formed
    /// envelope.
    Chat,
    /// `chat.call.signal`: bursty, with a larger allowance of its own.
    Signal,
}

impl RateClass {
    /// The class's name, for metrics labels.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Only the envelope's `event`; `data` and unknown fields are skipped
/// without being built.
#[derive(Deserialize)]
struct EventName<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
}

/// The rate class of one text frame, from the envelope's `event` alone.
///
/// The frame is read as a whole JSON object, as the service reads it, so a
/// name nested inside `data`, a duplicated `event` or broken JSON can never
/// pass for signaling: anything but a well-formed envelope naming
/// [`CALL_SIGNAL_EVENT`] is [`RateClass::Chat`], the stricter limit.
pub fn rate_class(frame: &str) -> RateClass {
    // Most frames never name the event: a substring search settles them
    // without parsing. (A name spelled with JSON escapes is Chat too: the
    // stricter limit.) serde would also read a struct from an array; only an
    // object is an envelope.
    if !frame.contains(CALL_SIGNAL_EVENT) || !frame.trim_start().starts_with('{') {
        return RateClass::Chat;
    }
    match serde_json::from_str::<EventName<'_>>(frame) {
        Ok(EventName { event: Some(name) }) if name == CALL_SIGNAL_EVENT => RateClass::Signal,
        _ => RateClass::Chat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signaling_frames_are_their_own_class() {
        for frame in [
            r#"{"event":"chat.call.signal","data":{"callId":"c","toUserId":"u","signal":{"candidate":"x"}}}"#,
            r#"{"data":{"callId":"c"},"event":"chat.call.signal"}"#,
            r#" { "event" : "chat.call.signal" , "data" : {} } "#,
        ] {
            assert_eq!(rate_class(frame), RateClass::Signal, "{frame}");
        }
    }

    #[test]
    fn everything_else_is_chat() {
        for frame in [
            r#"{"event":"chat.message","data":{"roomId":"r","message":"hi"}}"#,
            r#"{"event":"chat.join","data":{"roomId":"r"}}"#,
            // Only the envelope's own name counts, never one inside data.
            r#"{"data":{"event":"chat.call.signal"},"event":"chat.message"}"#,
            // The service refuses a duplicated name; it must not buy the larger limit.
            r#"{"event":"chat.call.signal","event":"chat.message","data":{}}"#,
            r#"{"event":"chat.call.signal","data":{}"#,
            r#"{"event":"chat.call.signal","data":{}} trailing"#,
            r#"{"event":["chat.call.signal"],"data":{}}"#,
            r#"{"event":"CHAT.CALL.SIGNAL","data":{}}"#,
            r#"{"event":"chat.call\u002esignal","data":{}}"#,
            r#"["chat.call.signal"]"#,
            r#"["chat.call.signal",{}]"#,
            r#""chat.call.signal""#,
            r#"{"event":null}"#,
            "",
            "not json",
        ] {
            assert_eq!(rate_class(frame), RateClass::Chat, "{frame}");
        }
    }

    #[test]
    fn class_names_are_metric_labels() {
        assert_eq!(RateClass::Chat.name(), "chat");
        assert_eq!(RateClass::Signal.name(), "signal");
    }
}
