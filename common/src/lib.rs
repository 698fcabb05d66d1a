//! Domain shared by the licsync control plane (`licsync-cp`) and data-plane agent (`licsync-dp`).
//!
//! # Layout
//! - [`active`]: which held license a gateway serves (Kong's newest-`updated_at` rule), for
//!   both binaries.
//! - [`credential`]: a user's or connected app's credential, never shown in `Debug`.
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
//! - [`usage_month`]: the UTC month usage is counted in (`YYYY-MM`), its range and the bound on
//!   a month's count, one rule for the agent that counts and the control plane that stores.
//! - [`fsutil`]: crash-safe file replacement and secret files (mode 0600).
//! - [`strict_json`]: JSON with one interpretation (a repeated key is refused), for signed and
//!   outside documents.
//! - [`log_text`]: escaping outside text for logs, and the rule that names hold no control
//!   characters.
//! - [`stream_end`]: why the control plane ended or refused a sync stream (gRPC status and
//!   the `licsync-end-reason` trailer), read the same way by both sides.
//! - [`state_file`]: the agent's versioned JSON files, read format-first and replaced
//!   atomically.
//! - [`shutdown`]: SIGTERM/SIGINT and the drain deadline, the same for both binaries.
//! - [`reload`]: SIGHUP configuration reload, read and logged the same way by both binaries.
//! - [`sd_notify`]: systemd's `READY=1` / `STOPPING=1` for `Type=notify` units.
//! - [`telemetry`]: `tracing` set-up shared by both binaries (text or JSON, `LICSYNC_LOG`).
//! - `http_server` (feature `http-server`): the one HTTP/1.1 serving loop of the Admin API and
//!   the agent's local API, with its connection cap, timeouts and JSON protocol errors.
//!
//! Apart from `http_server`, nothing here owns a socket or a task: the applications decide
//! I/O policy (where they listen, with which limits).
#![forbid(unsafe_code)]

pub mod active;
pub mod codec;
pub mod config;
pub mod credential;
pub mod duration;
pub mod expiry;
pub mod fsutil;
#[cfg(feature = "http-server")]
pub mod http_server;
pub mod license;
pub mod log_text;
pub mod pki;
#[cfg(test)]
mod proptests;
pub mod reload;
pub mod report;
pub mod sd_notify;
pub mod shutdown;
pub mod state_file;
pub mod stream_end;
pub mod strict_json;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time_fmt;
pub mod usage_month;

/// Generated protobuf and gRPC types for `licsync.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("licsync.v1");

    /// The encoded `FileDescriptorSet` of `licsync.v1`, for gRPC server reflection (so
    /// `grpcurl`-style tools work against the cluster listener without the `.proto` files).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/licsync_descriptor.bin"));
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

/// Outside text made fit for a log line or an error message: cut to `max_chars` characters,
/// control characters (newlines, terminal escapes) written as Rust escapes (`\n`, `\u{1b}`).
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for c in text.chars().take(max_chars) {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// The bytes of `text` written as hex digits (either case), or `None` for anything else: an odd
/// length, a sign, a space or any other character. The one decoder for signatures, checksums
/// and fingerprints, strict because what it reads is signed.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    fn digit(byte: u8) -> Option<u8> {
        match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            b'A'..=b'F' => Some(byte - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod hex_tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_decoding_is_strict() {
        let bytes = [0x00, 0x0f, 0xab, 0xff];
        assert_eq!(hex(&bytes), "000fabff");
        assert_eq!(unhex("000fabff").unwrap(), bytes);
        assert_eq!(unhex("000FABFF").unwrap(), bytes);
        assert_eq!(unhex("").unwrap(), Vec::<u8>::new());
        for bad in ["0", "+f", "0g", " 0", "0x", "é0"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }
}
