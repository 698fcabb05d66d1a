//! `usage`: N registered data planes, each on its own mTLS connection with its own client
//! certificate, send `LicenseSync.ReportUsage` one after the other as fast as the control plane
//! answers, for a fixed time; then the control plane's `GET /license/report` must hold exactly
//! what the receipts say.
//!
//! Each data plane reports a cumulative count for the current UTC month under its own epoch,
//! adding 1..=97 requests per report; every `--retry-every`-th report repeats the previous one
//! unchanged (a retry after a lost receipt), which must not add. A receipt is only sent once the
//! count is durable (group commit: one flush for every report waiting), so the rate measured is
//! the durable ingest rate.
//!
//! Exactness: with no failed call, the control plane's `total_requests` must equal the sum of
//! the data planes' last receipted counts, and `?by=dataplane` each data plane's. (A call that
//! failed may still have been stored; the total must then lie between the receipted and the
//! sent sums, which is reported too.)

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use licsync_common::proto::license_sync_client::LicenseSyncClient;
use licsync_common::proto::{UsageCount, UsageReport};
use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::transport::Channel;
use uuid::Uuid;

use super::stats::{Summary, ms, round3, secs};
use super::table::{Table, verdict};
use super::{BenchEnv, procfs, progress};

/// Target (`BENCHMARKS.md`).
pub const TARGET_REPORTS_PER_S: f64 = 20_000.0;

/// Connections opened at once before the measured phase.
const CONNECT_CONCURRENCY: usize = 256;

#[derive(Debug, Clone)]
pub struct UsageOptions {
    pub dataplanes: usize,
    /// How long the data planes report.
    pub duration: Duration,
    /// Every k-th report repeats the previous one (0: never).
    pub retry_every: u64,
}

/// What one data plane did.
#[derive(Debug, Default)]
struct DataPlaneRun {
    id: String,
    receipts: u64,
    retries: u64,
    errors: u64,
    first_error: Option<String>,
    /// Receipts that said something other than the count sent (the data plane is the only
    /// writer of its counter, so they must match).
    receipt_mismatches: u64,
    /// The highest count sent.
    sent: u64,
    /// The count of the last receipt.
    receipted: u64,
    latencies: Vec<Duration>,
}

#[derive(Debug, Clone)]
pub struct UsageBenchReport {
    pub options: UsageOptions,
    pub register: Duration,
    pub connect: Duration,
    pub elapsed: Duration,
    pub receipts: u64,
    pub retries: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub receipt_mismatches: u64,
    pub latency: Summary,
    /// Sum of the last receipted count of every data plane.
    pub receipted_total: u64,
    /// Sum of the highest count every data plane sent.
    pub sent_total: u64,
    /// `total_requests` of `GET /license/report`.
    pub cp_total: u64,
    /// Data planes whose `?by=dataplane` total differs from their last receipt.
    pub dataplanes_off: usize,
    pub cp_cpu: Duration,
    pub cp_rss_kib: u64,
    pub bench_cpu: Duration,
    /// `/proc/loadavg` (1, 5, 15 min) just before the measured phase.
    pub load_average: Option<String>,
}

impl UsageBenchReport {
    /// Receipts per second over the measured phase.
    pub fn per_second(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        round3(self.receipts as f64 / self.elapsed.as_secs_f64())
    }

    /// Control-plane CPU per receipted report, in microseconds: what one report costs the
    /// control plane, whatever else shares the machine.
    pub fn cp_us_per_report(&self) -> f64 {
        per_report_us(self.cp_cpu, self.receipts)
    }

    /// The same for the benchmark process (the simulated data planes' side).
    pub fn bench_us_per_report(&self) -> f64 {
        per_report_us(self.bench_cpu, self.receipts)
    }

    /// The control plane holds exactly what the receipts say, in total and per data plane.
    pub fn exact(&self) -> bool {
        self.errors == 0
            && self.receipt_mismatches == 0
            && self.cp_total == self.receipted_total
            && self.dataplanes_off == 0
    }

