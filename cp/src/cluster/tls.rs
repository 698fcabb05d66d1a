//! The cluster listener's TLS: rustls with the ring provider, client certificates verified
//! against the cluster CA, and an accept loop that logs *why* a handshake was refused.
//!
//! tonic's built-in TLS drops handshake errors silently; an operator whose data plane presents an
//! expired certificate or one from another CA needs a log line saying so. So connections are
//! accepted and handshaken here and handed to tonic as an incoming stream. Registration must work
//! without a client certificate, so the verifier allows anonymous clients; a certificate that
//! *is* presented must chain to the cluster CA and be within its validity, and `LicenseSync`
//! rejects anonymous callers itself.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use licsync_common::pki::CertInfo;
use rustls::crypto::CryptoProvider;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{CertificateError, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A handshake that takes longer than this is abandoned (slowloris guard).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; a reconnect storm queues instead of exhausting memory.
const MAX_CONCURRENT_HANDSHAKES: usize = 512;

/// What the gRPC handlers learn about the peer of a request.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// The verified client certificate (the leaf), read once at the handshake, when the client
    /// presented one; `Err` with the reason when it verified but cannot be read. Kept parsed
    /// rather than as DER: a connection lives for days and there are thousands of them, so
    /// the few fields a call needs are cheaper to hold than the certificate, and no call
    /// parses it again.
    pub client: Option<Arc<Result<CertInfo, String>>>,
}

/// The crypto provider of the cluster listener (ring), shared by its config and the server
/// certificates it loads.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server config: the server certificate comes from `identity` at each handshake
/// (so it can be rotated while running), client certificates are verified against `ca`.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    ca: &CertificateDer<'static>,
    identity: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections, completes TLS handshakes concurrently and yields the established
/// connections until `shutdown` fires.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (tx, rx) = mpsc::channel(MAX_CONCURRENT_HANDSHAKES);
    let acceptor = TlsAcceptor::from(config);
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
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
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tcp.set_nodelay(true);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let client = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|leaf| Arc::new(CertInfo::from_der(leaf).map_err(|e| e.to_string())));
                            let info = PeerInfo { remote_addr, client };
                            let _ = tx.send(Ok(TlsConnection { stream, info })).await;
                        }
                        Ok(Err(error)) => log_handshake_failure(remote_addr, &error),
                        Err(_) => tracing::debug!(peer.addr = %remote_addr, "TLS handshake timed out."),
                    }
                });
            }
        }
        .instrument(tracing::info_span!("cluster_accept")),
    );
    ReceiverStream::new(rx)
}

fn log_handshake_failure(remote_addr: SocketAddr, error: &io::Error) {
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        // Port scanners and TCP health checks: not worth a warning.
        tracing::debug!(peer.addr = %remote_addr, %error, "Connection closed before the TLS handshake completed.");
        return;
    };
    let reason = explain(tls);
    tracing::warn!(event = "tls.handshake_failed", peer.addr = %remote_addr, error = %tls, reason, "Refused a cluster connection.");
}

/// Operator words for a handshake failure.
pub fn explain(error: &rustls::Error) -> &'static str {
    use rustls::AlertDescription as Alert;
    match error {
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => {
            "the data plane's client certificate has expired; renew it with `licsync-dp registration renew`"
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "the data plane's client certificate is not valid yet; check the clocks of both hosts",
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => {
            "the data plane's client certificate was not issued by this cluster's CA; register the data plane with this control plane"
        }
        rustls::Error::InvalidCertificate(_) => {
            "the data plane's client certificate is invalid; register or renew the data plane"
        }
        rustls::Error::AlertReceived(Alert::UnknownCA | Alert::BadCertificate) => {
            "the data plane does not trust this control plane's certificate; its registration file holds another cluster's CA"
        }
        rustls::Error::AlertReceived(Alert::CertificateExpired) => {
            "the data plane refused this control plane's certificate as expired; check the cert.rotation_failed log lines, or restart the control plane to reissue it"
        }
        rustls::Error::NoApplicationProtocol => {
            "the client does not speak HTTP/2 (gRPC); point only licsync data planes at the cluster port"
        }
        _ => "TLS handshake failed",
    }
}

/// An established TLS connection with what the handlers need to know about its peer.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
