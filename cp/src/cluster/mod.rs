//! The cluster listener: gRPC over mutually authenticated TLS, where data planes register and
//! keep their licenses in sync.
//!
//! - [`ca`]: the cluster CA and server certificate on disk.
//! - [`server_cert`]: the server certificate in use, swapped for a fresh one before it expires.
//! - [`tls`]: rustls configuration and the established connection handed to tonic.
//! - [`accept`]: the accept loop: bounds every phase of a connection ([`admission`] per source
//!   and file descriptors, [`idle`] after the handshake) and logs refused handshakes, at most
//!   once per source per minute ([`log_limit`]).
//! - [`issue`]: a new certificate for a registered data plane (rotation, renewal).
//! - [`registration`]: `licsync.v1.Registration` (no client certificate needed).
//! - [`sync`]: `licsync.v1.LicenseSync` (verified client certificate required); `caller`
//!   checks that certificate against the registry; `sync_stream` runs one stream around its
//!   [`crate::sync_machine`] and `sync_actions` carries out what the machine decides;
//!   `sync_end` says how a stream ended and what the data plane is told; its `ReportUsage`
//!   call is in [`usage`].
//! - [`health`]: `grpc.health.v1.Health` (`Check`) and server reflection, for load balancers
//!   and tools.

use std::sync::Arc;

use licsync_common::pki::CertificateAuthority;
use licsync_common::proto::license_sync_server::LicenseSyncServer;
use licsync_common::proto::registration_server::RegistrationServer;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::ControlPlane;

pub mod accept;
pub mod admission;
pub mod ca;
mod caller;
pub mod health;
pub mod idle;
pub mod issue;
pub mod liveness;
pub mod log_limit;
pub mod registration;
pub mod secrets;
pub mod server_cert;
pub mod sync;
mod sync_actions;
mod sync_end;
mod sync_stream;
pub mod tls;
pub mod usage;

/// Why the cluster listener stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    /// The built-in descriptors did not load: a build defect, not something to configure.
    #[error("cannot set up gRPC reflection: {0}")]
    Reflection(String),
}

/// Largest gRPC message a data plane may send (Hello with many held licenses is the biggest).
const MAX_INBOUND_MESSAGE: usize = 1024 * 1024;

/// Serves both cluster services on `listener` until `shutdown` fires; every open Sync stream
/// ends then too, so the server drains promptly.
pub async fn serve(
    listener: TcpListener,
    cp: Arc<ControlPlane>,
    ca: Arc<CertificateAuthority>,
    tls: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let keepalive = &cp.config().cluster;
    let registration = RegistrationServer::new(registration::RegistrationService::new(
        cp.clone(),
        ca.clone(),
    ))
    .max_decoding_message_size(MAX_INBOUND_MESSAGE);
    let sync = LicenseSyncServer::new(sync::SyncService::new(cp.clone(), ca, shutdown.clone()))
        .max_decoding_message_size(MAX_INBOUND_MESSAGE);
    let (reflection_v1, reflection_v1alpha) =
        health::reflection().map_err(|e| ServeError::Reflection(e.to_string()))?;
    let limits = accept::Limits::from_config(&cp.config().cluster);
    let incoming = accept::incoming(listener, tls, limits, shutdown.clone());
    tonic::transport::Server::builder()
        .layer(idle::TrackCallsLayer)
        // hyper sends the pings; the connection's own read decides when an unanswered one
        // means a dead peer (see `liveness`).
        .http2_keepalive_interval(Some(keepalive.keepalive_interval.0))
        .http2_keepalive_timeout(Some(liveness::HYPER_PING_TIMEOUT))
        .add_service(registration)
        .add_service(sync)
        .add_service(health::service(shutdown.clone()))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(ServeError::Transport)
}
