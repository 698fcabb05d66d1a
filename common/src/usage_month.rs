//! The usage month: one UTC calendar month, written `YYYY-MM` on disk, on the wire, in storage
//! keys and in the report, and the bounds both sides put on what is counted in it.
//!
//! One type for both binaries, because two copies drifted: the control plane refused months
//! before 2000 while the agent counted under any year from 1970, so an agent whose clock read
//! 1970 for a moment kept a month the control plane would never accept. Here there is one range
//! ([`MIN_YEAR`]-01 to [`MAX_YEAR`]-12) and one bound ([`MAX_MONTH_REQUESTS`]); the agent never
//! counts outside them and the control plane refuses only what falls outside them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Date, OffsetDateTime, UtcOffset};

/// The earliest year usage is counted in: a clock that reads earlier (1970 after a reset of the
/// real-time clock, 1999 from a bad NTP answer) has no real date.
pub const MIN_YEAR: i32 = 2000;
/// The latest year usage is counted in.
pub const MAX_YEAR: i32 = 2100;

/// The most requests one data plane may count in one month under one epoch: what one report
/// bucket may carry and what the agent lets a month reach. 10^15 is 385 million requests a
/// second for a whole month, far beyond any gateway, and far enough below `u64::MAX` that the
/// control plane's sums over thousands of data planes cannot overflow.
pub const MAX_MONTH_REQUESTS: u64 = 1_000_000_000_000_000;

/// One UTC month from [`MIN_YEAR`]-01 to [`MAX_YEAR`]-12. Orders chronologically, as values and
/// as `YYYY-MM` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UsageMonth {
    year: u16,
    /// 1..=12.
    month: u8,
}

/// Why a text or a time names no usage month.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageMonthError {
    /// Not `YYYY-MM` at all (the text, escaped and cut to 32 characters).
    #[error(
        "'{0}' is not a month like 2026-11; expected YYYY-MM (month 01-12, year {MIN_YEAR}-{MAX_YEAR})"
    )]
    Malformed(String),
    /// A well-formed month outside the range, as `YYYY-MM`.
    #[error(
        "{0} is outside the months usage is counted in ({MIN_YEAR}-01 to {MAX_YEAR}-12): it comes from a clock that was wrong"
    )]
    OutOfRange(String),
}

impl UsageMonth {
    /// The first month of the range.
    pub const MIN: Self = Self {
        year: MIN_YEAR as u16,
        month: 1,
    };
    /// The last month of the range.
    pub const MAX: Self = Self {
        year: MAX_YEAR as u16,
        month: 12,
    };

    /// `year`-`month`, when `month` is 1..=12 and the year in range.
    pub fn new(year: i32, month: u8) -> Result<Self, UsageMonthError> {
        if !(1..=12).contains(&month) {
            return Err(UsageMonthError::Malformed(format!("{year:04}-{month:02}")));
        }
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return Err(UsageMonthError::OutOfRange(format!("{year:04}-{month:02}")));
        }
        Ok(Self {
            // In range, so it fits.
            year: year as u16,
            month,
        })
    }

    /// The UTC month `at` falls in; `OutOfRange` when the clock that read `at` is wrong.
    pub fn of(at: OffsetDateTime) -> Result<Self, UsageMonthError> {
        Self::of_date(at.to_offset(UtcOffset::UTC).date())
    }

    /// The month `date` (a UTC date) falls in.
    pub fn of_date(date: Date) -> Result<Self, UsageMonthError> {
        Self::new(date.year(), u8::from(date.month()))
    }

    /// The UTC month of the Unix time `seconds`.
    pub fn of_unix(seconds: i64) -> Result<Self, UsageMonthError> {
        let at = OffsetDateTime::from_unix_timestamp(seconds)
            .map_err(|_| UsageMonthError::OutOfRange(format!("unix time {seconds}")))?;
        Self::of(at)
    }

    /// The month `at` falls in, or the nearest end of the range: for the window of a report,
    /// never for counting.
    pub fn clamped(at: OffsetDateTime) -> Self {
        let utc = at.to_offset(UtcOffset::UTC);
        match Self::of(utc) {
            Ok(month) => month,
            Err(_) if utc.year() < MIN_YEAR => Self::MIN,
            Err(_) => Self::MAX,
        }
    }

    pub fn year(self) -> i32 {
        i32::from(self.year)
    }

    pub fn month(self) -> time::Month {
        time::Month::try_from(self.month).unwrap_or(time::Month::January)
    }

    /// Months since January of year 0: makes "how many months apart" a subtraction.
    fn ordinal(self) -> i64 {
        i64::from(self.year) * 12 + i64::from(self.month) - 1
    }

    /// How many months `self` lies before `later` (negative when after it).
    pub fn months_before(self, later: Self) -> i64 {
        later.ordinal() - self.ordinal()
    }

    /// The month `n` months before this one, or [`Self::MIN`] when that is before the range.
    pub fn minus(self, n: u32) -> Self {
        let ordinal = (self.ordinal() - i64::from(n)).max(Self::MIN.ordinal());
        Self {
            // Between MIN and self, so both fit.
            year: (ordinal / 12) as u16,
            month: (ordinal % 12) as u8 + 1,
        }
    }

    /// The seven ASCII bytes `YYYY-MM`, the form storage keys use.
    pub fn to_bytes(self) -> [u8; 7] {
        let mut out = [0u8; 7];
        out.copy_from_slice(self.to_string().as_bytes());
        out
    }
}

