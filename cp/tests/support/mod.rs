//! Shared set-up for the Admin API tests that look inside the control plane: the Admin API
//! on `127.0.0.1:0` over in-memory storage that a test reads and writes directly, and request
//! helpers. [`Api::start_with_cluster`] also serves the cluster gRPC listener over real TLS with
//! the CA it creates in the data directory, for tests of the Registration service.
//!
//! Everything else (license fixtures, log-event capture, and the whole control plane as
//! `server::run` starts it, for black-box tests) comes from the test kit, `licsync_testkit`.
#![allow(dead_code, unused_imports)]

pub use std::collections::BTreeMap;
pub use std::os::unix::fs::PermissionsExt;
pub use std::sync::Arc;

pub use licsync_common::license::TrustedKeys;
pub use licsync_common::unix_now;
pub use licsync_cp::admin;
pub use licsync_cp::config::CpConfig;
pub use licsync_cp::licenses::Licenses;
pub use licsync_cp::model::DataPlaneRecord;
pub use licsync_cp::secrets;
pub use licsync_cp::state::ControlPlane;
pub use licsync_cp::store::{
    DataPlaneStore, LicenseStore, MemoryStore, PrincipalStore, Store, StoreMeta, TokenStore,
    UsageStore,
};
pub use licsync_cp::usage::ReportKey;
pub use licsync_testkit::fixtures::payload;
pub use licsync_testkit::{Events, Issuer};
pub use reqwest::{Method, RequestBuilder, StatusCode};
pub use serde_json::{Value, json};
pub use tempfile::TempDir;
pub use tokio::sync::oneshot;
pub use tokio::task::JoinHandle;
pub use tokio_util::sync::CancellationToken;
pub use uuid::Uuid;

pub use licsync_common::proto::registration_client::RegistrationClient;
pub use licsync_common::proto::{
    AppCredential, RegisterRequest, RegisterResponse, RenewRequest, UserCredential, renew_request,
};
pub use tonic::Code;
pub use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub const FINGERPRINT: &str = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12";

/// A running Admin API and what a test needs to drive it.
pub struct Api {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    pub cp: Arc<ControlPlane>,
    pub store: Arc<MemoryStore>,
    /// Signs the licenses tests send; trusted.
    pub issuer: Issuer,
    pub dir: TempDir,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
    pub cluster: Option<Cluster>,
}

/// The cluster listener of an [`Api`] started with [`Api::start_with_cluster`].
pub struct Cluster {
    /// Where it listens: `127.0.0.1:<port>`; its certificate names `localhost`.
    pub addr: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), licsync_cp::cluster::ServeError>>,
}

impl Api {
    /// Starts a control plane over an empty memory store; the admin token is bootstrapped into
    /// a temporary data directory, as on a first start.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// Like [`Api::start`], and serves the cluster listener too (CA under `<dir>/pki`).
    pub async fn start_with_cluster() -> Self {
        Self::launch(true).await
    }

    async fn launch(with_cluster: bool) -> Self {
        let issuer = Issuer::new();
        let trusted = TrustedKeys::parse(std::slice::from_ref(&issuer.public)).unwrap();
        let store = Arc::new(MemoryStore::new());
        let licenses = Licenses::load(store.clone(), trusted).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let token_file = admin::bootstrap_admin_token(store.as_ref(), dir.path())
            .await
            .unwrap()
            .expect("an empty store gets a bootstrap token");
        let token = std::fs::read_to_string(token_file).unwrap();
        let mut config = CpConfig::default();
        config.cluster.server_names = vec!["localhost".into(), "127.0.0.1".into()];
        let (cp, cluster) = if with_cluster {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            config.cluster.listen = addr;
            let pki = licsync_cp::cluster::ca::ClusterPki::load_or_create(
                &dir.path().join("pki"),
                &config.cluster.server_names,
                &config.pki,
            )
            .unwrap();
            let provider = licsync_cp::cluster::tls::provider();
            let identity = licsync_cp::cluster::server_cert::ServerIdentity::new(
                provider.clone(),
                &pki.server,
                config.pki.server_cert_ttl.0,
            )
            .unwrap();
            let tls = licsync_cp::cluster::tls::server_config(
                provider,
                pki.ca.cert_der(),
                Arc::new(identity),
            )
            .unwrap();
            let cp = Arc::new(with_report_key(ControlPlane::new(
                config,
                store.clone(),
                Arc::new(licenses),
                pki.ca.cert_pem().to_owned(),
                pki.ca.fingerprint(),
            )));
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(licsync_cp::cluster::serve(
                listener,
                cp.clone(),
                Arc::new(pki.ca),
                tls,
                shutdown.clone(),
            ));
            let cluster = Cluster {
                addr,
                shutdown,
                task,
            };
            (cp, Some(cluster))
        } else {
            let cp = Arc::new(with_report_key(ControlPlane::new(
                config,
                store.clone(),
                Arc::new(licenses),
                String::new(),
                FINGERPRINT.into(),
            )));
            (cp, None)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(admin::serve(listener, cp.clone(), async {
            let _ = rx.await;
        }));
        Self {
            base,
            token,
            client: reqwest::Client::new(),
            cp,
            store,
            issuer,
            dir,
            shutdown: Some(tx),
            task: Some(task),
            cluster,
        }
    }

    /// A Registration client over TLS that trusts the CA in the data directory, as a data plane
    /// given `--ca-cert <data_dir>/pki/ca.crt` would.
    pub async fn registration_client(&self) -> RegistrationClient<Channel> {
        let cluster = self
            .cluster
            .as_ref()
            .expect("start the API with Api::start_with_cluster");
        let ca = std::fs::read_to_string(self.dir.path().join("pki/ca.crt")).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        let channel = Endpoint::from_shared(format!("https://localhost:{}", cluster.addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        RegistrationClient::new(channel)
    }

    /// A request carrying the admin token as a bearer.
    pub fn call(&self, method: Method, path: &str) -> RequestBuilder {
        self.anonymous(method, path).bearer_auth(&self.token)
    }

    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.call(Method::GET, path)
    }

    /// A signed license document for `customer`.
    pub fn document(&self, customer: &str) -> String {
        self.issuer.license(customer)
    }

    pub async fn create(&self, customer: &str) -> Value {
        let (status, body) = send(
            self.call(Method::POST, "/licenses")
                .json(&json!({"payload": self.document(customer)})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Signals shutdown and waits for the server, re-raising its panic or error.
    pub async fn stop(mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown.cancel();
            match cluster.task.await {
                Ok(result) => result.expect("the cluster listener serves until shutdown"),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("cluster task failed: {e}"),
            }
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(result) => result.expect("the Admin API serves until shutdown"),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("Admin API task failed: {e}"),
            }
        }
    }
}

/// Sends and returns the status and the JSON body (`null` when empty).
pub async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, body)
}

/// A control plane as `server::run` builds it: with a report key (an ephemeral one here).
fn with_report_key(cp: ControlPlane) -> ControlPlane {
    cp.with_report_key(Arc::new(ReportKey::ephemeral().unwrap()))
}
