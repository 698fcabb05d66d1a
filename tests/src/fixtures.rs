//! License-signing keys and documents for tests.

use std::collections::BTreeMap;

use licsync_common::license::{SigningKey, sign_document};

/// A signing key and its public half in `licenses.trusted_keys` form.
pub struct Issuer {
    pub key: SigningKey,
    pub public: String,
}

impl Issuer {
    pub fn new() -> Self {
        let (key, _) = SigningKey::generate().expect("key generation");
        let public = key.public_key_base64();
        Self { key, public }
    }

    /// A valid license document for `customer` (distinct customers give distinct signatures).
    pub fn license(&self, customer: &str) -> String {
        self.license_with(customer, &[])
    }

    /// A license with extra or overriding payload fields.
    pub fn license_with(&self, customer: &str, extra: &[(&str, &str)]) -> String {
        let mut payload: BTreeMap<String, String> = [
            ("admin_seats", "1"),
            ("customer", customer),
            ("dataplanes", "10"),
            ("license_creation_date", "2026-01-01"),
            ("license_expiration_date", "2030-12-31"),
            ("license_key", "ASDASDASDASDASDASDASDASD_ASDASDA"),
            ("product_subscription", "Konnect Enterprise"),
            ("support_plan", "None"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            payload.insert((*k).to_owned(), (*v).to_owned());
        }
        sign_document(&payload, &self.key)
    }
}

impl Default for Issuer {
    fn default() -> Self {
        Self::new()
    }
}
