//! `fleet`: connect N simulated data planes, make K license writes through the Admin API, and
//! time each write's arrival at each data plane; measure the control plane's memory and CPU.
//! With the floor, the same data planes (same keys, new certificates from the floor's CA) do
//! the same in the same run against [`super::floor`].
//!
//! Each write is `PUT /licenses/{id}` of a new signed document under one fixed id (a license
//! being renewed), made once the previous one reached every data plane (or timed out), so each
//! sample is one write's latency from just before the request is sent to the moment that data
//! plane's state holds the new document.

use std::time::Duration;

use anyhow::Context;
use licsync_common::proto;
use licsync_common::unix_now;
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::cluster::{Backend, BenchCluster};
use super::floor::{Broadcast, FloorPki, FloorProcess};
use super::procfs::{self, Usage};
use super::simulated::Expect;
use super::stats::{Summary, ms, ratio, round3, secs};
use super::table::{Table, verdict};
use super::workers::{DpSpec, Fleet};
use super::{BenchEnv, progress};

/// A pause after each write has arrived everywhere, so acknowledgements and heartbeats of one
/// write do not overlap the next.
const SETTLE: Duration = Duration::from_millis(100);

/// Targets at N = 10,000 (`BENCHMARKS.md`).
pub const TARGET_P99: Duration = Duration::from_millis(500);
pub const TARGET_RATIO_P99: f64 = 1.5;
/// Several PostgreSQL nodes against one sled node, p99 (issue 10).
pub const TARGET_RATIO_SLED_P99: f64 = 1.3;
pub const TARGET_KIB_PER_DP: f64 = 40.0;

#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub dataplanes: usize,
    pub updates: usize,
    pub with_floor: bool,
    /// Clients between start and first update at once (0: all at once).
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    /// How long one write may take to reach every data plane.
    pub write_timeout: Duration,
    pub backend: Backend,
    /// Control-plane nodes (more than one needs [`Backend::Postgres`]).
    pub cp_nodes: usize,
    /// Worker processes simulating the data planes (0: this process).
    pub workers: usize,
    /// With [`Backend::Postgres`]: run the same fleet against one sled node too.
    pub sled_baseline: bool,
}

/// One server process's memory before and after its data planes connected.
#[derive(Debug, Clone)]
pub struct NodeMemory {
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Data planes that connect to it first.
    pub dataplanes: usize,
}

impl NodeMemory {
    fn kib_per_dp(&self) -> f64 {
        let grown = self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64;
        round3(grown / self.dataplanes.max(1) as f64)
    }
}

/// One server's results (the control plane, or the floor).
#[derive(Debug, Clone)]
pub struct Phase {
    /// First client started to last initial update applied.
    pub connect: Duration,
    /// Data planes that applied their initial update within the connect timeout.
    pub synced: usize,
    pub propagation: Summary,
    /// From sending each write to the server's answer (the control plane answers once the
    /// write is durable; the floor's "answer" is its stdin accepting the line).
    pub write: Summary,
    /// (data plane, write) pairs that did not arrive within the write timeout.
    pub missed: usize,
    /// Writes the server refused or that failed to be sent.
    pub write_errors: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub cpu_connect: Duration,
    pub cpu_updates: Duration,
    /// Licenses data planes received that they already held ([`SimulatedFleet::licenses_resent`]).
    pub licenses_resent: u64,
    /// RSS of this benchmark process with every client connected.
    pub bench_rss_kib: u64,
    /// CPU time of this benchmark process (the simulated data planes) during the writes.
    pub bench_cpu_updates: Duration,
    /// Each server process (one per control-plane node).
    pub nodes: Vec<NodeMemory>,
}

impl Phase {
    /// Server memory per connected data plane.
    pub fn kib_per_dp(&self) -> f64 {
        let grown = self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64;
        round3(grown / self.synced.max(1) as f64)
    }

