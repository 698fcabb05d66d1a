//! `dp-usage`: the data plane's side of usage metering. One real `licsync-dp` process, and C
//! HTTP/1.1 keep-alive clients sending `POST /usage {"request_count": 1}` to its local API one
//! after the other for a fixed time, as a gateway counting each request would; every `202`
//! is one increment.
//!
//! The agent runs with a registration for a control plane that is not running (its own CA, a
//! port nobody listens on): it serves its local API and counts regardless, and its sync client
//! retries on a long backoff, so nothing but counting and the periodic flush to `usage.json`
//! costs CPU.
//!
//! Exactness: with no failed call, `GET /usage` must show as many requests as there were `202`
//! answers, and after a SIGTERM `<data_dir>/usage.json` must hold that total too (a clean stop
//! loses nothing).
//!
//! The clients are raw hyper HTTP/1.1 connections (no pool, no redirect logic), the cheapest
//! load generator at hand, because they share the machine's cores with the agent; the agent's
//! CPU per request, read from `/proc`, says what the agent would do alone on one core.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use licsync_common::pki::{self, CertificateAuthority};
use licsync_dp::registration::RegistrationFile;
use licsync_dp::usage::store::UsageFile;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::stats::{Summary, ms, round3, secs};
use super::table::{Table, verdict};
use super::{BenchEnv, procfs, progress};
use crate::process::{Process, launch_with_env};

/// Target (`BENCHMARKS.md`).
pub const TARGET_INCREMENTS_PER_S: f64 = 50_000.0;

/// The body every client sends: one request counted.
const BODY: &[u8] = br#"{"request_count": 1}"#;

/// The agent's log: `dp.started` (which carries the local address) and warnings only, so that
/// logging costs nothing measurable.
const DP_LOG_FILTER: &str = "warn,licsync_dp::agent=info";

/// How long the agent may take to stop after SIGTERM (its final flush included).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct DpUsageOptions {
    /// Concurrent HTTP/1.1 connections, each with one request in flight.
    pub connections: usize,
    /// How long they send.
    pub duration: Duration,
    /// Requests on one connection before it is closed and a new one opened (0: one
    /// connection per client for the whole run).
    pub requests_per_connection: u64,
}

/// What one client did.
#[derive(Debug, Default)]
struct ClientRun {
    /// `202` answers: increments the agent acknowledged.
    accepted: u64,
    /// Answers other than `202`.
    refused: u64,
    /// Connections that failed or broke (a request in flight may still have been counted).
    errors: u64,
    first_error: Option<String>,
    connections: u64,
    latencies: Vec<Duration>,
}

impl ClientRun {
    fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }
}

#[derive(Debug, Clone)]
pub struct DpUsageReport {
    pub options: DpUsageOptions,
    /// Process start → `dp.started` logged.
    pub start: Duration,
    pub elapsed: Duration,
    pub accepted: u64,
    pub refused: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub connections_opened: u64,
    pub latency: Summary,
    /// Every bucket's `request_count` in `GET /usage` after the run.
    pub agent_total: u64,
    /// What `GET /usage` said was not flushed yet.
    pub agent_unflushed: u64,
    /// Every bucket's `request_count` in `usage.json` after the SIGTERM.
    pub file_total: u64,
    /// The agent exited with status 0 within [`STOP_TIMEOUT`] of the SIGTERM.
    pub clean_exit: bool,
    pub agent_cpu: Duration,
    pub agent_rss_kib: u64,
    pub bench_cpu: Duration,
    /// `/proc/loadavg` (1, 5, 15 min) just before the measured phase.
    pub load_average: Option<String>,
}

impl DpUsageReport {
    /// `202` answers per second over the measured phase: increments per second, since each
    /// adds 1.
    pub fn per_second(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        round3(self.accepted as f64 / self.elapsed.as_secs_f64())
    }

    /// Agent CPU per accepted request, in microseconds: what one increment costs the agent,
    /// whatever else shares the machine.
    pub fn agent_us_per_request(&self) -> f64 {
        per_request_us(self.agent_cpu, self.accepted)
    }

    /// The same for this process (the load generator).
    pub fn bench_us_per_request(&self) -> f64 {
        per_request_us(self.bench_cpu, self.accepted)
    }

