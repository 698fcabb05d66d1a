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
    /// `(f, n)`: the first node holds `f` of the `n` data planes, the others share the rest;
    /// `None`: every node an equal share.
    first_share: Option<(usize, usize)>,
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
                first_share: None,
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
            first_share: None,
            nodes,
            _database: Some(database),
        })
    }

    /// The node data planes register at (the first).
    pub fn first(&self) -> &BenchCp {
        &self.nodes[0]
    }

    /// Gives the first node `first` of the `total` data planes and the other nodes equal
    /// shares of the rest, so the node a storm kills can hold more than the others (15,000 of
    /// 45,000 on four nodes leaves each survivor 15,000 after the failover, under the
    /// open-files limit). Spread evenly over the indices, so every worker holds some of each.
    pub fn weight_first(&mut self, first: usize, total: usize) {
        self.first_share = Some((first.min(total), total.max(1)));
    }

    /// The node data plane `index` connects to first.
    pub fn node_of(&self, index: usize) -> usize {
        Spread::new(self.nodes.len(), self.first_share).node_of(index)
    }

    /// `sync.servers` of data plane `index`: its own node first, then the others, rotated per
    /// data plane so a dead node's data planes spread evenly over the rest.
    pub fn servers_for(&self, index: usize) -> Vec<String> {
        let k = self.nodes.len();
        let own = self.node_of(index);
        let others: Vec<usize> = (1..k).map(|d| (own + d) % k).collect();
        let mut servers = vec![self.nodes[own].cp.cluster_url.clone()];
        if !others.is_empty() {
            // Consecutive data planes of one node fail over to different nodes.
            let rank = Spread::new(k, self.first_share).rank(index);
            let shift = rank % others.len();
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

/// Which node each data plane connects to first: round robin, or with the first node's share
/// fixed ([`BenchCluster::weight_first`]).
#[derive(Debug, Clone, Copy)]
struct Spread {
    nodes: usize,
    first_share: Option<(usize, usize)>,
}

impl Spread {
    fn new(nodes: usize, first_share: Option<(usize, usize)>) -> Self {
        Self {
            nodes: nodes.max(1),
            first_share,
        }
    }

    /// How many of the data planes before `index` connect to the first node.
    fn firsts_before(self, index: usize) -> usize {
        match self.first_share {
            Some((first, total)) => index * first / total,
            None => index.div_ceil(self.nodes),
        }
    }

    fn node_of(self, index: usize) -> usize {
        let k = self.nodes;
        match self.first_share {
            None => index % k,
            Some(_) if k == 1 => 0,
            Some(_) => {
                let firsts = self.firsts_before(index);
                if self.firsts_before(index + 1) > firsts {
                    0
                } else {
                    1 + (index - firsts) % (k - 1)
                }
            }
        }
    }

    /// The position of data plane `index` among its node's.
    fn rank(self, index: usize) -> usize {
        match (self.node_of(index), self.first_share) {
            (0, _) => self.firsts_before(index),
            (_, None) => index / self.nodes,
            (_, Some(_)) => (index - self.firsts_before(index)) / (self.nodes - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    fn shares(spread: Spread, n: usize) -> Vec<usize> {
        let mut counts = vec![0; spread.nodes];
        for i in 0..n {
            counts[spread.node_of(i)] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_by_default() {
        let spread = Spread::new(4, None);
        assert_eq!(shares(spread, 45_000), vec![11_250; 4]);
        assert_eq!(
            (0..8).map(|i| spread.node_of(i)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 0, 1, 2, 3]
        );
        assert_eq!(
            (0..8).map(|i| spread.rank(i)).collect::<Vec<_>>(),
            [0, 0, 0, 0, 1, 1, 1, 1]
        );
    }

    #[test]
    fn the_first_node_gets_its_share_spread_over_the_indices() {
        let spread = Spread::new(4, Some((15_000, 45_000)));
        assert_eq!(shares(spread, 45_000), vec![15_000, 10_000, 10_000, 10_000]);
        // Every third data plane, so each worker's contiguous block holds its share.
        assert_eq!(shares(spread, 3_000), vec![1_000, 667, 667, 666]);
        let firsts: Vec<usize> = (0..45_000).filter(|&i| spread.node_of(i) == 0).collect();
        assert!(firsts.iter().enumerate().all(|(r, &i)| spread.rank(i) == r));
    }
}
