//! `licsync-cp`, the control plane: stores signed licenses behind a Kong-compatible Admin API,
//! runs the cluster CA, registers data planes and streams licenses to them over mTLS gRPC.
//!
//! # Layout
//! - Domain: [`model`] (records), [`licenses`] (the single license writer and the snapshot every
//!   stream watches), [`dataplanes`] (the fleet: persisted records joined with live state),
//!   [`sync_machine`] (what one data plane's sync stream sends and when, without the stream),
//!   [`principals`] (users, connected apps and API tokens: their records, login checks,
//!   throttling, permissions), [`registration_tokens`] (create, list, revoke, consume),
//!   [`usage`] (metered request counts and the signed report), [`entitlement`] and [`expiry`]
//!   (what the log says about the active license, watched by [`license_watch`]).
//! - Adapters: [`store`] (sled, in-memory), [`admin`] (axum Admin API), [`cluster`] (tonic
//!   services, TLS listener, CA on disk), [`status`] (unauthenticated `/metrics` and health
//!   probes, with [`metrics`]), [`ui`] (the status page under `/ui` on the admin listener).
//!   The HTTP and gRPC adapters reach the domain services
//!   through [`state::ControlPlane`]'s accessors and never storage itself.
//! - Upkeep: [`lifecycle`] (purge of silent data planes, certificate expiry reminders).
//! - Wiring: [`config`], [`server`] (start everything on bound listeners, drain on shutdown),
//!   [`cli`] (the `licsync-cp` command line), [`license_tool`] and [`report_tool`] (its offline
//!   commands).
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dataplanes;
pub mod entitlement;
pub mod expiry;
pub mod ha;
pub mod license_dir;
pub mod license_tool;
pub mod license_watch;
pub mod licenses;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod principals;
#[cfg(test)]
mod proptests;
pub mod registration_tokens;
pub mod reload;
pub mod report_tool;
pub mod secrets;
pub mod server;
pub mod state;
pub mod status;
pub mod storage_copy;
pub mod storage_tool;
pub mod store;
pub mod sync_machine;
pub mod ui;
pub mod usage;
