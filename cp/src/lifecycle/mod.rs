//! The control plane's periodic upkeep of the fleet's identities, each a task that runs until
//! shutdown:
//!
//! - [`purge`]: removes data planes silent for longer than `cluster.dataplane_purge_delay`.
//! - [`expiry`]: logs `cert.expiring` once a day for certificates within 30 days of expiry
//!   (data planes', the server's when its rotation is overdue, and the CA's).
//! - [`storage_watch`]: whether storage answers, for `/health/ready`.
//!
//! Server certificate rotation lives with the listener it serves
//! ([`crate::cluster::server_cert`]). The decisions are pure functions of an injected `now`;
//! the tasks only read the clock and log.

pub mod expiry;
pub mod purge;
pub mod storage_watch;
