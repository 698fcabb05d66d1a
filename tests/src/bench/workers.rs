//! Simulated data planes in this process, or spread over several worker processes.
//!
//! One process may hold at most its open-files limit of connections (20,000 on these
//! machines), so a fleet larger than that is simulated by worker processes: `licsync-bench
//! fleet --workers W` (and `storm --workers W`) spawns W copies of itself as `licsync-bench
//! fleet-worker --specs FILE` (hidden), each running a [`SimulatedFleet`] for its share of the
//! data planes (contiguous slices, so every worker holds data planes of every node). The
//! coordinator registers every data plane itself and writes each worker's share to `FILE`
//! (keys included; the file lives in the run directory, mode 0600).
//!
//! The coordinator talks to each worker over its stdin and stdout, one JSON object per line,
//! one answer per request ([`Request`]). Arrival times cross the process boundary as Unix time
//! in nanoseconds: each process takes one (monotonic, wall clock) pair at start and converts
//! its monotonic instants through it, so latencies stay monotonic within a process and the
//! processes agree to within the microseconds between two clock reads.
//!
//! [`Fleet`] hides the difference: the scenarios drive a local fleet and a fleet of workers
//! the same way.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail, ensure};
use licsync_common::license::TrustedKeys;
use licsync_dp::cluster::{ClientIdentity, ClusterUrl, ConnectOptions};
use licsync_dp::config::SyncConfig;
use licsync_dp::sync::SyncSettings;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

use super::control_plane::Enrolled;
use super::procfs::{self, Usage};
use super::simulated::{Connected, Expect, Progress, SimulatedFleet};
use super::{FD_HEADROOM, progress};

/// How often the coordinator asks workers whether everyone arrived.
const POLL: Duration = Duration::from_millis(20);

/// One simulated data plane: what its registration file and `[sync]` table would hold.
#[derive(Clone, Serialize, Deserialize)]
pub struct DpSpec {
    pub dataplane_id: String,
    /// Sent in `Hello`, as at registration.
    pub hostname: String,
    pub private_key_pem: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub trusted_license_keys: Vec<String>,
    /// The server it connects to first (the registration file's URL).
    pub url: String,
    /// `sync.servers` (empty: `url` only).
    pub servers: Vec<String>,
}

impl DpSpec {
    /// The data plane `enrolled`, connecting to `url` first and failing over to `servers`.
    pub fn of(enrolled: &Enrolled, url: &str, servers: Vec<String>) -> Self {
        Self {
            dataplane_id: enrolled.dataplane_id.clone(),
            hostname: enrolled.hostname.clone(),
            private_key_pem: enrolled.private_key_pem.clone(),
            certificate_pem: enrolled.certificate_pem.clone(),
            ca_pem: enrolled.ca_pem.as_ref().clone(),
            trusted_license_keys: enrolled.trusted_license_keys.clone(),
            url: url.to_owned(),
            servers,
        }
    }

    /// Sync settings as the agent builds them from its registration file and the default
    /// `[sync]` table, and its `sync.servers`.
    pub fn client(&self) -> anyhow::Result<(SyncSettings, Vec<ClusterUrl>)> {
        let sync = SyncConfig::default();
        let settings = SyncSettings {
            dataplane_id: self.dataplane_id.clone(),
            cluster_url: ClusterUrl::parse(&self.url)?,
            ca_certificate_pem: self.ca_pem.clone(),
            identity: ClientIdentity {
                certificate_pem: self.certificate_pem.clone(),
                private_key_pem: self.private_key_pem.clone(),
            },
            trusted_keys: TrustedKeys::parse(&self.trusted_license_keys)?,
            follow_control_plane_keys: false,
            active_rule: licsync_dp::state::ActiveRule::default(),
            hostname: self.hostname.clone(),
            version: licsync_common::VERSION.to_owned(),
            heartbeat_interval: sync.heartbeat_interval.0,
            backoff_initial: sync.backoff_initial.0,
            backoff_max: sync.backoff_max.0,
            connect: ConnectOptions {
                connect_timeout: sync.connect_timeout.0,
                keepalive_interval: Some(sync.keepalive_interval.0),
                keepalive_timeout: sync.keepalive_timeout.0,
            },
        };
        let servers = self
            .servers
            .iter()
            .map(|s| ClusterUrl::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((settings, servers))
    }
}

/// This process's (monotonic, wall clock) pair, taken once.
fn anchor() -> (Instant, u128) {
    static ANCHOR: OnceLock<(Instant, u128)> = OnceLock::new();
    *ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        (Instant::now(), wall)
    })
}