    /// Requests per second one fully busy core of agent would answer at the measured cost.
    pub fn agent_core_per_second(&self) -> f64 {
        let us = self.agent_us_per_request();
        if us == 0.0 {
            return 0.0;
        }
        (1e6 / us).round()
    }

    /// The agent counted exactly what it acknowledged, in memory and on disk after a clean
    /// stop.
    pub fn exact(&self) -> bool {
        self.errors == 0
            && self.refused == 0
            && self.clean_exit
            && self.agent_total == self.accepted
            && self.file_total == self.accepted
    }

    fn targets(&self) -> [(&'static str, String, Option<bool>); 2] {
        [
            (
                "increments_ge_50000_per_s",
                format!("{}/s", self.per_second()),
                Some(self.per_second() >= TARGET_INCREMENTS_PER_S),
            ),
            (
                "total_exact",
                format!(
                    "{} = {} = {}",
                    self.agent_total, self.file_total, self.accepted
                ),
                Some(self.exact()),
            ),
        ]
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": "dp-usage",
            "connections": self.options.connections,
            "duration_s": secs(self.options.duration),
            "requests_per_connection": self.options.requests_per_connection,
            "start_s": secs(self.start),
            "elapsed_s": secs(self.elapsed),
            "accepted": self.accepted,
            "increments_per_s": self.per_second(),
            "refused": self.refused,
            "errors": self.errors,
            "first_error": self.first_error,
            "connections_opened": self.connections_opened,
            "latency_ms": self.latency.to_json_ms(),
            "agent_total": self.agent_total,
            "agent_unflushed": self.agent_unflushed,
            "file_total": self.file_total,
            "clean_exit": self.clean_exit,
            "exact": self.exact(),
            "agent_cpu_s": secs(self.agent_cpu),
            "agent_cpu_us_per_request": self.agent_us_per_request(),
            "agent_one_core_per_s": self.agent_core_per_second(),
            "agent_rss_kib": self.agent_rss_kib,
            "bench_cpu_s": secs(self.bench_cpu),
            "bench_cpu_us_per_request": self.bench_us_per_request(),
            "load_average": self.load_average,
            "targets": super::targets_json(self.targets()),
        })
    }

    pub fn table(&self) -> Table {
        let c = self.options.connections;
        let mut t = Table::new(
            format!(
                "dp-usage: {c} connections sending POST /usage for {:.0} s (agent started in {:.2} s)",
                self.options.duration.as_secs_f64(),
                self.start.as_secs_f64()
            ),
            &["dp-usage", "value"],
        );
        let rows = [
            (
                "202 answers (increments)",
                format!(
                    "{} in {:.2} s = {}/s",
                    self.accepted,
                    self.elapsed.as_secs_f64(),
                    self.per_second()
                ),
            ),
            ("other answers", self.refused.to_string()),
            ("failed connections", self.errors.to_string()),
            ("connections opened", self.connections_opened.to_string()),
            (
                "latency p50 / p99 / max",
                format!(
                    "{} / {} / {} ms",
                    ms(self.latency.p50),
                    ms(self.latency.p99),
                    ms(self.latency.max)
                ),
            ),
            (
                "GET /usage total (unflushed)",
                format!("{} ({})", self.agent_total, self.agent_unflushed),
            ),
            (
                "usage.json total after SIGTERM",
                format!(
                    "{} (clean exit: {})",
                    self.file_total,
                    if self.clean_exit { "yes" } else { "no" }
                ),
            ),
            (
                "agent CPU while counting",
                format!(
                    "{:.2} s = {} µs per request (one core: {}/s)",
                    self.agent_cpu.as_secs_f64(),
                    self.agent_us_per_request(),
                    self.agent_core_per_second()
                ),
            ),
            (
                "bench (clients) CPU while counting",
                format!(
                    "{:.2} s = {} µs per request",
                    self.bench_cpu.as_secs_f64(),
                    self.bench_us_per_request()
                ),
            ),
            ("agent RSS after", format!("{} KiB", self.agent_rss_kib)),
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
pub async fn run(env: &BenchEnv, options: &DpUsageOptions) -> anyhow::Result<DpUsageReport> {
    ensure!(options.connections > 0, "--connections must be at least 1");
    ensure!(
        !options.duration.is_zero(),
        "--duration must be longer than 0s"
    );
    ensure!(
        env.dp_binary.exists(),
        "{} does not exist; build it with `cargo build --release -p licsync-dp` or pass --dp-binary",
        env.dp_binary.display()
    );
    procfs::raise_open_file_limit(options.connections as u64 + super::FD_HEADROOM)?;
    let run_dir = env.run_dir("dp-usage")?;
    let dir = run_dir.path().join("dp");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    offline_registration(&dir.join("registration.yaml"))?;

    let starting = Instant::now();
    let mut agent = start_agent(&env.dp_binary, &dir).await?;
    let start = starting.elapsed();
    let addr = agent.addr;
    let pid = agent.process.pid().to_string();
    progress(format_args!(
        "agent up at {addr}; {} connections for {:.0} s",
        options.connections,
        options.duration.as_secs_f64()
    ));

    let load_average = procfs::load_average();
    let agent_before = procfs::usage(&pid)?;
    let bench_before = procfs::usage("self")?;
    let started = Instant::now();
    let deadline = started + options.duration;
    let tasks: Vec<_> = (0..options.connections)
        .map(|_| tokio::spawn(send_until(addr, deadline, options.requests_per_connection)))
        .collect();
    let mut runs = Vec::with_capacity(tasks.len());
    for task in tasks {
        runs.push(task.await.context("a client task failed")?);
    }
    let elapsed = started.elapsed();
    let agent_after = procfs::usage(&pid)?;
    let bench_after = procfs::usage("self")?;

    let usage = get_usage(addr).await?;
    let agent_total = bucket_sum(&usage["buckets"]);
    let agent_unflushed = usage["unflushed"].as_u64().unwrap_or(0);

    let clean_exit = agent
        .process
        .stop(Signal::SIGTERM, STOP_TIMEOUT)
        .is_some_and(|status| status.success());
    let file_total = file_total(&dir.join("data/usage.json"))?;

    let mut latencies = Vec::new();
    for run in &mut runs {
        latencies.append(&mut run.latencies);
    }
    let report = DpUsageReport {
        options: options.clone(),
        start,
        elapsed,
        accepted: runs.iter().map(|r| r.accepted).sum(),
        refused: runs.iter().map(|r| r.refused).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        first_error: runs.iter().find_map(|r| r.first_error.clone()),
        connections_opened: runs.iter().map(|r| r.connections).sum(),
        latency: Summary::of(latencies),
        agent_total,
        agent_unflushed,
        file_total,
        clean_exit,
        agent_cpu: agent_after.cpu.saturating_sub(agent_before.cpu),
        agent_rss_kib: agent_after.rss_kib,
        bench_cpu: bench_after.cpu.saturating_sub(bench_before.cpu),
        load_average,
    };
    progress(format_args!(
        "{} accepted in {:.2} s ({}/s); GET /usage {}, usage.json {}",
        report.accepted,
        elapsed.as_secs_f64(),
        report.per_second(),
        agent_total,
        file_total
    ));
    Ok(report)
}

/// A running agent and its local API address.
struct Agent {
    process: Process,
    addr: SocketAddr,
}

/// Writes the agent's configuration into `dir` and starts `binary run`, waiting for
/// `dp.started`.
async fn start_agent(binary: &Path, dir: &Path) -> anyhow::Result<Agent> {
    let config = format!(
        r#"
data_dir = {data:?}
registration_file = {reg:?}
[local]
listen = "127.0.0.1:0"
[sync]
rotate_certificate = false
backoff_initial = "1h"
backoff_max = "1h"
[log]
format = "json"
"#,
        data = path_str(&dir.join("data"))?,
        reg = path_str(&dir.join("registration.yaml"))?,
    );
    let config: toml::Table = config.parse().context("the agent's configuration")?;
    let (process, started) = launch_with_env(
        binary,
        &["run"],
        dir,
        "licsync-dp.toml",
        &config,
        "dp.started",
        &[("LICSYNC_LOG", DP_LOG_FILTER)],
    )
    .await;
    let local = started["local.addr"].as_str().unwrap_or_default();
    let addr = local
        .parse()
        .with_context(|| format!("dp.started carries no local.addr: {started}"))?;
    Ok(Agent { process, addr })
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8; use another --work-dir", path.display()))
}

/// A registration for a control plane that is not running: a CA of its own, a certificate it
/// signed for this data plane, and a cluster URL on a port nobody listens on.
pub fn offline_registration(path: &Path) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(24 * 3600);
    let (ca, _) = CertificateAuthority::generate("licsync-bench offline CA", ttl)?;
    let (key, csr) = pki::new_key_and_csr("bench-edge")?;
    let id = uuid::Uuid::new_v4().to_string();
    let issued = ca.sign_dataplane(&csr, &id, ttl)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("a free port for the absent control plane")?
        .port();
    RegistrationFile {
        dataplane_id: id,
        dataplane_name: "bench-edge".into(),
        cluster_url: format!("https://127.0.0.1:{port}"),
        ca_certificate: ca.cert_pem().to_owned(),
        certificate: issued.cert_pem,
        private_key: key,
        trusted_license_keys: vec![],
        registered_at: "2025-01-01T00:00:00Z".into(),
        renewed_at: None,
    }
    .save(path)?;
    Ok(())
}

/// One client: open a connection, send `POST /usage` one after the other until `deadline`
/// (or `per_connection` requests, then a new connection).
async fn send_until(addr: SocketAddr, deadline: Instant, per_connection: u64) -> ClientRun {
    let mut run = ClientRun::default();
    let body = Bytes::from_static(BODY);
    let host = addr.to_string();
    while Instant::now() < deadline {
        let mut sender = match connect(addr).await {
            Ok(sender) => sender,
            Err(error) => {
                run.error(|| format!("{error:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        run.connections += 1;
        let mut sent = 0u64;
        while Instant::now() < deadline && (per_connection == 0 || sent < per_connection) {
            sent += 1;
            let request = match Request::post("/usage")
                .header(hyper::header::HOST, &host)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
            {
                Ok(request) => request,
                Err(error) => {
                    run.error(|| format!("cannot build the request: {error}"));
                    return run;
                }
            };
            let at = Instant::now();
            let answer = match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    response
                        .into_body()
                        .collect()
                        .await
                        .map(|body| (status, body.to_bytes()))
                }
                Err(error) => Err(error),
            };
            match answer {
                Ok((StatusCode::ACCEPTED, _)) => {
                    run.latencies.push(at.elapsed());
                    run.accepted += 1;
                }
                Ok((status, body)) => {
                    run.latencies.push(at.elapsed());
                    run.refused += 1;
                    if run.first_error.is_none() {
                        run.first_error =
                            Some(format!("{status}: {}", String::from_utf8_lossy(&body)));
                    }
                }
                Err(error) => {
                    run.error(|| format!("POST /usage: {error}"));
                    break;
                }
            }
        }
    }
    run
}

type Sender = http1::SendRequest<Full<Bytes>>;

/// An HTTP/1.1 connection to `addr`, its driver spawned (it ends when the sender is dropped).
async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// `GET /usage` on the agent.
async fn get_usage(addr: SocketAddr) -> anyhow::Result<Value> {
    let mut sender = connect(addr).await?;
    let request = Request::get("/usage")
        .header(hyper::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .context("GET /usage request")?;
    let response = sender.send_request(request).await.context("GET /usage")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("GET /usage body")?
        .to_bytes();
    if status != StatusCode::OK {
        bail!(
            "GET /usage answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).context("GET /usage is not JSON")
}

/// The sum of `request_count` over a list of buckets (`GET /usage`'s `buckets`).
fn bucket_sum(buckets: &Value) -> u64 {
    buckets
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["request_count"].as_u64())
        .sum()
}

/// Every bucket's durable count in the agent's `usage.json`.
fn file_total(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: UsageFile = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a usage file", path.display()))?;
    Ok(file.buckets.values().map(|b| b.request_count).sum())
}

fn per_request_us(cpu: Duration, requests: u64) -> f64 {
    if requests == 0 {
        return 0.0;
    }
    round3(cpu.as_secs_f64() * 1e6 / requests as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_buckets() {
        let buckets = json!([
            {"bucket": "2026-11", "request_count": 5, "unflushed": 0},
            {"bucket": "2026-10", "request_count": 7}
        ]);
        assert_eq!(bucket_sum(&buckets), 12);
        assert_eq!(bucket_sum(&Value::Null), 0);
        assert_eq!(per_request_us(Duration::from_secs(1), 50_000), 20.0);
        assert_eq!(per_request_us(Duration::from_secs(1), 0), 0.0);
    }
}
