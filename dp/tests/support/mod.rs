//! A scriptable stand-in for the control plane's cluster listener: real TLS from a real cluster
//! CA on `127.0.0.1:0`, `Registration` with a fixed token, and `LicenseSync` streams handed to
//! the test to drive message by message. The real control plane replaces it in `licsync-tests`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use licsync_common::license::{SigningKey, sign_document};
use licsync_common::pki::{CertInfo, CertificateAuthority};
use licsync_common::proto::license_sync_server::{LicenseSync, LicenseSyncServer};
use licsync_common::proto::registration_server::{Registration, RegistrationServer};
use licsync_common::proto::{
    ControlPlaneMessage, DataPlaneMessage, Hello, License, RegisterRequest, RegisterResponse,
    RenewRequest, Update, control_plane_message, data_plane_message,
};
use licsync_dp::registration::RegistrationFile;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

pub const TOKEN: &str = "good-token";
pub const USED_TOKEN: &str = "used-token";

pub struct FakeControlPlane {
    pub addr: SocketAddr,
    pub ca: Arc<CertificateAuthority>,
    pub signing_key: Arc<SigningKey>,
    sessions: Mutex<mpsc::UnboundedReceiver<FakeSession>>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// One `Sync` stream as the control plane sees it.
pub struct FakeSession {
    pub dataplane_id: String,
    to_dp: mpsc::Sender<Result<ControlPlaneMessage, Status>>,
    from_dp: mpsc::UnboundedReceiver<DataPlaneMessage>,
}

impl FakeControlPlane {
    pub async fn start() -> Self {
        let (ca, _) =
            CertificateAuthority::generate("fake cluster CA", Duration::from_secs(3600)).unwrap();
        let server = ca
            .issue_server(
                &["localhost".into(), "127.0.0.1".into()],
                Duration::from_secs(3600),
            )
            .unwrap();
        let (signing_key, _) = SigningKey::generate().unwrap();
        let ca = Arc::new(ca);
        let signing_key = Arc::new(signing_key);
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = ServerTlsConfig::new()
            // The chain the real control plane sends: [server certificate, CA certificate].
            .identity(Identity::from_pem(
                format!("{}{}", server.cert_pem, ca.cert_pem()),
                server.key_pem.clone().unwrap(),
            ))
            .client_ca_root(Certificate::from_pem(ca.cert_pem()))
            .client_auth_optional(true);
        let registration = FakeRegistration {
            ca: ca.clone(),
            trusted_key: signing_key.public_key_base64(),
            next_id: AtomicU32::new(1),
            cluster_url: format!("https://localhost:{}", addr.port()),
        };
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(RegistrationServer::new(registration))
                .add_service(LicenseSyncServer::new(FakeSync {
                    sessions: sessions_tx,
                }))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stopped.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        Self {
            addr,
            ca,
            signing_key,
            sessions: Mutex::new(sessions),
            stop,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn ca_hash(&self) -> String {
        format!("sha256:{}", self.ca.fingerprint())
    }

    /// The next `Sync` stream a data plane opened.
    pub async fn next_session(&self) -> FakeSession {
        tokio::time::timeout(Duration::from_secs(10), self.sessions.lock().await.recv())
            .await
            .expect("no data plane connected within 10s")
            .expect("server stopped")
    }

    /// A license document signed with the trusted key.
    pub fn license(&self, customer: &str) -> String {
        signed(&self.signing_key, customer)
    }

    /// A registration file as `registration create` would write it, for this control plane.
    pub fn registration(&self, cert_ttl: Duration) -> RegistrationFile {
        registration_with(
            &self.ca,
            &self.ca,
            &self.url(),
            &self.signing_key.public_key_base64(),
            cert_ttl,
        )
    }

    /// Stops serving and waits for the server to end.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// A registration whose client certificate comes from `issuer` while trusting `ca`.
pub fn registration_with(
    ca: &CertificateAuthority,
    issuer: &CertificateAuthority,
    url: &str,
    trusted_key: &str,
    cert_ttl: Duration,
) -> RegistrationFile {
    let (key_pem, csr) = licsync_common::pki::new_key_and_csr("edge").unwrap();
    let id = "5b7d1c2e-0f3a-4e6b-8c9d-1a2b3c4d5e6f";
    let issued = issuer.sign_dataplane(&csr, id, cert_ttl).unwrap();
    RegistrationFile {
        dataplane_id: id.into(),
        dataplane_name: "edge".into(),
        cluster_url: url.into(),
        ca_certificate: ca.cert_pem().to_owned(),
        certificate: issued.cert_pem,
        private_key: key_pem,
        trusted_license_keys: vec![trusted_key.to_owned()],
        registered_at: "2025-01-01T00:00:00Z".into(),
    }
}

pub fn signed(key: &SigningKey, customer: &str) -> String {
    let payload: BTreeMap<String, String> = [
        ("customer", customer),
        ("license_key", "KEY-0001"),
        ("license_creation_date", "2024-01-01"),
        ("license_expiration_date", "2099-12-31"),
        ("dataplanes", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    sign_document(&payload, key)
}

pub fn wire(id: &str, document: &str, updated_at: i64, revision: u64) -> License {
    License {
        id: id.into(),
        document: document.into(),
        created_at: 1_700_000_000,
        updated_at,
        revision,
    }
}

impl FakeSession {
    /// The next message other than a heartbeat.
    pub async fn recv(&mut self) -> DataPlaneMessage {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.from_dp.recv())
                .await
                .expect("nothing from the data plane within 10s")
                .expect("the data plane closed the stream");
            if !matches!(
                message.message,
                Some(data_plane_message::Message::Heartbeat(_))
            ) {
                return message;
            }
        }
    }

    pub async fn hello(&mut self) -> Hello {
        match self.recv().await.message {
            Some(data_plane_message::Message::Hello(hello)) => hello,
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    pub async fn send(&self, update: Update) {
        self.to_dp
            .send(Ok(ControlPlaneMessage {
                message: Some(control_plane_message::Message::Update(update)),
            }))
            .await
            .expect("stream closed");
    }

    /// Ends the stream with an error, as a control plane that goes away would.
    pub async fn fail(&self, status: Status) {
        let _ = self.to_dp.send(Err(status)).await;
    }

    /// Waits until the data plane's side of the stream ends.
    pub async fn closed(&mut self) {
        while self.from_dp.recv().await.is_some() {}
    }
}

struct FakeRegistration {
    ca: Arc<CertificateAuthority>,
    trusted_key: String,
    next_id: AtomicU32,
    cluster_url: String,
}

#[tonic::async_trait]
impl Registration for FakeRegistration {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        match request.token.as_str() {
            TOKEN => {}
            USED_TOKEN => {
                return Err(Status::permission_denied(
                    "registration token has been used up",
                ));
            }
            _ => return Err(Status::unauthenticated("unknown registration token")),
        }
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        let id = format!("00000000-0000-4000-8000-{n:012}");
        let issued = self
            .ca
            .sign_dataplane(&request.csr_der, &id, Duration::from_secs(3600))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(RegisterResponse {
            dataplane_id: id,
            dataplane_name: request.name,
            certificate_pem: issued.cert_pem,
            ca_certificate_pem: self.ca.cert_pem().to_owned(),
            cluster_url: self.cluster_url.clone(),
            trusted_license_keys: vec![self.trusted_key.clone()],
        }))
    }

    async fn renew(
        &self,
        _request: Request<RenewRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        Err(Status::unimplemented("renewal is not faked"))
    }
}

struct FakeSync {
    sessions: mpsc::UnboundedSender<FakeSession>,
}

#[tonic::async_trait]
impl LicenseSync for FakeSync {
    type SyncStream = ReceiverStream<Result<ControlPlaneMessage, Status>>;

    async fn sync(
        &self,
        request: Request<Streaming<DataPlaneMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let dataplane_id = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| CertInfo::from_der(c).ok()))
            .and_then(|info| info.dataplane_id)
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let mut inbound = request.into_inner();
        let (to_dp, rx) = mpsc::channel(16);
        let (from_dp_tx, from_dp) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if from_dp_tx.send(message).is_err() {
                    break;
                }
            }
        });
        let _ = self.sessions.send(FakeSession {
            dataplane_id,
            to_dp,
            from_dp,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Polls `check` every 20 ms for up to 10 s.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(value) = check() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}
