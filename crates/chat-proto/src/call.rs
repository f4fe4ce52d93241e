//! Voice and video calls: what a client asks (`chat.call.*`), what the
//! server answers, and the record a call leaves in its room's log.
//!
//! Media flows between the browsers; the server rings the members, relays
//! each offer, answer and ICE candidate to the one connection it is for,
//! keeps the call's state and records the call once it ends.

use std::sync::Arc;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::error::{ErrorCode, ProtoError};
use crate::ids::RoomId;
use crate::time::iso_millis;

/// Largest `signal` a client may relay, in bytes as sent. An SDP offer with
/// audio, video and a few codecs is 4-8 KB; candidates are a few hundred
/// bytes.
pub const MAX_SIGNAL_BYTES: usize = 16 * 1024;

/// Longest call id a client may name, in characters (ours are 36).
pub const MAX_CALL_ID_CHARS: usize = 128;

/// What a call carries; the callee's page decides which devices to open.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, strum::EnumString, strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum CallMedia {
    Audio,
    Video,
}

impl CallMedia {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where a call is: ringing until someone accepts, active until it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum CallPhase {
    Ringing,
    Active,
    Ended,
}

/// Where one participant is in a call.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, strum::EnumString, strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ParticipantState {
    /// Invited, and has not answered yet (their tabs ring).
    Ringing,
    /// In the call, on the connection that started or accepted it.
    Joined,
    /// In the call, but that connection dropped: back if they accept again
    /// within the grace period, `left` otherwise.
    Reconnecting,
    /// Said no.
    Declined,
    /// Was in the call and is no longer.
    Left,
    /// Never answered: the call stopped ringing for them, or ended first.
    Missed,
}

impl ParticipantState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// In the call now (a dropped connection still counts until its grace
    /// period ends).
    pub fn is_present(self) -> bool {
        matches!(
            self,
            ParticipantState::Joined | ParticipantState::Reconnecting
        )
    }

    /// What the state becomes when the call ends.
    pub fn at_end(self) -> ParticipantState {
        match self {
            ParticipantState::Joined | ParticipantState::Reconnecting => ParticipantState::Left,
            ParticipantState::Ringing => ParticipantState::Missed,
            other => other,
        }
    }
}

/// Why a call ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, strum::EnumString, strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum EndReason {
    /// Participants hung up until fewer than two were left (or the caller
    /// hung up before anyone answered).
    Hangup,
    /// Everyone called said no.
    Declined,
    /// Nobody accepted while it rang.
    Missed,
    /// A participant's connection dropped and did not come back in time,
    /// leaving fewer than two, or the service stopped.
    Failed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A call id as a client names it: 1-128 characters, no control
/// characters. Whether such a call exists is the service's question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallId(Arc<str>);

impl CallId {
    pub fn parse(raw: &str) -> Result<CallId, ProtoError> {
        if raw.is_empty()
            || raw.chars().count() > MAX_CALL_ID_CHARS
            || raw.chars().any(char::is_control)
        {
            return Err(ProtoError::new(
                ErrorCode::InvalidFormat,
                format!("callId must be a string of 1-{MAX_CALL_ID_CHARS} characters"),
            ));
        }
        Ok(CallId(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl From<Arc<str>> for CallId {
    fn from(id: Arc<str>) -> CallId {
        CallId(id)
    }
}

/// A WebRTC signal as the client sent it: a JSON object of at most
/// [`MAX_SIGNAL_BYTES`], `{type: "offer" | "answer", sdp}` or
/// `{type: "candidate", candidate}`. Relayed byte for byte.
#[derive(Debug, Clone)]
pub struct Signal(Box<RawValue>);

impl Signal {
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The signal as the client sent it.
    pub fn as_text(&self) -> &str {
        self.0.get()
    }

    /// A signal carried as text between service nodes, checked again.
    pub fn from_text(text: String) -> Result<Signal, ProtoError> {
        let raw = RawValue::from_string(text).map_err(|_| {
            ProtoError::new(ErrorCode::InvalidFormat, "signal must be a JSON object")
        })?;
        Signal::parse(raw)
    }
}

impl PartialEq for Signal {
    fn eq(&self, other: &Signal) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Signal {}

/// Only what the checks need; the rest passes through untouched.
#[derive(serde::Deserialize)]
struct SignalShape {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    sdp: Option<serde_json::Value>,
    candidate: Option<serde_json::Value>,
}

impl Signal {
    pub(crate) fn parse(raw: Box<RawValue>) -> Result<Signal, ProtoError> {
        let text = raw.get();
        if text.len() > MAX_SIGNAL_BYTES {
            return Err(ProtoError::new(
                ErrorCode::SignalTooLarge,
                format!(
                    "signal must be at most {MAX_SIGNAL_BYTES} bytes (it has {})",
                    text.len()
                ),
            ));
        }
        let bad = || {
            ProtoError::new(
                ErrorCode::InvalidFormat,
                "signal must be {type: \"offer\" | \"answer\", sdp} or {type: \"candidate\", candidate}",
            )
        };
        if !text.trim_start().starts_with('{') {
            return Err(bad());
        }
        let shape: SignalShape = serde_json::from_str(text).map_err(|_| bad())?;
        let well_formed = match shape.kind.as_ref().and_then(serde_json::Value::as_str) {
            Some("offer" | "answer") => shape.sdp.as_ref().is_some_and(|sdp| sdp.is_string()),
            // `null` is the end of candidates.
            Some("candidate") => shape
                .candidate
                .as_ref()
                .is_none_or(|c| c.is_object() || c.is_null()),
            _ => false,
        };
        if !well_formed {
            return Err(bad());
        }
        Ok(Signal(raw))
    }
}

/// A `chat.call.*` request, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRequest {
    /// Calls the room's members, or joins the call the room already has.
    Start {
        room_id: RoomId,
        media: CallMedia,
    },
    Accept {
        call_id: CallId,
    },
    Decline {
        call_id: CallId,
    },
    Hangup {
        call_id: CallId,
    },
    /// Relays `signal` to the connection `to_user_id` is in the call with.
    Signal {
        call_id: CallId,
        to_user_id: String,
        signal: Signal,
    },
}

/// One participant as every call event lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallParticipant {
    pub user_id: Arc<str>,
    pub username: Arc<str>,
    pub state: ParticipantState,
}

/// `chat.call.state`: the call as it is now, to each participant's
/// connections. `you` is the participant this copy is for, so that each
/// tab can tell whether it is still called.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallStateEvent<'a> {
    pub call_id: &'a str,
    pub room_id: &'a str,
    pub state: CallPhase,
    pub media: CallMedia,
    /// The caller first, then the others in the order they were called.
    pub participants: &'a [CallParticipant],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
    pub you: &'a str,
}

/// `chat.call.ring`: a call for you; `userId` and `username` are the caller.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRing<'a> {
    pub call_id: &'a str,
    pub room_id: &'a str,
    pub user_id: &'a str,
    pub username: &'a str,
    pub media: CallMedia,
}

/// `chat.call.signal` as relayed: from whom, and the signal as it was sent.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayedSignal<'a> {
    pub call_id: &'a str,
    pub from_user_id: &'a str,
    pub signal: &'a RawValue,
}