/// `t` as Unix time in nanoseconds, through this process's anchor.
pub fn unix_ns(t: Instant) -> u128 {
    let (mono, wall) = anchor();
    if t >= mono {
        wall + t.duration_since(mono).as_nanos()
    } else {
        wall.saturating_sub(mono.duration_since(t).as_nanos())
    }
}

/// What is expected next, as it crosses to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireExpect {
    Document { id: String, document: String },
    NextUpdate,
}

impl From<&Expect> for WireExpect {
    fn from(expect: &Expect) -> Self {
        match expect {
            Expect::Document { id, document } => Self::Document {
                id: id.clone(),
                document: document.clone(),
            },
            Expect::NextUpdate => Self::NextUpdate,
        }
    }
}

impl From<WireExpect> for Expect {
    fn from(expect: WireExpect) -> Self {
        match expect {
            WireExpect::Document { id, document } => Self::Document { id, document },
            WireExpect::NextUpdate => Self::NextUpdate,
        }
    }
}

/// A coordinator's request to a worker; each gets one JSON line back.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Start every client → `{"synced", "started_ns", "last_ns"}`.
    Connect { concurrency: usize, timeout_ms: u64 },
    /// Announce an expectation → `{"expected"}`.
    Expect {
        expect: WireExpect,
        members: Option<String>,
        settle_ms: u64,
    },
    /// → `{"arrived"}` for the current expectation.
    Arrived,
    /// → `{"times_ns": [...]}`: each arrival of the current expectation.
    Times,
    /// → `{"arrived", "connected", "failures", "licenses_resent"}`.
    Sample,
    /// Remember what every client holds → `{}`.
    SnapshotHeld,
    /// → `{"unchanged"}`: every client holds what it held at the snapshot.
    HeldUnchanged,
}

/// Simulated data planes, here or in worker processes.
pub enum Fleet {
    Local {
        fleet: SimulatedFleet,
        current: Option<Arc<Progress>>,
        held: Option<Vec<Vec<(String, u64)>>>,
    },
    Workers(Vec<Worker>),
}

/// How the fleet is doing at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Arrivals at the current expectation.
    pub arrived: usize,
    /// Clients with an open stream.
    pub connected: usize,
    /// Why the clients that are not connected failed last, and how many.
    pub failures: BTreeMap<String, usize>,
    pub licenses_resent: u64,
}

impl Fleet {
    /// Starts `specs` as one [`SimulatedFleet`] here (`workers` = 0) or spread over `workers`
    /// processes of `bench_binary` (their spec files go to `dir`), and waits until each client
    /// has applied its first update or `timeout` passed. `concurrency` is shared among the
    /// workers.
    pub async fn connect(
        bench_binary: &Path,
        dir: &Path,
        specs: Vec<DpSpec>,
        workers: usize,
        concurrency: usize,
        timeout: Duration,
    ) -> anyhow::Result<(Self, Connected)> {
        if workers == 0 {
            let clients = specs
                .iter()
                .map(DpSpec::client)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (fleet, connected) = SimulatedFleet::connect(clients, concurrency, timeout).await?;
            return Ok((
                Self::Local {
                    fleet,
                    current: None,
                    held: None,
                },
                connected,
            ));
        }
        let n = specs.len();
        ensure!(
            workers <= n,
            "--workers {workers} is more than the {n} data planes"
        );
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut running = Vec::with_capacity(workers);
        for w in 0..workers {
            let share = &specs[w * n / workers..(w + 1) * n / workers];
            let file = dir.join(format!("worker-{w}.json"));
            write_private(&file, &serde_json::to_vec(share)?)?;
            running.push(Worker::spawn(bench_binary, &file, share.len()).await?);
        }
        let per_worker = if concurrency == 0 {
            0
        } else {
            concurrency.div_ceil(workers)
        };
        let request = Request::Connect {
            concurrency: per_worker,
            timeout_ms: timeout.as_millis() as u64,
        };
        let answers =
            futures::future::try_join_all(running.iter_mut().map(|w| w.call(&request))).await?;
        let mut synced = 0;
        let mut first = u128::MAX;
        let mut last = 0;
        for answer in &answers {
            synced += answer["synced"].as_u64().unwrap_or(0) as usize;
            first = first.min(ns(&answer["started_ns"]));
            last = last.max(ns(&answer["last_ns"]));
        }
        let elapsed = Duration::from_nanos(last.saturating_sub(first).min(u64::MAX as u128) as u64);
        Ok((Self::Workers(running), Connected { elapsed, synced }))
    }

