//! The one timestamp formatter of the crate.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// A time as every timestamp of the API is written: RFC 3339 UTC with exactly six fractional
/// digits. The one formatter of the crate: it serializes and displays the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// Parses the API's form only: a time written any other way is not one the API wrote.
    pub fn parse_exact(text: &str) -> Option<Self> {
        let parsed = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
        let timestamp = Timestamp(parsed);
        (timestamp.to_string() == text).then_some(timestamp)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(at: DateTime<Utc>) -> Self {
        Timestamp(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_six_fractional_digits_and_parse_only_in_that_form() {
        let at = Timestamp::parse_exact("2026-11-21T10:15:30.000000Z").expect("the API's form");
        assert_eq!(at.to_string(), "2026-11-21T10:15:30.000000Z");
        assert_eq!(
            serde_json::to_string(&at).expect("json"),
            "\"2026-11-21T10:15:30.000000Z\""
        );
        for other in [
            "2026-11-21T10:15:30Z",
            "2026-11-21T11:15:30.000000+01:00",
            "x",
        ] {
            assert!(Timestamp::parse_exact(other).is_none(), "{other}");
        }
    }
}
