//! Timestamps travel as JavaScript's `Date.prototype.toISOString()` renders
//! them (`2025-11-17T10:00:00.000Z`), so browser clients can pass them
//! straight to `new Date(...)`.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// Renders epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso_millis(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a timestamp as clients send it back (any RFC 3339 time, e.g.
/// what [`iso_millis`] wrote) into epoch milliseconds.
pub fn parse_iso_millis(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_javascript_to_iso_string() {
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_millis(1_763_373_600_123), "2025-11-17T10:00:00.123Z");
        assert_eq!(
            parse_iso_millis("2025-11-17T10:00:00.123Z"),
            Some(1_763_373_600_123)
        );
        assert_eq!(parse_iso_millis("yesterday"), None);
    }
}