    fn to_json(&self) -> Value {
        json!({
            "connect_s": secs(self.connect),
            "synced": self.synced,
            "propagation_ms": self.propagation.to_json_ms(),
            "write_ms": self.write.to_json_ms(),
            "missed": self.missed,
            "write_errors": self.write_errors,
            "rss_before_kib": self.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
            "rss_per_dp_kib": self.kib_per_dp(),
            "cpu_connect_s": secs(self.cpu_connect),
            "cpu_updates_s": secs(self.cpu_updates),
            "licenses_resent": self.licenses_resent,
            "bench_rss_kib": self.bench_rss_kib,
            "bench_cpu_updates_s": secs(self.bench_cpu_updates),
            "nodes": self.nodes.iter().map(|m| json!({
                "dataplanes": m.dataplanes,
                "rss_before_kib": m.rss_before_kib,
                "rss_after_kib": m.rss_after_kib,
                "rss_per_dp_kib": m.kib_per_dp(),
            })).collect::<Vec<_>>(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct FleetReport {
    pub options: FleetOptions,
    pub register: Duration,
    /// `/proc/loadavg` when the run started.
    pub load_average: Option<String>,
    pub cp: Phase,
    /// One sled node, same fleet and writes (with `--backend postgres`).
    pub baseline: Option<Phase>,
    pub floor: Option<Phase>,
}

impl FleetReport {
    /// Every data plane reached every write, on every server measured.
    pub fn converged(&self) -> bool {
        let n = self.options.dataplanes;
        let k = self.options.updates;
        std::iter::once(&self.cp)
            .chain(self.baseline.as_ref())
            .chain(self.floor.as_ref())
            .all(|p| {
                p.synced == n
                    && p.missed == 0
                    && p.write_errors == 0
                    && p.propagation.count == n * k
            })
    }

    fn ratio_p50(&self) -> Option<f64> {
        let floor = self.floor.as_ref()?;
        ratio(self.cp.propagation.p50, floor.propagation.p50)
    }

    fn ratio_p99(&self) -> Option<f64> {
        let floor = self.floor.as_ref()?;
        ratio(self.cp.propagation.p99, floor.propagation.p99)
    }

    fn ratio_sled(&self, p: fn(&Summary) -> Duration) -> Option<f64> {
        let baseline = self.baseline.as_ref()?;
        ratio(p(&self.cp.propagation), p(&baseline.propagation))
    }

    fn targets(&self) -> [(&'static str, String, Option<bool>); 4] {
        let p99 = self.cp.propagation.p99;
        let ratio = self.ratio_p99();
        let kib = self.cp.kib_per_dp();
        let sled = self.ratio_sled(|s| s.p99);
        [
            (
                "propagation_p99_le_500ms",
                format!("{} ms", ms(p99)),
                Some(self.converged() && p99 <= TARGET_P99),
            ),
            (
                "propagation_p99_le_1_5x_floor",
                ratio.map_or("no floor run".into(), |r| format!("{r}x")),
                ratio.map(|r| self.converged() && r <= TARGET_RATIO_P99),
            ),
            (
                "propagation_p99_le_1_3x_sled",
                sled.map_or("no sled baseline".into(), |r| format!("{r}x")),
                sled.map(|r| self.converged() && r <= TARGET_RATIO_SLED_P99),
            ),
            (
                "cp_rss_per_dp_le_40kib",
                format!("{kib} KiB"),
                Some(kib <= TARGET_KIB_PER_DP),
            ),
        ]
    }

    pub fn to_json(&self) -> Value {
        let targets = super::targets_json(self.targets());
        json!({
            "scenario": "fleet",
            "dataplanes": self.options.dataplanes,
            "updates": self.options.updates,
            "backend": self.options.backend.name(),
            "cp_nodes": self.options.cp_nodes,
            "workers": self.options.workers,
            "load_average": self.load_average,
            "with_floor": self.options.with_floor,
            "connect_concurrency": self.options.connect_concurrency,
            "register_s": secs(self.register),
            "converged": self.converged(),
            "cp": self.cp.to_json(),
            "sled_baseline": self.baseline.as_ref().map(Phase::to_json),
            "ratio_to_sled": self.baseline.as_ref().map(|_| json!({
                "p50": self.ratio_sled(|s| s.p50),
                "p99": self.ratio_sled(|s| s.p99),
            })),
            "floor": self.floor.as_ref().map(Phase::to_json),
            "ratio_to_floor": self.floor.as_ref().map(|_| json!({
                "p50": self.ratio_p50(),
                "p99": self.ratio_p99(),
            })),
            "targets": targets,
        })
    }

    pub fn table(&self) -> Table {
        let n = self.options.dataplanes;
        let cp_name = format!(
            "licsync-cp, {} x{}",
            self.options.backend.name(),
            self.options.cp_nodes
        );
        let mut header = vec!["fleet", cp_name.as_str()];
        if self.baseline.is_some() {
            header.push("one sled node");
        }
        if self.floor.is_some() {
            header.extend(["floor", "cp / floor"]);
        }
        let mut t = Table::new(
            format!(
                "fleet: {n} data planes, {} writes (registration took {:.1} s; load average {})",
                self.options.updates,
                self.register.as_secs_f64(),
                self.load_average.as_deref().unwrap_or("unknown")
            ),
            &header,
        );
        let phases: Vec<&Phase> = std::iter::once(&self.cp)
            .chain(self.baseline.as_ref())
            .chain(self.floor.as_ref())
            .collect();
        let mut row = |name: &str, cell: &dyn Fn(&Phase) -> String, ratio: Option<Option<f64>>| {
            let mut cells = vec![name.to_owned()];
            cells.extend(phases.iter().map(|p| cell(p)));
            if self.floor.is_some() {
                cells.push(ratio.flatten().map_or(String::new(), |r| format!("{r}x")));
            }
            t.row(cells);
        };
        row(
            "connected and synced",
            &|p| format!("{}/{n} in {:.2} s", p.synced, p.connect.as_secs_f64()),
            None,
        );
        row(
            "propagation p50",
            &|p| format!("{} ms", ms(p.propagation.p50)),
            Some(self.ratio_p50()),
        );
        row(
            "propagation p90",
            &|p| format!("{} ms", ms(p.propagation.p90)),
            None,
        );
        row(
            "propagation p99",
            &|p| format!("{} ms", ms(p.propagation.p99)),
            Some(self.ratio_p99()),
        );
        row(
            "propagation max",
            &|p| format!("{} ms", ms(p.propagation.max)),
            None,
        );
        row(
            "write answered p50 / max",
            &|p| format!("{} / {} ms", ms(p.write.p50), ms(p.write.max)),
            None,
        );
        row("missed (dp, write) pairs", &|p| p.missed.to_string(), None);
        row(
            "server RSS before / after",
            &|p| format!("{} / {} KiB", p.rss_before_kib, p.rss_after_kib),
            None,
        );
        row(
            "server RSS per DP",
            &|p| format!("{} KiB", p.kib_per_dp()),
            None,
        );
        row(
            "server CPU connect / writes",
            &|p| {
                format!(
                    "{:.2} / {:.2} s",
                    p.cpu_connect.as_secs_f64(),
                    p.cpu_updates.as_secs_f64()
                )
            },
            None,
        );
        row(
            "bench (data planes) CPU, writes",
            &|p| format!("{:.2} s", p.bench_cpu_updates.as_secs_f64()),
            None,
        );
        row("licenses resent", &|p| p.licenses_resent.to_string(), None);
        row(
            "bench process RSS",
            &|p| format!("{} KiB", p.bench_rss_kib),
            None,
        );
        for (name, value, met) in self.targets() {
            let mut cells = vec![format!("target {name}"), verdict(&value, met)];
            if self.baseline.is_some() {
                cells.push(String::new());
            }
            if self.floor.is_some() {
                cells.extend([String::new(), String::new()]);
            }
            t.row(cells);
        }
        t
    }
}

/// Runs the scenario.
pub async fn run(env: &BenchEnv, options: &FleetOptions) -> anyhow::Result<FleetReport> {
    let n = options.dataplanes;
    let load_average = procfs::load_average();
    let super::Started {
        run_dir,
        issuer,
        mut cluster,
        enrolled,
        register,
    } = super::start_and_enrol(
        env,
        "fleet",
        n,
        options.backend,
        options.cp_nodes,
        options.workers,
    )
    .await?;
    progress(format_args!(
        "registered {n} in {:.1} s",
        register.as_secs_f64()
    ));

    let license_id = Uuid::new_v4();
    let documents: Vec<String> = (0..options.updates)
        .map(|k| issuer.license(&format!("licsync-bench customer {k}")))
        .collect();
    let trusted_keys = vec![issuer.public.clone()];

    let specs = super::cluster_specs(&cluster, &enrolled);
    let cp_phase = {
        let mut server = Server::Cluster(&cluster);
        let (phase, fleet) = run_phase(
            env,
            &run_dir.path().join("workers-cp"),
            &mut server,
            specs,
            &documents,
            license_id,
            options,
        )
        .await?;
        // The control plane goes first, so it spends nothing on 10,000 goodbyes.
        cluster.kill_all();
        fleet.stop().await;
        phase
    };
    report_phase(
        &format!("licsync-cp ({})", options.backend.name()),
        &cp_phase,
    );
    drop(cluster);

    let baseline = if options.backend == Backend::Postgres && options.sled_baseline {
        let dir = run_dir.path().join("baseline");
        let mut sled = BenchCluster::start(env, &dir, Backend::Sled, 1, &issuer.public).await?;
        progress(format_args!(
            "baseline: one sled node at {}; registering {n} data planes",
            sled.first().cp.cluster_url
        ));
        let enrolled = sled.first().enrol(n).await?;
        let specs = super::cluster_specs(&sled, &enrolled);
        let mut server = Server::Cluster(&sled);
        let (phase, fleet) = run_phase(
            env,
            &dir.join("workers"),
            &mut server,
            specs,
            &documents,
            license_id,
            options,
        )
        .await?;
        sled.kill_all();
        fleet.stop().await;
        report_phase("licsync-cp (one sled node)", &phase);
        Some(phase)
    } else {
        None
    };

    let floor = if options.with_floor {
        let pki = FloorPki::generate()?;
        let mut floor =
            FloorProcess::start(&env.bench_binary, &run_dir.path().join("floor"), &pki).await?;
        let url = floor.url();
        let specs = enrolled
            .iter()
            .map(|e| {
                let mut spec = DpSpec::of(e, &url, Vec::new());
                spec.certificate_pem = pki.certify(&e.csr_der, &e.dataplane_id)?;
                spec.ca_pem = floor.ca_pem.clone();
                anyhow::Ok(spec)
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .context("floor certificates")?;
        progress(format_args!("floor up at {url}"));
        let mut server = Server::Floor {
            floor: &mut floor,
            trusted_keys,
        };
        let (phase, fleet) = run_phase(
            env,
            &run_dir.path().join("workers-floor"),
            &mut server,
            specs,
            &documents,
            license_id,
            options,
        )
        .await?;
        floor.stop().await;
        fleet.stop().await;
        report_phase("floor", &phase);
        Some(phase)
    } else {
        None
    };
    Ok(FleetReport {
        options: options.clone(),
        register,
        load_average,
        cp: cp_phase,
        baseline,
        floor,
    })
}

fn report_phase(name: &str, phase: &Phase) {
    progress(format_args!(
        "{name}: {} synced in {:.2} s; propagation p50 {} ms, p99 {} ms; {} missed",
        phase.synced,
        phase.connect.as_secs_f64(),
        ms(phase.propagation.p50),
        ms(phase.propagation.p99),
        phase.missed
    ));
}

/// Where the writes go.
enum Server<'a> {
    /// The control-plane nodes: write `k` goes to the `k`-th live node in turn.
    Cluster(&'a BenchCluster),
    Floor {
        floor: &'a mut FloorProcess,
        trusted_keys: Vec<String>,
    },
}

impl Server<'_> {
    async fn write(&mut self, index: usize, id: Uuid, document: &str) -> anyhow::Result<()> {
        match self {
            Self::Cluster(cluster) => cluster.writer(index).put_license(id, document).await,
            Self::Floor {
                floor,
                trusted_keys,
            } => {
                let revision = index as u64 + 1;
                let now = unix_now();
                let broadcast = Broadcast {
                    revision,
                    license: proto::License {
                        id: id.to_string(),
                        document: document.to_owned(),
                        created_at: now,
                        updated_at: now,
                        revision,
                    },
                    trusted_license_keys: trusted_keys.clone(),
                };
                floor.broadcast(&broadcast).await
            }
        }
    }

    fn usage(&self) -> anyhow::Result<Usage> {
        match self {
            Self::Cluster(cluster) => cluster.usage(),
            Self::Floor { floor, .. } => floor.usage(),
        }
    }

    /// Each server process's resident memory (one entry for the floor).
    fn node_rss(&self) -> Vec<u64> {
        match self {
            Self::Cluster(cluster) => cluster
                .node_usage()
                .into_iter()
                .map(|u| u.map_or(0, |u| u.rss_kib))
                .collect(),
            Self::Floor { floor, .. } => vec![floor.usage().map_or(0, |u| u.rss_kib)],
        }
    }
}

/// Connects the fleet to `server`, makes the writes, and returns the results with the fleet
/// still connected (the caller stops the server first, then the fleet).
async fn run_phase(
    env: &BenchEnv,
    workers_dir: &std::path::Path,
    server: &mut Server<'_>,
    specs: Vec<DpSpec>,
    documents: &[String],
    license_id: Uuid,
    options: &FleetOptions,
) -> anyhow::Result<(Phase, Fleet)> {
    let n = specs.len();
    let nodes_before = server.node_rss();
    let per_node: Vec<usize> = {
        let mut counts = vec![0; nodes_before.len()];
        for spec in &specs {
            let node = match server {
                Server::Cluster(cluster) => cluster
                    .nodes
                    .iter()
                    .position(|node| node.cp.cluster_url == spec.url)
                    .unwrap_or(0),
                Server::Floor { .. } => 0,
            };
            counts[node] += 1;
        }
        counts
    };
    let before = server.usage()?;
    let (mut fleet, connected) = Fleet::connect(
        &env.bench_binary,
        workers_dir,
        specs,
        options.workers,
        options.connect_concurrency,
        options.connect_timeout,
    )
    .await?;
    let after_connect = server.usage()?;
    let nodes_after = server.node_rss();
    let bench_before = fleet.usage()?;
    progress(format_args!(
        "{}/{n} synced in {:.2} s; writing {} licenses",
        connected.synced,
        connected.elapsed.as_secs_f64(),
        documents.len()
    ));

    let mut latencies = Vec::with_capacity(n * documents.len());
    let mut missed = 0;
    let mut write_errors = 0;
    let mut writes = Vec::with_capacity(documents.len());
    for (index, document) in documents.iter().enumerate() {
        let expect = Expect::Document {
            id: license_id.to_string(),
            document: document.clone(),
        };
        let expected = fleet.expect(expect, None, Duration::ZERO).await?;
        let sent = Instant::now();
        if let Err(error) = server.write(index, license_id, document).await {
            progress(format_args!("write {index} failed: {error:#}"));
            write_errors += 1;
            missed += n;
            continue;
        }
        writes.push(sent.elapsed());
        fleet
            .wait_all(expected, Instant::now() + options.write_timeout)
            .await?;
        let arrived = fleet.latencies(sent).await?;
        missed += n.saturating_sub(arrived.len());
        latencies.extend(arrived);
        tokio::time::sleep(SETTLE).await;
    }
    let after_updates = server.usage()?;
    let bench_after = fleet.usage()?;
    let licenses_resent = fleet.sample().await?.licenses_resent;
    let phase = Phase {
        connect: connected.elapsed,
        synced: connected.synced,
        propagation: Summary::of(latencies),
        write: Summary::of(writes),
        missed,
        write_errors,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after_connect.rss_kib,
        cpu_connect: after_connect.cpu.saturating_sub(before.cpu),
        cpu_updates: after_updates.cpu.saturating_sub(after_connect.cpu),
        licenses_resent,
        bench_rss_kib: bench_before.rss_kib,
        bench_cpu_updates: bench_after.cpu.saturating_sub(bench_before.cpu),
        nodes: nodes_before
            .iter()
            .zip(&nodes_after)
            .zip(&per_node)
            .map(
                |((&rss_before_kib, &rss_after_kib), &dataplanes)| NodeMemory {
                    rss_before_kib,
                    rss_after_kib,
                    dataplanes,
                },
            )
            .collect(),
    };
    Ok((phase, fleet))
}
