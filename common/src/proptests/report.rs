//! [`crate::report`]: a sealed report verifies after any re-serialisation (compact, pretty,
//! members reordered) with the same canonical bytes, and any text the verifier accepts has the
//! content that was signed.

use std::sync::LazyLock;

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{cases, edits, mutate};
use crate::license::SigningKey;
use crate::report::{canonical_bytes, seal, verify};

static KEY: LazyLock<(SigningKey, String)> = LazyLock::new(|| {
    let (key, _) = SigningKey::generate().expect("key generation");
    let public = key.public_key_base64();
    (key, public)
});

/// What a report holds: integers, strings, booleans, nulls, arrays and objects.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "\\PC{0,8}|[\"\\\\\u{0}-\u{1f}\u{7f}]{0,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn report() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("\\PC{0,8}", value(), 0..6).prop_map(|m| m.into_iter().collect())
}

/// `value` as JSON text with every object's members in reverse order.
fn reversed(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let members: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), reversed(v)))
                .collect();
            format!("{{ {} }}", members.join(" , "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(reversed).collect();
            format!("[{}]", items.join(", "))
        }
        scalar => scalar.to_string(),
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64), key in "[A-Za-z0-9+/=]{0,48}") {
        let _ = verify(&bytes, &key);
        let _ = verify(&bytes, &KEY.1);
    }

    #[test]
    fn a_sealed_report_verifies_in_any_layout(report in report()) {
        let (key, public) = &*KEY;
        let sealed = seal(report.clone(), key);
        let bytes = canonical_bytes(&report);
        prop_assert_eq!(canonical_bytes(&sealed), bytes.clone());
        let value = Value::Object(sealed);
        for text in [value.to_string(), serde_json::to_string_pretty(&value).unwrap(), reversed(&value)] {
            let verified = verify(text.as_bytes(), public);
            prop_assert!(verified.is_ok(), "{verified:?} for {text}");
            prop_assert_eq!(canonical_bytes(&verified.unwrap().report), bytes.clone());
        }
    }

    #[test]
    fn accepted_text_always_has_the_signed_content(report in report(), edits in edits()) {
        let (key, public) = &*KEY;
        let text = mutate(&Value::Object(seal(report.clone(), key)).to_string(), &edits);
        if let Ok(verified) = verify(text.as_bytes(), public) {
            prop_assert_eq!(canonical_bytes(&verified.report), canonical_bytes(&report), "{}", text);
        }
    }
}
