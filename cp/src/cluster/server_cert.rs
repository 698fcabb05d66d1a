//! The cluster listener's server certificate while the control plane runs: handed to rustls
//! through a resolver whose certificate can be swapped, and replaced by a fresh one once two
//! thirds of its lifetime (`pki.server_cert_ttl`) have passed.
//!
//! Swapping only affects handshakes that start afterwards: connections already established
//! (every data plane's Sync stream) keep going untouched, and data planes trust the CA rather
//! than the leaf, so nothing on their side changes. The new certificate is written to
//! `server.crt` / `server.key` before it is put in use.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use licsync_common::pki::CertificateAuthority;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::ca::{CaError, ServerCert};

/// Longest single wait of the rotation task: wall-clock time is re-read at least this often,
/// so a suspended host or a stepped clock cannot make it miss the rotation point by much.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Longest wait before retrying a failed rotation.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Why a server certificate could not be put in use.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Issue(#[from] CaError),
    #[error("the new server certificate cannot be used by TLS: {0}")]
    Tls(String),
}

/// The server certificate in use and when it is due for replacement.
pub struct InUse {
    certified: Arc<CertifiedKey>,
    /// Serial (hex).
    pub serial: String,
    /// When it expires.
    pub not_after: OffsetDateTime,
    /// Two thirds into its lifetime.
    pub rotate_at: OffsetDateTime,
}

/// When a certificate valid until `not_after`, issued for `ttl`, is replaced: once two thirds
/// of its lifetime have passed, leaving a third for retries if issuing fails.
pub fn rotate_at(not_after: OffsetDateTime, ttl: Duration) -> OffsetDateTime {
    let third = time::Duration::try_from(ttl / 3).unwrap_or(time::Duration::ZERO);
    not_after.checked_sub(third).unwrap_or(not_after)
}

/// The swappable server identity of the cluster listener.
pub struct ServerIdentity {
    provider: Arc<CryptoProvider>,
    ttl: Duration,
    in_use: RwLock<Arc<InUse>>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_use = self.in_use();
        f.debug_struct("ServerIdentity")
            .field("serial", &in_use.serial)
            .field("not_after", &in_use.not_after)
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// Starts with `cert`, issued for `ttl`.
    pub fn new(
        provider: Arc<CryptoProvider>,
        cert: &ServerCert,
        ttl: Duration,
    ) -> Result<Self, RotateError> {
        let in_use = in_use(&provider, cert, ttl)?;
        Ok(Self {
            provider,
            ttl,
            in_use: RwLock::new(Arc::new(in_use)),
        })
    }

    /// The certificate now handed to new connections.
    pub fn in_use(&self) -> Arc<InUse> {
        // Only whole `Arc`s are stored; a panic elsewhere cannot leave half a value.
        self.in_use
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `cert` in use for every handshake from now on.
    pub fn install(&self, cert: &ServerCert) -> Result<(), RotateError> {
        let next = Arc::new(in_use(&self.provider, cert, self.ttl)?);
        *self.in_use.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }
}

fn in_use(
    provider: &CryptoProvider,
    cert: &ServerCert,
    ttl: Duration,
) -> Result<InUse, RotateError> {
    let (chain, key) = cert
        .identity()
        .map_err(|e| RotateError::Tls(e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| RotateError::Tls(e.to_string()))?;
    Ok(InUse {
        certified: Arc::new(certified),
        serial: cert.serial.clone(),
        not_after: cert.not_after,
        rotate_at: rotate_at(cert.not_after, ttl),
    })
}

impl ResolvesServerCert for ServerIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.in_use().certified.clone())
    }
}

/// What the rotation task needs to issue a server certificate.
pub struct Rotation {
    /// Where a new certificate is installed.
    pub identity: Arc<ServerIdentity>,
    /// The cluster CA that signs it.
    pub ca: Arc<CertificateAuthority>,
    /// The pki directory holding `server.crt` and `server.key`.
    pub dir: PathBuf,
    /// `cluster.server_names`: the DNS names and addresses it is valid for.
    pub names: Vec<String>,
}

impl Rotation {
    /// Issues a new certificate, writes it and puts it in use; logs `cert.rotated`.
    pub fn rotate(&self) -> Result<(), RotateError> {
        let old = self.identity.in_use();
        let cert = ServerCert::issue(&self.ca, &self.dir, &self.names, self.identity.ttl)?;
        self.identity.install(&cert)?;
        tracing::info!(
            event = "cert.rotated",
            role = "server",
            old_serial = %old.serial,
            new_serial = %cert.serial,
            cert_expires_at = cert.not_after.unix_timestamp(),
            "Rotated the cluster server certificate."
        );
        Ok(())
    }

    /// Rotates whenever the certificate in use reaches its rotation point, until `shutdown`.
    /// A failed rotation is logged and retried; the certificate in use stays valid meanwhile.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let in_use = self.identity.in_use();
            let left = in_use.rotate_at - OffsetDateTime::now_utc();
            let wait = if left.is_positive() {
                Duration::try_from(left).unwrap_or(MAX_WAIT).min(MAX_WAIT)
            } else {
                match self.rotate() {
                    Ok(()) => continue,
                    Err(error) => {
                        let retry =
                            (self.identity.ttl / 20).clamp(Duration::from_secs(1), MAX_RETRY);
                        tracing::error!(
                            event = "cert.rotation_failed",
                            role = "server",
                            %error,
                            serial = %in_use.serial,
                            cert_expires_at = in_use.not_after.unix_timestamp(),
                            retry_in_s = retry.as_secs(),
                            "Could not rotate the cluster server certificate; retrying. Data planes cannot connect once it expires: check the pki directory is writable."
                        );
                        retry
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_due_two_thirds_into_the_lifetime() {
        let not_after = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let at = rotate_at(not_after, Duration::from_secs(300));
        assert_eq!(at.unix_timestamp(), 1_000_000 - 100);
        let year = Duration::from_secs(365 * 86_400);
        let at = rotate_at(not_after + year, year);
        assert_eq!((not_after + year - at).whole_days(), 121);
    }

    #[test]
    fn installing_swaps_what_new_handshakes_get() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = CertificateAuthority::generate("test CA", Duration::from_secs(3600)).unwrap();
        let ca = Arc::new(ca);
        let names = vec!["localhost".to_owned()];
        let ttl = Duration::from_secs(600);
        let first = ServerCert::issue(&ca, dir.path(), &names, ttl).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = Arc::new(ServerIdentity::new(provider, &first, ttl).unwrap());
        assert_eq!(identity.in_use().serial, first.serial);
        let rotation = Rotation {
            identity: identity.clone(),
            ca,
            dir: dir.path().to_owned(),
            names,
        };
        rotation.rotate().unwrap();
        let now = identity.in_use();
        assert_ne!(now.serial, first.serial);
        let on_disk = std::fs::read_to_string(dir.path().join("server.crt")).unwrap();
        assert_eq!(
            licsync_common::pki::CertInfo::from_pem(&on_disk)
                .unwrap()
                .serial,
            now.serial
        );
        assert!(now.rotate_at > OffsetDateTime::now_utc());
    }
}
