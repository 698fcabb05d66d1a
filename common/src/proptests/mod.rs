//! Property tests over every parser in this crate that reads outside bytes: strict JSON,
//! license documents, usage reports, human durations and TOML configuration.
//!
//! Two kinds of property: nothing panics on any input (arbitrary text, plus near-valid inputs
//! made by mutating valid ones, so the deep paths are reached), and parse → serialise → parse
//! is the identity wherever the format promises it.
//!
//! Case counts are moderate (256) so the set stays quick on a loaded machine;
//! `PROPTEST_CASES=N` overrides them for a longer run.

mod config;
mod json;
mod license;
mod report;

use proptest::prelude::*;

pub(crate) use crate::testing::mutate;

/// 256 cases, or `PROPTEST_CASES`.
pub(crate) fn cases() -> ProptestConfig {
    crate::testing::cases(256)
}

/// A JSON value as written, objects as member lists so that a key may repeat.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Node>),
    /// Members in writing order; `true` writes the key with every character `\u`-escaped.
    Obj(Vec<(String, bool, Node)>),
}

/// Short keys from a small alphabet, so that repeats are common.
pub(crate) fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[abc]{1,2}",
        Just(String::new()),
        Just("é".to_owned()),
        Just("\n".to_owned())
    ]
}

pub(crate) fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        Just(Node::Null),
        any::<bool>().prop_map(Node::Bool),
        any::<i64>().prop_map(Node::Int),
        "\\PC{0,8}|[\"\\\\\u{0}-\u{1f}\u{7f}\u{2028}]{0,4}".prop_map(Node::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Node::Arr),
            prop::collection::vec((key(), any::<bool>(), inner), 0..6).prop_map(Node::Obj),
        ]
    })
}

impl Node {
    /// JSON text; `space` puts whitespace around every token.
    pub(crate) fn render(&self, space: bool, out: &mut String) {
        let ws = if space { " \n\t" } else { "" };
        match self {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Int(i) => out.push_str(&i.to_string()),
            Node::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            Node::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(ws);
                    item.render(space, out);
                }
                out.push_str(ws);
                out.push(']');
            }
            Node::Obj(members) => {
                out.push('{');
                for (i, (k, escaped, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(ws);
                    if *escaped {
                        out.push('"');
                        for unit in k.encode_utf16() {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                        out.push('"');
                    } else {
                        out.push_str(&serde_json::to_string(k).unwrap());
                    }
                    out.push_str(ws);
                    out.push(':');
                    out.push_str(ws);
                    v.render(space, out);
                }
                out.push_str(ws);
                out.push('}');
            }
        }
    }

    pub(crate) fn text(&self, space: bool) -> String {
        let mut out = String::new();
        self.render(space, &mut out);
        out
    }

    /// Every key that some object of this tree repeats.
    pub(crate) fn repeated_keys(&self, found: &mut Vec<String>) {
        match self {
            Node::Arr(items) => items.iter().for_each(|i| i.repeated_keys(found)),
            Node::Obj(members) => {
                for (i, (k, _, v)) in members.iter().enumerate() {
                    if members[..i].iter().any(|(other, _, _)| other == k) {
                        found.push(k.clone());
                    }
                    v.repeated_keys(found);
                }
            }
            _ => {}
        }
    }
}

/// Edits for [`mutate`], biased towards the characters that structure JSON, TOML and YAML.
pub(crate) fn edits() -> impl Strategy<Value = Vec<(usize, u8, char)>> {
    crate::testing::edits(&[
        '"', '\\', '{', '}', '[', ']', ':', ',', '=', '\n', '#', '-', ' ', '0', '9', 'e', '.', 'a',
        'é', '\u{0}', '\u{2028}',
    ])
}
