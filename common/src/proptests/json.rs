//! [`crate::strict_json`] against serde_json: the same value whenever no object repeats a key,
//! a refusal naming a repeated key whenever one does, and never a panic.

use proptest::prelude::*;
use serde_json::Value;

use super::{Node, cases, edits, mutate, node};
use crate::strict_json::{StrictJsonError, from_slice, from_str};

/// Holds for every input: where strict parsing succeeds serde_json reads the same value, and
/// where serde_json fails strict parsing fails too. A duplicate key is the only extra refusal,
/// and as strict parsing stops there, serde_json may still find a syntax error further on.
fn agrees_with_serde_json(text: &str) -> Result<(), TestCaseError> {
    let strict = from_str(text);
    let loose = serde_json::from_str::<Value>(text);
    match (&strict, &loose) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(StrictJsonError::Syntax(_)), Err(_)) => {}
        (Err(StrictJsonError::DuplicateKey(_)), _) => {}
        _ => prop_assert!(
            false,
            "strict {strict:?} but serde_json {loose:?} for {text:?}"
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = from_slice(&bytes);
    }

    #[test]
    fn arbitrary_text_agrees_with_serde_json(text in "[\\[\\]{}\":,0-9a-z\\\\ .eE+-]{0,24}") {
        agrees_with_serde_json(&text)?;
    }

    #[test]
    fn a_tree_is_refused_exactly_when_an_object_repeats_a_key(tree in node(), space: bool) {
        let text = tree.text(space);
        let mut repeated = Vec::new();
        tree.repeated_keys(&mut repeated);
        match from_str(&text) {
            Ok(value) => {
                prop_assert!(repeated.is_empty(), "accepted {text} repeating {repeated:?}");
                prop_assert_eq!(Some(value), serde_json::from_str::<Value>(&text).ok());
            }
            Err(StrictJsonError::DuplicateKey(key)) => {
                prop_assert!(repeated.contains(&key), "named {key:?} for {text}, repeats {repeated:?}");
            }
            Err(other) => prop_assert!(false, "{other} for {text}"),
        }
    }

    #[test]
    fn serde_json_output_parses_back_to_itself(tree in node(), pretty: bool) {
        // serde_json's own maps cannot repeat a key, so whatever it writes is accepted.
        let Ok(value) = serde_json::from_str::<Value>(&tree.text(false)) else {
            return Ok(());
        };
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            value.to_string()
        };
        prop_assert_eq!(from_str(&text), Ok(value));
    }

    #[test]
    fn mutated_trees_agree_with_serde_json(tree in node(), edits in edits()) {
        agrees_with_serde_json(&mutate(&tree.text(false), &edits))?;
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed(depth in 100usize..2000, open in "[\\[{]") {
        let text = if open == "[" {
            "[".repeat(depth) + &"]".repeat(depth)
        } else {
            "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth)
        };
        agrees_with_serde_json(&text)?;
    }
}

#[test]
fn the_repeated_key_in_a_tree_node_is_found() {
    // The generator's own bookkeeping, checked once by hand.
    let tree = Node::Obj(vec![
        ("a".into(), false, Node::Null),
        ("a".into(), true, Node::Int(1)),
    ]);
    let mut found = Vec::new();
    tree.repeated_keys(&mut found);
    assert_eq!(found, ["a"]);
    assert_eq!(tree.text(false), r#"{"a":null,"\u0061":1}"#);
}
