//! `storm`: N data planes in sync holding a few licenses; the control plane is killed with
//! SIGKILL and restarted on the same data directory and ports. Measured: how long until every
//! data plane has applied the restarted control plane's first update (it reconnected, said
//! `Hello` with what it holds, and got the answer), and how many licenses were sent to data
//! planes that already held them (goal: 0).
//!
//! The data planes use the agent's default reconnect policy (exponential backoff with full
//! jitter, 1 s doubling to 60 s), so the resync time includes the backoff they chose while the
//! control plane was down.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::simulated::{Expect, SimulatedFleet};
use super::stats::{Summary, ms, secs};
use super::table::{Table, verdict};
use super::{BenchEnv, progress};

/// Target at N = 10,000 (`BENCHMARKS.md`).
pub const TARGET_RESYNC: Duration = Duration::from_secs(20);

/// How often the resync is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct StormOptions {
    pub dataplanes: usize,
    /// Licenses every data plane holds before the kill.
    pub licenses: usize,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    /// How long after the kill every data plane may take to resynchronise.
    pub resync_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StormReport {
    pub options: StormOptions,
    pub register: Duration,
    pub connect: Duration,
    pub synced: usize,
    /// SIGKILL sent to `cp.started` logged by the new process.
    pub restart: Duration,
    /// SIGKILL sent to the last data plane resynchronised.
    pub resync: Duration,
    pub resynced: usize,
    /// Per data plane, SIGKILL to its resync.
    pub resync_latency: Summary,
    /// Licenses received during the resync that the data plane already held.
    pub redundant_resends: u64,
    /// Every data plane holds after the resync exactly what it held before the kill.
    pub state_intact: bool,
    /// CPU time of the restarted process, from its start to the end of the resync.
    pub cp_cpu_since_restart: Duration,
    pub cp_rss_after_kib: u64,
    /// The resync every [`SAMPLE_EVERY`].
    pub timeline: Vec<Sample>,
    /// Why data planes failed to reconnect (as the agent words it), with the most data planes
    /// seen failing that way at one sample.
    pub failures: BTreeMap<String, usize>,
}

/// The fleet at one moment of the resync.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Since SIGKILL.
    pub at: Duration,
    pub resynced: usize,
    pub connected: usize,
}

impl StormReport {
    pub fn all_resynced(&self) -> bool {
        self.synced == self.options.dataplanes && self.resynced == self.options.dataplanes
    }

