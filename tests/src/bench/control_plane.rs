//! The control plane under benchmark: the real `licsync-cp` executable as a child process with
//! its own data directory, the Admin API calls the scenarios time, and the enrolment of
//! simulated data planes through the real `Registration.Register` RPC.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use licsync_common::pki;
use licsync_common::proto::RegisterRequest;
use licsync_common::proto::license_sync_client::LicenseSyncClient;
use licsync_common::proto::registration_client::RegistrationClient;
use licsync_dp::cluster::{self, ClientIdentity, ClusterUrl, ConnectOptions};
use reqwest::StatusCode;
use serde_json::json;
use tonic::transport::Channel;
use uuid::Uuid;

use super::procfs::{self, Usage};
use crate::cp::Cp;

/// Keeps the control plane's log to what the benchmark needs (`cp.started`) plus warnings:
/// ten thousand `dataplane.connected` lines would cost more than the work measured.
const CP_LOG_FILTER: &str = "warn,licsync_cp::server=info";

/// Replaces [`CP_LOG_FILTER`] to see more of what the nodes do (at the cost of the log's
/// CPU); the storm then counts every event the nodes logged (`node_warnings`).
pub const CP_LOG_ENV: &str = "LICSYNC_BENCH_CP_LOG";

/// The nodes' log filter: [`CP_LOG_ENV`] when set.
pub fn cp_log_filter() -> String {
    std::env::var(CP_LOG_ENV).unwrap_or_else(|_| CP_LOG_FILTER.to_owned())
}

/// Every simulated data plane connects from 127.0.0.1, so the per-address connection limit
/// (meant for real fleets, where a NAT rarely hides thousands of data planes) is turned off.
const BENCH_CONFIG: &str = "[cluster]\nmax_connections_per_ip = 0\n";

/// Most data planes one registration token may register (the Admin API's `max_uses` cap).
const MAX_TOKEN_USES: usize = 10_000;

/// Registrations in flight at once, over one HTTP/2 connection.
const REGISTER_CONCURRENCY: usize = 32;

/// Registrations over one connection; the next chunk opens a new one. The control plane
/// closes a connection that has had only short calls in progress, without a pause, for
/// longer than 30 s (`SHORT_CALL_LIMIT`, which bounds anonymous clients), and 32
/// registrations in flight never pause: 1,000 take a few seconds even on a loaded machine.
const REGISTER_CHUNK: usize = 1_000;

/// How often the registration's progress is printed.
const REGISTER_PROGRESS_EVERY: usize = 5_000;

/// A running `licsync-cp` and an Admin API client.
pub struct BenchCp {
    pub cp: Cp,
    http: reqwest::Client,
}

