//! The floor: the least a license-sync server can do, to compare `licsync-cp` against.
//!
//! A minimal tonic server with mutual TLS (tonic's own `ServerTlsConfig`, client certificates
//! from a CA made with [`CertificateAuthority`]) implementing `LicenseSync.Sync`: it answers
//! `Hello` with an empty `Update` and then forwards every broadcast `Update` to every stream
//! (the same prost message, cloned per stream). No storage, no registry, no per-stream
//! bookkeeping, no waiting for acknowledgements.
//!
//! It runs as a child process (`licsync-bench floor-server --dir DIR`) like the control plane,
//! so its memory and CPU are measured the same way and its N server-side sockets do not count
//! against the benchmark's own open-file limit. The parent writes one JSON line per broadcast
//! on its stdin ([`Broadcast`]); the child prints `{"event":"floor.started","addr":...}` on
//! stdout once it listens.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use licsync_common::pki::CertificateAuthority;
use licsync_common::proto::data_plane_message::Message as DpMessage;
use licsync_common::proto::license_sync_server::{LicenseSync, LicenseSyncServer};
use licsync_common::proto::{self, ControlPlaneMessage, DataPlaneMessage, control_plane_message};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use super::procfs::{self, Usage};

const CA_CERT: &str = "floor-ca.crt";
const CA_KEY: &str = "floor-ca.key";
/// The floor certifies data planes for the length of a benchmark.
const CERT_TTL: Duration = Duration::from_secs(86_400);

/// The floor's CA, made by the parent: it certifies each simulated data plane's existing key
/// (from its CSR) and, in the child, the floor's server certificate.
pub struct FloorPki {
    pub ca: CertificateAuthority,
    ca_key_pem: String,
}

impl FloorPki {
    pub fn generate() -> anyhow::Result<Self> {
        let (ca, ca_key_pem) =
            CertificateAuthority::generate("licsync-bench floor CA", Duration::from_secs(86_400))?;
        Ok(Self { ca, ca_key_pem })
    }

    /// A client certificate for `dataplane_id` over the key behind `csr_der`.
    pub fn certify(&self, csr_der: &[u8], dataplane_id: &str) -> anyhow::Result<String> {
        Ok(self
            .ca
            .sign_dataplane(csr_der, dataplane_id, CERT_TTL)?
            .cert_pem)
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join(CA_CERT), self.ca.cert_pem())?;
        licsync_common::fsutil::write_atomic(
            &dir.join(CA_KEY),
            self.ca_key_pem.as_bytes(),
            licsync_common::fsutil::SECRET_MODE,
        )?;
        Ok(())
    }
}

/// One license to broadcast, as a JSON line on the floor's stdin.
#[derive(Debug, Clone)]
pub struct Broadcast {
    pub revision: u64,
    pub license: proto::License,
    pub trusted_license_keys: Vec<String>,
}

impl Broadcast {
    fn to_line(&self) -> String {
        let l = &self.license;
        let mut line = json!({
            "revision": self.revision,
            "license": {
                "id": l.id, "document": l.document, "created_at": l.created_at,
                "updated_at": l.updated_at, "revision": l.revision,
            },
            "trusted_license_keys": self.trusted_license_keys,
        })
        .to_string();
        line.push('\n');
        line
    }

    fn from_line(line: &str) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_str(line)?;
        let l = &v["license"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Ok(Self {
            revision: v["revision"].as_u64().unwrap_or_default(),
            license: proto::License {
                id: text(&l["id"]),
                document: text(&l["document"]),
                created_at: l["created_at"].as_i64().unwrap_or_default(),
                updated_at: l["updated_at"].as_i64().unwrap_or_default(),
                revision: l["revision"].as_u64().unwrap_or_default(),
            },
            trusted_license_keys: v["trusted_license_keys"]
                .as_array()
                .map(|keys| keys.iter().map(text).collect())
                .unwrap_or_default(),
        })
    }

    fn into_message(self) -> ControlPlaneMessage {
        update_message(self.revision, vec![self.license], self.trusted_license_keys)
    }
}

fn update_message(
    revision: u64,
    upserted: Vec<proto::License>,
    trusted_license_keys: Vec<String>,
) -> ControlPlaneMessage {
    ControlPlaneMessage {
        message: Some(control_plane_message::Message::Update(proto::Update {
            nonce: format!("{revision}-1"),
            revision,
            upserted,
            removed: Vec::new(),
            trusted_license_keys,
        })),
    }
}

/// A running floor child process.
pub struct FloorProcess {
    child: Child,
    stdin: ChildStdin,
    /// Kept open so the child never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    pub addr: SocketAddr,
    pub ca_pem: String,
}

