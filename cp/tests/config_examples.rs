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
