//! The registration file loader ([`RegistrationFile::parse`]): no text panics it, and what
//! `save` writes — whatever the names, times and URL hold — loads back as the same file.
//!
//! Fewer cases than elsewhere: each accepted file has its certificate and key parsed and
//! checked against each other.

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use licsync_common::license::SigningKey;
use licsync_common::pki::{self, CertificateAuthority};
use proptest::prelude::*;

use super::{cases, edits, mutate};
use crate::registration::RegistrationFile;

/// Valid license-signing public keys to list as trusted.
static KEYS: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..3)
        .map(|_| SigningKey::generate().unwrap().0.public_key_base64())
        .collect()
});

static SAMPLE: LazyLock<RegistrationFile> = LazyLock::new(|| {
    let (ca, _) = CertificateAuthority::generate("test CA", Duration::from_secs(3600)).unwrap();
    let (key_pem, csr) = pki::new_key_and_csr("edge-1").unwrap();
    let id = "3f0c2a9e-8d4b-4f6a-9c1e-2b7d5a8e0f13";
    let issued = ca
        .sign_dataplane(&csr, id, Duration::from_secs(3600))
        .unwrap();
    RegistrationFile {
        dataplane_id: id.into(),
        dataplane_name: "edge-1".into(),
        cluster_url: "https://cp.example.com:8005".into(),
        ca_certificate: ca.cert_pem().to_owned(),
        certificate: issued.cert_pem,
        private_key: key_pem,
        trusted_license_keys: vec!["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".into()],
        registered_at: "2026-01-01T00:00:00Z".into(),
        renewed_at: None,
    }
});

/// Strings YAML writers get wrong: reserved words, indicators, numbers, quotes, line breaks.
fn tricky() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}",
        prop::sample::select(
            &[
                "yes",
                "no",
                "on",
                "off",
                "~",
                "null",
                "Null",
                "NULL",
                "true",
                "False",
                "0x1f",
                "0o17",
                "1e3",
                ".inf",
                "-.nan",
                "012",
                "1_000",
                "2026-01-01",
                "12:30:00",
                "- a",
                "? a",
                ": a",
                "a: b",
                "a #b",
                "#a",
                "&a",
                "*a",
                "!a",
                "|",
                ">",
                "%a",
                "@a",
                "`a",
                "'a'",
                "\"a\"",
                "{a}",
                "[a]",
                " a",
                "a ",
                "\t",
                "a\nb",
                "a\r\nb",
                "\u{85}",
                "\u{2028}",
                "\u{feff}a",
                "\u{0}",
                "\u{7f}",
                "é",
                "<<",
            ][..]
        )
        .prop_map(str::to_owned),
        "[ -~\t\n\u{85}\u{a0}\u{2028}é]{0,10}",
    ]
}

fn file() -> impl Strategy<Value = RegistrationFile> {
    (
        tricky().prop_filter("an id must not be blank", |s| !s.trim().is_empty()),
        tricky(),
        prop::sample::select(&["cp.example.com", "127.0.0.1", "[::1]", "x-y.z"][..]),
        prop::option::of(1u16..),
        tricky(),
        prop::option::of(tricky()),
        prop::sample::subsequence(&[0usize, 1, 2][..], 0..=3),
    )
        .prop_map(|(id, name, host, port, registered, renewed, keys)| {
            let mut file = SAMPLE.clone();
            file.dataplane_id = id;
            file.dataplane_name = name;
            file.cluster_url = match port {
                Some(port) => format!("https://{host}:{port}"),
                None => format!("https://{host}"),
            };
            file.registered_at = registered;
            file.renewed_at = renewed;
            file.trusted_license_keys = keys.iter().map(|&i| KEYS[i].clone()).collect();
            file
        })
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
        let _ = RegistrationFile::parse(&text, Path::new("r.yaml"));
    }

    #[test]
    fn a_saved_file_loads_back_as_itself(file in file()) {
        let text = serde_yaml_ng::to_string(&file).unwrap();
        let loaded = RegistrationFile::parse(&text, Path::new("r.yaml"));
        prop_assert!(loaded.is_ok(), "{:?}\n{}", loaded.err(), text);
        prop_assert_eq!(loaded.unwrap(), file);
    }

    #[test]
    fn a_mutated_file_never_panics(edits in edits()) {
        let text = serde_yaml_ng::to_string(&*SAMPLE).unwrap();
        let _ = RegistrationFile::parse(&mutate(&text, &edits), Path::new("r.yaml"));
    }
}
