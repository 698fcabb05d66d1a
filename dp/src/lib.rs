//! `licsync-dp`, the data-plane agent: runs beside a gateway, keeps the license the gateway
//! should use in sync with the control plane, and writes it where the gateway reads it.
//!
//! # Layout
//! - Domain: [`state`] (what the agent holds, behind the [`state::StateStore`] trait with a
//!   file and an in-memory backend), [`output`] (which held license is active, the license
//!   file the gateway reads and the reload command), [`usage`] (request counting, durable
//!   monthly counters, exactly-once reporting), [`license_expiry`] (expiry warnings on Kong's
//!   schedule), [`clock`] (injectable calendar time).
//! - Adapters: [`cluster`] (how the control plane's cluster listener is reached: URL, TLS and
//!   TLS failures in operator words), [`sync`] (the reconnecting `LicenseSync` client and,
//!   beside it, the certificate's lifecycle: rotation, hot reload of the registration file,
//!   expiry notices), [`registration`] (the registration file and `registration create` /
//!   `renew` / `inspect`),
//!   [`local_api`] (the HTTP API on `local.listen`, with [`metrics`] for `GET /metrics`).
//! - Wiring: [`config`], [`agent`] (start everything on a bound listener, stop on shutdown),
//!   [`cli`] (the `licsync-dp` command line).
//!
//! The sync client is a library type so the fleet benchmark can run thousands of them in one
//! process with [`state::MemoryStateStore`] and no license file.
#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod license_expiry;
pub mod local_api;
pub mod metrics;
pub mod output;
#[cfg(test)]
mod proptests;
pub mod registration;
pub mod reload;
pub mod state;
pub mod sync;
pub mod usage;

/// This machine's host name, as sent to the control plane (`Hello`, `Register`).
///
/// Read from the kernel rather than through libc so the crate stays free of `unsafe`.
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|text| text.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}
