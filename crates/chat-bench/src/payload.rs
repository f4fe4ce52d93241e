//! The message text a publisher sends carries its own send time, so every
//! receiver can compute the delivery latency without any shared state:
//! `bt:<phase>:<nanoseconds since the process clock origin>:` padded with
//! `x` to the requested payload size. The phase tag lets a receiver ignore
//! stragglers from an earlier load step.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use memchr::memmem;

const MARKER: &[u8] = b"\"bt:";

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on a monotonic clock shared by every task in this process.
pub fn now_ns() -> u64 {
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The instant `ns` on the [`now_ns`] clock.
pub fn instant_of(ns: u64) -> Instant {
    *ORIGIN.get_or_init(Instant::now) + Duration::from_nanos(ns)
}

/// The smallest payload that still carries a full timestamp.
pub const MIN_PAYLOAD: usize = 28;

/// Message text for `phase` stamped `sent_ns`, padded to `size` bytes (never
/// shorter than the stamp itself).
pub fn encode(phase: u32, sent_ns: u64, size: usize) -> String {
    let mut text = format!("bt:{phase}:{sent_ns}:");
    if text.len() < size {
        text.extend(std::iter::repeat_n('x', size - text.len()));
    }
    text
}

/// Phase and send time from a raw server frame whose message text was made
/// by [`encode`], found without parsing the JSON (the receivers must stay
/// cheaper than the server they measure).
pub fn decode_frame(frame: &[u8]) -> Option<(u32, u64)> {
    let start = memmem::find(frame, MARKER)? + MARKER.len();
    let rest = &frame[start..];
    let (phase, rest) = leading_number(rest)?;
    let (sent_ns, _) = leading_number(rest.strip_prefix(b":")?)?;
    Some((u32::try_from(phase).ok()?, sent_ns))
}

fn leading_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let value = std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()?;
    Some((value, &bytes[digits..]))
}

/// Whether a raw frame is a `chat.message` event.
pub fn is_chat_message(frame: &[u8]) -> bool {
    memmem::find(frame, b"\"chat.message\"").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_to_the_requested_size() {
        let text = encode(3, 123_456_789, 64);
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("bt:3:123456789:x"));
    }

    #[test]
    fn never_truncates_the_stamp() {
        let text = encode(1, u64::MAX, 8);
        assert_eq!(text, format!("bt:1:{}:", u64::MAX));
        assert!(text.len() <= MIN_PAYLOAD);
    }

    #[test]
    fn decodes_from_a_server_frame() {
        let text = encode(7, 987_654_321, 64);
        let frame = format!(
            r#"{{"event":"chat.message","data":{{"roomId":"r1","userId":"u","username":"u","message":"{text}","timestamp":"2025-11-17T10:00:00.000Z","id":"1","seq":1}}}}"#
        );
        assert!(is_chat_message(frame.as_bytes()));
        assert_eq!(decode_frame(frame.as_bytes()), Some((7, 987_654_321)));
    }

    #[test]
    fn ignores_frames_without_a_stamp() {
        let frame = br#"{"event":"chat.userJoined","data":{"userId":"bt:1","roomId":"r"}}"#;
        assert_eq!(decode_frame(frame), None);
        assert!(!is_chat_message(frame));
        assert_eq!(decode_frame(br#"{"message":"bt:x:1:"}"#), None);
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        assert!(instant_of(b) >= instant_of(a));
    }
}
