//! Time as the state machine sees it: milliseconds since the Unix epoch, stamped by the leader.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Milliseconds since 1970-01-01T00:00:00Z (UTC). The leader stamps every log entry with one, so
/// applying a command never reads a clock (DESIGN.md, "Who owns what").
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    ToSchema,
)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    /// ISO-8601 in UTC with milliseconds and a `Z` (CONTRACT.md: "Timestamps are UTC, ISO-8601,
    /// with a `Z`"), e.g. `2026-11-30T06:09:17.123Z`.
    pub fn to_iso(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Milliseconds elapsed from `earlier` to `self`, never negative.
    pub fn since(self, earlier: Millis) -> i64 {
        (self.0 - earlier.0).max(0)
    }
}

/// Parses a time given by a client: RFC 3339 (`2026-11-30T06:09:17Z`, any offset) or an ISO local
/// date-time read as UTC (`2026-11-30T06:09:17`, optional fraction). Returns `None` otherwise.
pub fn parse_client_time(text: &str) -> Option<Millis> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(Millis(time.timestamp_millis()));
    }
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    .map(|naive| Millis(naive.and_utc().timestamp_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_millis_and_zulu() {
        assert_eq!(Millis(0).to_iso(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Millis(1_500).to_iso(), "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn client_times_accept_rfc3339_and_local_utc() {
        assert_eq!(
            parse_client_time("1970-01-01T00:00:01Z"),
            Some(Millis(1000))
        );
        assert_eq!(
            parse_client_time("1970-01-01T01:00:01+01:00"),
            Some(Millis(1000))
        );
        assert_eq!(
            parse_client_time("1970-01-01T00:00:01.250"),
            Some(Millis(1250))
        );
        assert_eq!(parse_client_time("1970-01-01T00:01"), Some(Millis(60_000)));
        assert_eq!(parse_client_time("yesterday"), None);
    }
}
