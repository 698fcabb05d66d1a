//! `systemctl reload licsync-cp` / `licsync-dp` (SIGHUP): a new trusted key and log level take
//! effect without a restart (the control plane keeps every stream; the agent reconnects so the
//! licenses it refused are offered again); a broken file changes nothing; settings bound at
//! start are named as waiting for a restart.

use std::time::Duration;

use licsync_testkit::{Event, Issuer};
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use licsync_tests::process::Process;
use nix::sys::signal::{Signal, kill};
use reqwest::{Method, StatusCode};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// Rewrites the control plane's configuration file with `change` applied.
fn edit_config(cp: &Cp, change: impl FnOnce(&mut toml::Table)) {
    edit_file(&cp.dir.join("licsync-cp.toml"), change);
}

fn edit_file(path: &std::path::Path, change: impl FnOnce(&mut toml::Table)) {
    let mut config: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    change(&mut config);
    std::fs::write(path, toml::to_string(&config).unwrap()).unwrap();
}

/// Sends SIGHUP to `process` and waits for `event` logged after `mark`.
async fn hup_then(process: &Process, mark: usize, event: &str) -> Event {
    kill(process.pid(), Signal::SIGHUP).unwrap();
    process
        .logs
        .wait_for_event_since(mark, event, WAIT, |_| true)
        .await
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
    let reloaded = hup_then(&cp.process, mark, "config.reloaded").await;
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
    hup_then(&cp.process, mark, "config.reload_failed").await;
    std::fs::write(cp.dir.join("licsync-cp.toml"), good).unwrap();
    edit_config(&cp, |config| {
        section(config, "admin").insert("max_connections".into(), 100.into());
    });
    let waiting = hup_then(&cp.process, mark, "config.restart_needed").await;
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

#[tokio::test]
async fn sighup_gives_the_agent_new_license_keys_and_the_refused_license_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let old = Issuer::new();
    let new = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&old.public, &new.public], "").await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "edge").await;
    let dp = Dp::start(
        &dp_dir,
        &format!("[license]\ntrusted_keys = [\"{}\"]\n", old.public),
    )
    .await;
    let document = new.license("Rotated");
    cp.create_license(&document).await;
    dp.process
        .logs
        .wait_for_event("license.rejected", WAIT, |_| true)
        .await;
    assert_eq!(
        dp.license(),
        None,
        "signed by a key the agent does not trust yet"
    );

    let config = dp_dir.join("licsync-dp.toml");
    let mark = dp.process.logs.mark();
    edit_file(&config, |config| {
        section(config, "license").insert(
            "trusted_keys".into(),
            toml::Value::Array(vec![old.public.clone().into(), new.public.clone().into()]),
        );
        section(config, "sync").insert("heartbeat_interval".into(), "2s".into());
    });
    let reloaded = hup_then(&dp.process, mark, "config.reloaded").await;
    assert_eq!(
        reloaded.field("trusted_keys_changed"),
        Some("true"),
        "{reloaded:?}"
    );
    let waiting = dp
        .process
        .logs
        .wait_for_event_since(mark, "config.restart_needed", WAIT, |_| true)
        .await;
    assert!(
        waiting
            .field("keys")
            .is_some_and(|keys| keys.contains("sync")),
        "{waiting:?}"
    );
    dp.wait_for_license(Some(&document), WAIT).await;

    // A broken file changes nothing.
    std::fs::write(&config, "[license\n").unwrap();
    hup_then(&dp.process, mark, "config.reload_failed").await;
    assert_eq!(dp.license().as_deref(), Some(document.as_str()));
}
