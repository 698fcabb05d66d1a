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

/// `storage.sled.cache_capacity` is read in bytes, and a value too small to be bytes (a unit
/// mistake) is refused naming the key.
#[test]
fn sled_cache_capacity_is_bytes_and_a_tiny_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("licsync-cp.toml");
    std::fs::write(&path, "[storage.sled]\ncache_capacity = 268435456\n").unwrap();
    let config: CpConfig = licsync_common::config::load(Some(&path)).unwrap();
    config.validate().unwrap();
    assert_eq!(config.storage.sled.cache_capacity, Some(256 << 20));
    std::fs::write(&path, "[storage.sled]\ncache_capacity = 256\n").unwrap();
    let config: CpConfig = licsync_common::config::load(Some(&path)).unwrap();
    let invalid = config.validate().unwrap_err().to_string();
    assert!(
        invalid.contains("storage.sled.cache_capacity") && invalid.contains("in bytes"),
        "{invalid}"
    );
    std::fs::write(&path, "[storage.sled]\ncache_size = 268435456\n").unwrap();
    let err = licsync_common::config::load::<CpConfig>(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cache_size"), "{err}");
}

/// A keepalive of zero would ping without pause or drop every data plane at once: refused,
/// naming the key.
#[test]
fn keepalive_durations_under_a_second_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("licsync-cp.toml");
    for key in ["keepalive_interval", "keepalive_timeout"] {
        std::fs::write(&path, format!("[cluster]\n{key} = \"0s\"\n")).unwrap();
        let config: CpConfig = licsync_common::config::load(Some(&path)).unwrap();
        let invalid = config.validate().unwrap_err().to_string();
        assert!(
            invalid.contains(&format!("cluster.{key}")) && invalid.contains("at least 1s"),
            "{invalid}"
        );
    }
}

/// Each PostgreSQL storage mistake is refused naming its key.
#[test]
fn postgres_storage_mistakes_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let cases = [
        (
            "backend = \"postgres\"\n",
            "storage.postgres.url",
            "required",
        ),
        (
            "backend = \"postgres\"\n[storage.postgres]\nurl = \"mysql://db/licsync\"\n",
            "storage.postgres.url",
            "postgres://",
        ),
        (
            "backend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://u@db/licsync\"\n",
            "storage.encryption_key_file",
            "storage keygen",
        ),
        (
            "[storage.postgres]\npool_size = 0\n",
            "storage.postgres.pool_size",
            "between 1 and 1000",
        ),
    ];
    for (storage, key, reason) in cases {
        let path = dir.path().join("licsync-cp.toml");
        std::fs::write(&path, format!("[storage]\n{storage}")).unwrap();
        let config: CpConfig = licsync_common::config::load(Some(&path)).unwrap();
        let invalid = config.validate().unwrap_err().to_string();
        assert!(
            invalid.contains(key) && invalid.contains(reason),
            "{invalid}"
        );
    }
    let mut config = CpConfig::default();
    config.storage.postgres.password_file = Some(empty.clone());
    let invalid = config.storage.postgres.password().unwrap_err().to_string();
    assert!(
        invalid.contains("storage.postgres.password_file") && invalid.contains("is empty"),
        "{invalid}"
    );
    config.storage.postgres.password_file = Some(dir.path().join("missing"));
    let invalid = config.storage.postgres.password().unwrap_err().to_string();
    assert!(invalid.contains("cannot read"), "{invalid}");
    config.storage.postgres.ca_file = Some(dir.path().join("missing-ca.crt"));
    let invalid = config.storage.postgres.ca_pem().unwrap_err().to_string();
    assert!(
        invalid.contains("storage.postgres.ca_file") && invalid.contains("cannot read"),
        "{invalid}"
    );
}

/// The storage key file is read with errors naming `storage.encryption_key_file`: missing,
/// exposed to others, or not a key; a raw 32-byte file and `storage keygen`'s base64 both load.
#[test]
fn storage_key_file_mistakes_name_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut config = CpConfig::default();
    let error = |config: &CpConfig| config.storage.storage_key().unwrap_err().to_string();
    let message = error(&config);
    assert!(
        message.contains("storage.encryption_key_file") && message.contains("keygen"),
        "{message}"
    );

    let missing = dir.path().join("missing.key");
    config.storage.encryption_key_file = Some(missing.clone());
    let message = error(&config);
    assert!(
        message.contains("storage.encryption_key_file")
            && message.contains(&missing.display().to_string()),
        "{message}"
    );

    let raw = dir.path().join("raw.key");
    std::fs::write(&raw, [9u8; 32]).unwrap();
    std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o640)).unwrap();
    config.storage.encryption_key_file = Some(raw.clone());
    let message = error(&config);
    assert!(
        message.contains("storage.encryption_key_file") && message.contains("chmod 600"),
        "{message}"
    );
    std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o400)).unwrap();
    config.storage.storage_key().expect("a raw key, mode 0400");

    let long = dir.path().join("long.key");
    std::fs::write(&long, "A".repeat(4096)).unwrap();
    std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o600)).unwrap();
    config.storage.encryption_key_file = Some(long);
    let message = error(&config);
    assert!(
        message.contains("storage.encryption_key_file") && message.contains("not a storage key"),
        "{message}"
    );

    let generated = dir.path().join("generated.key");
    licsync_cp::store::storage_key::StorageKey::generate_file(&generated).unwrap();
    config.storage.encryption_key_file = Some(generated);
    config
        .storage
        .storage_key()
        .expect("what storage keygen writes");
}
