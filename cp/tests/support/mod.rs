//! Shared set-up for the Admin API tests: a real server on `127.0.0.1:0` over in-memory
//! storage, a signing key, and request helpers. [`Api::start_with_cluster`] also serves the
//! cluster gRPC listener over real TLS with the CA it creates in the data directory, for tests
//! of the Registration service.
#![allow(dead_code, unused_imports)]

pub use std::collections::BTreeMap;
pub use std::os::unix::fs::PermissionsExt;
pub use std::sync::Arc;

pub use licsync_common::license::{SigningKey, TrustedKeys, sign_document};
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
    pub key: SigningKey,
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
        Self::launch(false, licsync_cp::config::AdminConfig::default()).await
    }

    /// Like [`Api::start`], with these `[admin]` settings (connection limits and timeouts).
    pub async fn start_with_admin(admin: licsync_cp::config::AdminConfig) -> Self {
        Self::launch(false, admin).await
    }

    /// Like [`Api::start`], and serves the cluster listener too (CA under `<dir>/pki`).
    pub async fn start_with_cluster() -> Self {
        Self::launch(true, licsync_cp::config::AdminConfig::default()).await
    }

    async fn launch(with_cluster: bool, admin: licsync_cp::config::AdminConfig) -> Self {
        let (key, _) = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::parse(&[key.public_key_base64()]).unwrap();
        let store = Arc::new(MemoryStore::new());
        let licenses = Licenses::load(store.clone(), trusted).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let token_file = admin::bootstrap_admin_token(store.as_ref(), dir.path())
            .await
            .unwrap()
            .expect("an empty store gets a bootstrap token");
        let token = std::fs::read_to_string(token_file).unwrap();
        let mut config = CpConfig {
            admin,
            ..CpConfig::default()
        };
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
            key,
            dir,
            shutdown: Some(tx),
            task: Some(task),
            cluster,
        }
    }

    /// A Registration client over TLS that trusts the CA in the data directory, as a data plane
    /// given `--ca-cert <data_dir>/pki/ca.crt` would.
    pub async fn registration_client(&self) -> RegistrationClient<Channel> {
        RegistrationClient::new(self.cluster_channel().await)
    }

    /// A channel to the cluster listener without a client certificate (what anonymous calls
    /// such as registration, health and reflection use).
    pub async fn cluster_channel(&self) -> Channel {
        let cluster = self
            .cluster
            .as_ref()
            .expect("start the API with Api::start_with_cluster");
        let ca = std::fs::read_to_string(self.dir.path().join("pki/ca.crt")).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        Endpoint::from_shared(format!("https://localhost:{}", cluster.addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
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
        document_signed_by(&self.key, customer)
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

pub fn payload(customer: &str) -> BTreeMap<String, String> {
    [
        ("customer", customer),
        ("license_key", "KEY-1"),
        ("license_creation_date", "2026-01-01"),
        ("license_expiration_date", "2030-12-31"),
        ("dataplanes", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub fn document_signed_by(key: &SigningKey, customer: &str) -> String {
    sign_document(&payload(customer), key)
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

/// Everything logged on this thread (DEBUG and up), as text, until the guard is dropped.
/// `#[tokio::test]` runs the test and every task it spawns on its one thread, so parallel
/// tests do not see each other's lines. One global subscriber writes each line to its thread's
/// sink: per-thread (scoped) subscribers race with `tracing`'s per-callsite interest cache when
/// another test thread reaches a callsite first, and a line is then occasionally lost.
#[derive(Clone, Default)]
pub struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

thread_local! {
    /// Where this thread's log lines go while a [`Capture`] lives.
    static SINK: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Ends this thread's capture when dropped.
pub struct Capture(());

impl Drop for Capture {
    fn drop(&mut self) {
        SINK.with(|sink| *sink.borrow_mut() = None);
    }
}

/// The global subscriber's writer: this thread's [`Logs`], or nowhere.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|sink| {
            if let Some(logs) = sink.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn capture() -> (Self, Capture) {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(|| ThreadSink)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in a test binary");
        });
        let logs = Self::default();
        SINK.with(|sink| *sink.borrow_mut() = Some(logs.clone()));
        (logs, Capture(()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines holding `event=NAME`.
    pub fn events(&self, name: &str) -> Vec<String> {
        let needle = format!("event=\"{name}\"");
        let bare = format!("event={name}");
        self.text()
            .lines()
            .filter(|l| l.contains(&needle) || l.split_whitespace().any(|w| w == bare))
            .map(str::to_owned)
            .collect()
    }
}

/// A control plane as `server::run` builds it: with a report key (an ephemeral one here).
fn with_report_key(cp: ControlPlane) -> ControlPlane {
    cp.with_report_key(Arc::new(ReportKey::ephemeral().unwrap()))
}
