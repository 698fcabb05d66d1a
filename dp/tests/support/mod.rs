//! The real control plane (`licsync-cp`), started in-process on `127.0.0.1:0` with its data in
//! a temp dir and driven through its Admin API as an operator would, plus the waiting helpers
//! the data-plane tests share.
//!
//! [`ControlPlaneBuilder::start`] returns a [`ControlPlane`] once `/health/ready` says so.
//! [`ControlPlane::shutdown`] cancels it and joins its task, re-raising a panic and failing the
//! test on a serve error; dropping the handle cancels it (and re-raises a panic if the task has
//! already ended). [`ControlPlane::restart`] starts a new one on the same data dir and ports,
//! as a restarted process would be.
#![allow(dead_code)]

pub mod agent;
pub mod events;
pub mod usage_agent;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::license::{SigningKey, sign_document};
use licsync_cp::config::CpConfig;
use licsync_cp::server::{Listeners, ServeError};
use licsync_dp::registration::create::create;
use licsync_dp::registration::{CaSource, CreateOptions, RegistrationFile};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long anything may take before the test gives up: a guard against hanging on failure,
/// never a bound the code must meet (a cold debug build on a loaded 2-core machine is slow).
pub const GUARD: Duration = Duration::from_secs(30);

/// A license-signing key and the documents it signs.
pub struct Issuer {
    key: SigningKey,
    /// The public key, as `licenses.trusted_keys` and `license.trusted_keys` take it.
    pub public: String,
}

impl Issuer {
    pub fn new() -> Self {
        let (key, _) = SigningKey::generate().unwrap();
        let public = key.public_key_base64();
        Self { key, public }
    }

    /// A valid license document for `customer`.
    pub fn license(&self, customer: &str) -> String {
        self.license_expiring(customer, "2099-12-31")
    }

