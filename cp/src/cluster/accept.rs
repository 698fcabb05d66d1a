//! The cluster listener's accept loop: admit, wait for the client's first bytes, handshake
//! within a deadline, and log *why* a handshake was refused (once per source per minute).
//!
//! Registration works without a client certificate, so the port is open to anyone who can
//! reach it. Every phase of a connection is therefore bounded: a connection is admitted only
//! within the per-source and file-descriptor limits ([`admission`](super::admission)); it
//! must complete its handshake within `cluster.handshake_timeout` of accept, and takes one of
//! the [`MAX_CONCURRENT_HANDSHAKES`] slots only once its ClientHello has started to arrive, so
//! sockets that send nothing never delay anyone's handshake; after the handshake the
//! connection's [`IdleDeadline`] closes it when no gRPC call starts within the same timeout or
//! none is in progress for `cluster.idle_timeout`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use licsync_common::pki::CertInfo;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::admission::{self, Admission, Admitted, Refused};
use super::idle::{Activity, IdleDeadline};
use super::liveness::Keepalive;
use super::log_limit::PerSource;
use super::tls::{PeerInfo, TlsConnection, explain};
use crate::config::ClusterConfig;

/// Handshakes in flight at once; a reconnect storm queues instead of exhausting memory.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 512;

/// The time and count bounds of one cluster listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Accept → TLS established; and again, established → first gRPC call.
    pub handshake_timeout: Duration,
    /// No gRPC call in progress for this long closes the connection.
    pub idle_timeout: Duration,
    /// 0: unlimited.
    pub max_connections_per_ip: usize,
    /// Cluster connections open at once, whatever their source.
    pub max_open: usize,
    /// When a silent peer counts as dead.
    pub keepalive: Keepalive,
}

impl Limits {
    /// The configured limits; `max_open` from the process's open-file limit.
    pub fn from_config(config: &ClusterConfig) -> Self {
        Self {
            handshake_timeout: config.handshake_timeout.0,
            idle_timeout: config.idle_timeout.0,
            max_connections_per_ip: config.max_connections_per_ip,
            max_open: admission::connection_budget(),
            keepalive: Keepalive {
                interval: config.keepalive_interval.0,
                timeout: config.keepalive_timeout.0,
            },
        }
    }
}

/// Accepts TCP connections, completes TLS handshakes concurrently and yields the established
/// connections until `shutdown` fires.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    limits: Limits,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (tx, rx) = mpsc::channel(MAX_CONCURRENT_HANDSHAKES);
    let admission = Admission::new(
        limits.max_connections_per_ip,
        limits.max_open,
        MAX_CONCURRENT_HANDSHAKES,
    );
    let handshakes = Arc::new(Handshakes {
        acceptor: TlsAcceptor::from(config),
        slots: Semaphore::new(MAX_CONCURRENT_HANDSHAKES),
        limits,
        tx,
        logs: Logs::default(),
    });
    tokio::spawn(
        async move {
            loop {
                let (tcp, remote_addr) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(event = "cluster.accept_failed", %error, "Cluster listener cannot accept; retrying shortly.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                match admission.admit(remote_addr.ip()) {
                    Ok(admitted) => {
                        tokio::spawn(handshakes.clone().run(tcp, remote_addr, admitted));
                    }
                    Err(refused) => {
                        drop(tcp);
                        handshakes.logs.refused(remote_addr, refused);
                    }
                }
            }
        }
        .instrument(tracing::info_span!("cluster_accept")),
    );
    ReceiverStream::new(rx)
}

/// What every handshake task shares.
struct Handshakes {
    acceptor: TlsAcceptor,
    slots: Semaphore,
    limits: Limits,
    tx: mpsc::Sender<io::Result<TlsConnection>>,
    logs: Logs,
}

/// Why a connection ended before its handshake completed.
enum Failure {
    /// Closed (or reset) before sending a byte: port scanners and TCP health checks.
    Silent(Option<io::Error>),
    Handshake(io::Error),
}

