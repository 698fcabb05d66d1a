//! Property tests over every parser in the agent that reads outside bytes: statsd lines and
//! metric patterns, the `POST /usage` body, the registration file and the configuration.
//!
//! Two kinds of property: nothing panics on any input (arbitrary text, plus near-valid inputs
//! made by mutating valid ones, so the deep paths are reached), and parse → serialise → parse
//! is the identity wherever the format promises it (patterns, registration files, config).
//!
//! Case counts are moderate (256, fewer where a case is costly) so the set stays quick on a
//! loaded machine; `PROPTEST_CASES=N` overrides them for a longer run.

mod config;
mod registration;
mod statsd;
mod usage_body;

use proptest::prelude::*;

/// `default` cases, or `PROPTEST_CASES`.
pub(crate) fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// Applies `edits` (position, kind, character) to `text`, character-wise so it stays UTF-8.
pub(crate) fn mutate(text: &str, edits: &[(usize, u8, char)]) -> String {
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

/// Edits for [`mutate`], biased towards the characters that structure JSON, TOML, YAML and
/// statsd lines.
pub(crate) fn edits() -> impl Strategy<Value = Vec<(usize, u8, char)>> {
    let c = prop_oneof![
        prop::sample::select(
            &[
                '"', '\\', '{', '}', '[', ']', ':', ',', '=', '|', '@', '#', '.', '*', '\n', '-',
                ' ', '0', '9', 'e', 'c', '\'', '&', '!', '\t', 'é', '\u{0}', '\u{85}'
            ][..]
        ),
        any::<char>(),
    ];
    prop::collection::vec((any::<usize>(), any::<u8>(), c), 1..4)
}
