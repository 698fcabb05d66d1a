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
//! - Pieces: [`control_plane`] (the child process, its Admin API, enrolment), [`simulated`]
//!   (the in-process data planes and their probes), [`floor`] (the minimal tonic server to
//!   compare against), [`stats`] (percentiles), [`procfs`] (RSS, CPU, open-file limit),
//!   [`table`] (the printed tables).
//!
//! Everything talks to 127.0.0.1 only, and every wait is bounded.

pub mod admin;
pub mod control_plane;
pub mod dp_usage;
pub mod fleet;
pub mod floor;
pub mod procfs;
pub mod simulated;
pub mod stats;
pub mod storm;
pub mod table;
pub mod ui;
pub mod usage;

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

/// What every fleet-sized scenario starts from: a control plane and N registered data planes.
pub(crate) struct Started {
    pub run_dir: RunDir,
    pub issuer: licsync_testkit::Issuer,
    pub cp: control_plane::BenchCp,
    pub enrolled: Vec<control_plane::Enrolled>,
    pub register: std::time::Duration,
}

/// Raises the open-file limit for `n` data planes, starts the control plane in a fresh run
/// directory and registers `n` data planes through the real registration RPC.
pub(crate) async fn start_and_enrol(
    env: &BenchEnv,
    scenario: &str,
    n: usize,
) -> anyhow::Result<Started> {
    anyhow::ensure!(n > 0, "--dataplanes must be at least 1");
    procfs::raise_open_file_limit(n as u64 + FD_HEADROOM)?;
    let run_dir = env.run_dir(scenario)?;
    let issuer = licsync_testkit::Issuer::new();
    let cp =
        control_plane::BenchCp::start(&run_dir.path().join("cp"), &env.cp_binary, &issuer.public)
            .await?;
    progress(format_args!(
        "control plane up at {}; registering {n} data planes",
        cp.cp.cluster_url
    ));
    let started = std::time::Instant::now();
    let enrolled = cp.enrol(n).await?;
    Ok(Started {
        run_dir,
        issuer,
        cp,
        enrolled,
        register: started.elapsed(),
    })
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
