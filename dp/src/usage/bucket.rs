//! A usage bucket: one UTC calendar month, written `YYYY-MM` on disk, on the wire and in the
//! control plane's `/license/report`, as Kong's license report buckets its request counters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Month, OffsetDateTime, UtcOffset};

/// One UTC month. Orders chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket {
    year: i32,
    /// 1..=12
    month: u8,
}

/// A bucket name that is not `YYYY-MM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a month bucket; expected YYYY-MM, e.g. 2026-11")]
pub struct BadBucket(pub String);

impl Bucket {
    /// `month` is 1..=12; `None` otherwise, or for a year before 1970 or after 9999.
    pub fn new(year: i32, month: u8) -> Option<Self> {
        ((1970..=9999).contains(&year) && (1..=12).contains(&month)).then_some(Self { year, month })
    }

    /// The UTC month `at` falls in.
    pub fn of(at: OffsetDateTime) -> Self {
        let utc = at.to_offset(UtcOffset::UTC);
        Self {
            year: utc.year(),
            month: u8::from(utc.month()),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> Month {
        Month::try_from(self.month).unwrap_or(Month::January)
    }

    /// Months since January of year 0: makes "how many months apart" a subtraction.
    fn ordinal(self) -> i64 {
        i64::from(self.year) * 12 + i64::from(self.month) - 1
    }

    /// How many months `self` lies before `later` (negative when after it).
    pub fn months_before(self, later: Bucket) -> i64 {
        later.ordinal() - self.ordinal()
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Bucket {
    type Err = BadBucket;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadBucket(text.chars().take(40).collect());
        let bytes = text.as_bytes();
        if bytes.len() != 7 || bytes[4] != b'-' {
            return Err(bad());
        }
        let digits = |range: std::ops::Range<usize>| {
            let part = &text[range];
            if part.bytes().all(|b| b.is_ascii_digit()) {
                part.parse::<i32>().ok()
            } else {
                None
            }
        };
        let year = digits(0..4).ok_or_else(bad)?;
        let month = digits(5..7)
            .and_then(|m| u8::try_from(m).ok())
            .ok_or_else(bad)?;
        Self::new(year, month).ok_or_else(bad)
    }
}

impl Serialize for Bucket {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bucket {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn the_month_is_taken_in_utc() {
        assert_eq!(
            Bucket::of(datetime!(2026-11-30 23:59:59.999 UTC)).to_string(),
            "2026-11"
        );
        assert_eq!(
            Bucket::of(datetime!(2026-12-01 00:00:00 UTC)).to_string(),
            "2026-12"
        );
        // 1 December 01:30 in Paris is still November in UTC.
        assert_eq!(
            Bucket::of(datetime!(2026-12-01 01:30:00 +01:00)).to_string(),
            "2026-12"
        );
        assert_eq!(
            Bucket::of(datetime!(2026-12-01 00:30:00 +01:00)).to_string(),
            "2026-11"
        );
    }

    #[test]
    fn parses_only_yyyy_mm_and_orders_by_time() {
        let nov: Bucket = "2026-11".parse().unwrap();
        let jan: Bucket = "2027-01".parse().unwrap();
        assert!(nov < jan);
        assert_eq!(nov.months_before(jan), 2);
        assert_eq!(jan.months_before(nov), -2);
        assert_eq!(nov.month(), Month::November);
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-11",
            "2026/11",
            "2026-11-01",
            "",
            "abcd-ef",
            "+026-11",
            "1969-12",
        ] {
            let err = bad.parse::<Bucket>().unwrap_err().to_string();
            assert!(err.contains("expected YYYY-MM"), "{bad}: {err}");
        }
        let json = serde_json::to_string(&nov).unwrap();
        assert_eq!(json, "\"2026-11\"");
        assert_eq!(serde_json::from_str::<Bucket>(&json).unwrap(), nov);
        assert!(serde_json::from_str::<Bucket>("\"2026-1\"").is_err());
    }
}
