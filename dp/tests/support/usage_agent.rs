//! The data-plane agent under test, as an operator or a gateway sees it: the real `licsync-dp`
//! binary as a child process ([`AgentProcess`]; the in-process agent is [`super::agent::Agent`]),
//! both driven through their local HTTP API ([`LocalApi`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use licsync_common::pki::CertificateAuthority;
use licsync_dp::registration::RegistrationFile;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::Value;

use super::{GUARD, eventually};

/// A port free at the time of asking (for the binary, which binds its own listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A registration for a control plane that is not running: the agent starts, serves its local
/// API and counts, and its sync client keeps retrying.
pub fn offline_registration(path: &Path) {
    let (ca, _) = CertificateAuthority::generate("Offline CA", Duration::from_secs(3600)).unwrap();
    let (key, csr) = licsync_common::pki::new_key_and_csr("edge").unwrap();
    let id = "11111111-2222-4333-8444-555555555555";
    let issued = ca
        .sign_dataplane(&csr, id, Duration::from_secs(3600))
        .unwrap();
    RegistrationFile {
        dataplane_id: id.into(),
        dataplane_name: "edge".into(),
        cluster_url: format!("https://127.0.0.1:{}", free_port()),
        ca_certificate: ca.cert_pem().to_owned(),
        certificate: issued.cert_pem,
        private_key: key,
        trusted_license_keys: vec![],
        registered_at: "2025-01-01T00:00:00Z".into(),
        renewed_at: None,
    }
    .save(path)
    .unwrap();
}

/// A client of an agent's local API.
#[derive(Clone)]
pub struct LocalApi {
    pub base: String,
    http: reqwest::Client,
}

impl LocalApi {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    /// Status and JSON body (`Value::Null` when the body is not JSON).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /usage` with `body` sent as is.
    pub async fn post_usage(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/usage", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Counts `n` requests, asserting they were accepted.
    pub async fn count(&self, n: u64) {
        let (status, body) = self.post_usage(format!("{{\"request_count\": {n}}}")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    /// `GET /usage`.
    pub async fn usage(&self) -> Value {
        let (status, body) = self.get("/usage").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until `GET /usage` satisfies `ready`, and returns it.
    pub async fn usage_when(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        eventually(what, || async {
            let usage = self.usage().await;
            ready(&usage).then_some(usage)
        })
        .await
    }

    /// Waits until the local API answers.
    pub async fn wait_until_up(&self) {
        eventually("the local API to answer", || async {
            self.http
                .get(format!("{}/health/live", self.base))
                .send()
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }
}

/// The requests `GET /usage` shows for `bucket` (0 when absent).
pub fn bucket_count(usage: &Value, bucket: &str) -> u64 {
    usage["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["bucket"] == bucket)
        .and_then(|b| b["request_count"].as_u64())
        .unwrap_or(0)
}

/// Requests counted over every bucket in `GET /usage`.
pub fn total_count(usage: &Value) -> u64 {
    usage["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["request_count"].as_u64())
        .sum()
}

/// The `licsync-dp` binary running with a configuration file of its own.
pub struct AgentProcess {
    pub api: LocalApi,
    child: tokio::process::Child,
}

/// What a test varies in the binary's configuration.
pub struct ProcessConfig {
    pub dir: PathBuf,
    pub flush_interval: &'static str,
}

impl ProcessConfig {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn registration_file(&self) -> PathBuf {
        self.dir.join("registration.yaml")
    }
}

impl AgentProcess {
    /// Starts `licsync-dp run` on a free port and waits for its local API.
    pub async fn start(config: &ProcessConfig) -> Self {
        let port = free_port();
        let path = config.dir.join("licsync-dp.toml");
        std::fs::write(
            &path,
            format!(
                "data_dir = {data:?}\nregistration_file = {reg:?}\n[local]\nlisten = \"127.0.0.1:{port}\"\n[sync]\nbackoff_max = \"2s\"\n[usage]\nflush_interval = \"{flush}\"\nreport_interval = \"1s\"\n",
                data = config.data_dir(),
                reg = config.registration_file(),
                flush = config.flush_interval,
            ),
        )
        .unwrap();
        // Its log, kept next to its data for a failing test to be read (a pipe nobody reads
        // could fill up and stall the agent).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.dir.join("agent.log"))
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
            .args(["run", "--config"])
            .arg(&path)
            .env("LICSYNC_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let api = LocalApi::new(format!("http://127.0.0.1:{port}"));
        api.wait_until_up().await;
        Self { api, child }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id().unwrap()).unwrap());
        kill(pid, signal).unwrap();
    }

    /// SIGKILL: the process gets no chance to save anything.
    pub async fn kill(mut self) {
        self.signal(Signal::SIGKILL);
        tokio::time::timeout(GUARD, self.child.wait())
            .await
            .expect("a killed agent exits")
            .unwrap();
    }

    /// SIGTERM, asserting a clean exit within 10 s.
    pub async fn terminate(mut self) {
        self.signal(Signal::SIGTERM);
        let exit = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("exits within 10 s of SIGTERM")
            .unwrap();
        assert!(exit.success(), "exit status {exit}");
    }
}
