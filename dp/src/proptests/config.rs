//! `licsync-dp.toml` ([`DpConfig::parse`]): no text panics the loader or its error
//! description, and any valid configuration written out as TOML loads back as itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::telemetry::LogFormat;
use proptest::prelude::*;

use super::{cases, edits, mutate};
use crate::config::DpConfig;

fn duration() -> impl Strategy<Value = HumanDuration> {
    prop_oneof![1u64..100_000, 1u64..1_000_000_000_000]
        .prop_map(|ms| HumanDuration(Duration::from_millis(ms)))
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
    "[a-z/._ -]{1,12}|\\PC{1,8}|[\"'\\\\#=\\[\\]\n\t\u{0}-\u{1f}\u{7f}]{1,4}"
}

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof!["\\*", "[a-z0-9_-]{1,6}"], 1..5).prop_map(|s| s.join("."))
}

fn config() -> impl Strategy<Value = DpConfig> {
    (
        (
            text(),
            text(),
            prop::option::of(text()),
            prop::collection::vec(text(), 0..3),
        ),
        (prop::collection::vec(duration(), 10), any::<[bool; 2]>()),
        (addr(), prop::option::of(addr())),
        (
            prop::collection::vec(pattern(), 1..4),
            prop::collection::vec(pattern(), 0..3),
        ),
        (
            prop::sample::select(&["info", "debug", "warn,licsync_dp=trace", "error"][..]),
            any::<bool>(),
            prop::sample::subsequence(
                &[
                    "https://cp1.example.com:8005",
                    "https://10.0.0.2:8005",
                    "https://[::1]:9005",
                ][..],
                0..=3,
            ),
        ),
    )
        .prop_map(
            |(paths, (d, flags), (local, statsd), (patterns, exclude), (level, json, servers))| {
                let mut c = DpConfig {
                    data_dir: PathBuf::from(paths.0),
                    registration_file: PathBuf::from(paths.1),
                    ..DpConfig::default()
                };
                c.license.output_path = paths.2.map(PathBuf::from);
                c.license.reload_command = paths.3;
                if c.license
                    .reload_command
                    .first()
                    .is_some_and(|p| p.trim().is_empty())
                {
                    c.license.reload_command[0] = "/bin/true".into();
                }
                c.license.reload_timeout = d[0];
                c.license.follow_control_plane_keys = flags[0];
                c.sync.heartbeat_interval = d[1];
                c.sync.backoff_initial = d[2].min(d[3]);
                c.sync.backoff_max = d[2].max(d[3]);
                c.sync.keepalive_interval = d[4];
                c.sync.keepalive_timeout = d[5];
                c.sync.connect_timeout = d[6];
                c.sync.registration_check_interval = d[7];
                c.sync.rotate_certificate = flags[1];
                c.sync.servers = servers.into_iter().map(str::to_owned).collect();
                c.usage.flush_interval = d[8];
                c.usage.report_interval = d[9];
                c.local.listen = local;
                c.usage.statsd_listen = statsd;
                c.usage.statsd_patterns = patterns;
                c.usage.statsd_exclude = exclude;
                c.log.level = level.to_owned();
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
        &["[license]", "[sync]", "[usage]", "[log]", "[local]"],
        &[
            "data_dir",
            "listen",
            "backoff_max",
            "backoff_initial",
            "statsd_patterns",
            "trusted_keys",
            "reload_command",
            "level",
            "format",
            "output_path",
            "servers",
        ],
        &[
            "[\"kong.*.count\", \"\"]",
            "[\"\"]",
            "[\"https://cp1:8005\", \"https://cp1:8005\"]",
        ],
    )
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_written_config_loads_back_as_itself(config in config()) {
        let text = toml::to_string(&config).unwrap();
        let loaded = DpConfig::parse(&text, Path::new("dp.toml"));
        prop_assert!(loaded.is_ok(), "{:?}\n{}", loaded.as_ref().err().map(ToString::to_string), text);
        prop_assert_eq!(loaded.unwrap(), config);
    }

    #[test]
    fn arbitrary_toml_never_panics(text in toml_text()) {
        let _ = DpConfig::parse(&text, Path::new("dp.toml")).map_err(|e| e.to_string());
    }

    #[test]
    fn mutated_valid_config_never_panics(config in config(), edits in edits()) {
        let text = mutate(&toml::to_string(&config).unwrap(), &edits);
        let _ = DpConfig::parse(&text, Path::new("dp.toml")).map_err(|e| e.to_string());
    }
}