    /// Announces what the data planes whose first server is `members` (`None`: all) should
    /// reach next; make the change only after this returns. Returns how many take part.
    pub async fn expect(
        &mut self,
        expect: Expect,
        members: Option<String>,
        settle: Duration,
    ) -> anyhow::Result<usize> {
        match self {
            Self::Local { fleet, current, .. } => {
                let progress = fleet.expect_some(expect, members, settle).await;
                let expected = progress.expected();
                *current = Some(progress);
                Ok(expected)
            }
            Self::Workers(workers) => {
                let request = Request::Expect {
                    expect: WireExpect::from(&expect),
                    members,
                    settle_ms: settle.as_millis() as u64,
                };
                let answers =
                    futures::future::try_join_all(workers.iter_mut().map(|w| w.call(&request)))
                        .await?;
                Ok(answers
                    .iter()
                    .map(|a| a["expected"].as_u64().unwrap_or(0) as usize)
                    .sum())
            }
        }
    }

    /// Arrivals at the current expectation so far.
    pub async fn arrived(&mut self) -> anyhow::Result<usize> {
        match self {
            Self::Local { current, .. } => Ok(current.as_ref().map_or(0, |p| p.arrived())),
            Self::Workers(workers) => {
                let answers = futures::future::try_join_all(
                    workers.iter_mut().map(|w| w.call(&Request::Arrived)),
                )
                .await?;
                Ok(answers
                    .iter()
                    .map(|a| a["arrived"].as_u64().unwrap_or(0) as usize)
                    .sum())
            }
        }
    }

