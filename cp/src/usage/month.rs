//! A usage bucket: one UTC calendar month, written `YYYY-MM` on the wire, in storage keys and in
//! the report, so buckets sort chronologically as text and as values.

use std::fmt;
use std::str::FromStr;

use time::Date;

/// The earliest year a bucket may name: a data plane whose clock reads 1970 has no real date.
pub const MIN_YEAR: u16 = 2000;
/// The latest year a bucket may name.
pub const MAX_YEAR: u16 = 2100;

/// One UTC month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: u16,
    /// 1..=12.
    month: u8,
}

/// A bucket that is not a month like `2026-11`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a month like 2026-11 (YYYY-MM, month 01-12, year {MIN_YEAR}-{MAX_YEAR})")]
pub struct BadMonth(pub String);

impl Month {
    /// The month `date` falls in.
    pub fn of(date: Date) -> Self {
        Self {
            // Dates before year 0 or after 65535 do not occur on a running system's clock.
            year: u16::try_from(date.year()).unwrap_or(0),
            month: u8::from(date.month()),
        }
    }

    /// The month `n` months before this one.
    pub fn minus(self, n: u32) -> Self {
        let index = self.index().saturating_sub(n);
        Self {
            year: (index / 12) as u16,
            month: (index % 12) as u8 + 1,
        }
    }

    /// Months since year 0, for arithmetic.
    fn index(self) -> u32 {
        u32::from(self.year) * 12 + u32::from(self.month) - 1
    }

    /// The seven ASCII bytes `YYYY-MM`, the form storage keys use.
    pub fn to_bytes(self) -> [u8; 7] {
        let mut out = [0u8; 7];
        out.copy_from_slice(self.to_string().as_bytes());
        out
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = BadMonth;

    fn from_str(text: &str) -> Result<Self, BadMonth> {
        let bad = || BadMonth(text.chars().take(32).collect());
        let bytes = text.as_bytes();
        if bytes.len() != 7
            || bytes[4] != b'-'
            || !bytes[..4].iter().chain(&bytes[5..]).all(u8::is_ascii_digit)
        {
            return Err(bad());
        }
        let year: u16 = text[..4].parse().map_err(|_| bad())?;
        let month: u8 = text[5..].parse().map_err(|_| bad())?;
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) || !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Self { year, month })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn parses_only_real_months_in_range() {
        assert_eq!("2026-11".parse::<Month>().unwrap().to_string(), "2026-11");
        assert_eq!(&"2000-01".parse::<Month>().unwrap().to_bytes(), b"2000-01");
        for bad in [
            "2026-13",
            "2026-00",
            "1999-12",
            "2101-01",
            "2026-1",
            "2026/11",
            "26-11",
            "2026-11 ",
            "+026-11",
            "２026-11",
            "",
        ] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        assert_eq!(
            "2026-13".parse::<Month>().unwrap_err().to_string(),
            "'2026-13' is not a month like 2026-11 (YYYY-MM, month 01-12, year 2000-2100)"
        );
    }

    #[test]
    fn months_order_and_step_back_across_years() {
        let nov = Month::of(date!(2026 - 11 - 30));
        assert_eq!(nov.to_string(), "2026-11");
        assert_eq!(nov.minus(10).to_string(), "2026-01");
        assert_eq!(nov.minus(11).to_string(), "2025-12");
        assert_eq!(nov.minus(23).to_string(), "2024-12");
        assert!(nov.minus(1) < nov);
        assert!("2025-12".parse::<Month>().unwrap() < "2026-01".parse::<Month>().unwrap());
    }
}
