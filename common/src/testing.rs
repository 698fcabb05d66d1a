//! Helpers for property tests of parsers that read outside bytes, shared by this crate's and
//! the agent's property tests (`proptests` modules). Test-only: compiled for this crate's own
//! tests and behind the non-default `testing` feature, which other crates enable from their
//! `[dev-dependencies]` only, so no release build carries it (or `proptest`).

use proptest::prelude::*;

/// `default` cases, or `PROPTEST_CASES=N` for a longer run.
pub fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// Applies `edits` (position, kind, character) to `text`, character-wise so it stays UTF-8:
/// the near-valid inputs that reach a parser's deep paths.
pub fn mutate(text: &str, edits: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for &(at, kind, c) in edits {
        if chars.is_empty() {
            chars.push(c);
            continue;
        }
        let at = at % chars.len();
        match kind % 4 {
            0 => chars[at] = c,
            1 => chars.insert(at, c),
            2 => {
                chars.remove(at);
            }
            _ => {
                let end = (at + usize::from(kind)).min(chars.len());
                chars.drain(at..end);
            }
        }
    }
    chars.into_iter().collect()
}

/// One to three edits for [`mutate`], their characters biased towards `alphabet` (the
/// characters that structure the format under test), else any character.
pub fn edits(alphabet: &'static [char]) -> impl Strategy<Value = Vec<(usize, u8, char)>> {
    let c = prop_oneof![prop::sample::select(alphabet), any::<char>()];
    prop::collection::vec((any::<usize>(), any::<u8>(), c), 1..4)
}

/// TOML-ish text for a configuration parser: lines naming the given `tables` and `keys` (plus
/// an unknown table and key, multi-byte), with values of every kind and the `extra_values`
/// that only one program's keys take, and free text.
pub fn toml_text(
    tables: &'static [&'static str],
    keys: &'static [&'static str],
    extra_values: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let table = prop::sample::select(tables).prop_map(str::to_owned).boxed();
    let line = prop_oneof![
        prop_oneof![table, Just("[\"é\"]".to_owned())],
        (
            prop_oneof![
                prop::sample::select(keys).prop_map(str::to_owned),
                Just("ké".to_owned()),
                Just(String::new()),
            ],
            prop_oneof![
                "\"\\PC{0,6}\"",
                "\"[0-9]{1,4}(ms|s|m|h|d|y)\"",
                "\"[0-9.:\\[\\]]{1,12}\"",
                prop::sample::select(extra_values).prop_map(str::to_owned),
                "-?[0-9]{1,12}",
                "\\PC{0,6}",
            ],
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        "\\PC{0,10}",
    ];
    prop::collection::vec(line, 0..8).prop_map(|lines| lines.join("\n"))
}
