//! The control plane under benchmark as a set of nodes: one `licsync-cp` on embedded sled (the
//! default, and the baseline the high-availability runs are compared with), or several
//! `licsync-cp` processes on one PostgreSQL database (`--backend postgres --cp-nodes K`), each
//! with its own data directory and ports and the same storage key, as SPEC §9 runs them.
//!
//! Data planes are spread over the nodes round robin (data plane `i` at node `i % K`), and each
//! is given every node as its `sync.servers`, its own first, so that when its node dies it
//! fails over as the agent does. The order of the others is rotated per data plane, so the
//! data planes of a dead node spread evenly over the survivors instead of all landing on one
//! (one node holds at most ~19,000 streams under a 20,000 open-files limit).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail, ensure};

use super::control_plane::BenchCp;
use super::postgres::PgServer;
use super::procfs::Usage;
use super::{BenchEnv, progress};
use crate::process::run;

/// Where the control plane keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Embedded sled in the node's data directory (one node only).
    Sled,
    /// One PostgreSQL server started for the run, shared by every node.
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sled => "sled",
            Self::Postgres => "postgres",
        }
    }
}

/// Running control-plane nodes (and their database).
pub struct BenchCluster {
    pub backend: Backend,
    /// The nodes, in start order; a killed node stays in place (see [`BenchCluster::alive`]).
    pub nodes: Vec<BenchCp>,
    alive: Vec<bool>,
    /// Dropped after the nodes (fields drop in order), so no node sees its database vanish
    /// while it stops.
    _database: Option<PgServer>,
}

impl BenchCluster {
    /// Starts `count` nodes on `backend` under `dir` (`dir/node-1`, ...), trusting
    /// `trusted_key` for licenses. The first node initialises the database (CA, keys, admin
    /// token); the others join it and use its admin token.
    pub async fn start(
        env: &BenchEnv,
        dir: &Path,
        backend: Backend,
        count: usize,
        trusted_key: &str,
    ) -> anyhow::Result<Self> {
        ensure!(count >= 1, "--cp-nodes must be at least 1");
        if backend == Backend::Sled {
            ensure!(
                count == 1,
                "--cp-nodes {count} needs --backend postgres: sled is one node's embedded database"
            );
            let cp = BenchCp::start(&dir.join("node-1"), &env.cp_binary, trusted_key, "").await?;
            return Ok(Self {
                backend,
                nodes: vec![cp],
                alive: vec![true],
                _database: None,
            });
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let database = PgServer::start().context("starting PostgreSQL for the run")?;
        progress(format_args!("PostgreSQL up at {}", database.url()));
        let key = dir.join("storage.key");
        let key_text = key.to_str().context("non-UTF-8 run directory")?;
        let (code, out, err) = run(
            &env.cp_binary,
            &["storage", "keygen", "--output", key_text],
            dir,
        );
        if code != 0 {
            bail!("licsync-cp storage keygen failed ({code}): {out}{err}");
        }
        let overrides = format!(
            "[storage]\nbackend = \"postgres\"\nencryption_key_file = \"{key_text}\"\n\
             [storage.postgres]\nurl = \"{}\"\n",
            database.url()
        );
        let mut nodes: Vec<BenchCp> = Vec::with_capacity(count);
        for n in 1..=count {
            let mut node = BenchCp::start(
                &dir.join(format!("node-{n}")),
                &env.cp_binary,
                trusted_key,
                &overrides,
            )
            .await?;
            if let Some(first) = nodes.first() {
                ensure!(
                    node.cp.ca_fingerprint == first.cp.ca_fingerprint,
                    "node {n} has another cluster CA than node 1"
                );
                node.cp.token = first.cp.token.clone();
            }
            nodes.push(node);
        }
        Ok(Self {
            backend,
            alive: vec![true; nodes.len()],
            nodes,
            _database: Some(database),
        })
    }

    /// The node data planes register at (the first).
    pub fn first(&self) -> &BenchCp {
        &self.nodes[0]
    }

    /// The node data plane `index` connects to first.
    pub fn node_of(&self, index: usize) -> usize {
        index % self.nodes.len()
    }

    /// `sync.servers` of data plane `index`: its own node first, then the others, rotated per
    /// data plane so a dead node's data planes spread evenly over the rest.
    pub fn servers_for(&self, index: usize) -> Vec<String> {
        let k = self.nodes.len();
        let own = self.node_of(index);
        let others: Vec<usize> = (1..k).map(|d| (own + d) % k).collect();
        let mut servers = vec![self.nodes[own].cp.cluster_url.clone()];
        if !others.is_empty() {
            let shift = (index / k) % others.len();
            servers.extend((0..others.len()).map(|j| {
                self.nodes[others[(j + shift) % others.len()]]
                    .cp
                    .cluster_url
                    .clone()
            }));
        }
        servers
    }

    /// Whether node `node` is running (not killed by the benchmark).
    pub fn alive(&self, node: usize) -> bool {
        self.alive[node]
    }

    /// The node that takes write number `k`: the live nodes in turn.
    pub fn writer(&self, k: usize) -> &BenchCp {
        let live: Vec<&BenchCp> = self
            .nodes
            .iter()
            .zip(&self.alive)
            .filter_map(|(node, alive)| alive.then_some(node))
            .collect();
        live[k % live.len()]
    }

    /// SIGKILL node `node`: no goodbye to its streams, no flush.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].cp.kill();
        self.alive[node] = false;
    }

    /// Starts killed node `node` again on the same data directory and ports.
    pub async fn restart(&mut self, node: usize) {
        self.nodes[node].cp.restart().await;
        self.alive[node] = true;
    }

    /// SIGKILL every node.
    pub fn kill_all(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
    }

    /// Memory and CPU of every live node, summed.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let mut total = Usage {
            rss_kib: 0,
            cpu: std::time::Duration::ZERO,
        };
        for (node, alive) in self.nodes.iter().zip(&self.alive) {
            if *alive {
                let usage = node.usage()?;
                total.rss_kib += usage.rss_kib;
                total.cpu += usage.cpu;
            }
        }
        Ok(total)
    }

    /// Memory and CPU of each node (`None` for a killed one).
    pub fn node_usage(&self) -> Vec<Option<Usage>> {
        self.nodes
            .iter()
            .zip(&self.alive)
            .map(|(node, alive)| alive.then(|| node.usage().ok()).flatten())
            .collect()
    }

    /// What each node logged at `warn` or `error` (the benchmark runs the nodes at `warn`):
    /// event name (or message, for a line without one) → how many times. Killed nodes
    /// included; a restarted node counts from its restart.
    pub fn warnings(&self) -> Vec<BTreeMap<String, usize>> {
        let everything = std::env::var_os(super::control_plane::CP_LOG_ENV).is_some();
        self.nodes
            .iter()
            .map(|node| {
                let mut counts = BTreeMap::new();
                for line in node.cp.process.logs.lines() {
                    let event = licsync_testkit::Event::from_json(&line);
                    let level = event.field("level").unwrap_or_default();
                    let warns =
                        level.eq_ignore_ascii_case("warn") || level.eq_ignore_ascii_case("error");
                    if !warns && !everything {
                        continue;
                    }
                    let key = if event.name.is_empty() {
                        event.field("message").unwrap_or("(no message)").to_owned()
                    } else if let Some(reason) = event.field("reason") {
                        format!("{}: {reason}", event.name)
                    } else {
                        event.name.clone()
                    };
                    *counts.entry(key).or_default() += 1;
                }
                counts
            })
            .collect()
    }
}
