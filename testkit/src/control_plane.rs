//! The real control plane (`licsync_cp::server::run`), started in-process on `127.0.0.1:0`
//! with its data (sled, cluster CA, admin token) in a temp dir, and driven through its Admin
//! API as an operator would.
//!
//! [`ControlPlaneBuilder::start`] returns a [`ControlPlane`] once `/health/ready` says so.
//! [`ControlPlane::shutdown`] cancels it and joins its task, re-raising a panic and failing the
//! test on a serve error; dropping the handle cancels it (and re-raises a panic if the task has
//! already ended). [`ControlPlane::restart`] starts a new one on the same data dir and ports,
//! as a restarted process would be. The Admin API calls a test makes through it are in
//! [`crate::admin_api`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_cp::config::CpConfig;
use licsync_cp::server::{Listeners, ServeError};
use reqwest::StatusCode;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{GUARD, Issuer};

/// How to start a control plane.
pub struct ControlPlaneBuilder {
    config: CpConfig,
    /// The CA (PEM) the Admin API's HTTPS certificate chains to, when it serves HTTPS.
    admin_ca: Option<String>,
    /// The temp dir holding `data_dir` when the test did not choose one.
    dir: Option<TempDir>,
    issuer: Issuer,
    /// The admin token to use when this node writes none (see [`ControlPlaneBuilder::admin_token`]).
    admin_token: Option<String>,
}

impl Default for ControlPlaneBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlPlaneBuilder {
    /// A control plane keeping its data in a temp dir of its own, listening on loopback ports
    /// it picks, trusting its own [`ControlPlane::issuer`] unless told to trust others.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut builder = Self::in_dir(&dir.path().join("data"));
        builder.dir = Some(dir);
        builder
    }

    /// Like [`ControlPlaneBuilder::new`], keeping its data in `data_dir`.
    pub fn in_dir(data_dir: &Path) -> Self {
        let issuer = Issuer::new();
        let mut config = CpConfig {
            data_dir: data_dir.to_owned(),
            ..CpConfig::default()
        };
        config.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.cluster.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.status.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.cluster.server_names = vec!["127.0.0.1".into(), "localhost".into()];
        Self {
            config,
            admin_ca: None,
            dir: None,
            issuer,
            admin_token: None,
        }
    }

    /// Accepts licenses signed by `issuer` (`licenses.trusted_keys`), instead of by its own
    /// [`ControlPlane::issuer`].
    pub fn trusting(mut self, issuer: &Issuer) -> Self {
        self.config
            .licenses
            .trusted_keys
            .push(issuer.public.clone());
        self
    }

    /// `pki.dataplane_cert_ttl`.
    pub fn dataplane_cert_ttl(mut self, ttl: Duration) -> Self {
        self.config.pki.dataplane_cert_ttl = HumanDuration(ttl);
        self
    }

    /// `cluster.ack_timeout`.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.config.cluster.ack_timeout = HumanDuration(timeout);
        self
    }

    /// Keeps its data in the PostgreSQL database at `url` (`storage.backend = "postgres"`),
    /// for example a [`crate::postgres::fresh_database`]; several control planes started with
    /// the same `url` are nodes of one cluster, sharing one storage key
    /// ([`crate::postgres::storage_key_file`]; change `storage.encryption_key_file` with
    /// [`ControlPlaneBuilder::config`] to start a node with another). Only the first node
    /// writes the admin token: give the others its token with
    /// [`ControlPlaneBuilder::admin_token`].
    pub fn postgres(mut self, url: &str) -> Self {
        self.config.storage.backend = licsync_cp::config::StorageBackend::Postgres;
        self.config.storage.postgres.url = Some(url.to_owned());
        self.config.storage.encryption_key_file = Some(crate::postgres::storage_key_file(url));
        self
    }

    /// The admin token this node uses when it writes no `<data_dir>/admin-token` of its own:
    /// a second node of a cluster, whose first node ([`ControlPlane::admin_token`])
    /// bootstrapped the token every node accepts.
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_owned());
        self
    }

    /// Serves the Admin API over HTTPS with `cert_file` and `key_file`
    /// (`admin.tls_cert_file`, `admin.tls_key_file`); the kit's client trusts `ca_pem`.
    pub fn admin_tls(mut self, cert_file: &Path, key_file: &Path, ca_pem: &str) -> Self {
        self.config.admin.tls_cert_file = Some(cert_file.to_owned());
        self.config.admin.tls_key_file = Some(key_file.to_owned());
        self.admin_ca = Some(ca_pem.to_owned());
        self
    }

    /// Any other setting.
    pub fn config(mut self, change: impl FnOnce(&mut CpConfig)) -> Self {
        change(&mut self.config);
        self
    }

    pub async fn start(self) -> ControlPlane {
        let mut config = self.config;
        if config.licenses.trusted_keys.is_empty() {
            config.licenses.trusted_keys = vec![self.issuer.public.clone()];
        }
        // No idle connections kept: each call opens its own, so none of the kit's holds one of
        // the Admin API's `max_connections` slots a test counts on.
        let mut http = reqwest::Client::builder().pool_max_idle_per_host(0);
        if let Some(ca) = &self.admin_ca {
            let root = reqwest::Certificate::from_pem(ca.as_bytes()).expect("a PEM CA");
            http = http.add_root_certificate(root);
        }
        let http = http.build().expect("an HTTP client");
        match launch(&mut config, &http, self.admin_token.as_deref()).await {
            Ok(running) => ControlPlane {
                issuer: self.issuer,
                config,
                admin_token: running.admin_token,
                http,
                shutdown: running.shutdown,
                task: Some(running.task),
                _dir: self.dir,
            },
            Err(error) => panic!("the control plane did not start: {error}"),
        }
    }
}

