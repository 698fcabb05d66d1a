//! Usage metering at a real control plane process: counts receipted over mTLS survive a SIGKILL
//! and are never counted twice; the signed report saved with `licsync-cp report` verifies
//! offline and stops verifying once edited; the license's data-plane entitlement is warned
//! about and, when asked, enforced; expiry is logged on Kong's schedule.

use std::time::Duration;

use licsync_common::proto::license_sync_client::LicenseSyncClient;
use licsync_common::proto::{UsageCount, UsageReceipt, UsageReport};
use licsync_testkit::{Issuer, eventually_within};
use licsync_tests::bench::control_plane::BenchCp;
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use licsync_tests::process::{binary, run};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tonic::transport::Channel;
use uuid::Uuid;

fn this_month() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}", today.year(), u8::from(today.month()))
}

fn report(epoch: &str, counts: &[(&str, u64)]) -> UsageReport {
    UsageReport {
        epoch: epoch.into(),
        counts: counts
            .iter()
            .map(|(bucket, request_count)| UsageCount {
                bucket: (*bucket).into(),
                request_count: *request_count,
            })
            .collect(),
    }
}

fn recorded(receipt: &UsageReceipt) -> Vec<(String, u64)> {
    receipt
        .recorded
        .iter()
        .map(|c| (c.bucket.clone(), c.request_count))
        .collect()
}

/// Sends `usage`, retrying while the control plane is (re)starting; the receipt.
async fn send(client: &mut LicenseSyncClient<Channel>, usage: UsageReport) -> UsageReceipt {
    eventually_within("ReportUsage to succeed", Duration::from_secs(30), || {
        let (mut client, usage) = (client.clone(), usage.clone());
        async move {
            match client.report_usage(usage).await {
                Ok(receipt) => Some(receipt.into_inner()),
                Err(status) => {
                    eprintln!("retrying ReportUsage: {status}");
                    None
                }
            }
        }
    })
    .await
}