/// Parses the shape `YYYY-MM` (four digits, a hyphen, two digits) without judging the range:
/// the year and month numbers. Shared by [`UsageMonth`]'s parser and readers that must keep a
/// month written by an older version (the agent's `usage.json`) even when it is out of range.
pub fn parse_shape(text: &str) -> Result<(i32, u8), UsageMonthError> {
    let bad = || UsageMonthError::Malformed(crate::printable(text, 32));
    let bytes = text.as_bytes();
    if bytes.len() != 7
        || bytes[4] != b'-'
        || !bytes[..4].iter().chain(&bytes[5..]).all(u8::is_ascii_digit)
    {
        return Err(bad());
    }
    let year: i32 = text[..4].parse().map_err(|_| bad())?;
    let month: u8 = text[5..].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) {
        return Err(bad());
    }
    Ok((year, month))
}

impl fmt::Display for UsageMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for UsageMonth {
    type Err = UsageMonthError;

    fn from_str(text: &str) -> Result<Self, UsageMonthError> {
        let (year, month) = parse_shape(text)?;
        Self::new(year, month)
    }
}

impl Serialize for UsageMonth {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UsageMonth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    fn month(text: &str) -> UsageMonth {
        text.parse().unwrap()
    }

    #[test]
    fn the_range_ends_exactly_at_2000_01_and_2100_12() {
        assert_eq!(month("2000-01"), UsageMonth::MIN);
        assert_eq!(month("2100-12"), UsageMonth::MAX);
        for (text, out_of_range) in [("1999-12", true), ("2101-01", true), ("1970-01", true)] {
            let err = text.parse::<UsageMonth>().unwrap_err();
            assert_eq!(
                matches!(err, UsageMonthError::OutOfRange(_)),
                out_of_range,
                "{text}"
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "{text} is outside the months usage is counted in (2000-01 to 2100-12): it comes from a clock that was wrong"
                )
            );
        }
        assert!(UsageMonth::of(datetime!(1999-12-31 23:59:59.999 UTC)).is_err());
        assert_eq!(
            UsageMonth::of(datetime!(2000-01-01 00:00 UTC)).unwrap(),
            UsageMonth::MIN
        );
        assert_eq!(
            UsageMonth::of(datetime!(2100-12-31 23:59:59.999 UTC)).unwrap(),
            UsageMonth::MAX
        );
        assert!(UsageMonth::of(datetime!(2101-01-01 00:00 UTC)).is_err());
        assert!(UsageMonth::of_unix(0).is_err(), "1970: a reset clock");
        assert_eq!(UsageMonth::of_unix(946_684_800).unwrap(), UsageMonth::MIN);
        assert!(UsageMonth::of_unix(i64::MAX).is_err());
        assert_eq!(
            UsageMonth::clamped(datetime!(1970-01-01 00:00 UTC)),
            UsageMonth::MIN
        );
        assert_eq!(
            UsageMonth::clamped(datetime!(2300-05-01 00:00 UTC)),
            UsageMonth::MAX
        );
    }

    #[test]
    fn only_yyyy_mm_parses_and_refusals_are_escaped() {
        assert_eq!(month("2026-11").to_string(), "2026-11");
        assert_eq!(&month("2026-11").to_bytes(), b"2026-11");
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "2026/11",
            "26-11",
            "2026-11 ",
            "2026-11-01",
            "+026-11",
            "２026-11",
            "abcd-ef",
            "",
        ] {
            let err = bad.parse::<UsageMonth>().unwrap_err();
            assert!(matches!(err, UsageMonthError::Malformed(_)), "{bad}");
            assert!(err.to_string().contains("expected YYYY-MM"), "{bad}: {err}");
        }
        assert_eq!(
            "2026-13".parse::<UsageMonth>().unwrap_err().to_string(),
            "'2026-13' is not a month like 2026-11; expected YYYY-MM (month 01-12, year 2000-2100)"
        );
        let err = "20\n6-11\u{1b}[31m".parse::<UsageMonth>().unwrap_err();
        assert!(
            err.to_string().starts_with(r"'20\n6-11\u{1b}[31m'"),
            "{err}"
        );
        assert_eq!(parse_shape("1999-12"), Ok((1999, 12)));
        assert_eq!(
            UsageMonth::new(2026, 0),
            Err(UsageMonthError::Malformed("2026-00".into()))
        );
    }

    #[test]
    fn the_month_is_taken_in_utc() {
        let of = |at| UsageMonth::of(at).unwrap().to_string();
        assert_eq!(of(datetime!(2026-11-30 23:59:59.999 UTC)), "2026-11");
        assert_eq!(of(datetime!(2026-12-01 00:00:00 UTC)), "2026-12");
        // 1 December 00:30 in Paris is still November in UTC.
        assert_eq!(of(datetime!(2026-12-01 00:30:00 +01:00)), "2026-11");
        assert_eq!(of(datetime!(2026-12-01 01:30:00 +01:00)), "2026-12");
        assert_eq!(
            UsageMonth::of_date(date!(2026 - 11 - 30)).unwrap().month(),
            time::Month::November
        );
    }

    #[test]
    fn months_order_and_step_back_across_years_but_not_below_the_range() {
        let nov = month("2026-11");
        assert_eq!(nov.minus(10).to_string(), "2026-01");
        assert_eq!(nov.minus(11).to_string(), "2025-12");
        assert_eq!(nov.minus(23).to_string(), "2024-12");
        assert_eq!(month("2000-03").minus(5), UsageMonth::MIN);
        assert_eq!(nov.months_before(month("2027-01")), 2);
        assert_eq!(month("2027-01").months_before(nov), -2);
        assert!(month("2025-12") < month("2026-01"));
        let json = serde_json::to_string(&nov).unwrap();
        assert_eq!(json, "\"2026-11\"");
        assert_eq!(serde_json::from_str::<UsageMonth>(&json).unwrap(), nov);
        assert!(serde_json::from_str::<UsageMonth>("\"1999-12\"").is_err());
    }
}
