//! `deploy/monitoring`: the alerting rules and the Grafana dashboard name only metrics the
//! programs export, every alert tells the operator what to do, and the Helm chart's copy of the
//! rules is the same file. (`promtool check rules` and `promtool test rules`, run by `.ci/run`,
//! prove that the rules parse and fire when they should.)
//!
//! The agent's names are checked against `dp/src/metrics.rs`; the control plane's against the
//! list the operations issue fixed (SPEC §10), which its `/metrics` implements.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

/// The agent's metrics: the name Prometheus sees, and the name `dp/src/metrics.rs` registers
/// (the OpenMetrics encoder appends `_seconds` to gauges with a unit and `_total` to counters).
const DP_METRICS: &[(&str, &str)] = &[
    ("licsync_dp_connected", "licsync_dp_connected"),
    (
        "licsync_dp_last_sync_timestamp_seconds",
        "licsync_dp_last_sync_timestamp",
    ),
    ("licsync_dp_revision", "licsync_dp_revision"),
    (
        "licsync_dp_license_expiry_timestamp_seconds",
        "licsync_dp_license_expiry_timestamp",
    ),
    (
        "licsync_dp_certificate_expiry_timestamp_seconds",
        "licsync_dp_certificate_expiry_timestamp",
    ),
    (
        "licsync_dp_usage_requests_total",
        "licsync_dp_usage_requests",
    ),
    (
        "licsync_dp_usage_unreported_requests",
        "licsync_dp_usage_unreported_requests",
    ),
    ("licsync_dp_sync_server_info", "licsync_dp_sync_server"),
    (
        "licsync_dp_reload_failures_total",
        "licsync_dp_reload_failures",
    ),
];

/// The control plane's metrics as SPEC §10 (the operations issue) names them.
const CP_METRICS: &[&str] = &[
    "licsync_cp_dataplanes",
    "licsync_cp_dataplanes_by_sync_status",
    "licsync_cp_license_expiry_timestamp_seconds",
    "licsync_cp_license_entitled_dataplanes",
    "licsync_cp_sync_updates_total",
    "licsync_cp_admin_requests_total",
    "licsync_cp_usage_requests_total",
    "licsync_cp_certificate_expiry_timestamp_seconds",
    "licsync_cp_dataplane_certificate_expiry_earliest_timestamp_seconds",
    "licsync_cp_revision",
];

/// The control plane's histograms: queried through their `_bucket`, `_sum` and `_count` series.
const CP_HISTOGRAMS: &[&str] = &[
    "licsync_cp_sync_propagation_seconds",
    "licsync_cp_admin_request_duration_seconds",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `licsync_cp_*` / `licsync_dp_*` word in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["licsync_cp_", "licsync_dp_"] {
        for (start, _) in text.match_indices(prefix) {
            let preceded_by_word = text[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if preceded_by_word {
                continue;
            }
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

fn exported() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = DP_METRICS.iter().map(|(n, _)| n.to_string()).collect();
    names.extend(CP_METRICS.iter().map(|n| n.to_string()));
    for histogram in CP_HISTOGRAMS {
        names.insert(histogram.to_string());
        for suffix in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{histogram}{suffix}"));
        }
    }
    names
}

#[test]
fn the_agent_metric_list_matches_its_source_and_reference() {
    let source = read("dp/src/metrics.rs");
    let reference = read("docs/reference.md");
    for (exposed, registered) in DP_METRICS {
        assert!(
            source.contains(&format!("\"{registered}\"")),
            "dp/src/metrics.rs registers no {registered:?} (exposed as {exposed})"
        );
        assert!(
            reference.contains(&format!("`{exposed}`")),
            "docs/reference.md does not list {exposed}"
        );
    }
    // The names registered: string literals outside the doc table and the unit tests.
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let registered: BTreeSet<String> = code
        .match_indices("\"licsync_dp_")
        .filter_map(|(start, _)| {
            let name = &code[start + 1..];
            name.find('"').map(|end| name[..end].to_owned())
        })
        .filter(|name| !name.contains(' '))
        .collect();
    let listed: BTreeSet<String> = DP_METRICS.iter().map(|(_, r)| r.to_string()).collect();
    assert_eq!(
        registered, listed,
        "dp/src/metrics.rs and DP_METRICS differ: update the list (and the rules) together"
    );
}

#[test]
fn the_rules_and_the_dashboard_use_only_exported_metrics() {
    let exported = exported();
    for path in [
        "deploy/monitoring/licsync.rules.yml",
        "deploy/monitoring/licsync.rules.test.yml",
        "deploy/monitoring/licsync-dashboard.json",
    ] {
        let used = metric_names(&read(path));
        assert!(!used.is_empty(), "{path} names no licsync metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{path} uses unknown metrics {unknown:?}"
        );
    }
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_runbook() {
    let rules: Value =
        serde_yaml_ng::from_str(&read("deploy/monitoring/licsync.rules.yml")).unwrap();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["info", "warning", "critical"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            for annotation in ["summary", "description", "runbook"] {
                let text = rule["annotations"][annotation].as_str().unwrap_or_default();
                assert!(!text.trim().is_empty(), "{name}: no {annotation}");
            }
        }
    }
    assert!(alerts >= 10, "only {alerts} alerts");
}

#[test]
fn the_charts_rules_are_the_monitoring_rules() {
    let link = repo().join("deploy/helm/licsync/files/licsync.rules.yml");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "{} must link to deploy/monitoring/licsync.rules.yml (one source)",
        link.display()
    );
    assert_eq!(
        read("deploy/helm/licsync/files/licsync.rules.yml"),
        read("deploy/monitoring/licsync.rules.yml")
    );
}

#[test]
fn the_dashboard_queries_the_chosen_data_source() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/licsync-dashboard.json")).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 39);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "no datasource variable"
    );
    let mut targets = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            targets += 1;
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {}",
                panel["title"]
            );
        }
    }
    assert!(targets > 0);
}
