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

pub(crate) use licsync_common::testing::{cases, mutate};

/// Edits for [`mutate`], biased towards the characters that structure JSON, TOML, YAML and
/// statsd lines.
pub(crate) fn edits() -> impl Strategy<Value = Vec<(usize, u8, char)>> {
    licsync_common::testing::edits(&[
        '"', '\\', '{', '}', '[', ']', ':', ',', '=', '|', '@', '#', '.', '*', '\n', '-', ' ', '0',
        '9', 'e', 'c', '\'', '&', '!', '\t', 'é', '\u{0}', '\u{85}',
    ])
}
