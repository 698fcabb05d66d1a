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

use super::cluster::Backend;
use super::procfs;
use super::simulated::Expect;
use super::stats::{Summary, ms, secs};
use super::table::{Table, verdict};
use super::workers::Fleet;
use super::{BenchEnv, progress};

/// Target at N = 10,000 (`BENCHMARKS.md`).
pub const TARGET_RESYNC: Duration = Duration::from_secs(20);
/// Target for 15,000 data planes of one node of a 45,000 fleet (issue 10).
pub const TARGET_RESYNC_LARGE: Duration = Duration::from_secs(60);

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
    pub backend: Backend,
    /// Control-plane nodes; with more than one, the first is killed and not restarted, and its
    /// data planes fail over to the others (`sync.servers`).
    pub cp_nodes: usize,
    /// Worker processes simulating the data planes (0: this process).
    pub workers: usize,
    /// With several nodes, the killed node's data planes (`None`: an equal share).
    pub first_node_dataplanes: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct StormReport {
    pub options: StormOptions,
    pub register: Duration,
    /// `/proc/loadavg` when the run started.
    pub load_average: Option<String>,
    pub connect: Duration,
    pub synced: usize,
    /// Data planes of the killed node: every one with one node, a node's share with several.
    pub killed_dataplanes: usize,
    /// SIGKILL sent to `cp.started` logged by the new process (one node only: with several,
    /// the killed node stays down).
    pub restart: Option<Duration>,
    /// SIGKILL sent to the last data plane resynchronised.
    pub resync: Duration,
    pub resynced: usize,
    /// Per data plane, SIGKILL to its resync.
    pub resync_latency: Summary,
    /// Licenses received during the resync that the data plane already held.
    pub redundant_resends: u64,
    /// Every data plane holds after the resync exactly what it held before the kill.
    pub state_intact: bool,
    /// CPU time of the restarted process, from its start to the end of the resync (one node);
    /// with several, the survivors' CPU from the kill to the end of the resync.
    pub cp_cpu_since_restart: Duration,
    /// RSS of the restarted node, or of each survivor.
    pub cp_rss_after_kib: Vec<u64>,
    /// The resync every [`SAMPLE_EVERY`].
    pub timeline: Vec<Sample>,
    /// Why data planes failed to reconnect (as the agent words it), with the most data planes
    /// seen failing that way at one sample.
    pub failures: BTreeMap<String, usize>,
    /// What each node logged at `warn` or worse: event → count.
    pub node_warnings: Vec<BTreeMap<String, usize>>,
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
        self.synced == self.options.dataplanes && self.resynced == self.killed_dataplanes
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

    fn targets(&self) -> [(&'static str, String, Option<bool>); 3] {
        [
            (
                "resync_le_20s",
                format!("{:.2} s", self.resync.as_secs_f64()),
                Some(self.all_resynced() && self.resync <= TARGET_RESYNC),
            ),
            (
                "resync_le_60s",
                format!("{:.2} s", self.resync.as_secs_f64()),
                Some(self.all_resynced() && self.resync <= TARGET_RESYNC_LARGE),
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
            "backend": self.options.backend.name(),
            "cp_nodes": self.options.cp_nodes,
            "workers": self.options.workers,
            "first_node_dataplanes": self.options.first_node_dataplanes,
            "load_average": self.load_average,
            "register_s": secs(self.register),
            "connect_s": secs(self.connect),
            "synced": self.synced,
            "killed_dataplanes": self.killed_dataplanes,
            "restart_s": self.restart.map(secs),
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
            "node_warnings": self.node_warnings,
            "targets": targets,
        })
    }

    pub fn table(&self) -> Table {
        let n = self.options.dataplanes;
        let what = if self.options.cp_nodes > 1 {
            format!(
                "{} nodes on {}, one SIGKILLed, its data planes fail over",
                self.options.cp_nodes,
                self.options.backend.name()
            )
        } else {
            "control plane SIGKILLed and restarted".to_owned()
        };
        let mut t = Table::new(
            format!(
                "storm: {n} data planes holding {} licenses, {what} (load average {})",
                self.options.licenses,
                self.load_average.as_deref().unwrap_or("unknown")
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
                self.restart.map_or("not restarted".to_owned(), |r| {
                    format!("{:.2} s", r.as_secs_f64())
                }),
            ),
            (
                "kill to all resynchronised",
                format!(
                    "{}/{} in {:.2} s",
                    self.resynced,
                    self.killed_dataplanes,
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
                self.cp_rss_after_kib
                    .iter()
                    .map(|kib| format!("{kib} KiB"))
                    .collect::<Vec<_>>()
                    .join(" / "),
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
    if let Some(first) = options.first_node_dataplanes {
        anyhow::ensure!(
            options.cp_nodes > 1 && first <= n,
            "--first-node-dataplanes needs --cp-nodes 2 or more and at most --dataplanes ({n})"
        );
    }
    let load_average = procfs::load_average();
    let super::Started {
        // Kept to the end: dropping it removes the control plane's data directory.
        run_dir,
        issuer,
        mut cluster,
        enrolled,
        register,
    } = super::start_and_enrol(
        env,
        "storm",
        n,
        options.backend,
        options.cp_nodes,
        options.workers,
    )
    .await?;
    if let Some(first) = options.first_node_dataplanes {
        cluster.weight_first(first, n);
    }
    let specs = super::cluster_specs(&cluster, &enrolled);
    drop(enrolled);
    let (mut fleet, connected) = Fleet::connect(
        &env.bench_binary,
        &run_dir.path().join("workers"),
        specs,
        options.workers,
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
        let expected = fleet
            .expect(
                Expect::Document {
                    id: id.to_string(),
                    document: document.clone(),
                },
                None,
                Duration::ZERO,
            )
            .await?;
        cluster.writer(k).put_license(id, &document).await?;
        fleet
            .wait_all(expected, Instant::now() + options.resync_timeout)
            .await?;
    }
    fleet.snapshot_held().await?;
    let resent_before = fleet.sample().await?.licenses_resent;

    // With several nodes the first one dies for good and only its data planes have to move;
    // with one, every data plane waits for it to come back.
    let several = cluster.nodes.len() > 1;
    let members = several.then(|| cluster.first().cp.cluster_url.clone());
    // The probes take note of the expectation before the kill; nothing can arrive until a
    // data plane has reconnected.
    let expected = fleet
        .expect(Expect::NextUpdate, members, Duration::from_millis(200))
        .await?;
    let survivors_before = cluster
        .usage()?
        .cpu
        .saturating_sub(cluster.nodes[0].usage()?.cpu);
    progress(format_args!(
        "SIGKILL ({expected} data planes to resynchronise)"
    ));
    let killed = Instant::now();
    cluster.kill(0);
    let restart = if several {
        None
    } else {
        cluster.restart(0).await;
        let restart = killed.elapsed();
        progress(format_args!(
            "restarted in {:.2} s; waiting for the fleet",
            restart.as_secs_f64()
        ));
        Some(restart)
    };
    // Sample the resync every half second: how many are back, how many have a stream open,
    // and why the others last failed.
    let deadline = killed + options.resync_timeout;
    let mut timeline = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let tick = (Instant::now() + SAMPLE_EVERY).min(deadline);
        let done = fleet.wait_all(expected, tick).await?;
        let sample = fleet.sample().await?;
        for (reason, count) in sample.failures {
            let seen = failures.entry(reason).or_default();
            *seen = (*seen).max(count);
        }
        timeline.push(Sample {
            at: killed.elapsed(),
            resynced: sample.arrived,
            connected: sample.connected,
        });
        if done || Instant::now() >= deadline {
            break;
        }
    }
    let latencies = fleet.latencies(killed).await?;
    let resync = latencies.iter().max().copied().unwrap_or(Duration::ZERO);
    let (cp_cpu, cp_rss) = if several {
        let usage = cluster.node_usage();
        let cpu: Duration = usage.iter().flatten().map(|u| u.cpu).sum();
        (
            cpu.saturating_sub(survivors_before),
            usage.iter().flatten().map(|u| u.rss_kib).collect(),
        )
    } else {
        let after = cluster.nodes[0].usage()?;
        (after.cpu, vec![after.rss_kib])
    };
    let sample = fleet.sample().await?;
    let report = StormReport {
        options: options.clone(),
        register,
        load_average,
        connect: connected.elapsed,
        synced: connected.synced,
        killed_dataplanes: expected,
        restart,
        resync,
        resynced: latencies.len(),
        resync_latency: Summary::of(latencies),
        redundant_resends: sample.licenses_resent - resent_before,
        state_intact: fleet.held_unchanged().await?,
        cp_cpu_since_restart: cp_cpu,
        cp_rss_after_kib: cp_rss,
        timeline,
        failures,
        node_warnings: cluster.warnings(),
    };
    cluster.kill_all();
    fleet.stop().await;
    drop(run_dir);
    Ok(report)
}
