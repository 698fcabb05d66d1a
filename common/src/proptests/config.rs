//! [`crate::duration`] and [`crate::config`]: a duration prints as text that parses back to
//! it, sums of units parse to their sum, and no TOML text makes the error description (which
//! slices the text at the parser's reported span) panic.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use serde::Deserialize;

use super::{cases, edits, mutate};
use crate::config::parse;
use crate::duration::HumanDuration;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(dead_code)]
struct Sample {
    listen: String,
    count: u32,
    nested: Nested,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(dead_code)]
struct Nested {
    ttl: Option<HumanDuration>,
    names: Vec<String>,
}

const VALID: &str =
    "listen = \"0.0.0.0:1\"\ncount = 3\n[nested]\nttl = \"1h30m\"\nnames = [\"é\", \"b\"]\n";

/// TOML-ish lines: known and unknown keys, tables, values of every kind, multi-byte text.
fn toml_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("[nested]".to_owned()),
        Just("[\"né\"]".to_owned()),
        Just("[[nested]]".to_owned()),
        (
            prop::sample::select(&["listen", "count", "ttl", "names", "\"ké\"", "a.b", ""][..]),
            prop_oneof![
                "\"\\PC{0,6}\"",
                "-?[0-9]{1,12}",
                "\"[0-9]{1,4}(ms|s|m|h|d|y|é)\"",
                Just("[\"a\", 1]".to_owned()),
                Just("{ x = 1 }".to_owned()),
                "\\PC{0,6}",
            ],
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        "\\PC{0,10}",
    ];
    prop::collection::vec(line, 0..6).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn arbitrary_duration_text_never_panics(text in "\\PC{0,16}|[0-9 ]{0,22}[a-zé ]{0,3}") {
        let _ = text.parse::<HumanDuration>();
    }

    #[test]
    fn a_printed_duration_parses_back(ms: u64) {
        let d = HumanDuration(Duration::from_millis(ms));
        prop_assert_eq!(d.to_string().parse::<HumanDuration>(), Ok(d));
    }

    #[test]
    fn a_sum_of_units_parses_to_its_sum(parts in prop::collection::vec((0u64..100_000, 0usize..5), 1..5)) {
        const UNITS: [(&str, u64); 5] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];
        let text: String = parts.iter().map(|(n, u)| format!("{n}{}", UNITS[*u].0)).collect();
        let ms: u64 = parts.iter().map(|(n, u)| n * UNITS[*u].1).sum();
        prop_assert_eq!(text.parse::<HumanDuration>(), Ok(HumanDuration(Duration::from_millis(ms))));
    }

    #[test]
    fn arbitrary_toml_never_panics(text in toml_text()) {
        let _ = parse::<Sample>(&text, Path::new("x.toml")).map_err(|e| e.to_string());
    }

    #[test]
    fn mutated_valid_toml_never_panics(edits in edits()) {
        let text = mutate(VALID, &edits);
        let _ = parse::<Sample>(&text, Path::new("x.toml")).map_err(|e| e.to_string());
    }
}

#[test]
fn the_valid_sample_parses() {
    let sample: Sample = parse(VALID, Path::new("x.toml")).unwrap();
    assert_eq!(
        sample.nested.ttl,
        Some(HumanDuration(Duration::from_secs(5400)))
    );
}