impl FloorProcess {
    /// Writes the CA into `dir` and starts `bench_binary floor-server --dir dir`.
    pub async fn start(bench_binary: &Path, dir: &Path, pki: &FloorPki) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        pki.write(dir)?;
        let mut child = Command::new(bench_binary)
            .arg("floor-server")
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} floor-server", bench_binary.display()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("floor stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("floor stdout"))?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
            .await
            .context("the floor did not start within 30 s")??;
        let started: Value = serde_json::from_str(&line)
            .with_context(|| format!("unexpected first line from the floor: {line:?}"))?;
        let addr = started["addr"]
            .as_str()
            .ok_or_else(|| anyhow!("no addr in {line:?}"))?
            .parse()?;
        Ok(Self {
            child,
            stdin,
            _stdout: stdout,
            addr,
            ca_pem: pki.ca.cert_pem().to_owned(),
        })
    }

    /// The URL simulated data planes use.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Hands `broadcast` to the floor, which sends it to every stream.
    pub async fn broadcast(&mut self, broadcast: &Broadcast) -> anyhow::Result<()> {
        self.stdin.write_all(broadcast.to_line().as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    pub fn usage(&self) -> anyhow::Result<Usage> {
        let pid = self.child.id().ok_or_else(|| anyhow!("the floor exited"))?;
        procfs::usage(&pid.to_string())
    }

    /// Closes its stdin (which ends it) and makes sure it is gone.
    pub async fn stop(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The child side: serves until stdin closes.
pub async fn serve(dir: &Path) -> anyhow::Result<()> {
    let ca_pem = std::fs::read_to_string(dir.join(CA_CERT))?;
    let ca_key = std::fs::read_to_string(dir.join(CA_KEY))?;
    let ca = CertificateAuthority::from_pem(&ca_pem, &ca_key)?;
    let server = ca.issue_server(&["127.0.0.1".to_owned()], CERT_TTL)?;
    let key_pem = server
        .key_pem
        .ok_or_else(|| anyhow!("no key for the server certificate"))?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server.cert_pem, &key_pem))
        .client_ca_root(Certificate::from_pem(&ca_pem));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (updates, _) = broadcast::channel(64);
    let service = FloorService {
        updates: updates.clone(),
        revision: Arc::new(AtomicU64::new(0)),
    };
    let revision = service.revision.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(
        Server::builder()
            .tls_config(tls)?
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(LicenseSyncServer::new(service))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener),
                shutdown.clone().cancelled_owned(),
            ),
    );
    println!(
        "{}",
        json!({ "event": "floor.started", "addr": addr.to_string() })
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let broadcast = Broadcast::from_line(&line)?;
        revision.store(broadcast.revision, Ordering::SeqCst);
        // No receivers (no stream open yet) is not an error.
        let _ = updates.send(Arc::new(broadcast.into_message()));
    }
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(result)) => result.map_err(Into::into),
        Ok(Err(join)) => bail!("floor server task: {join}"),
        Err(_) => Ok(()),
    }
}

struct FloorService {
    updates: broadcast::Sender<Arc<ControlPlaneMessage>>,
    revision: Arc<AtomicU64>,
}

type Outbound = Result<ControlPlaneMessage, Status>;

#[tonic::async_trait]
impl LicenseSync for FloorService {
    type SyncStream = ReceiverStream<Outbound>;

    /// The floor measures license streaming only.
    async fn report_usage(
        &self,
        _request: Request<licsync_common::proto::UsageReport>,
    ) -> Result<Response<licsync_common::proto::UsageReceipt>, Status> {
        Err(Status::unimplemented("the floor does not meter usage"))
    }

    /// The floor measures streaming only; its certificates do not rotate.
    async fn rotate_certificate(
        &self,
        _request: Request<licsync_common::proto::RotateCertificateRequest>,
    ) -> Result<Response<licsync_common::proto::RotateCertificateResponse>, Status> {
        Err(Status::unimplemented(
            "the floor does not rotate certificates",
        ))
    }

    async fn sync(
        &self,
        request: Request<Streaming<DataPlaneMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let mut inbound = request.into_inner();
        match inbound.message().await? {
            Some(DataPlaneMessage {
                message: Some(DpMessage::Hello(_)),
            }) => {}
            _ => return Err(Status::invalid_argument("expected Hello")),
        }
        // Subscribe before answering, so nothing broadcast from here on is missed.
        let mut updates = self.updates.subscribe();
        let (tx, rx) = mpsc::channel(4);
        let first = update_message(self.revision.load(Ordering::SeqCst), Vec::new(), Vec::new());
        tx.send(Ok(first))
            .await
            .map_err(|_| Status::cancelled("stream closed"))?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    update = updates.recv() => match update {
                        Ok(update) => {
                            if tx.send(Ok((*update).clone())).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    // Acks and heartbeats are read and dropped; the stream ends with the peer.
                    message = inbound.message() => match message {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return,
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_lines_round_trip() {
        let b = Broadcast {
            revision: 7,
            license: proto::License {
                id: "a".into(),
                document: "{\"license\":{}}\n".into(),
                created_at: 1,
                updated_at: 2,
                revision: 7,
            },
            trusted_license_keys: vec!["k".into()],
        };
        let line = b.to_line();
        assert_eq!(line.matches('\n').count(), 1, "one line per broadcast");
        let back = Broadcast::from_line(line.trim_end()).unwrap();
        assert_eq!(back.license, b.license);
        assert_eq!(
            (back.revision, back.trusted_license_keys),
            (7, b.trusted_license_keys)
        );
    }
}
