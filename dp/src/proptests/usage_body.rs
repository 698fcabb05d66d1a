//! The `POST /usage` body ([`crate::usage::http::parse_increment`]): never a panic, and
//! exactly the bodies `{"request_count": N}` with N from 1 to the per-call bound are counted.

use proptest::prelude::*;

use super::{cases, edits, mutate};
use crate::usage::MAX_REQUESTS_PER_CALL;
use crate::usage::http::parse_increment;

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(n) = parse_increment(&bytes) {
            prop_assert!((1..=MAX_REQUESTS_PER_CALL).contains(&n));
        }
    }

    #[test]
    fn every_whole_number_in_range_is_counted_and_nothing_else(n in prop_oneof![
        0u64..=MAX_REQUESTS_PER_CALL + 1,
        any::<u64>(),
    ], space in "[ \t\r\n]{0,2}") {
        let body = format!("{space}{{{space}\"request_count\"{space}:{space}{n}{space}}}{space}");
        let result = parse_increment(body.as_bytes());
        if (1..=MAX_REQUESTS_PER_CALL).contains(&n) {
            prop_assert_eq!(result, Ok(n));
        } else {
            prop_assert!(result.is_err(), "{body}");
        }
    }

    #[test]
    fn other_numbers_are_refused_with_a_reason(number in "-?[0-9]{1,25}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?") {
        let body = format!("{{\"request_count\":{number}}}");
        match parse_increment(body.as_bytes()) {
            Ok(n) => {
                prop_assert_eq!(number.parse::<u64>().ok(), Some(n), "{}", body);
            }
            Err(reason) => prop_assert!(reason.contains("request_count"), "{reason}"),
        }
    }

    #[test]
    fn mutated_bodies_never_panic(n in 1u64..=MAX_REQUESTS_PER_CALL, edits in edits()) {
        let body = mutate(&format!("{{\"request_count\": {n}}}"), &edits);
        if let Ok(counted) = parse_increment(body.as_bytes()) {
            prop_assert!((1..=MAX_REQUESTS_PER_CALL).contains(&counted), "{body}");
        }
    }
}
