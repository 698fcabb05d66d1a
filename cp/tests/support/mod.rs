//! Shared set-up for the Admin API tests: a real server on `127.0.0.1:0` over in-memory
//! storage, a signing key, and request helpers.
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
pub use licsync_cp::store::{MemoryStore, Store};
pub use licsync_cp::usage::ReportKey;
pub use reqwest::{Method, RequestBuilder, StatusCode};
pub use serde_json::{Value, json};
pub use tempfile::TempDir;
pub use tokio::sync::oneshot;
pub use tokio::task::JoinHandle;
pub use uuid::Uuid;

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
}

impl Api {
    /// Starts a control plane over an empty memory store; the admin token is bootstrapped into
    /// a temporary data directory, as on a first start.
    pub async fn start() -> Self {
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
        let cp = Arc::new(
            ControlPlane::new(
                CpConfig::default(),
                store.clone(),
                Arc::new(licenses),
                String::new(),
                FINGERPRINT.into(),
            )
            .with_report_key(Arc::new(ReportKey::ephemeral().unwrap())),
        );
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
        }
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
