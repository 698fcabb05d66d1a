//! TLS to the PostgreSQL server: rustls with the ring provider (as everywhere in licsync),
//! through `tokio-postgres-rustls`. The server's certificate is always verified, against the
//! CA in `storage.postgres.ca_file` and for the host in the URL: a TLS connection that accepts
//! any certificate would protect against nothing but a passive listener.

use std::sync::Arc;

use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{StoreError, StoreResult};

/// The TLS connector for `config`, or `None` for plain TCP.
///
/// With a CA, TLS is required (an unset `sslmode` becomes `require`, so a server without TLS is
/// refused rather than silently used in the clear). Without one, a URL that requires TLS is
/// refused: its certificate could not be verified.
pub fn connector(
    config: &mut tokio_postgres::Config,
    ca_pem: Option<&str>,
) -> StoreResult<Option<MakeRustlsConnect>> {
    let Some(ca_pem) = ca_pem else {
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::Backend(
                "storage.postgres.url asks for TLS (sslmode=require): set \
                 storage.postgres.ca_file to the CA certificate (PEM) that signed the \
                 PostgreSQL server's certificate"
                    .into(),
            ));
        }
        return Ok(None);
    };
    if config.get_ssl_mode() == SslMode::Disable {
        return Err(StoreError::Backend(
            "storage.postgres.ca_file is set but storage.postgres.url says sslmode=disable: \
             remove one of them"
                .into(),
        ));
    }
    config.ssl_mode(SslMode::Require);
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) =
        roots.add_parsable_certificates(licsync_common::pki::certificates_from_pem(ca_pem));
    if added == 0 {
        return Err(StoreError::Backend(
            "storage.postgres.ca_file holds no usable PEM certificate".into(),
        ));
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::cluster::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("cannot configure TLS to PostgreSQL: {e}")))?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(tls)))
}
