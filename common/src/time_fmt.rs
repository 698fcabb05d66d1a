//! Timestamp formats that operators and scripts see.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `2025-09-25 19:27:32 +0000 UTC`: Go's `time.Time` string, which Flex Gateway's
/// `registration inspect` prints and scripts already parse.
pub fn go_utc(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] +0000 UTC"
    ))
    .unwrap_or_default()
}

/// RFC 3339 in UTC, for JSON APIs.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_format_matches_flex_gateway() {
        let at = OffsetDateTime::from_unix_timestamp(1_758_828_452).unwrap();
        assert_eq!(go_utc(at), "2025-09-25 19:27:32 +0000 UTC");
    }
}