/// A call that ended, as the room's log keeps it: the data of
/// `chat.call.ended`, and an item of the room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub call_id: String,
    pub room_id: String,
    pub media: CallMedia,
    /// Who started it.
    pub user_id: Arc<str>,
    pub username: Arc<str>,
    /// When it started ringing.
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// From the first accept to the end; 0 if nobody accepted.
    pub duration_secs: u64,
    /// Everyone called, each as they were when it ended: `left` (took
    /// part), `declined` or `missed`.
    pub participants: Vec<CallParticipant>,
    pub reason: EndReason,
    /// The room's `seq`; 0 until stored.
    pub seq: u64,
}

/// What marks a call among history items.
pub const CALL_ITEM_TYPE: &str = "call";

impl Serialize for CallRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut data = serializer.serialize_struct("CallRecord", 12)?;
        data.serialize_field("type", CALL_ITEM_TYPE)?;
        data.serialize_field("callId", &self.call_id)?;
        data.serialize_field("roomId", &self.room_id)?;
        data.serialize_field("userId", &*self.user_id)?;
        data.serialize_field("username", &*self.username)?;
        data.serialize_field("media", &self.media)?;
        data.serialize_field("startedAt", &iso_millis(self.started_at_ms))?;
        data.serialize_field("endedAt", &iso_millis(self.ended_at_ms))?;
        data.serialize_field("durationSecs", &self.duration_secs)?;
        data.serialize_field("participants", &self.participants)?;
        data.serialize_field("reason", &self.reason)?;
        data.serialize_field("seq", &self.seq)?;
        data.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signal(text: &str) -> Result<Signal, ProtoError> {
        Signal::parse(RawValue::from_string(text.to_owned()).unwrap())
    }

    #[test]
    fn signals_are_offers_answers_or_candidates_within_the_bound() {
        for good in [
            r#"{"type":"offer","sdp":"v=0"}"#,
            r#"{"type":"answer","sdp":"v=0","extra":1}"#,
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}}"#,
            r#"{"type":"candidate","candidate":null}"#,
        ] {
            assert_eq!(signal(good).unwrap().raw().get(), good);
        }
        for bad in [
            r#"{"type":"offer"}"#,
            r#"{"type":"offer","sdp":3}"#,
            r#"{"type":"candidate","candidate":"x"}"#,
            r#"{"type":"bye"}"#,
            r#"{"sdp":"v=0"}"#,
            r#"["offer"]"#,
            r#""offer""#,
        ] {
            assert_eq!(
                signal(bad).unwrap_err().code,
                ErrorCode::InvalidFormat,
                "{bad}"
            );
        }
        let sdp = "a".repeat(MAX_SIGNAL_BYTES);
        let big = format!(r#"{{"type":"offer","sdp":"{sdp}"}}"#);
        assert_eq!(signal(&big).unwrap_err().code, ErrorCode::SignalTooLarge);
    }

    #[test]
    fn a_record_is_typed_and_iso_dated() {
        let record = CallRecord {
            call_id: "c1".into(),
            room_id: "r".into(),
            media: CallMedia::Video,
            user_id: "ann".into(),
            username: "Ann".into(),
            started_at_ms: 0,
            ended_at_ms: 61_000,
            duration_secs: 60,
            participants: vec![CallParticipant {
                user_id: "ann".into(),
                username: "Ann".into(),
                state: ParticipantState::Left,
            }],
            reason: EndReason::Hangup,
            seq: 3,
        };
        assert_eq!(
            serde_json::to_value(&record).unwrap(),
            json!({"type": "call", "callId": "c1", "roomId": "r", "userId": "ann", "username": "Ann",
                "media": "video", "startedAt": "1970-01-01T00:00:00.000Z",
                "endedAt": "1970-01-01T00:01:01.000Z", "durationSecs": 60,
                "participants": [{"userId": "ann", "username": "Ann", "state": "left"}],
                "reason": "hangup", "seq": 3})
        );
    }

    #[test]
    fn states_end_as_recorded() {
        use ParticipantState::*;
        assert_eq!(
            [Ringing, Joined, Reconnecting, Declined, Left, Missed].map(ParticipantState::at_end),
            [Missed, Left, Left, Declined, Left, Missed]
        );
    }
}