    /// A valid license document for `customer` whose `license_expiration_date` is
    /// `expiration` (`YYYY-MM-DD`).
    pub fn license_expiring(&self, customer: &str, expiration: &str) -> String {
        let payload: BTreeMap<String, String> = [
            ("customer", customer),
            ("license_key", "KEY-0001"),
            ("license_creation_date", "2024-01-01"),
            ("license_expiration_date", expiration),
            ("dataplanes", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        sign_document(&payload, &self.key)
    }
}

/// How to start a control plane.
pub struct ControlPlaneBuilder {
    config: CpConfig,
}

impl ControlPlaneBuilder {
    /// A control plane keeping its data (sled, CA, admin token) in `data_dir`, listening on
    /// loopback ports it picks, trusting no license key yet.
    pub fn new(data_dir: &Path) -> Self {
        let mut config = CpConfig {
            data_dir: data_dir.to_owned(),
            ..CpConfig::default()
        };
        config.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.cluster.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.cluster.server_names = vec!["127.0.0.1".into(), "localhost".into()];
        Self { config }
    }

    /// Accepts licenses signed by `issuer` (`licenses.trusted_keys`).
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

    pub async fn start(self) -> ControlPlane {
        match ControlPlane::launch(self.config).await {
            Ok(cp) => cp,
            Err(error) => panic!("the control plane did not start: {error}"),
        }
    }
}

/// A running control plane.
pub struct ControlPlane {
    /// With the ports actually bound, so a restart reuses them.
    config: CpConfig,
    admin_token: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

/// A registration token as `POST /registration-tokens` answers it.
pub struct RegistrationToken {
    pub secret: String,
    /// `sha256:HEX`, what `--ca-cert-hash` takes.
    pub ca_hash: String,
}

impl ControlPlane {
    /// Binds, starts and waits for readiness; a start-up failure is returned, not raised.
    async fn launch(mut config: CpConfig) -> Result<Self, String> {
        let listeners = Listeners {
            admin: bind(config.admin.listen).await?,
            cluster: bind(config.cluster.listen).await?,
        };
        let local = |l: &TcpListener| l.local_addr().map_err(|e| e.to_string());
        config.admin.listen = local(&listeners.admin)?;
        config.cluster.listen = local(&listeners.cluster)?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(licsync_cp::server::run(
            config.clone(),
            listeners,
            shutdown.clone(),
        ));
        let mut cp = Self {
            config,
            admin_token: String::new(),
            http: reqwest::Client::new(),
            shutdown,
            task: Some(task),
        };
        cp.wait_until_ready().await?;
        let token_file = cp.config.data_dir.join("admin-token");
        cp.admin_token = std::fs::read_to_string(&token_file)
            .map_err(|e| format!("{}: {e}", token_file.display()))?
            .trim()
            .to_owned();
        Ok(cp)
    }

    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let url = format!("{}/health/ready", self.admin_url());
        let deadline = Instant::now() + GUARD;
        loop {
            if self.task.as_ref().is_some_and(JoinHandle::is_finished) {
                return Err(match self.join().await {
                    Err(error) => error.to_string(),
                    Ok(()) => "it stopped before it was ready".to_owned(),
                });
            }
            if let Ok(response) = self.http.get(&url).send().await
                && response.status() == StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{url} did not answer 200 within {GUARD:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the server task; re-raises its panic.
    async fn join(&mut self) -> Result<(), ServeError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the control plane task was cancelled: {e}"),
        }
    }

    /// Stops the control plane and waits for it, failing the test if it panicked or stopped
    /// with an error.
    pub async fn shutdown(mut self) {
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
    pub async fn restart_with(self, change: impl FnOnce(&mut CpConfig)) -> Self {
        let mut config = self.config.clone();
        change(&mut config);
        self.shutdown().await;
        let deadline = Instant::now() + GUARD;
        loop {
            match Self::launch(config.clone()).await {
                Ok(cp) => return cp,
                Err(error) if Instant::now() > deadline => {
                    panic!("the control plane did not start again: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.config.admin.listen)
    }

    /// The cluster listener, as an operator passes it to `registration create --server`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.config.cluster.listen.port())
    }

    /// The CA certificate file an operator copies to a data plane for `--ca-cert`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.config.data_dir.join("pki/ca.crt")
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_cert_path()).unwrap()
    }

    /// Calls the Admin API with the admin token; returns the status and the JSON body
    /// (`Value::Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.admin_url()))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// The cluster URL the control plane advertises (`cluster_url` of a registration token).
    pub async fn advertised_url(&self) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/registration-tokens",
                Some(json!({ "name": "url probe" })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["cluster_url"].as_str().unwrap().to_owned()
    }

    /// `POST /registration-tokens` for a token good for `max_uses` registrations.
    pub async fn registration_token(&self, max_uses: u32) -> RegistrationToken {
        let (status, body) = self
            .call(
                Method::POST,
                "/registration-tokens",
                Some(json!({ "name": "test", "max_uses": max_uses })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        RegistrationToken {
            secret: body["token"].as_str().unwrap().to_owned(),
            ca_hash: format!("sha256:{}", body["ca_cert_sha256"].as_str().unwrap()),
        }
    }

    /// `POST /users` for an admin user, who may renew data planes.
    pub async fn create_admin_user(&self, username: &str, password: &str) {
        let (status, body) = self
            .call(
                Method::POST,
                "/users",
                Some(json!({ "username": username, "password": password, "role": "admin" })),
            )
            .await;
        assert!(status.is_success(), "POST /users: {status} {body}");
    }

    /// `POST /connected-apps` with `scopes`; returns its client id and secret.
    pub async fn create_app(&self, name: &str, scopes: &[&str]) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                "/connected-apps",
                Some(json!({ "name": name, "scopes": scopes })),
            )
            .await;
        assert!(status.is_success(), "POST /connected-apps: {status} {body}");
        let field = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {body}"))
                .to_owned()
        };
        (field("client_id"), field("client_secret"))
    }

    /// `POST /licenses`; returns the new license's id.
    pub async fn create_license(&self, document: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/licenses",
                Some(json!({ "payload": document })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn delete_license(&self, id: &str) {
        let (status, body) = self
            .call(Method::DELETE, &format!("/licenses/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    /// The revision of the current license set (`GET /status`).
    pub async fn revision(&self) -> u64 {
        let (status, body) = self.call(Method::GET, "/status", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["revision"].as_u64().unwrap()
    }

    /// `GET /clustering/data-planes/{id}`.
    pub async fn dataplane(&self, id: &str) -> Value {
        let (status, body) = self
            .call(Method::GET, &format!("/clustering/data-planes/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// `GET /clustering/data-planes`.
    pub async fn dataplanes(&self) -> Vec<Value> {
        let (status, body) = self
            .call(Method::GET, "/clustering/data-planes", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().unwrap().clone()
    }

    /// `registration create` options for this control plane.
    pub fn create_options(&self, token: &str, ca: CaSource, dir: &Path) -> CreateOptions {
        CreateOptions {
            token: token.to_owned(),
            server: self.url(),
            ca,
            name: Some("edge-7".into()),
            output_directory: dir.to_owned(),
            timeout: GUARD,
        }
    }

    /// Registers a data plane as an operator would (a fresh token, `--ca-cert-hash`) into
    /// `dir/registration.yaml`, and returns the file.
    pub async fn register(&self, dir: &Path) -> RegistrationFile {
        let token = self.registration_token(1).await;
        let path = create(self.create_options(&token.secret, CaSource::Hash(token.ca_hash), dir))
            .await
            .unwrap();
        RegistrationFile::load(&path).unwrap()
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

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Calls `check` every 20 ms until it returns `Some`; fails the test after [`GUARD`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {GUARD:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the watched value satisfies `ready`; fails the test after [`GUARD`].
pub async fn wait_for<T: Clone>(
    what: &str,
    rx: &mut watch::Receiver<T>,
    ready: impl FnMut(&T) -> bool,
) -> T {
    match tokio::time::timeout(GUARD, rx.wait_for(ready)).await {
        Ok(Ok(value)) => value.clone(),
        Ok(Err(_)) => panic!("the sender went away while waiting for {what}"),
        Err(_) => panic!("timed out after {GUARD:?} waiting for {what}"),
    }
}

pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}
