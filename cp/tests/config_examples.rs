//! `deploy/config/licsync-cp.toml` documents every key with its default: it must load, and what
//! it says must be what the program does without a file.

use std::path::Path;

use licsync_cp::config::CpConfig;

#[test]
fn documented_example_config_loads_and_matches_the_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/licsync-cp.toml");
    let example: CpConfig = licsync_common::config::load(Some(&path)).unwrap();
    example.validate().unwrap();
    assert_eq!(example, CpConfig::default());
}

#[test]
fn a_bad_trusted_key_names_its_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("licsync-cp.toml");
    std::fs::write(
        &path,
        "[licenses]\ntrusted_keys = [\n  \"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\",\n  \"keys/license-signing.pub\",\n]\n",
    )
    .unwrap();
    let err = licsync_common::config::load::<CpConfig>(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(
        err.contains("'keys/license-signing.pub' is not an Ed25519 public key"),
        "{err}"
    );
}
