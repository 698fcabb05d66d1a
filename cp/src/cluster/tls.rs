//! The cluster listener's TLS: rustls with the ring provider, client certificates verified
//! against the cluster CA, operator words for a refused handshake, and the established
//! connection handed to tonic.
//!
//! tonic's built-in TLS drops handshake errors silently; an operator whose data plane presents an
//! expired certificate or one from another CA needs a log line saying so. So connections are
//! accepted and handshaken by [`accept`](super::accept) and handed to tonic as an incoming
//! stream of [`TlsConnection`]s. Registration must work
//! without a client certificate, so the verifier allows anonymous clients; a certificate that
//! *is* presented must chain to the cluster CA and be within its validity, and `LicenseSync`
//! rejects anonymous callers itself.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use licsync_common::pki::CertInfo;
use rustls::crypto::CryptoProvider;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{CertificateError, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::admission::Admitted;
use super::idle::{Activity, Expired, IdleDeadline, read_or_expire};

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
    /// The calls in progress on the connection, which keep it from being closed as idle.
    pub activity: Arc<Activity>,
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

/// An established TLS connection with what the handlers need to know about its peer; it
/// fails its reads once idle too long, and holds its place in the admission limits until
/// dropped.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
    idle: IdleDeadline,
    _admitted: Admitted,
}

impl TlsConnection {
    pub(super) fn new(
        stream: TlsStream<TcpStream>,
        info: PeerInfo,
        idle: IdleDeadline,
        admitted: Admitted,
    ) -> Self {
        Self {
            stream,
            info,
            idle,
            _admitted: admitted,
        }
    }
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
        let this = &mut *self;
        let info = &this.info;
        read_or_expire(
            Pin::new(&mut this.stream),
            &mut this.idle,
            cx,
            buf,
            |why| match why {
                Expired::Idle => {
                    tracing::debug!(peer.addr = %info.remote_addr, "Closing a cluster connection without a gRPC call in progress.");
                }
                Expired::Silent(silent) => {
                    let dataplane = info
                        .client
                        .as_deref()
                        .and_then(|cert| cert.as_ref().ok())
                        .and_then(|cert| cert.dataplane_id.as_deref());
                    tracing::warn!(
                        event = "dataplane.unresponsive",
                        dataplane.id = dataplane,
                        peer.addr = %info.remote_addr,
                        silent_s = silent.as_secs(),
                        "Peer sent nothing and did not answer the keepalive ping in time; closing its connection."
                    );
                }
            },
        )
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.idle.sent();
        }
        written
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
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.idle.sent();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
