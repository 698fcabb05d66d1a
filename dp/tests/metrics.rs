//! `GET /metrics` of the whole agent against the real control plane over real mTLS, read the
//! way Prometheus reads it (a text-format parser): the values follow what the agent does and
//! agree with `GET /status`, `GET /license` and `GET /usage`.

mod support;

use std::collections::HashMap;

use licsync_dp::registration::RegistrationFile;
use prometheus_parse::{Scrape, Value};
use serde_json::Value as Json;
use support::agent::{self, Agent};
use support::usage_agent::{LocalApi, free_port};
use support::{ControlPlaneBuilder, Enroll, Issuer, eventually};

/// One scrape: every sample by name (none of ours has labels).
struct Metrics {
    values: HashMap<String, f64>,
    /// The `# HELP` texts by metric family.
    help: HashMap<String, String>,
}

impl Metrics {
    fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    fn value(&self, name: &str) -> f64 {
        self.get(name)
            .unwrap_or_else(|| panic!("{name} is missing from {:?}", self.values))
    }
}

async fn scrape(api: &LocalApi) -> Metrics {
    let response = reqwest::get(format!("{}/metrics", api.base)).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        licsync_dp::metrics::CONTENT_TYPE
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap();
    let values = scrape
        .samples
        .into_iter()
        .map(|sample| {
            let value = match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                other => panic!("{}: unexpected {other:?}", sample.metric),
            };
            (sample.metric, value)
        })
        .collect();
    Metrics {
        values,
        help: scrape.docs,
    }
}

/// Scrapes until `ready` holds.
async fn scrape_when(api: &LocalApi, what: &str, ready: impl Fn(&Metrics) -> bool) -> Metrics {
    eventually(what, || async {
        let metrics = scrape(api).await;
        ready(&metrics).then_some(metrics)
    })
    .await
}

/// The end of `date` (`YYYY-MM-DD`), UTC, as unix seconds.
fn end_of(date: &str) -> f64 {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(date, format).unwrap();
    (day.midnight().assume_utc().unix_timestamp() + 86_400) as f64
}

#[tokio::test]
async fn metrics_follow_connection_license_usage_and_reload_failures() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    let real = cp.register(&dir.path().join("dp")).await;
    // The agent starts on the same registration pointing at a port nobody listens on, so it
    // is reliably not connected; the real file copied into place then connects it.
    let path = dir.path().join("agent/registration.yaml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RegistrationFile {
        cluster_url: format!("https://127.0.0.1:{}", free_port()),
        ..real.clone()
    }
    .save(&path)
    .unwrap();
    let mut config = agent::config(&dir.path().join("agent"), &path);
    config.license.reload_command = vec!["/bin/false".into()];
    let agent = Agent::start(config).await;

    let before = scrape(&agent.api).await;
    assert_eq!(before.value("licsync_dp_connected"), 0.0);
    assert_eq!(before.value("licsync_dp_last_sync_timestamp_seconds"), 0.0);
    assert_eq!(before.value("licsync_dp_revision"), 0.0);
    assert_eq!(
        before.get("licsync_dp_license_expiry_timestamp_seconds"),
        None
    );
    assert_eq!(before.value("licsync_dp_usage_requests_total"), 0.0);
    assert_eq!(before.value("licsync_dp_usage_unreported_requests"), 0.0);
    assert_eq!(before.value("licsync_dp_reload_failures_total"), 0.0);
    let (_, status) = agent.api.get("/status").await;
    assert_eq!(
        before.value("licsync_dp_certificate_expiry_timestamp_seconds"),
        status["cert_expires_at"].as_f64().unwrap(),
        "{status}"
    );
    for family in [
        "licsync_dp_connected",
        "licsync_dp_revision",
        "licsync_dp_usage_requests",
        "licsync_dp_reload_failures",
    ] {
        assert!(
            before.help.get(family).is_some_and(|h| !h.is_empty()),
            "{family} has HELP text"
        );
    }

    std::fs::copy(dir.path().join("dp/registration.yaml"), &path).unwrap();
    scrape_when(&agent.api, "licsync_dp_connected 1", |m| {
        m.get("licsync_dp_connected") == Some(1.0)
    })
    .await;

    let document = issuer.license_expiring("Metrics Corp", "2031-03-15");
    cp.create_license(&document).await;
    let revision = cp.revision().await;
    let after = scrape_when(&agent.api, "the license's revision", |m| {
        m.get("licsync_dp_revision") == Some(revision as f64)
    })
    .await;
    let (_, status) = agent.api.get("/status").await;
    let (_, license) = agent.api.get("/license").await;
    assert_eq!(status["revision"], revision, "{status}");
    assert_eq!(
        after.value("licsync_dp_last_sync_timestamp_seconds"),
        status["last_sync"].as_f64().unwrap(),
        "{status}"
    );
    let expiration = license["license"]["license"]["payload"]["license_expiration_date"]
        .as_str()
        .unwrap_or_else(|| panic!("{license}"));
    assert_eq!(expiration, "2031-03-15");
    assert_eq!(
        after.value("licsync_dp_license_expiry_timestamp_seconds"),
        end_of(expiration)
    );
    // The license file changed, so the reload command ran, and `/bin/false` fails.
    scrape_when(&agent.api, "a reload failure", |m| {
        m.get("licsync_dp_reload_failures_total")
            .is_some_and(|v| v >= 1.0)
    })
    .await;

    let counted = scrape(&agent.api)
        .await
        .value("licsync_dp_usage_requests_total");
    agent.api.count(5).await;
    let metrics = scrape(&agent.api).await;
    assert_eq!(
        metrics.value("licsync_dp_usage_requests_total"),
        counted + 5.0
    );
    let usage: Json = agent.api.usage().await;
    assert_eq!(
        support::usage_agent::total_count(&usage) as f64,
        counted + 5.0,
        "{usage}"
    );
    assert!(
        metrics.value("licsync_dp_usage_unreported_requests") <= counted + 5.0,
        "unreported is part of what was counted"
    );

    agent.stop().await;
    cp.shutdown().await;
}