impl BenchCp {
    /// Wraps a control plane started some other way (the end-to-end tests start the debug
    /// build with their own configuration).
    pub fn new(cp: Cp) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .context("HTTP client")?;
        Ok(Self { cp, http })
    }

    /// `GET /license/report[?by=dataplane]`: the signed usage report as received.
    pub async fn usage_report(&self, by_dataplane: bool) -> anyhow::Result<serde_json::Value> {
        let path = if by_dataplane {
            "/license/report?by=dataplane"
        } else {
            "/license/report"
        };
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.cp.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        ensure!(
            status == StatusCode::OK,
            "GET {path} answered {status}: {body}"
        );
        Ok(body)
    }

    /// Starts `executable` on 127.0.0.1 ports it picks itself, with its data directory at
    /// `dir/data` (sled storage there unless `overrides`, TOML merged over the benchmark's
    /// configuration, say otherwise), trusting `trusted_key` for licenses.
    pub async fn start(
        dir: &Path,
        executable: &Path,
        trusted_key: &str,
        overrides: &str,
    ) -> anyhow::Result<Self> {
        ensure!(
            executable.exists(),
            "{} does not exist; build it with `cargo build --release -p licsync-cp` or pass --cp-binary",
            executable.display()
        );
        let cp = Cp::start_with(
            dir,
            &[trusted_key],
            &format!("{BENCH_CONFIG}{overrides}"),
            executable,
            &[("LICSYNC_LOG", &cp_log_filter())],
        )
        .await;
        Self::new(cp)
    }

    /// Resident memory and CPU time of the control-plane process.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        procfs::usage(&self.cp.process.pid().to_string())
    }

    /// The cluster CA, read from the data directory and checked against the fingerprint the
    /// control plane logged at start (what `--ca-cert-hash` pins).
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        let path = self.cp.dir.join("data/pki/ca.crt");
        let pem = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let der = pki::first_certificate(&pem, "the cluster CA")?;
        ensure!(
            pki::sha256_hex(&der) == self.cp.ca_fingerprint,
            "{} is not the CA the control plane announced (sha256:{})",
            path.display(),
            self.cp.ca_fingerprint
        );
        Ok(pem)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cp.admin_url)
    }

    /// `PUT /licenses/{id}`: creates or replaces; the answer comes once the write is durable.
    pub async fn put_license(&self, id: Uuid, document: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .put(self.url(&format!("/licenses/{id}")))
            .bearer_auth(&self.cp.token)
            .json(&json!({ "payload": document }))
            .send()
            .await
            .context("PUT /licenses/{id}")?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            bail!("PUT /licenses/{id} answered {status}: {body}");
        }
        Ok(())
    }

    /// `POST /licenses`: `Ok(Some(id))` on 201, `Ok(None)` on any other status.
    pub async fn post_license(&self, document: &str) -> anyhow::Result<Option<String>> {
        let response = self
            .http
            .post(self.url("/licenses"))
            .bearer_auth(&self.cp.token)
            .json(&json!({ "payload": document }))
            .send()
            .await
            .context("POST /licenses")?;
        if response.status() != StatusCode::CREATED {
            return Ok(None);
        }
        let body: serde_json::Value = response.json().await.context("POST /licenses body")?;
        Ok(body["id"].as_str().map(str::to_owned))
    }

    /// `GET /licenses/{id}`: whether it answered 200 (the body is read in full).
    pub async fn get_license(&self, id: &str) -> anyhow::Result<bool> {
        let response = self
            .http
            .get(self.url(&format!("/licenses/{id}")))
            .bearer_auth(&self.cp.token)
            .send()
            .await
            .context("GET /licenses/{id}")?;
        let ok = response.status() == StatusCode::OK;
        response.bytes().await.context("GET /licenses/{id} body")?;
        Ok(ok)
    }

    /// Registration-token secrets that together register `count` data planes.
    async fn registration_tokens(&self, count: usize) -> anyhow::Result<Vec<String>> {
        let mut tokens = Vec::new();
        let mut left = count;
        while left > 0 {
            let uses = left.min(MAX_TOKEN_USES);
            let response = self
                .http
                .post(self.url("/registration-tokens"))
                .bearer_auth(&self.cp.token)
                .json(&json!({ "name": "licsync-bench", "ttl": "4h", "max_uses": uses }))
                .send()
                .await
                .context("POST /registration-tokens")?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            ensure!(
                status == StatusCode::CREATED,
                "POST /registration-tokens answered {status}: {body}"
            );
            let token = body["token"]
                .as_str()
                .ok_or_else(|| anyhow!("no token in {body}"))?;
            tokens.extend(std::iter::repeat_n(token.to_owned(), uses));
            left -= uses;
        }
        Ok(tokens)
    }

    /// Registers `count` simulated data planes, each with its own key pair and CSR, through the
    /// real `Registration.Register` RPC (what `licsync-dp registration create` calls).
    pub async fn enrol(&self, count: usize) -> anyhow::Result<Vec<Enrolled>> {
        let ca_pem = self.ca_pem()?;
        let url = ClusterUrl::parse(&self.cp.cluster_url)?;
        let tokens: Vec<(usize, String)> = self
            .registration_tokens(count)
            .await?
            .into_iter()
            .enumerate()
            .collect();
        let ca_pem = Arc::new(ca_pem);
        let mut enrolled: Vec<Enrolled> = Vec::with_capacity(count);
        // A fresh connection per chunk (see REGISTER_CHUNK).
        for chunk in tokens.chunks(REGISTER_CHUNK) {
            let channel = cluster::endpoint(&url, &ca_pem, None, ConnectOptions::default())?
                .timeout(Duration::from_secs(60))
                .connect()
                .await
                .with_context(|| format!("cannot connect to {url} to register"))?;
            let client = RegistrationClient::new(channel);
            let registered: Vec<Enrolled> = futures::stream::iter(chunk.iter().cloned())
                .map(|(index, token)| {
                    let mut client = client.clone();
                    let ca_pem = ca_pem.clone();
                    async move {
                        let hostname = format!("bench-dp-{index}");
                        let (private_key_pem, csr_der) = pki::new_key_and_csr(&hostname)?;
                        let answer = client
                            .register(RegisterRequest {
                                token,
                                csr_der: csr_der.clone(),
                                name: hostname.clone(),
                                hostname: hostname.clone(),
                                version: licsync_common::VERSION.to_owned(),
                            })
                            .await
                            .map_err(|status| anyhow!("Register for {hostname}: {status}"))?
                            .into_inner();
                        anyhow::Ok(Enrolled {
                            index,
                            dataplane_id: answer.dataplane_id,
                            hostname,
                            private_key_pem,
                            csr_der,
                            certificate_pem: answer.certificate_pem,
                            ca_pem,
                            trusted_license_keys: answer.trusted_license_keys,
                        })
                    }
                })
                .buffer_unordered(REGISTER_CONCURRENCY)
                .try_collect()
                .await?;
            enrolled.extend(registered);
            if count > REGISTER_PROGRESS_EVERY
                && enrolled.len().is_multiple_of(REGISTER_PROGRESS_EVERY)
            {
                super::progress(format_args!("registered {}/{count}", enrolled.len()));
            }
        }
        enrolled.sort_by_key(|e| e.index);
        Ok(enrolled)
    }
}

/// A registered simulated data plane: what `registration.yaml` would hold, plus its CSR so the
/// floor's CA can certify the same key.
#[derive(Clone)]
pub struct Enrolled {
    pub index: usize,
    pub dataplane_id: String,
    /// Sent in `Register` and again in every `Hello`, as the agent does.
    pub hostname: String,
    pub private_key_pem: String,
    pub csr_der: Vec<u8>,
    pub certificate_pem: String,
    pub ca_pem: Arc<String>,
    pub trusted_license_keys: Vec<String>,
}

impl Enrolled {
    /// A `LicenseSync` client on its own mTLS connection to `cluster_url`, presenting this data
    /// plane's certificate (what the agent uses to send `ReportUsage`).
    pub async fn license_sync_client(
        &self,
        cluster_url: &str,
    ) -> anyhow::Result<LicenseSyncClient<Channel>> {
        let url = ClusterUrl::parse(cluster_url)?;
        let identity = ClientIdentity {
            certificate_pem: self.certificate_pem.clone(),
            private_key_pem: self.private_key_pem.clone(),
        };
        let channel = cluster::endpoint(
            &url,
            &self.ca_pem,
            Some(&identity),
            ConnectOptions::default(),
        )?
        .connect()
        .await
        .with_context(|| format!("data plane {} cannot connect to {url}", self.dataplane_id))?;
        Ok(LicenseSyncClient::new(channel))
    }
}
