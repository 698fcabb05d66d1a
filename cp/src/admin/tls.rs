//! HTTPS for the Admin API (`admin.tls_cert_file` and `admin.tls_key_file`): the operator's
//! own certificate (from their PKI or an ACME client), not the cluster CA's, since browsers and
//! `curl` must trust it without pinning. Loaded once at start; an unreadable or mismatched
//! pair stops the start with the file and the fix named, rather than serving plain HTTP.

use std::path::{Path, PathBuf};

use licsync_common::http_server::ServerTls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::AdminConfig;

/// Why the Admin API's certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminTlsError {
    #[error("cannot read {key} {path}: {reason}")]
    Read {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "admin.tls_cert_file and admin.tls_key_file do not make a usable pair: {0}; give the certificate chain (leaf first) and its own private key, both PEM"
    )]
    Pair(String),
}

/// The TLS configuration `config` asks for, or `None` for plain HTTP (both keys unset;
/// [`crate::config::CpConfig::validate`] refuses one without the other).
pub fn load(config: &AdminConfig) -> Result<Option<ServerTls>, AdminTlsError> {
    let (Some(cert_file), Some(key_file)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Ok(None);
    };
    let chain = certificates(cert_file)?;
    let key = private_key(key_file)?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AdminTlsError::Pair(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| AdminTlsError::Pair(e.to_string()))?;
    Ok(Some(ServerTls::new(config)))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, AdminTlsError> {
    let read = |reason: String| AdminTlsError::Read {
        key: "admin.tls_cert_file",
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(read("it holds no CERTIFICATE block".into()));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, AdminTlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| AdminTlsError::Read {
        key: "admin.tls_key_file",
        path: path.to_owned(),
        reason: format!("no PEM private key in it: {e}"),
    })
}