    fn targets(&self) -> [(&'static str, String, Option<bool>); 2] {
        [
            (
                "reports_ge_20000_per_s",
                format!("{}/s", self.per_second()),
                Some(self.per_second() >= TARGET_REPORTS_PER_S),
            ),
            (
                "total_exact",
                format!("{} = {}", self.cp_total, self.receipted_total),
                Some(self.exact()),
            ),
        ]
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": "usage",
            "dataplanes": self.options.dataplanes,
            "duration_s": secs(self.options.duration),
            "retry_every": self.options.retry_every,
            "register_s": secs(self.register),
            "connect_s": secs(self.connect),
            "elapsed_s": secs(self.elapsed),
            "receipts": self.receipts,
            "reports_per_s": self.per_second(),
            "retries": self.retries,
            "errors": self.errors,
            "first_error": self.first_error,
            "receipt_mismatches": self.receipt_mismatches,
            "latency_ms": self.latency.to_json_ms(),
            "receipted_total": self.receipted_total,
            "sent_total": self.sent_total,
            "cp_total": self.cp_total,
            "dataplanes_off": self.dataplanes_off,
            "exact": self.exact(),
            "cp_cpu_s": secs(self.cp_cpu),
            "cp_cpu_us_per_report": self.cp_us_per_report(),
            "cp_rss_kib": self.cp_rss_kib,
            "bench_cpu_s": secs(self.bench_cpu),
            "bench_cpu_us_per_report": self.bench_us_per_report(),
            "load_average": self.load_average,
            "targets": super::targets_json(self.targets()),
        })
    }

    pub fn table(&self) -> Table {
        let n = self.options.dataplanes;
        let mut t = Table::new(
            format!(
                "usage: {n} data planes reporting for {:.0} s (registration took {:.1} s)",
                self.options.duration.as_secs_f64(),
                self.register.as_secs_f64()
            ),
            &["usage", "value"],
        );
        let rows = [
            (
                "connected",
                format!("{n} in {:.2} s", self.connect.as_secs_f64()),
            ),
            (
                "receipts (durable reports)",
                format!(
                    "{} in {:.2} s = {}/s",
                    self.receipts,
                    self.elapsed.as_secs_f64(),
                    self.per_second()
                ),
            ),
            ("of which retries", self.retries.to_string()),
            ("failed calls", self.errors.to_string()),
            (
                "receipt latency p50 / p99 / max",
                format!(
                    "{} / {} / {} ms",
                    ms(self.latency.p50),
                    ms(self.latency.p99),
                    ms(self.latency.max)
                ),
            ),
            (
                "CP total_requests / receipted / sent",
                format!(
                    "{} / {} / {}",
                    self.cp_total, self.receipted_total, self.sent_total
                ),
            ),
            (
                "data planes off (by=dataplane)",
                self.dataplanes_off.to_string(),
            ),
            (
                "CP CPU while reporting",
                format!(
                    "{:.2} s = {} µs per report",
                    self.cp_cpu.as_secs_f64(),
                    self.cp_us_per_report()
                ),
            ),
            (
                "bench (data planes) CPU while reporting",
                format!(
                    "{:.2} s = {} µs per report",
                    self.bench_cpu.as_secs_f64(),
                    self.bench_us_per_report()
                ),
            ),
            ("CP RSS after", format!("{} KiB", self.cp_rss_kib)),
            (
                "load average before (1 / 5 / 15 min)",
                self.load_average
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
            ),
        ];
        for (name, value) in rows {
            t.row(vec![name.to_owned(), value]);
        }
        for (name, value, met) in self.targets() {
            t.row(vec![format!("target {name}"), verdict(&value, met)]);
        }
        t
    }
}

