//! [`crate::license`]: a signed payload parses back to itself in any JSON layout, an edited one
//! never verifies, and no document — arbitrary or a mutated genuine one — makes parsing panic.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use proptest::prelude::*;
use serde_json::Value;
use time::{Date, Duration};

use super::{cases, edits, mutate};
use crate::license::{License, LicenseError, SigningKey, TrustedKeys, sign_document};

static KEY: LazyLock<(SigningKey, TrustedKeys)> = LazyLock::new(|| {
    let (key, _) = SigningKey::generate().expect("key generation");
    let trusted = TrustedKeys::parse(&[key.public_key_base64()]).expect("own key");
    (key, trusted)
});

fn date(day: i64) -> String {
    let base = Date::from_calendar_date(2000, time::Month::January, 1).unwrap();
    (base + Duration::days(day)).to_string()
}

/// A payload with every required field valid, plus arbitrary extra string fields.
fn payload() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        prop::collection::btree_map("\\PC{0,10}", "\\PC{0,16}", 0..6),
        "\\PC{0,24}",
        "[ -~]{0,40}",
        0i64..20_000,
        0i64..20_000,
        prop::option::of("[0-9]{1,6}"),
    )
        .prop_map(|(mut extra, customer, key, start, length, dataplanes)| {
            extra.remove("dataplanes");
            extra.insert("customer".into(), customer);
            extra.insert("license_key".into(), key);
            extra.insert("license_creation_date".into(), date(start));
            extra.insert("license_expiration_date".into(), date(start + length));
            if let Some(n) = dataplanes {
                extra.insert("dataplanes".into(), n);
            }
            extra
        })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn arbitrary_documents_never_panic(text in "\\PC{0,64}") {
        let _ = License::parse(&text);
    }

    #[test]
    fn a_signed_payload_parses_back_to_itself_in_any_layout(payload in payload()) {
        let (key, trusted) = &*KEY;
        let document = sign_document(&payload, key);
        let license = License::parse_verified(&document, trusted).unwrap();
        prop_assert_eq!(license.payload(), &payload);
        prop_assert_eq!(license.customer(), payload["customer"].as_str());
        prop_assert_eq!(
            license.dataplanes(),
            payload.get("dataplanes").map(|n| n.parse::<u64>().unwrap())
        );
        // Whitespace and member order are not part of what is signed.
        let value: Value = serde_json::from_str(&document).unwrap();
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let again = License::parse_verified(&pretty, trusted).unwrap();
        prop_assert_eq!(again, license);
    }

    #[test]
    fn an_edited_payload_never_verifies(payload in payload(), field in 0usize..16, extra in "\\PC{1,8}") {
        let (key, trusted) = &*KEY;
        let mut value: Value = serde_json::from_str(&sign_document(&payload, key)).unwrap();
        let members = value["license"]["payload"].as_object_mut().unwrap();
        let name = members.keys().nth(field % members.len()).unwrap().clone();
        let edited = format!("{}{extra}", members[&name].as_str().unwrap());
        members.insert(name, Value::String(edited));
        match License::parse_verified(&value.to_string(), trusted) {
            // A required field may now fail its own check first; it must never verify.
            Err(LicenseError::ValidationFailed { .. } | LicenseError::BadDate { .. } | LicenseError::BadDataplanes(_)) => {}
            other => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn a_mutated_document_never_panics_nor_verifies_another_payload(payload in payload(), edits in edits()) {
        let (key, trusted) = &*KEY;
        let document = mutate(&sign_document(&payload, key), &edits);
        if let Ok(license) = License::parse_verified(&document, trusted) {
            prop_assert_eq!(license.payload(), &payload, "{}", document);
        }
    }
}