/// A running control plane.
pub struct ControlPlane {
    /// A key for the licenses tests send; trusted unless the builder was told to trust
    /// another ([`ControlPlaneBuilder::trusting`]).
    pub issuer: Issuer,
    /// With the ports actually bound, so a restart reuses them.
    config: CpConfig,
    admin_token: String,
    /// Keeps no idle connection (see [`ControlPlaneBuilder::start`]).
    pub(crate) http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), ServeError>>>,
    /// Kept so the data outlives every restart.
    _dir: Option<TempDir>,
}

impl ControlPlane {
    /// A control plane with the test defaults; see [`ControlPlaneBuilder`] for others.
    pub async fn start() -> Self {
        ControlPlaneBuilder::new().start().await
    }

    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::new()
    }

    /// Waits for the server task; re-raises its panic.
    async fn join(&mut self) -> Result<(), ServeError> {
        match self.task.take() {
            Some(task) => join(task).await,
            None => Ok(()),
        }
    }

    /// Stops the control plane and waits for it, failing the test if it panicked or stopped
    /// with an error.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Err(error) = self.join().await {
            panic!("the control plane stopped with an error: {error}");
        }
    }

    /// Stops this control plane and starts another on the same data dir and ports, as an
    /// operator restarting the process would. Retries while the old one still holds the ports
    /// or the database (its stream tasks end just after it does).
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// [`ControlPlane::restart`] with a changed configuration (same data dir and ports).
    pub async fn restart_with(mut self, change: impl FnOnce(&mut CpConfig)) -> Self {
        let mut config = self.config.clone();
        change(&mut config);
        self.stop().await;
        let deadline = Instant::now() + GUARD;
        loop {
            match launch(&mut config, &self.http, Some(&self.admin_token)).await {
                Ok(running) => {
                    self.config = config;
                    self.admin_token = running.admin_token;
                    self.shutdown = running.shutdown;
                    self.task = Some(running.task);
                    return self;
                }
                Err(error) if Instant::now() > deadline => {
                    panic!("the control plane did not start again: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The configuration it runs with, listen addresses as bound.
    pub fn config(&self) -> &CpConfig {
        &self.config
    }

    pub fn admin_url(&self) -> String {
        admin_url(&self.config)
    }

    /// The status listener (`GET /metrics`, `/health/*`), no token needed.
    pub fn status_url(&self) -> String {
        format!("http://{}", self.config.status.listen)
    }

    /// The admin token bootstrapped at first start (`<data_dir>/admin-token`), or the one
    /// given to [`ControlPlaneBuilder::admin_token`] when this node wrote none.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The cluster listener, as an operator passes it to `registration create --server`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.config.cluster.listen.port())
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Where the cluster CA and server certificate live.
    pub fn pki_dir(&self) -> PathBuf {
        self.config.data_dir.join("pki")
    }

    /// The CA certificate file an operator copies to a data plane for `--ca-cert`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.pki_dir().join("ca.crt")
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_cert_path()).expect("the CA certificate is readable")
    }
}

impl Drop for ControlPlane {
    /// Stops the control plane even when a test fails half-way. A task that has already ended
    /// is joined so its panic is not lost; one still draining is left to the runtime (only
    /// `shutdown`, being async, can wait for it).
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(mut task) = self.task.take()
            && task.is_finished()
            && !std::thread::panicking()
        {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(Err(e)) = Pin::new(&mut task).poll(&mut cx)
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

/// A server task started and ready, with the admin token it bootstrapped.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
    admin_token: String,
}

/// Binds `config`'s addresses (recording the ports bound), starts `server::run` and waits for
/// readiness; a start-up failure is returned, not raised, so a restart can retry. The admin
/// token is read from `<data_dir>/admin-token`, else is `admin_token`.
async fn launch(
    config: &mut CpConfig,
    http: &reqwest::Client,
    admin_token: Option<&str>,
) -> Result<Running, String> {
    let listeners = Listeners {
        admin: bind(config.admin.listen).await?,
        cluster: bind(config.cluster.listen).await?,
        status: bind(config.status.listen).await?,
    };
    let local = |l: &TcpListener| l.local_addr().map_err(|e| e.to_string());
    config.admin.listen = local(&listeners.admin)?;
    config.cluster.listen = local(&listeners.cluster)?;
    config.status.listen = local(&listeners.status)?;
    let shutdown = CancellationToken::new();
    let mut task = tokio::spawn(licsync_cp::server::run(
        config.clone(),
        listeners,
        shutdown.clone(),
    ));
    let url = format!("{}/health/ready", admin_url(config));
    let deadline = Instant::now() + GUARD;
    loop {
        if task.is_finished() {
            return Err(match join(task).await {
                Err(error) => error.to_string(),
                Ok(()) => "it stopped before it was ready".to_owned(),
            });
        }
        if let Ok(response) = http.get(&url).send().await
            && response.status() == StatusCode::OK
        {
            break;
        }
        if Instant::now() > deadline {
            shutdown.cancel();
            return Err(format!("{url} did not answer 200 within {GUARD:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token_file = config.data_dir.join("admin-token");
    match std::fs::read_to_string(&token_file) {
        Ok(token) => Ok(Running {
            shutdown,
            task,
            admin_token: token.trim().to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && admin_token.is_some() => {
            Ok(Running {
                shutdown,
                task,
                admin_token: admin_token.unwrap_or_default().to_owned(),
            })
        }
        Err(e) => {
            shutdown.cancel();
            let _ = (&mut task).await;
            Err(format!("{}: {e}", token_file.display()))
        }
    }
}

/// The Admin API's base URL: `https://127.0.0.1:PORT` when it serves HTTPS (its
/// certificate names 127.0.0.1 in the kit's tests), else `http://`.
fn admin_url(config: &CpConfig) -> String {
    let scheme = if config.admin.tls_cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", config.admin.listen)
}

/// Waits for a server task; re-raises its panic.
async fn join(task: JoinHandle<Result<(), ServeError>>) -> Result<(), ServeError> {
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the control plane task was cancelled: {e}"),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}
