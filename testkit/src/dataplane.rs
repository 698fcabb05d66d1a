//! A bare data plane on the wire, for tests that drive the protocol by hand: `Registration.
//! Register` with a fresh key and CSR, `LicenseSync.Sync` streams and `RotateCertificate`
//! against a [`ControlPlane`], over real mutual TLS, each call on a new connection unless a
//! test keeps one, so certificate checks happen the way a reconnecting agent meets them.

use std::sync::Arc;
use std::time::Duration;

use licsync_common::pki::{self, CertInfo};
use licsync_common::proto::control_plane_message::Message as CpMessage;
use licsync_common::proto::data_plane_message::Message as DpMessage;
use licsync_common::proto::license_sync_client::LicenseSyncClient;
use licsync_common::proto::registration_client::RegistrationClient;
use licsync_common::proto::{
    Ack, ControlPlaneMessage, DataPlaneMessage, Heartbeat, Hello, Nack, RegisterRequest,
    RejectedLicense, RotateCertificateRequest, Update, UsageCount, UsageReceipt, UsageReport,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Status, Streaming};

use crate::{ControlPlane, GUARD};

/// A registered data plane: what its registration file would hold.
#[derive(Clone)]
pub struct DataPlane {
    pub id: String,
    pub key_pem: String,
    pub cert_pem: String,
}

impl DataPlane {
    pub fn serial(&self) -> String {
        CertInfo::from_pem(&self.cert_pem).unwrap().serial
    }
}

impl ControlPlane {
    /// A new connection to the cluster listener, presenting `dp`'s certificate when given.
    pub async fn connect(&self, dp: Option<&DataPlane>) -> Channel {
        self.connect_through(self.config().cluster.listen, dp).await
    }

    /// [`ControlPlane::connect`] through `addr`, a relay in front of the cluster listener
    /// (the TLS session is still with the control plane).
    pub async fn connect_through(
        &self,
        addr: std::net::SocketAddr,
        dp: Option<&DataPlane>,
    ) -> Channel {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca_pem()))
            .domain_name("localhost");
        if let Some(dp) = dp {
            tls = tls.identity(Identity::from_pem(&dp.cert_pem, &dp.key_pem));
        }
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Registers a data plane reporting `version`, as `licsync-dp registration create` does.
    pub async fn register_dataplane(&self, version: &str) -> DataPlane {
        self.register_named("edge-1", version).await
    }

    /// [`ControlPlane::register_dataplane`] under `name`, from host `<name>.example`.
    pub async fn register_named(&self, name: &str, version: &str) -> DataPlane {
        let token = self.registration_token(1).await;
        let (key_pem, csr_der) = pki::new_key_and_csr("edge").unwrap();
        let answer = RegistrationClient::new(self.connect(None).await)
            .register(RegisterRequest {
                token: token.secret,
                csr_der,
                name: name.into(),
                hostname: format!("{name}.example"),
                version: version.into(),
            })
            .await
            .unwrap()
            .into_inner();
        DataPlane {
            id: answer.dataplane_id,
            key_pem,
            cert_pem: answer.certificate_pem,
        }
    }

    /// `RotateCertificate` with `dp`'s certificate over a new connection and a fresh key; the
    /// data plane as it would be after saving the answer.
    pub async fn rotate(&self, dp: &DataPlane) -> Result<DataPlane, Status> {
        let (key_pem, csr_der) = pki::new_key_and_csr("edge").unwrap();
        let answer = LicenseSyncClient::new(self.connect(Some(dp)).await)
            .rotate_certificate(RotateCertificateRequest { csr_der })
            .await?
            .into_inner();
        assert_eq!(answer.ca_certificate_pem, self.ca_pem());
        Ok(DataPlane {
            id: dp.id.clone(),
            key_pem,
            cert_pem: answer.certificate_pem,
        })
    }

    /// `ReportUsage` with `dp`'s certificate over a new connection: `counts` as `(YYYY-MM,
    /// cumulative count)` for `epoch`; the receipt.
    pub async fn report_usage(
        &self,
        dp: &DataPlane,
        epoch: &str,
        counts: &[(String, u64)],
    ) -> Result<UsageReceipt, Status> {
        let report = UsageReport {
            epoch: epoch.into(),
            counts: counts
                .iter()
                .map(|(bucket, request_count)| UsageCount {
                    bucket: bucket.clone(),
                    request_count: *request_count,
                })
                .collect(),
        };
        LicenseSyncClient::new(self.connect(Some(dp)).await)
            .report_usage(report)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Opens a Sync stream for `dp` on a new connection, its Hello claiming `version`.
    pub async fn sync(&self, dp: &DataPlane, version: &str) -> Result<SyncStream, Status> {
        SyncStream::open(self.connect(Some(dp)).await, version).await
    }

    /// A certificate for `dp`'s id signed by the cluster CA that this control plane never
    /// issued (recorded nowhere), as a control plane restored from an older backup, or another
    /// one sharing the CA, would present it.
    pub fn unissued(&self, dp: &DataPlane) -> DataPlane {
        let pki = self.pki_dir();
        let ca = pki::CertificateAuthority::from_pem(
            &std::fs::read_to_string(pki.join("ca.crt")).unwrap(),
            &std::fs::read_to_string(pki.join("ca.key")).unwrap(),
        )
        .unwrap();
        let (key_pem, csr_der) = pki::new_key_and_csr("edge").unwrap();
        let issued = ca
            .sign_dataplane(&csr_der, &dp.id, Duration::from_secs(3_600))
            .unwrap();
        DataPlane {
            id: dp.id.clone(),
            key_pem,
            cert_pem: issued.cert_pem,
        }
    }

    /// The serial of the server certificate a new connection is handed.
    pub async fn server_serial(&self) -> String {
        use rustls::RootCertStore;
        use rustls_pki_types::ServerName;
        let mut roots = RootCertStore::empty();
        roots
            .add(pki::first_certificate(&self.ca_pem(), "ca").unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.config().cluster.listen)
            .await
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
        CertInfo::from_der(leaf).unwrap().serial
    }
}

