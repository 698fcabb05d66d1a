//! License-signing keys and the documents they sign, for every test that needs a license.

use std::collections::BTreeMap;

use licsync_common::license::{SigningKey, sign_document};

/// A license-signing key and the documents it signs.
pub struct Issuer {
    pub key: SigningKey,
    /// The public key, as `licenses.trusted_keys` and `license.trusted_keys` take it.
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

    /// A valid license document for `customer` whose `license_expiration_date` is
    /// `expiration` (`YYYY-MM-DD`).
    pub fn license_expiring(&self, customer: &str, expiration: &str) -> String {
        self.license_with(customer, &[("license_expiration_date", expiration)])
    }

    /// A license with extra or overriding payload fields.
    pub fn license_with(&self, customer: &str, extra: &[(&str, &str)]) -> String {
        let mut payload = payload(customer);
        for (k, v) in extra {
            payload.insert((*k).to_owned(), (*v).to_owned());
        }
        self.sign(&payload)
    }

    /// `payload` signed by this key, as it stands (fields may be missing or odd).
    pub fn sign(&self, payload: &BTreeMap<String, String>) -> String {
        sign_document(payload, &self.key)
    }
}

impl Default for Issuer {
    fn default() -> Self {
        Self::new()
    }
}

/// The payload of a valid license for `customer`, as Kong issues them, in force until the
/// end of 2099.
pub fn payload(customer: &str) -> BTreeMap<String, String> {
    [
        ("admin_seats", "1"),
        ("customer", customer),
        ("dataplanes", "10"),
        ("license_creation_date", "2024-01-01"),
        ("license_expiration_date", "2099-12-31"),
        ("license_key", "ASDASDASDASDASDASDASDASD_ASDASDA"),
        ("product_subscription", "Konnect Enterprise"),
        ("support_plan", "None"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
