//! The fleet benchmark behind `licsync-bench`: the real `licsync-cp` release binary as a child
//! process, and thousands of simulated data planes in this process running the agent's real
//! sync client (same code path as `licsync-dp`, in-memory state, no license file), each with
//! its own TLS connection and client certificate from the real registration RPC.
//!
//! # Layout
//! - Scenarios, each returning a report with a table and one JSON object (keys documented in
//!   `BENCHMARKS.md`): [`fleet`] (connect, propagation, memory, CPU; optionally against the
//!   [`floor`]), [`storm`] (SIGKILL and restart the control plane, time the resync, count
//!   resends), [`admin`] (durable `POST /licenses` rate, `GET /licenses/{id}` latency),
//!   [`usage`] (durable `ReportUsage` rate at the control plane, and exact totals),
//!   [`dp_usage`] (`POST /usage` increments per second at one real `licsync-dp`, and exact
//!   totals in memory and on disk), [`ui`] (the status page's render time for a large fleet,
//!   in process).
//! - Pieces: [`control_plane`] (the child process, its Admin API, enrolment), [`cluster`] (one
//!   sled node, or several nodes on one PostgreSQL database), [`postgres`] (the run's durable
//!   PostgreSQL server), [`simulated`] (the in-process data planes and their probes),
//!   [`workers`] (the same data planes spread over worker processes, beyond one process's
//!   open-files limit), [`floor`] (the minimal tonic server to compare against), [`stats`]
//!   (percentiles), [`procfs`] (RSS, CPU, open-file limit), [`table`] (the printed tables).
//!
//! Everything talks to 127.0.0.1 only, and every wait is bounded.

pub mod admin;
pub mod cluster;
pub mod control_plane;
pub mod dp_usage;
pub mod fleet;
pub mod floor;
pub mod postgres;
pub mod procfs;
pub mod simulated;
pub mod stats;
pub mod storm;
pub mod table;
pub mod ui;
pub mod usage;
pub mod workers;

use std::path::{Path, PathBuf};

use anyhow::Context;

/// File descriptors needed beyond one per simulated data plane (runtime, logs, the Admin API
/// client, sled).
pub const FD_HEADROOM: u64 = 512;

/// Where the executables are and where runs keep their data.
#[derive(Debug, Clone)]
pub struct BenchEnv {
    /// The `licsync-cp` executable under test.
    pub cp_binary: PathBuf,
    /// The `licsync-dp` executable under test (`dp-usage`).
    pub dp_binary: PathBuf,
    /// The `licsync-bench` executable, which also serves the floor (`floor-server`).
    pub bench_binary: PathBuf,
    /// Parent of each run's data directory; a fresh temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
}

impl BenchEnv {
    /// The running executable as `licsync-bench`, and the `licsync-cp` and `licsync-dp` next
    /// to it (all land in `target/release` with `cargo build --release -p licsync-cp -p
    /// licsync-dp -p licsync-tests`).
    pub fn beside_current_exe() -> anyhow::Result<Self> {
        let bench_binary = std::env::current_exe().context("path of this executable")?;
        let dir = bench_binary
            .parent()
            .context("directory of this executable")?;
        Ok(Self {
            cp_binary: dir.join("licsync-cp"),
            dp_binary: dir.join("licsync-dp"),
            bench_binary,
            work_dir: None,
        })
    }

    /// A data directory for one run, removed at the end unless `work_dir` was given.
    pub fn run_dir(&self, scenario: &str) -> anyhow::Result<RunDir> {
        match &self.work_dir {
            None => Ok(RunDir::Temporary(
                tempfile::Builder::new()
                    .prefix(&format!("licsync-bench-{scenario}-"))
                    .tempdir()
                    .context("temporary directory")?,
            )),
            Some(parent) => {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
                let dir = tempfile::Builder::new()
                    .prefix(&format!("{scenario}-"))
                    .tempdir_in(parent)
                    .with_context(|| format!("cannot create a directory in {}", parent.display()))?
                    .keep();
                Ok(RunDir::Kept(dir))
            }
        }
    }
}

/// A run's data directory.
pub enum RunDir {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl RunDir {
    pub fn path(&self) -> &Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Kept(path) => path,
        }
    }
}

/// What every fleet-sized scenario starts from: the control-plane nodes and N registered data
/// planes.
pub(crate) struct Started {
    pub run_dir: RunDir,
    pub issuer: licsync_testkit::Issuer,
    pub cluster: cluster::BenchCluster,
    pub enrolled: Vec<control_plane::Enrolled>,
    pub register: std::time::Duration,
}

/// Raises the open-file limit (for `n` data planes in this process, or for one node's share
/// when `workers` processes hold them), starts `nodes` control-plane nodes on `backend` in a
/// fresh run directory and registers `n` data planes through the real registration RPC at the
/// first node.
pub(crate) async fn start_and_enrol(
    env: &BenchEnv,
    scenario: &str,
    n: usize,
    backend: cluster::Backend,
    nodes: usize,
    workers: usize,
) -> anyhow::Result<Started> {
    anyhow::ensure!(n > 0, "--dataplanes must be at least 1");
    let here = if workers == 0 {
        n
    } else {
        n.div_ceil(nodes.max(1))
    };
    procfs::raise_open_file_limit(here as u64 + FD_HEADROOM)?;
    let run_dir = env.run_dir(scenario)?;
    let issuer = licsync_testkit::Issuer::new();
    let cluster = cluster::BenchCluster::start(
        env,
        &run_dir.path().join("cp"),
        backend,
        nodes,
        &issuer.public,
    )
    .await?;
    progress(format_args!(
        "{} control-plane node(s) on {} up at {}; registering {n} data planes",
        cluster.nodes.len(),
        backend.name(),
        cluster
            .nodes
            .iter()
            .map(|node| node.cp.cluster_url.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let started = std::time::Instant::now();
    let enrolled = cluster.first().enrol(n).await?;
    Ok(Started {
        run_dir,
        issuer,
        cluster,
        enrolled,
        register: started.elapsed(),
    })
}

/// Each enrolled data plane at its node (round robin), with every node as its `sync.servers`
/// ([`cluster::BenchCluster::servers_for`]; none with one node, as an agent configured with
/// only its registration file).
pub(crate) fn cluster_specs(
    cluster: &cluster::BenchCluster,
    enrolled: &[control_plane::Enrolled],
) -> Vec<workers::DpSpec> {
    enrolled
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let servers = if cluster.nodes.len() > 1 {
                cluster.servers_for(i)
            } else {
                Vec::new()
            };
            let url = &cluster.nodes[cluster.node_of(i)].cp.cluster_url;
            workers::DpSpec::of(e, url, servers)
        })
        .collect()
}

/// A report's targets as the JSON `targets` object: name → met (`null`: not judged).
pub(crate) fn targets_json<const N: usize>(
    targets: [(&'static str, String, Option<bool>); N],
) -> serde_json::Value {
    targets
        .into_iter()
        .map(|(name, _, met)| (name.to_owned(), serde_json::json!(met)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Progress lines for whoever watches a long run (stderr, so stdout stays the result).
pub(crate) fn progress(text: impl std::fmt::Display) {
    eprintln!("licsync-bench: {text}");
}
