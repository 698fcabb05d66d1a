//! Property tests for `licsync-cp.toml` ([`crate::config::CpConfig`]): no text panics the
//! loader, its error description or [`CpConfig::validate`], and any valid configuration
//! written out as TOML loads back as itself.
//!
//! 256 cases per property, or `PROPTEST_CASES`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use licsync_common::config::parse;
use licsync_common::duration::HumanDuration;
use licsync_common::telemetry::LogFormat;
use proptest::prelude::*;

use crate::config::{CpConfig, StorageBackend};

fn cases() -> ProptestConfig {
    licsync_common::testing::cases(256)
}

fn duration() -> impl Strategy<Value = HumanDuration> {
    (1_000u64..1_000_000_000_000).prop_map(|ms| HumanDuration(Duration::from_millis(ms)))
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ];
    (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// Path-like and awkward strings (TOML must quote and escape them).
fn text() -> impl Strategy<Value = String> {
    "[a-z0-9/._:-]{1,12}|\\PC{1,8}|[\"'\\\\#=\\[\\]\n\t\u{0}-\u{1f}\u{7f}]{1,4}"
}

fn config() -> impl Strategy<Value = CpConfig> {
    (
        (text(), addr(), addr(), prop::option::of(text()), addr()),
        prop::collection::vec(text(), 1..4),
        prop::collection::vec(duration(), 6),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((dir, admin, cluster, url, status), names, d, (enforce, memory, json))| {
                let mut c = CpConfig {
                    data_dir: PathBuf::from(dir),
                    ..CpConfig::default()
                };
                c.admin.listen = admin;
                c.cluster.listen = cluster;
                c.status.listen = status;
                c.cluster.advertised_url = url.map(|u| format!("https://{u}"));
                c.cluster.server_names = names;
                c.cluster.keepalive_interval = d[0];
                c.cluster.keepalive_timeout = d[1];
                c.cluster.dataplane_purge_delay = d[2];
                c.pki.dataplane_cert_ttl = d[3];
                c.pki.server_cert_ttl = d[4];
                c.pki.ca_ttl = d[5];
                c.licenses.enforce_dataplane_limit = enforce;
                c.storage.backend = if memory {
                    StorageBackend::Memory
                } else {
                    StorageBackend::Sled
                };
                c.log.format = if json {
                    LogFormat::Json
                } else {
                    LogFormat::Text
                };
                c
            },
        )
}

/// TOML-ish lines: known and unknown keys and tables, values of every kind, multi-byte text.
fn toml_text() -> impl Strategy<Value = String> {
    licsync_common::testing::toml_text(
        &[
            "[admin]",
            "[cluster]",
            "[pki]",
            "[licenses]",
            "[storage]",
            "[status]",
        ],
        &[
            "data_dir",
            "listen",
            "server_names",
            "advertised_url",
            "ca_ttl",
            "dataplane_purge_delay",
            "trusted_keys",
            "backend",
        ],
        &["[]", "\"memory\""],
    )
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn a_written_config_loads_back_as_itself(config in config()) {
        let text = toml::to_string(&config).unwrap();
        let loaded = parse::<CpConfig>(&text, Path::new("cp.toml"));
        prop_assert!(loaded.is_ok(), "{:?}\n{}", loaded.as_ref().err().map(ToString::to_string), text);
        let loaded = loaded.unwrap();
        prop_assert!(loaded.validate().is_ok());
        prop_assert_eq!(loaded, config);
    }

    #[test]
    fn arbitrary_toml_never_panics(text in toml_text()) {
        if let Ok(config) = parse::<CpConfig>(&text, Path::new("cp.toml")) {
            let _ = config.validate();
            let _ = config.cluster.cluster_url();
        }
    }
}