/// Runs the scenario.
pub async fn run(env: &BenchEnv, options: &UsageOptions) -> anyhow::Result<UsageBenchReport> {
    let n = options.dataplanes;
    let super::Started {
        // Kept to the end: dropping it removes the control plane's data directory.
        run_dir: _run_dir,
        mut cluster,
        enrolled,
        register,
        ..
    } = super::start_and_enrol(env, "usage", n, super::cluster::Backend::Sled, 1, 0).await?;
    let cp = cluster.first();
    progress(format_args!(
        "registered {n} in {:.1} s; connecting",
        register.as_secs_f64()
    ));
    let connecting = Instant::now();
    let cluster_url = cp.cp.cluster_url.clone();
    let clients: Vec<(String, LicenseSyncClient<Channel>)> = futures::stream::iter(enrolled.iter())
        .map(|e| {
            let url = cluster_url.clone();
            async move {
                let client = e.license_sync_client(&url).await?;
                anyhow::Ok((e.dataplane_id.clone(), client))
            }
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let connect = connecting.elapsed();
    let bucket = current_month();
    progress(format_args!(
        "connected in {:.2} s; reporting for {:.0} s into {bucket}",
        connect.as_secs_f64(),
        options.duration.as_secs_f64()
    ));

    let load_average = procfs::load_average();
    let cp_before = cp.usage()?;
    let bench_before = procfs::usage("self")?;
    let started = Instant::now();
    let deadline = started + options.duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, (id, client))| {
            tokio::spawn(report_until(
                id,
                index as u64,
                client,
                bucket.clone(),
                deadline,
                options.retry_every,
            ))
        })
        .collect();
    let mut runs = Vec::with_capacity(n);
    for task in tasks {
        runs.push(task.await.context("a data plane's task failed")?);
    }
    let elapsed = started.elapsed();
    let cp_after = cp.usage()?;
    let bench_after = procfs::usage("self")?;

    let report = cp.usage_report(true).await?;
    let cp_total = report["total_requests"].as_u64().unwrap_or(0);
    let per_dp: std::collections::HashMap<String, u64> = report["dataplanes"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| Some((r["id"].as_str()?.to_owned(), r["total_requests"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let dataplanes_off = runs
        .iter()
        .filter(|r| per_dp.get(&r.id).copied().unwrap_or(0) != r.receipted)
        .count();

    let mut latencies = Vec::new();
    for run in &mut runs {
        latencies.append(&mut run.latencies);
    }
    let result = UsageBenchReport {
        options: options.clone(),
        register,
        connect,
        elapsed,
        receipts: runs.iter().map(|r| r.receipts).sum(),
        retries: runs.iter().map(|r| r.retries).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        first_error: runs.iter().find_map(|r| r.first_error.clone()),
        receipt_mismatches: runs.iter().map(|r| r.receipt_mismatches).sum(),
        latency: Summary::of(latencies),
        receipted_total: runs.iter().map(|r| r.receipted).sum(),
        sent_total: runs.iter().map(|r| r.sent).sum(),
        cp_total,
        dataplanes_off,
        cp_cpu: cp_after.cpu.saturating_sub(cp_before.cpu),
        cp_rss_kib: cp_after.rss_kib,
        bench_cpu: bench_after.cpu.saturating_sub(bench_before.cpu),
        load_average,
    };
    progress(format_args!(
        "{} receipts in {:.2} s ({}/s); CP total {} vs receipted {}",
        result.receipts,
        elapsed.as_secs_f64(),
        result.per_second(),
        cp_total,
        result.receipted_total
    ));
    cluster.kill_all();
    Ok(result)
}

/// One data plane: report, await the receipt, repeat until `deadline`.
async fn report_until(
    id: String,
    index: u64,
    mut client: LicenseSyncClient<Channel>,
    bucket: String,
    deadline: Instant,
    retry_every: u64,
) -> DataPlaneRun {
    let epoch = Uuid::new_v4().to_string();
    let mut run = DataPlaneRun {
        id,
        ..DataPlaneRun::default()
    };
    let mut count = 0u64;
    let mut sent_reports = 0u64;
    while Instant::now() < deadline {
        sent_reports += 1;
        let retry = retry_every > 0 && sent_reports.is_multiple_of(retry_every) && count > 0;
        if retry {
            run.retries += 1;
        } else {
            count += (index + sent_reports) % 97 + 1;
        }
        run.sent = run.sent.max(count);
        let request = UsageReport {
            epoch: epoch.clone(),
            counts: vec![UsageCount {
                bucket: bucket.clone(),
                request_count: count,
            }],
        };
        let sent = Instant::now();
        match client.report_usage(request).await {
            Ok(receipt) => {
                run.latencies.push(sent.elapsed());
                run.receipts += 1;
                let recorded = receipt
                    .into_inner()
                    .recorded
                    .first()
                    .filter(|c| c.bucket == bucket)
                    .map(|c| c.request_count);
                if recorded != Some(count) {
                    run.receipt_mismatches += 1;
                }
                run.receipted = recorded.unwrap_or(run.receipted);
            }
            Err(status) => {
                run.errors += 1;
                run.first_error
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }
    run
}

fn per_report_us(cpu: Duration, reports: u64) -> f64 {
    if reports == 0 {
        return 0.0;
    }
    round3(cpu.as_secs_f64() * 1e6 / reports as f64)
}

/// The current UTC month, `YYYY-MM`.
fn current_month() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}", today.year(), u8::from(today.month()))
}