    /// Waits until `expected` data planes arrived at the current expectation (`true`) or
    /// `deadline` passed (`false`).
    pub async fn wait_all(&mut self, expected: usize, deadline: Instant) -> anyhow::Result<bool> {
        if let Self::Local {
            current: Some(progress),
            ..
        } = self
        {
            return Ok(progress.wait_all(deadline).await);
        }
        loop {
            if self.arrived().await? >= expected {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep_until((Instant::now() + POLL).min(deadline)).await;
        }
    }

    /// Time from `since` to each arrival at the current expectation.
    pub async fn latencies(&mut self, since: Instant) -> anyhow::Result<Vec<Duration>> {
        match self {
            Self::Local { current, .. } => {
                Ok(current.as_ref().map_or(Vec::new(), |p| p.latencies(since)))
            }
            Self::Workers(workers) => {
                let since = unix_ns(since);
                let answers = futures::future::try_join_all(
                    workers.iter_mut().map(|w| w.call(&Request::Times)),
                )
                .await?;
                Ok(answers
                    .iter()
                    .flat_map(|a| a["times_ns"].as_array().cloned().unwrap_or_default())
                    .map(|t| {
                        let t = ns(&t).saturating_sub(since);
                        Duration::from_nanos(t.min(u64::MAX as u128) as u64)
                    })
                    .collect())
            }
        }
    }

    /// Arrivals, connections, failure reasons and resends right now.
    pub async fn sample(&mut self) -> anyhow::Result<Sample> {
        match self {
            Self::Local { fleet, current, .. } => Ok(Sample {
                arrived: current.as_ref().map_or(0, |p| p.arrived()),
                connected: fleet.connected(),
                failures: fleet.failures(),
                licenses_resent: fleet.licenses_resent(),
            }),
            Self::Workers(workers) => {
                let answers = futures::future::try_join_all(
                    workers.iter_mut().map(|w| w.call(&Request::Sample)),
                )
                .await?;
                let mut sample = Sample::default();
                for answer in answers {
                    sample.arrived += answer["arrived"].as_u64().unwrap_or(0) as usize;
                    sample.connected += answer["connected"].as_u64().unwrap_or(0) as usize;
                    sample.licenses_resent += answer["licenses_resent"].as_u64().unwrap_or(0);
                    let failures: BTreeMap<String, usize> =
                        serde_json::from_value(answer["failures"].clone()).unwrap_or_default();
                    for (reason, count) in failures {
                        *sample.failures.entry(reason).or_default() += count;
                    }
                }
                Ok(sample)
            }
        }
    }

    /// Remembers what every data plane holds, for [`Fleet::held_unchanged`].
    pub async fn snapshot_held(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Local { fleet, held, .. } => {
                *held = Some(fleet.held());
                Ok(())
            }
            Self::Workers(workers) => {
                futures::future::try_join_all(
                    workers.iter_mut().map(|w| w.call(&Request::SnapshotHeld)),
                )
                .await?;
                Ok(())
            }
        }
    }

    /// Every data plane holds exactly the `(id, revision)` set it held at the snapshot.
    pub async fn held_unchanged(&mut self) -> anyhow::Result<bool> {
        match self {
            Self::Local { fleet, held, .. } => Ok(held.as_ref() == Some(&fleet.held())),
            Self::Workers(workers) => {
                let answers = futures::future::try_join_all(
                    workers.iter_mut().map(|w| w.call(&Request::HeldUnchanged)),
                )
                .await?;
                Ok(answers.iter().all(|a| a["unchanged"] == true))
            }
        }
    }

    /// Memory and CPU of the processes running the data planes (this one, or every worker
    /// summed).
    pub fn usage(&self) -> anyhow::Result<Usage> {
        match self {
            Self::Local { .. } => procfs::usage("self"),
            Self::Workers(workers) => {
                let mut total = Usage {
                    rss_kib: 0,
                    cpu: Duration::ZERO,
                };
                for worker in workers {
                    let usage = procfs::usage(&worker.pid.to_string())?;
                    total.rss_kib += usage.rss_kib;
                    total.cpu += usage.cpu;
                }
                Ok(total)
            }
        }
    }

    /// Stops every client (and worker).
    pub async fn stop(self) {
        match self {
            Self::Local { fleet, .. } => fleet.stop().await,
            Self::Workers(workers) => {
                for worker in workers {
                    worker.stop().await;
                }
            }
        }
    }
}

fn ns(value: &Value) -> u128 {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| value.as_u64().map(u128::from))
        .unwrap_or(0)
}

