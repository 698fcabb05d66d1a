//! Domain shared by the licsync control plane (`licsync-cp`) and data-plane agent (`licsync-dp`).
//!
//! # Layout
//! - [`license`]: Kong's license document, its canonical bytes and Ed25519 verification
//!   against a set of trusted keys (key rotation means several may be trusted at once).
//! - [`pki`]: the cluster CA, certificate signing requests and certificate inspection.
//! - [`proto`]: the generated gRPC wire types of `proto/licsync/v1`, encoded with [`codec`]'s
//!   small-buffer codec.
//! - [`duration`], [`config`]: human durations (`30s`, `90d`) and TOML loading with errors
//!   that name the file, the key and the reason.
//! - [`report`]: the canonical bytes, checksum and signature of a usage report, and the
//!   verification a vendor runs offline.
//! - [`expiry`]: Kong's license-expiry log schedule, as a pure function of the date.
//! - [`fsutil`]: crash-safe file replacement and secret files (mode 0600).
//! - [`stream_end`]: why the control plane ended or refused a sync stream (gRPC status and
//!   the `licsync-end-reason` trailer), read the same way by both sides.
//! - [`telemetry`]: `tracing` set-up shared by both binaries (text or JSON, `LICSYNC_LOG`).
//!
//! Nothing here owns a socket or a task: the applications decide I/O policy.
#![forbid(unsafe_code)]

pub mod codec;
pub mod config;
pub mod duration;
pub mod expiry;
pub mod fsutil;
pub mod license;
pub mod pki;
pub mod report;
pub mod stream_end;
pub mod telemetry;
pub mod time_fmt;

/// Generated protobuf and gRPC types for `licsync.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("licsync.v1");
}

/// The version of this build, as sent in `Hello` and reported by `/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Current Unix time in whole seconds.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Lowercase hex of `bytes` (signatures, fingerprints, serial numbers).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