async fn total_requests(cp: &Cp) -> u64 {
    let (status, body) = cp.call(Method::GET, "/license/report", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["total_requests"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipted_counts_survive_sigkill_and_are_never_counted_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let mut bench = BenchCp::new(cp).unwrap();
    let enrolled = bench.enrol(1).await.unwrap().remove(0);
    let mut client = enrolled
        .license_sync_client(&bench.cp.cluster_url)
        .await
        .unwrap();
    let month = this_month();
    let epoch = Uuid::new_v4().to_string();

    let receipt = send(&mut client, report(&epoch, &[(&month, 10)])).await;
    assert_eq!(recorded(&receipt), vec![(month.clone(), 10)]);
    let receipt = send(&mut client, report(&epoch, &[(&month, 25)])).await;
    assert_eq!(recorded(&receipt), vec![(month.clone(), 25)]);
    // SIGKILL right after the receipt: no shutdown path runs.
    bench.cp.kill();
    bench.cp.restart().await;
    assert_eq!(
        total_requests(&bench.cp).await,
        25,
        "a receipted count was lost"
    );

    // The retry of a report whose receipt was lost, and a reordered older one: no change.
    let receipt = send(&mut client, report(&epoch, &[(&month, 25)])).await;
    assert_eq!(recorded(&receipt), vec![(month.clone(), 25)]);
    let receipt = send(&mut client, report(&epoch, &[(&month, 12)])).await;
    assert_eq!(
        recorded(&receipt),
        vec![(month.clone(), 25)],
        "the receipt says what is held"
    );
    assert_eq!(total_requests(&bench.cp).await, 25);
    // The data plane's state was wiped: a new epoch adds.
    send(
        &mut client,
        report(&Uuid::new_v4().to_string(), &[(&month, 5)]),
    )
    .await;
    assert_eq!(total_requests(&bench.cp).await, 30);

    let (_, by) = bench
        .cp
        .call(Method::GET, "/license/report?by=dataplane", None)
        .await;
    assert_eq!(by["dataplanes"][0]["id"], enrolled.dataplane_id.as_str());
    assert_eq!(by["dataplanes"][0]["total_requests"], 30);
}

/// One bad month (a clock that read 1999, a bucket that is not a month, a count no gateway can
/// serve) no longer stops a report: the good buckets are stored and confirmed, the bad ones are
/// named with the reason, and the control plane's totals are exact, never saturated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_with_bad_buckets_stores_the_good_ones_and_names_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let bench = BenchCp::new(cp).unwrap();
    let enrolled = bench.enrol(1).await.unwrap().remove(0);
    let mut client = enrolled
        .license_sync_client(&bench.cp.cluster_url)
        .await
        .unwrap();
    let month = this_month();
    let epoch = Uuid::new_v4().to_string();

    let receipt = send(
        &mut client,
        report(
            &epoch,
            &[("1999-12", 4), (&month, 40), ("2026-13", 1), ("2101-01", 2)],
        ),
    )
    .await;
    assert_eq!(recorded(&receipt), vec![(month.clone(), 40)]);
    let refused: Vec<(&str, u64, &str)> = receipt
        .refused
        .iter()
        .map(|r| (r.bucket.as_str(), r.request_count, r.reason.as_str()))
        .collect();
    assert_eq!(
        refused,
        vec![
            (
                "1999-12",
                4,
                "1999-12 is outside the months usage is counted in (2000-01 to 2100-12): it comes from a clock that was wrong"
            ),
            (
                "2026-13",
                1,
                "'2026-13' is not a month like 2026-11; expected YYYY-MM (month 01-12, year 2000-2100)"
            ),
            (
                "2101-01",
                2,
                "2101-01 is outside the months usage is counted in (2000-01 to 2100-12): it comes from a clock that was wrong"
            ),
        ]
    );
    assert_eq!(total_requests(&bench.cp).await, 40);

    // Counts at the bound are stored exactly and add up exactly; above it, refused.
    const BOUND: u64 = 1_000_000_000_000_000;
    let receipt = send(
        &mut client,
        report(&Uuid::new_v4().to_string(), &[(&month, BOUND)]),
    )
    .await;
    assert_eq!(recorded(&receipt), vec![(month.clone(), BOUND)]);
    let receipt = send(&mut client, report(&epoch, &[(&month, u64::MAX)])).await;
    assert!(receipt.recorded.is_empty(), "{receipt:?}");
    assert_eq!(
        receipt.refused[0].reason,
        format!(
            "18446744073709551615 requests in {month} is more than the bound of 1000000000000000 a month per data plane and epoch"
        )
    );
    let receipt = send(&mut client, report(&epoch, &[(&month, BOUND + 1)])).await;
    assert_eq!(receipt.refused.len(), 1, "{receipt:?}");
    assert_eq!(
        total_requests(&bench.cp).await,
        BOUND + 40,
        "exact: neither saturated nor raised by the refused counts"
    );

    // Only a report that cannot be filed at all is refused whole.
    let refused = client
        .report_usage(report("not-a-uuid", &[(&month, 50)]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("epoch"), "{}", refused.message());
    assert_eq!(total_requests(&bench.cp).await, BOUND + 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_command_saves_a_report_that_verifies_until_it_is_edited() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    cp.create_license(&issuer.license("Report Customer")).await;
    let bench = BenchCp::new(cp).unwrap();
    let enrolled = bench.enrol(1).await.unwrap().remove(0);
    let mut client = enrolled
        .license_sync_client(&bench.cp.cluster_url)
        .await
        .unwrap();
    send(
        &mut client,
        report(&Uuid::new_v4().to_string(), &[(&this_month(), 4321)]),
    )
    .await;
    let cp = &bench.cp;
    let cp_binary = binary("licsync-cp");
    let file = tmp.path().join("report.json");
    let file_arg = file.to_str().unwrap();
    let (code, stdout, stderr) = run(
        &cp_binary,
        &[
            "report",
            "--server",
            &cp.admin_url,
            "--token",
            &cp.token,
            "--output",
            file_arg,
            "--by-dataplane",
        ],
        tmp.path(),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Saved the usage report"), "{stdout}");
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["total_requests"], 4321);
    assert_eq!(
        saved["license"]["license_key"],
        "ASDASDASDASDASDASDASDASD_ASDASDA"
    );
    assert_eq!(saved["dataplanes"].as_array().unwrap().len(), 1);

    let (_, key) = cp.call(Method::GET, "/license/report/key", None).await;
    let key = key["public_key"].as_str().unwrap().to_owned();
    let published = std::fs::read_to_string(cp.dir.join("data/pki/report.pub")).unwrap();
    assert_eq!(published, key, "report.pub holds the served key");
    let verify = |path: &str, key: &str| {
        run(
            &cp_binary,
            &["report", "verify", "--file", path, "--key", key],
            tmp.path(),
        )
    };

    let (code, stdout, stderr) = verify(file_arg, &key);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("verified"), "{stdout}");

    // One count changed: the checksum no longer matches.
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replace("4321", "4320");
    assert_ne!(edited, text);
    let edited_path = tmp.path().join("edited.json");
    std::fs::write(&edited_path, edited).unwrap();
    let (code, _, stderr) = verify(edited_path.to_str().unwrap(), &key);
    assert_ne!(code, 0);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");

    // Another control plane's key: the signature does not verify.
    let other = licsync_common::license::SigningKey::generate().unwrap().0;
    let (code, _, stderr) = verify(file_arg, &other.public_key_base64());
    assert_ne!(code, 0);
    assert!(stderr.contains("signature invalid"), "{stderr}");

    // Not a report at all.
    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, "{\"total_requests\": 1}").unwrap();
    let (code, _, stderr) = verify(junk.to_str().unwrap(), &key);
    assert_ne!(code, 0);
    assert!(stderr.contains("malformed report"), "{stderr}");

    // Without a valid token nothing is saved.
    let refused = tmp.path().join("refused.json");
    let (code, stdout, stderr) = run(
        &cp_binary,
        &[
            "report",
            "--server",
            &cp.admin_url,
            "--token",
            "not-a-token",
            "--output",
            refused.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("401"), "{stdout}{stderr}");
    assert!(!refused.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_licensed_dataplanes_is_warned_and_refused_only_when_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let mut cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    cp.create_license(&issuer.license_with("Small Customer", &[("dataplanes", "1")]))
        .await;
    Dp::register_ok(&cp, &tmp.path().join("dp1"), "edge-1").await;
    let (_, body) = cp.call(Method::GET, "/license/report", None).await;
    assert_eq!(body["entitlement_exceeded"], false);
    assert!(cp.process.logs.named("entitlement.exceeded").is_empty());

    // Not enforced (the default): the second registers, with a warning.
    Dp::register_ok(&cp, &tmp.path().join("dp2"), "edge-2").await;
    let warning = cp
        .process
        .logs
        .wait_for_event("entitlement.exceeded", Duration::from_secs(20), |_| true)
        .await;
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["registered"], 2);
    assert_eq!(warning["entitled"], 1);
    let (_, body) = cp.call(Method::GET, "/license/report", None).await;
    assert_eq!(body["entitlement_exceeded"], true);

    // Enforced: warned at start, and a third registration is refused without using its token.
    cp.restart_with("[licenses]\nenforce_dataplane_limit = true\n")
        .await;
    cp.process
        .logs
        .wait_for_event("entitlement.exceeded", Duration::from_secs(20), |_| true)
        .await;
    let token = cp.registration_token(1, "1h").await;
    let (code, stdout, stderr) = Dp::register(&cp, &tmp.path().join("dp3"), &token, "edge-3");
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains("entitles 1 data planes and 2 are registered")
            && stderr.contains("enforce_dataplane_limit"),
        "{stderr}"
    );
    let (_, tokens) = cp.call(Method::GET, "/registration-tokens", None).await;
    let uses: Vec<u64> = tokens["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["uses"].as_u64().unwrap())
        .collect();
    assert!(
        uses.contains(&0),
        "the refused registration used its token: {tokens}"
    );
    let (_, fleet) = cp.call(Method::GET, "/clustering/data-planes", None).await;
    assert_eq!(fleet["data"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_license_is_logged_as_critical_and_still_served() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let expired = issuer.license_with(
        "Late Customer",
        &[
            ("license_creation_date", "2020-01-01"),
            ("license_expiration_date", "2021-01-31"),
        ],
    );
    cp.create_license(&expired).await;
    let line = cp
        .process
        .logs
        .wait_for_event("license.expired", Duration::from_secs(20), |_| true)
        .await;
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["severity"], "critical");
    assert_eq!(line["license_expiration_date"], "2021-01-31");
    let (_, body) = cp.call(Method::GET, "/license/report", None).await;
    assert_eq!(body["license"]["license_expiration_date"], "2021-01-31");
    let (_, listed) = cp.call(Method::GET, "/licenses", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}
