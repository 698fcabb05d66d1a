//! Harness for end-to-end tests and the fleet benchmark: real `licsync-cp` and `licsync-dp`
//! processes, real TLS and real files in temporary directories.
//!
//! # Layout
//! - [`process`]: spawning a binary, collecting its JSON log lines (as the test kit's
//!   `Events`), signals.
//! - [`cp`], [`dp`]: a control plane / data plane under test, on loopback ports it reports
//!   itself in its `cp.started` / `dp.started` log event.
//! - [`bench`]: the fleet benchmark behind the `licsync-bench` binary (`BENCHMARKS.md`).
//!
//! License fixtures, event parsing and polling come from the shared test kit
//! (`licsync_testkit`), a normal dependency here because the benchmark binary uses them too.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test executables;
//! run `cargo build --workspace` first when running this crate's tests alone.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cp;
pub mod dp;
pub mod process;