/// One open `LicenseSync.Sync` stream, driven by hand.
pub struct SyncStream {
    tx: mpsc::Sender<DataPlaneMessage>,
    inbound: Streaming<ControlPlaneMessage>,
    /// Kept so the connection lives as long as the stream.
    _channel: Channel,
}

impl SyncStream {
    /// Sends Hello (holding nothing) and waits for the control plane to accept the stream.
    pub async fn open(channel: Channel, version: &str) -> Result<Self, Status> {
        let (tx, rx) = mpsc::channel(8);
        tx.send(message(DpMessage::Hello(Hello {
            version: version.into(),
            hostname: "edge-1.example".into(),
            held: Vec::new(),
            revision: 0,
        })))
        .await
        .unwrap();
        let response = LicenseSyncClient::new(channel.clone())
            .sync(ReceiverStream::new(rx))
            .await?;
        Ok(Self {
            tx,
            inbound: response.into_inner(),
            _channel: channel,
        })
    }

    /// The next update; fails the test if the stream ends or none comes within [`GUARD`].
    pub async fn update(&mut self) -> Update {
        loop {
            let next = tokio::time::timeout(GUARD, self.inbound.message()).await;
            match next.expect("an update within the guard time") {
                Ok(Some(ControlPlaneMessage {
                    message: Some(CpMessage::Update(update)),
                })) => return update,
                Ok(Some(_)) => continue,
                other => panic!("the stream ended while waiting for an update: {other:?}"),
            }
        }
    }

    /// Waits up to `wait` for an update (skipping heartbeats); `None` when none came.
    pub async fn update_within(&mut self, wait: Duration) -> Option<Update> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.inbound.message()).await {
                Ok(Ok(Some(ControlPlaneMessage {
                    message: Some(CpMessage::Update(update)),
                }))) => return Some(update),
                Ok(Ok(Some(ControlPlaneMessage {
                    message: Some(CpMessage::Heartbeat(_)),
                }))) => continue,
                Ok(other) => panic!("expected an update or nothing, got {other:?}"),
                Err(_) => return None,
            }
        }
    }

    pub async fn ack(&self, update: &Update) {
        let ack = DpMessage::Ack(Ack {
            nonce: update.nonce.clone(),
        });
        self.tx.send(message(ack)).await.unwrap();
    }

    /// Answers `update` with a `Nack` refusing `rejected` (`(id, revision, reason)`); none
    /// means "could not apply it at all, send it again".
    pub async fn nack(&self, update: &Update, reason: &str, rejected: &[(&str, u64, &str)]) {
        let nack = DpMessage::Nack(Nack {
            nonce: update.nonce.clone(),
            reason: reason.into(),
            rejected: rejected
                .iter()
                .map(|(id, revision, reason)| RejectedLicense {
                    id: (*id).into(),
                    revision: *revision,
                    reason: (*reason).into(),
                })
                .collect(),
        });
        self.tx.send(message(nack)).await.unwrap();
    }

    pub async fn heartbeat(&self) {
        let beat = DpMessage::Heartbeat(Heartbeat { sent_at_ms: 0 });
        self.tx.send(message(beat)).await.unwrap();
    }

    /// The next heartbeat from the control plane; updates meanwhile are skipped. Fails the
    /// test if the stream ends or none comes within [`GUARD`].
    pub async fn heartbeat_answer(&mut self) -> Heartbeat {
        loop {
            let next = tokio::time::timeout(GUARD, self.inbound.message()).await;
            match next.expect("a heartbeat within the guard time") {
                Ok(Some(ControlPlaneMessage {
                    message: Some(CpMessage::Heartbeat(beat)),
                })) => return beat,
                Ok(Some(_)) => continue,
                other => panic!("the stream ended while waiting for a heartbeat: {other:?}"),
            }
        }
    }

    /// Waits (at most [`GUARD`]) for the control plane to end the stream; ignores updates
    /// meanwhile. Returns how it ended: `None` for a clean end, the status otherwise.
    pub async fn ended(&mut self) -> Option<Status> {
        let deadline = Instant::now() + GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.inbound.message()).await {
                Err(_) => panic!("the stream was still open after {GUARD:?}"),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return None,
                Ok(Err(status)) => return Some(status),
            }
        }
    }
}

fn message(message: DpMessage) -> DataPlaneMessage {
    DataPlaneMessage {
        message: Some(message),
    }
}