impl Handshakes {
    async fn run(self: Arc<Self>, tcp: TcpStream, remote_addr: SocketAddr, admitted: Admitted) {
        let _ = tcp.set_nodelay(true);
        let deadline = self.limits.handshake_timeout;
        let stream = match tokio::time::timeout(deadline, self.establish(tcp, &admitted)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(Failure::Silent(error))) => {
                tracing::debug!(peer.addr = %remote_addr, error = ?error, "Connection closed before the TLS handshake started.");
                return;
            }
            Ok(Err(Failure::Handshake(error))) => {
                self.logs.handshake_failed(remote_addr, &error);
                return;
            }
            Err(_) => {
                tracing::debug!(peer.addr = %remote_addr, "TLS handshake timed out.");
                return;
            }
        };
        let client = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| Arc::new(CertInfo::from_der(leaf).map_err(|e| e.to_string())));
        let activity = Activity::new();
        let idle = IdleDeadline::new(
            activity.clone(),
            deadline,
            self.limits.idle_timeout,
            Some(self.limits.keepalive),
        );
        let info = PeerInfo {
            remote_addr,
            client,
            activity,
        };
        let _ = self
            .tx
            .send(Ok(TlsConnection::new(stream, info, idle, admitted)))
            .await;
    }

    /// Waits for the ClientHello to start arriving, then for a handshake slot (the source's
    /// share first), then handshakes.
    async fn establish(
        &self,
        tcp: TcpStream,
        admitted: &Admitted,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) => return Err(Failure::Silent(None)),
            Ok(_) => {}
            Err(error) => return Err(Failure::Silent(Some(error))),
        }
        let _source_slot = match &admitted.handshakes {
            Some(share) => Some(share.acquire().await.map_err(|_| Failure::Silent(None))?),
            None => None,
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Failure::Silent(None))?;
        self.acceptor.accept(tcp).await.map_err(Failure::Handshake)
    }
}

/// The accept loop's rate-limited log lines, one budget per kind.
#[derive(Default)]
struct Logs {
    refused: PerSource,
    failed: PerSource,
    aborted: PerSource,
}

/// What `tls.handshake_aborted` tells the operator.
const ABORTED_HINT: &str = "the client closed the connection during the TLS handshake; it most likely does not trust this control plane's certificate: check the data plane's --ca-cert (or the CA in its registration file) is this cluster's ca.crt";

impl Logs {
    fn refused(&self, remote_addr: SocketAddr, refused: Refused) {
        if let Some(suppressed) = self.refused.admit(remote_addr.ip()) {
            tracing::warn!(
                event = "cluster.connection_refused",
                peer.addr = %remote_addr,
                reason = refused.reason(),
                limit = refused.limit(),
                suppressed,
                "Closed a new cluster connection without a handshake."
            );
        }
    }

    fn handshake_failed(&self, remote_addr: SocketAddr, error: &io::Error) {
        let Some(tls) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            // The client sent a ClientHello and hung up before finishing (closed, or reset
            // with our answer unread): typically a TLS client that does not trust the server
            // certificate and closes without an alert.
            use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
            if matches!(
                error.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
            ) {
                if let Some(suppressed) = self.aborted.admit(remote_addr.ip()) {
                    tracing::info!(event = "tls.handshake_aborted", peer.addr = %remote_addr, %error, reason = ABORTED_HINT, suppressed, "A client gave up its cluster connection during the TLS handshake.");
                }
            } else {
                tracing::debug!(peer.addr = %remote_addr, %error, "Connection closed before the TLS handshake completed.");
            }
            return;
        };
        if let Some(suppressed) = self.failed.admit(remote_addr.ip()) {
            let reason = explain(tls);
            tracing::warn!(event = "tls.handshake_failed", peer.addr = %remote_addr, error = %tls, reason, suppressed, "Refused a cluster connection.");
        }
    }
}
