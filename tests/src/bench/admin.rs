//! `admin`: the Admin API under load, with no data plane connected. M distinct signed licenses
//! are created with `POST /licenses`, C requests in flight at a time (each `201` means the
//! write is durable: sled has flushed it, or PostgreSQL has committed it with `fsync` and
//! `synchronous_commit` on); then M `GET /licenses/{id}` of those licenses, C at a time.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::cluster::{Backend, BenchCluster};
use super::procfs;
use super::stats::{Summary, ms, round3, secs};
use super::table::{Table, verdict};
use super::{BenchEnv, progress};
use licsync_testkit::Issuer;

/// Targets (`BENCHMARKS.md`): the first round's, and group commit's at concurrency 32.
pub const TARGET_POST_PER_S: f64 = 1000.0;
pub const TARGET_GROUP_COMMIT_POST_PER_S: f64 = 5000.0;
pub const TARGET_GET_P99: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
pub struct AdminOptions {
    pub requests: usize,
    pub concurrency: usize,
    /// Where the one control-plane node stores licenses.
    pub backend: Backend,
}

/// How one kind of request went.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub elapsed: Duration,
    pub ok: usize,
    pub errors: usize,
    pub latency: Summary,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        round3(self.ok as f64 / self.elapsed.as_secs_f64())
    }

    fn to_json(&self) -> Value {
        json!({
            "elapsed_s": secs(self.elapsed),
            "ok": self.ok,
            "errors": self.errors,
            "per_s": self.per_second(),
            "latency_ms": self.latency.to_json_ms(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct AdminReport {
    pub options: AdminOptions,
    pub post: Load,
    pub get: Load,
    pub cp_cpu: Duration,
    pub cp_rss_kib: u64,
    /// `/proc/loadavg` when the run started.
    pub load_average: Option<String>,
}

impl AdminReport {
    fn targets(&self) -> [(&'static str, String, Option<bool>); 3] {
        let post_ok = |target| self.post.errors == 0 && self.post.per_second() >= target;
        [
            (
                "post_ge_1000_per_s",
                format!("{}/s", self.post.per_second()),
                Some(post_ok(TARGET_POST_PER_S)),
            ),
            (
                "post_ge_5000_per_s",
                format!("{}/s", self.post.per_second()),
                Some(post_ok(TARGET_GROUP_COMMIT_POST_PER_S)),
            ),
            (
                "get_p99_le_5ms",
                format!("{} ms", ms(self.get.latency.p99)),
                Some(self.get.errors == 0 && self.get.latency.p99 <= TARGET_GET_P99),
            ),
        ]
    }

    pub fn to_json(&self) -> Value {
        let targets = super::targets_json(self.targets());
        json!({
            "scenario": "admin",
            "requests": self.options.requests,
            "concurrency": self.options.concurrency,
            "backend": self.options.backend.name(),
            "load_average": self.load_average,
            "post": self.post.to_json(),
            "get": self.get.to_json(),
            "cp_cpu_s": secs(self.cp_cpu),
            "cp_rss_kib": self.cp_rss_kib,
            "targets": targets,
        })
    }

    pub fn table(&self) -> Table {
        let mut t = Table::new(
            format!(
                "admin: {} requests of each kind, {} in flight, {} (load average {})",
                self.options.requests,
                self.options.concurrency,
                self.options.backend.name(),
                self.load_average.as_deref().unwrap_or("unknown")
            ),
            &["admin", "POST /licenses", "GET /licenses/{id}"],
        );
        let both = |f: &dyn Fn(&Load) -> String| [f(&self.post), f(&self.get)];
        let rows: [(&str, [String; 2]); 5] = [
            ("ok / errors", both(&|l| format!("{} / {}", l.ok, l.errors))),
            ("per second", both(&|l| format!("{}", l.per_second()))),
            (
                "latency p50",
                both(&|l| format!("{} ms", ms(l.latency.p50))),
            ),
            (
                "latency p99",
                both(&|l| format!("{} ms", ms(l.latency.p99))),
            ),
            (
                "latency max",
                both(&|l| format!("{} ms", ms(l.latency.max))),
            ),
        ];
        for (name, [post, get]) in rows {
            t.row(vec![name.to_owned(), post, get]);
        }
        t.row(vec![
            "CP CPU, RSS at end".into(),
            format!(
                "{:.2} s, {} KiB",
                self.cp_cpu.as_secs_f64(),
                self.cp_rss_kib
            ),
            String::new(),
        ]);
        for (name, value, met) in self.targets() {
            t.row(vec![
                format!("target {name}"),
                verdict(&value, met),
                String::new(),
            ]);
        }
        t
    }
}

/// Runs the scenario.
pub async fn run(env: &BenchEnv, options: &AdminOptions) -> anyhow::Result<AdminReport> {
    let load_average = procfs::load_average();
    let run_dir = env.run_dir("admin")?;
    let issuer = Issuer::new();
    let mut cluster = BenchCluster::start(
        env,
        &run_dir.path().join("cp"),
        options.backend,
        1,
        &issuer.public,
    )
    .await?;
    let cp = cluster.first();
    let concurrency = options.concurrency.max(1);
    let documents: Vec<String> = (0..options.requests)
        .map(|k| issuer.license(&format!("licsync-bench admin customer {k}")))
        .collect();
    progress(format_args!(
        "{} POST /licenses, {concurrency} in flight",
        options.requests
    ));

    let cp_ref = cp;
    let started = Instant::now();
    let outcomes: Vec<(Duration, Option<String>)> = futures::stream::iter(documents.iter())
        .map(|document| async move {
            let sent = Instant::now();
            let id = cp_ref.post_license(document).await.ok().flatten();
            (sent.elapsed(), id)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let post_elapsed = started.elapsed();
    let ids: Vec<String> = outcomes.iter().filter_map(|(_, id)| id.clone()).collect();
    let post = Load {
        elapsed: post_elapsed,
        ok: ids.len(),
        errors: outcomes.len() - ids.len(),
        latency: Summary::of(outcomes.iter().map(|(d, _)| *d).collect()),
    };

    progress(format_args!(
        "{} GET /licenses/{{id}}, {concurrency} in flight",
        options.requests
    ));
    let get = if ids.is_empty() {
        Load::default()
    } else {
        let started = Instant::now();
        let outcomes: Vec<(Duration, bool)> = futures::stream::iter(0..options.requests)
            .map(|k| {
                let id = &ids[k % ids.len()];
                async move {
                    let sent = Instant::now();
                    let ok = cp_ref.get_license(id).await.unwrap_or(false);
                    (sent.elapsed(), ok)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let ok = outcomes.iter().filter(|(_, ok)| *ok).count();
        Load {
            elapsed: started.elapsed(),
            ok,
            errors: outcomes.len() - ok,
            latency: Summary::of(outcomes.iter().map(|(d, _)| *d).collect()),
        }
    };
    let usage = cp.usage()?;
    cluster.kill_all();
    Ok(AdminReport {
        load_average,
        options: options.clone(),
        post,
        get,
        cp_cpu: usage.cpu,
        cp_rss_kib: usage.rss_kib,
    })
}
