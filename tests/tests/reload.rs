//! `systemctl reload licsync-cp` (SIGHUP): a new trusted key and log level take effect without a
//! restart and without dropping a data plane's stream; a broken file changes nothing; settings
//! bound at start are named as waiting for a restart.

use std::time::Duration;

use licsync_testkit::Issuer;
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use nix::sys::signal::{Signal, kill};
use reqwest::{Method, StatusCode};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// Rewrites the control plane's configuration file with `change` applied.
fn edit_config(cp: &Cp, change: impl FnOnce(&mut toml::Table)) {
    let path = cp.dir.join("licsync-cp.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    change(&mut config);
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
}

fn section<'a>(config: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    config
        .entry(name)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap()
}

#[tokio::test]
async fn sighup_applies_trusted_keys_and_log_level_and_keeps_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let old = Issuer::new();
    let new = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&old.public], "").await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "edge").await;
    let dp = Dp::start(&dp_dir, "").await;
    cp.process
        .logs
        .wait_for_event("dataplane.connected", WAIT, |_| true)
        .await;
    let post = |document: String| {
        cp.call(
            Method::POST,
            "/licenses",
            Some(json!({"payload": document})),
        )
    };

    let (status, _) = post(new.license("Before")).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the new key is not trusted yet"
    );

    // Trust both keys (a key rotation) and log warnings only.
    let mark = cp.process.logs.mark();
    edit_config(&cp, |config| {
        section(config, "licenses").insert(
            "trusted_keys".into(),
            toml::Value::Array(vec![old.public.clone().into(), new.public.clone().into()]),
        );
        section(config, "log").insert("level".into(), "warn".into());
    });
    kill(cp.process.pid(), Signal::SIGHUP).unwrap();
    let reloaded = cp
        .process
        .logs
        .wait_for_event_since(mark, "config.reloaded", WAIT, |_| true)
        .await;
    assert_eq!(reloaded.field("trusted_keys"), Some("2"), "{reloaded:?}");
    assert_eq!(reloaded.field("trusted_keys_changed"), Some("true"));
    assert_eq!(reloaded.field("log.level"), Some("warn"));

    let mark = cp.process.logs.mark();
    let (status, body) = post(new.license("After")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = post(old.license("Old key")).await;
    assert_eq!(status, StatusCode::CREATED, "the old key is still trusted");
    // The level is warn now: the INFO lines of those writes are not logged.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cp.process.logs.since(mark, "license.created").is_empty(),
        "{}",
        cp.process.logs.text()
    );

    // A broken file changes nothing and says why; a changed listener waits for a restart.
    let good = std::fs::read_to_string(cp.dir.join("licsync-cp.toml")).unwrap();
    std::fs::write(cp.dir.join("licsync-cp.toml"), "[licenses\n").unwrap();
    kill(cp.process.pid(), Signal::SIGHUP).unwrap();
    cp.process
        .logs
        .wait_for_event_since(mark, "config.reload_failed", WAIT, |_| true)
        .await;
    std::fs::write(cp.dir.join("licsync-cp.toml"), good).unwrap();
    edit_config(&cp, |config| {
        section(config, "admin").insert("max_connections".into(), 100.into());
    });
    kill(cp.process.pid(), Signal::SIGHUP).unwrap();
    let waiting = cp
        .process
        .logs
        .wait_for_event_since(mark, "config.restart_needed", WAIT, |_| true)
        .await;
    assert!(
        waiting
            .field("keys")
            .is_some_and(|keys| keys.contains("admin")),
        "{waiting:?}"
    );
    let (status, _) = post(new.license("Still")).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the running configuration stayed in force"
    );

    // The data plane's stream was never dropped.
    assert!(cp.process.logs.named("dataplane.disconnected").is_empty());
    let (_, fleet) = cp.call(Method::GET, "/clustering/data-planes", None).await;
    assert_eq!(fleet["data"][0]["connected"], true, "{fleet}");
    drop(dp);
}