/// Writes `bytes` to a new file only its owner can read (it holds private keys).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A worker process and its request pipe.
pub struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    async fn spawn(bench_binary: &Path, specs: &Path, count: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(bench_binary)
            .arg("fleet-worker")
            .arg("--specs")
            .arg(specs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} fleet-worker", bench_binary.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("worker exited at once"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("worker stdin"))?;
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow!("worker stdout"))?,
        );
        progress(format_args!("worker {pid} started for {count} data planes"));
        Ok(Self {
            child,
            pid,
            stdin,
            stdout,
        })
    }

    /// Sends `request` and reads its answer (an `{"error"}` answer is an error).
    async fn call(&mut self, request: &Request) -> anyhow::Result<Value> {
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("worker {} stopped taking requests", self.pid))?;
        self.stdin.flush().await?;
        let mut answer = String::new();
        let read = self.stdout.read_line(&mut answer).await?;
        ensure!(read > 0, "worker {} exited", self.pid);
        let value: Value = serde_json::from_str(&answer)
            .with_context(|| format!("worker {} answered {answer:?}", self.pid))?;
        if let Some(error) = value["error"].as_str() {
            bail!("worker {}: {error}", self.pid);
        }
        Ok(value)
    }

    /// Closes its stdin (the worker then stops its clients and exits) and makes sure it is
    /// gone.
    async fn stop(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The worker side (`licsync-bench fleet-worker --specs FILE`): runs the data planes in `specs`
/// and answers the coordinator's requests on stdin until stdin closes.
pub async fn serve(specs: &Path) -> anyhow::Result<()> {
    anchor();
    let bytes = std::fs::read(specs).with_context(|| format!("cannot read {}", specs.display()))?;
    let specs: Vec<DpSpec> = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} holds no data-plane specs", specs.display()))?;
    procfs::raise_open_file_limit(specs.len() as u64 + FD_HEADROOM)?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut fleet: Option<SimulatedFleet> = None;
    let mut pending = Some(specs);
    let mut current: Option<Arc<Progress>> = None;
    let mut held: Option<Vec<Vec<(String, u64)>>> = None;
    while let Some(line) = lines.next_line().await? {
        let answer = match serde_json::from_str::<Request>(&line) {
            Err(e) => json!({ "error": format!("bad request {line:?}: {e}") }),
            Ok(request) => {
                match handle(request, &mut fleet, &mut pending, &mut current, &mut held).await {
                    Ok(answer) => answer,
                    Err(e) => json!({ "error": format!("{e:#}") }),
                }
            }
        };
        let mut text = answer.to_string();
        text.push('\n');
        stdout.write_all(text.as_bytes()).await?;
        stdout.flush().await?;
    }
    if let Some(fleet) = fleet {
        fleet.stop().await;
    }
    Ok(())
}

async fn handle(
    request: Request,
    fleet: &mut Option<SimulatedFleet>,
    pending: &mut Option<Vec<DpSpec>>,
    current: &mut Option<Arc<Progress>>,
    held: &mut Option<Vec<Vec<(String, u64)>>>,
) -> anyhow::Result<Value> {
    if let Request::Connect {
        concurrency,
        timeout_ms,
    } = request
    {
        let specs = pending.take().ok_or_else(|| anyhow!("already connected"))?;
        let clients = specs
            .iter()
            .map(DpSpec::client)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let started = Instant::now();
        let (running, connected) =
            SimulatedFleet::connect(clients, concurrency, Duration::from_millis(timeout_ms))
                .await?;
        *fleet = Some(running);
        return Ok(json!({
            "synced": connected.synced,
            "started_ns": unix_ns(started).to_string(),
            "last_ns": unix_ns(started + connected.elapsed).to_string(),
        }));
    }
    let fleet = fleet.as_ref().ok_or_else(|| anyhow!("connect first"))?;
    Ok(match request {
        Request::Connect { .. } => unreachable!("handled above"),
        Request::Expect {
            expect,
            members,
            settle_ms,
        } => {
            let progress = fleet
                .expect_some(expect.into(), members, Duration::from_millis(settle_ms))
                .await;
            let expected = progress.expected();
            *current = Some(progress);
            json!({ "expected": expected })
        }
        Request::Arrived => json!({ "arrived": current.as_ref().map_or(0, |p| p.arrived()) }),
        Request::Times => {
            let times: Vec<String> = current
                .as_ref()
                .map(|p| p.times())
                .unwrap_or_default()
                .into_iter()
                .map(|t| unix_ns(t).to_string())
                .collect();
            json!({ "times_ns": times })
        }
        Request::Sample => json!({
            "arrived": current.as_ref().map_or(0, |p| p.arrived()),
            "connected": fleet.connected(),
            "failures": fleet.failures(),
            "licenses_resent": fleet.licenses_resent(),
        }),
        Request::SnapshotHeld => {
            *held = Some(fleet.held());
            json!({})
        }
        Request::HeldUnchanged => json!({ "unchanged": held.as_ref() == Some(&fleet.held()) }),
    })
}
