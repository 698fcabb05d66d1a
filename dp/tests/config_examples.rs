//! `deploy/config/licsync-dp.toml` documents every key with its default: it must load, and what
//! it says must be what the agent does without a file.

use std::path::Path;

use licsync_dp::config::DpConfig;

#[test]
fn documented_example_config_loads_and_matches_the_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/licsync-dp.toml");
    let example = DpConfig::load(Some(&path)).unwrap();
    assert_eq!(example, DpConfig::default());
}
