//! The benchmark's own PostgreSQL server: `initdb` and `pg_ctl` from `PATH` in a fresh temporary
//! directory, on a free 127.0.0.1 port, **durable** (`fsync = on`, `synchronous_commit = on`,
//! `full_page_writes = on`: PostgreSQL's defaults, as in production). The test kit's server
//! ([`licsync_testkit::postgres`]) turns fsync off to keep tests quick; a benchmark of durable
//! writes must not, so it starts its own.
//!
//! When the benchmark runs as root, the server runs as the `postgres` user (PostgreSQL refuses
//! root) in a directory it owns. [`PgServer`] stops the server and removes the directory when
//! dropped; a watchdog shell (its own process group) does the same if the benchmark dies without
//! dropping it (SIGKILL, a panic that aborts), so no postgres is left behind.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use licsync_testkit::postgres::{self, as_owner, quote, running_as_root};

/// The superuser `initdb` creates; local TCP connections are trusted (loopback only).
const SUPERUSER: &str = "licsync";

/// Connections the server accepts: three nodes with their pools, their `LISTEN` connections and
/// the storage tools, with room to spare.
const MAX_CONNECTIONS: u32 = 300;

/// A running PostgreSQL server for one benchmark run.
pub struct PgServer {
    port: u16,
    dir: PathBuf,
    stop: String,
}

impl PgServer {
    /// Initialises and starts a server; fails naming what to install when the binaries are
    /// missing.
    pub fn start() -> anyhow::Result<Self> {
        let initdb = binary("initdb")?;
        let pg_ctl = binary("pg_ctl")?;
        binary("postgres")?;
        let root = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("licsync-bench-pg-")
            .tempdir()
            .context("temporary directory for PostgreSQL")?
            .keep();
        let text = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("non-UTF-8 path {}", p.display()))
        };
        let dir_text = text(&dir)?;
        let data = text(&dir.join("data"))?;
        let log = text(&dir.join("server.log"))?;
        let (initdb, pg_ctl) = (text(&initdb)?, text(&pg_ctl)?);
        let stop_now = as_owner(root, &[&pg_ctl, "-D", &data, "-w", "stop", "-m", "fast"]);
        watchdog(root, &pg_ctl, &data, &dir_text)?;
        if root {
            sh(&format!("chown -R postgres: {}", quote(&dir_text)))?;
        }
        sh(&as_owner(
            root,
            &[
                &initdb,
                "-D",
                &data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        ))
        .context("initdb")?;
        // A port found free can be taken before the server binds it: try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let options = format!(
                "-p {port} -k {dir_text} -c listen_addresses=127.0.0.1 \
                 -c max_connections={MAX_CONNECTIONS} -c shared_buffers=256MB \
                 -c fsync=on -c synchronous_commit=on -c full_page_writes=on"
            );
            let start = as_owner(
                root,
                &[
                    &pg_ctl, "-D", &data, "-l", &log, "-w", "-o", &options, "start",
                ],
            );
            match sh(&start) {
                Ok(()) => {
                    return Ok(Self {
                        port,
                        dir,
                        stop: stop_now,
                    });
                }
                Err(e) => {
                    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
                    last = Some(e.context(server_log));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last.unwrap_or_else(|| anyhow!("PostgreSQL did not start")))
    }

    /// `storage.postgres.url` for the control plane (the `postgres` database, no password).
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
    /// Stops the server (fast shutdown) and removes its directory.
    fn drop(&mut self) {
        let _ = sh(&self.stop);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Finds `program` on `PATH`, or says what to install.
fn binary(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!(
                "`{program}` is not on PATH: `--backend postgres` needs the PostgreSQL server \
                 binaries (Debian: `apt-get install postgresql-15` and put \
                 /usr/lib/postgresql/15/bin on PATH)"
            )
        })
}

fn sh(line: &str) -> anyhow::Result<()> {
    postgres::sh(line).map_err(anyhow::Error::msg)
}

fn free_port() -> anyhow::Result<u16> {
    postgres::free_port().map_err(anyhow::Error::msg)
}

fn watchdog(root: bool, pg_ctl: &str, data: &str, dir: &str) -> anyhow::Result<()> {
    postgres::watchdog(root, pg_ctl, data, dir).map_err(anyhow::Error::msg)
}