    /// How many had resynchronised at each of `seconds` after the kill, from the samples.
    fn resynced_by(&self, seconds: &[u64]) -> String {
        seconds
            .iter()
            .map(|&s| {
                let at = Duration::from_secs(s);
                self.timeline
                    .iter()
                    .take_while(|sample| sample.at <= at)
                    .last()
                    .map_or(0, |sample| sample.resynced)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(" / ")
    }

    fn targets(&self) -> [(&'static str, String, Option<bool>); 2] {
        [
            (
                "resync_le_20s",
                format!("{:.2} s", self.resync.as_secs_f64()),
                Some(self.all_resynced() && self.resync <= TARGET_RESYNC),
            ),
            (
                "redundant_resends_eq_0",
                self.redundant_resends.to_string(),
                Some(self.all_resynced() && self.redundant_resends == 0),
            ),
        ]
    }

    pub fn to_json(&self) -> Value {
        let targets = super::targets_json(self.targets());
        json!({
            "scenario": "storm",
            "dataplanes": self.options.dataplanes,
            "licenses": self.options.licenses,
            "register_s": secs(self.register),
            "connect_s": secs(self.connect),
            "synced": self.synced,
            "restart_s": secs(self.restart),
            "resync_s": secs(self.resync),
            "resynced": self.resynced,
            "resync_ms": self.resync_latency.to_json_ms(),
            "redundant_resends": self.redundant_resends,
            "state_intact": self.state_intact,
            "cp_cpu_since_restart_s": secs(self.cp_cpu_since_restart),
            "cp_rss_after_kib": self.cp_rss_after_kib,
            "timeline": self.timeline.iter().map(|s| json!({
                "t_s": secs(s.at), "resynced": s.resynced, "connected": s.connected,
            })).collect::<Vec<_>>(),
            "failures": self.failures,
            "targets": targets,
        })
    }

    pub fn table(&self) -> Table {
        let n = self.options.dataplanes;
        let mut t = Table::new(
            format!(
                "storm: {n} data planes holding {} licenses, control plane SIGKILLed and restarted",
                self.options.licenses
            ),
            &["storm", "value"],
        );
        let rows = [
            (
                "connected and synced",
                format!("{}/{n} in {:.2} s", self.synced, self.connect.as_secs_f64()),
            ),
            (
                "kill to cp.started",
                format!("{:.2} s", self.restart.as_secs_f64()),
            ),
            (
                "kill to all resynchronised",
                format!(
                    "{}/{n} in {:.2} s",
                    self.resynced,
                    self.resync.as_secs_f64()
                ),
            ),
            (
                "resync p50 / p99 (from kill)",
                format!(
                    "{} / {} ms",
                    ms(self.resync_latency.p50),
                    ms(self.resync_latency.p99)
                ),
            ),
            (
                "resynced by 5 / 10 / 15 / 20 s",
                self.resynced_by(&[5, 10, 15, 20]),
            ),
            ("redundant resends", self.redundant_resends.to_string()),
            ("state intact", self.state_intact.to_string()),
            (
                "CP CPU since restart",
                format!("{:.2} s", self.cp_cpu_since_restart.as_secs_f64()),
            ),
            (
                "CP RSS after resync",
                format!("{} KiB", self.cp_rss_after_kib),
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
pub async fn run(env: &BenchEnv, options: &StormOptions) -> anyhow::Result<StormReport> {
    let n = options.dataplanes;
    let super::Started {
        // Kept to the end: dropping it removes the control plane's data directory.
        run_dir: _run_dir,
        issuer,
        mut cp,
        enrolled,
        register,
    } = super::start_and_enrol(env, "storm", n).await?;
    let settings = enrolled
        .iter()
        .map(|e| e.cp_settings(&cp.cp.cluster_url))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (fleet, connected) = SimulatedFleet::connect(
        settings,
        options.connect_concurrency,
        options.connect_timeout,
    )
    .await?;
    progress(format_args!(
        "{}/{n} synced in {:.2} s; writing {} licenses",
        connected.synced,
        connected.elapsed.as_secs_f64(),
        options.licenses
    ));
    for k in 0..options.licenses {
        let id = Uuid::new_v4();
        let document = issuer.license(&format!("licsync-bench storm customer {k}"));
        let arrivals = fleet
            .expect(
                Expect::Document {
                    id: id.to_string(),
                    document: document.clone(),
                },
                Duration::ZERO,
            )
            .await;
        cp.put_license(id, &document).await?;
        arrivals
            .wait_all(Instant::now() + options.resync_timeout)
            .await;
    }
    let held_before = fleet.held();
    let resent_before = fleet.licenses_resent();

    // The probes take note of the expectation before the kill; nothing can arrive until the
    // new process is up.
    let arrivals = fleet
        .expect(Expect::NextUpdate, Duration::from_millis(200))
        .await;
    progress("SIGKILL");
    let killed = Instant::now();
    cp.cp.kill();
    cp.cp.restart().await;
    let restart = killed.elapsed();
    progress(format_args!(
        "restarted in {:.2} s; waiting for the fleet",
        restart.as_secs_f64()
    ));
    // Sample the resync every half second: how many are back, how many have a stream open,
    // and why the others last failed.
    let deadline = killed + options.resync_timeout;
    let mut timeline = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let tick = (Instant::now() + SAMPLE_EVERY).min(deadline);
        let done = arrivals.wait_all(tick).await;
        for (reason, count) in fleet.failures() {
            let seen = failures.entry(reason).or_default();
            *seen = (*seen).max(count);
        }
        timeline.push(Sample {
            at: killed.elapsed(),
            resynced: arrivals.arrived(),
            connected: fleet.connected(),
        });
        if done || Instant::now() >= deadline {
            break;
        }
    }
    let latencies = arrivals.latencies(killed);
    let resync = arrivals
        .last()
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(killed));
    let after = cp.usage()?;
    let report = StormReport {
        options: options.clone(),
        register,
        connect: connected.elapsed,
        synced: connected.synced,
        restart,
        resync,
        resynced: latencies.len(),
        resync_latency: Summary::of(latencies),
        redundant_resends: fleet.licenses_resent() - resent_before,
        state_intact: fleet.held() == held_before,
        cp_cpu_since_restart: after.cpu,
        cp_rss_after_kib: after.rss_kib,
        timeline,
        failures,
    };
    cp.cp.kill();
    fleet.stop().await;
    Ok(report)
}
