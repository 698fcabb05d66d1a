//! Statsd lines and metric patterns: no line panics, a counter's increment is always a
//! finite, non-negative number within the per-call bound, and a pattern prints as the text it
//! was parsed from and matches exactly the names with its shape.

use proptest::prelude::*;

use super::{cases, edits, mutate};
use crate::usage::MAX_REQUESTS_PER_CALL;
use crate::usage::statsd::line::{Metric, parse};
use crate::usage::statsd::pattern::MetricPattern;

/// Lines shaped like what gateways send, with every section varied.
fn line() -> impl Strategy<Value = String> {
    (
        "[a-z_.*-]{0,12}",
        "(,[a-z]=[a-z0-9]|#[a-z]=1|\\[k=v\\])?",
        "[0-9.eE+-]{0,6}(:[0-9.]{1,4}){0,2}|NaN|inf|-0",
        "c|g|ms|h|s|d|m|x|",
        "(\\|@[0-9.eE-]{0,8})?(\\|#[a-z:,]{0,6})?(\\|c:[a-z]{0,3})?",
    )
        .prop_map(|(name, tags, values, kind, rest)| format!("{name}{tags}:{values}|{kind}{rest}"))
}

fn check(line: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Metric::Counter { name, requests }) = parse(line) {
        prop_assert!(!name.is_empty());
        prop_assert!(requests.is_finite() && requests >= 0.0, "{requests}");
        prop_assert!(requests <= MAX_REQUESTS_PER_CALL as f64, "{requests}");
    }
    Ok(())
}

/// A valid pattern: one to six segments, each a literal or `*`.
fn pattern() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop_oneof!["\\*", "[a-z0-9_-]{1,6}", "[é,#\\[]{1,2}"], 1..6)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
        check(&bytes)?;
    }

    #[test]
    fn gateway_shaped_lines_give_bounded_counters(line in line(), edits in prop::option::of(edits())) {
        let line = match edits {
            Some(edits) => mutate(&line, &edits),
            None => line,
        };
        check(line.as_bytes())?;
    }

    #[test]
    fn a_counter_adds_its_values_over_the_rate(values in prop::collection::vec(0u32..1000, 1..4), rate in 1u32..=100) {
        let text: Vec<String> = values.iter().map(u32::to_string).collect();
        let line = format!("a.b:{}|c|@{}", text.join(":"), f64::from(rate) / 100.0);
        let expected: f64 = values.iter().map(|v| f64::from(*v) / (f64::from(rate) / 100.0)).sum();
        match parse(line.as_bytes()) {
            Ok(Metric::Counter { name, requests }) => {
                prop_assert_eq!(name, "a.b");
                prop_assert!((requests - expected).abs() <= expected * 1e-9, "{line}: {requests}");
            }
            other => prop_assert!(false, "{line}: {other:?}"),
        }
    }

    #[test]
    fn arbitrary_pattern_text_never_panics(text in "\\PC{0,24}|[a-z.*]{0,300}") {
        if let Ok(pattern) = text.parse::<MetricPattern>() {
            prop_assert_eq!(pattern.to_string(), text);
        }
    }

    #[test]
    fn a_pattern_round_trips_and_matches_its_shape(segments in pattern(), fill in "[a-z]{1,4}", extra in "[a-z]{1,4}") {
        let text = segments.join(".");
        let pattern: MetricPattern = text.parse().unwrap();
        prop_assert_eq!(pattern.to_string(), text.clone());
        prop_assert_eq!(pattern.to_string().parse::<MetricPattern>(), Ok(pattern.clone()));
        // Every `*` filled with one segment: matched; one segment more or fewer: not.
        let name: Vec<&str> = segments.iter().map(|s| if s == "*" { fill.as_str() } else { s.as_str() }).collect();
        let name = name.join(".");
        prop_assert!(pattern.matches(&name), "{text} vs {name}");
        let longer = format!("{name}.{extra}");
        prop_assert!(!pattern.matches(&longer), "{text} vs {longer}");
        if let Some((shorter, _)) = name.rsplit_once('.') {
            prop_assert!(!pattern.matches(shorter), "{text} vs {shorter}");
        }
    }
}
