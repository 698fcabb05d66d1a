//! `licsync-bench`: the fleet and data-plane benchmarks (see `BENCHMARKS.md`). Thin: parse the command line,
//! run one scenario from [`licsync_tests::bench`], print its table and, with `--json`, its JSON
//! object.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use licsync_common::duration::HumanDuration;
use licsync_tests::bench::admin::{self, AdminOptions};
use licsync_tests::bench::cluster::Backend;
use licsync_tests::bench::dp_usage::{self, DpUsageOptions};
use licsync_tests::bench::fleet::{self, FleetOptions};
use licsync_tests::bench::storm::{self, StormOptions};
use licsync_tests::bench::table::Table;
use licsync_tests::bench::ui::{self, UiOptions};
use licsync_tests::bench::usage::{self, UsageOptions};
use licsync_tests::bench::{BenchEnv, floor, workers};

/// Benchmarks a real licsync-cp against thousands of simulated data planes, and a real
/// licsync-dp's local usage API.
#[derive(Debug, Parser)]
#[command(name = "licsync-bench", version)]
struct Cli {
    /// Print one JSON object on stdout; the table then goes to stderr.
    #[arg(long, global = true)]
    json: bool,
    /// The licsync-cp executable to benchmark (default: the one next to licsync-bench).
    #[arg(long, global = true, env = "LICSYNC_BENCH_CP")]
    cp_binary: Option<PathBuf>,
    /// The licsync-dp executable to benchmark (default: the one next to licsync-bench).
    #[arg(long, global = true, env = "LICSYNC_BENCH_DP")]
    dp_binary: Option<PathBuf>,
    /// Keep each run's data under this directory (default: a temporary directory, removed).
    #[arg(long, global = true)]
    work_dir: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Connect N data planes, make K license writes, time each write's arrival at each.
    Fleet(FleetArgs),
    /// SIGKILL the control plane, restart it, time the fleet's resync and count resends.
    Storm(StormArgs),
    /// Durable POST /licenses per second and GET /licenses/{id} latency.
    Admin(AdminArgs),
    /// N data planes send usage reports as fast as receipts come; durable reports per second
    /// and whether the control plane's total is exact.
    Usage(UsageArgs),
    /// C HTTP/1.1 keep-alive clients send POST /usage {"request_count": 1} to one real
    /// licsync-dp; increments per second, and whether its totals in memory and on disk are exact.
    DpUsage(DpUsageArgs),
    /// Render the status page's pages for a sample fleet of N data planes, R times each;
    /// p50/p99 render time per page.
    Ui(UiArgs),
    /// The floor server (started by `fleet --with-floor`; not for direct use).
    #[command(hide = true)]
    FloorServer {
        /// Directory holding the floor's CA.
        #[arg(long)]
        dir: PathBuf,
    },
    /// A worker holding part of the simulated data planes (started by `--workers`; not for
    /// direct use).
    #[command(hide = true)]
    FleetWorker {
        /// The JSON file with this worker's data planes.
        #[arg(long)]
        specs: PathBuf,
    },
}

#[derive(Debug, Args)]
struct FleetArgs {
    /// Simulated data planes.
    #[arg(long, default_value_t = 100)]
    dataplanes: usize,
    /// License writes, one after the other.
    #[arg(long, default_value_t = 5)]
    updates: usize,
    /// Also run the same fleet against the floor (a minimal mTLS broadcast server).
    #[arg(long)]
    with_floor: bool,
    /// Data planes between start and first update at once (0: all at once).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// How long the whole fleet may take to connect.
    #[arg(long, default_value = "10m")]
    connect_timeout: HumanDuration,
    /// How long one write may take to reach every data plane.
    #[arg(long, default_value = "60s")]
    write_timeout: HumanDuration,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// With --backend postgres: skip the same run against one sled node.
    #[arg(long)]
    no_sled_baseline: bool,
}

/// Where the control plane stores its data, how many nodes it runs, and where the simulated
/// data planes run.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// Storage of the control plane: embedded sled, or a PostgreSQL server started for the run.
    #[arg(long, value_enum, default_value_t = Backend::Sled)]
    backend: Backend,
    /// Control-plane nodes on the one database (more than one needs --backend postgres);
    /// data planes are spread over them round robin, each with every node in sync.servers.
    #[arg(long, default_value_t = 1)]
    cp_nodes: usize,
    /// Worker processes that simulate the data planes, each under its own open-files limit
    /// (0: this process).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

#[derive(Debug, Args)]
struct StormArgs {
    /// Simulated data planes.
    #[arg(long, default_value_t = 100)]
    dataplanes: usize,
    /// Licenses every data plane holds when the control plane is killed.
    #[arg(long, default_value_t = 3)]
    licenses: usize,
    /// Data planes between start and first update at once (0: all at once).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// How long the whole fleet may take to connect.
    #[arg(long, default_value = "10m")]
    connect_timeout: HumanDuration,
    /// How long after the kill the fleet may take to resynchronise.
    #[arg(long, default_value = "5m")]
    resync_timeout: HumanDuration,
    /// With several nodes: how many data planes the node to be killed holds (default: an
    /// equal share); the other nodes share the rest.
    #[arg(long)]
    first_node_dataplanes: Option<usize>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// Requests of each kind (POST, then GET).
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Storage of the control plane: embedded sled, or a PostgreSQL server started for the run.
    #[arg(long, value_enum, default_value_t = Backend::Sled)]
    backend: Backend,
}

#[derive(Debug, Args)]
struct UsageArgs {
    /// Simulated data planes, each on its own mTLS connection.
    #[arg(long, default_value_t = 100)]
    dataplanes: usize,
    /// How long they report.
    #[arg(long, default_value = "10s")]
    duration: HumanDuration,
    /// Every k-th report of a data plane repeats its previous one (a retry); 0: never.
    #[arg(long, default_value_t = 8)]
    retry_every: u64,
}

#[derive(Debug, Args)]
struct DpUsageArgs {
    /// Concurrent HTTP/1.1 connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// How long they send.
    #[arg(long, default_value = "10s")]
    duration: HumanDuration,
    /// Requests on one connection before a client closes it and opens another (0: keep one
    /// connection for the whole run).
    #[arg(long, default_value_t = 0)]
    requests_per_connection: u64,
}

#[derive(Debug, Args)]
struct UiArgs {
    /// Data planes in the sample fleet.
    #[arg(long, default_value_t = 10_000)]
    dataplanes: usize,
    /// Renders of each page.
    #[arg(long, default_value_t = 50)]
    renders: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cli {
        json,
        cp_binary,
        dp_binary,
        work_dir,
        scenario,
    } = Cli::parse();
    match run(json, cp_binary, dp_binary, work_dir, scenario).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("licsync-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    json: bool,
    cp_binary: Option<PathBuf>,
    dp_binary: Option<PathBuf>,
    work_dir: Option<PathBuf>,
    scenario: Scenario,
) -> anyhow::Result<()> {
    let mut env = BenchEnv::beside_current_exe()?;
    if let Some(path) = cp_binary {
        env.cp_binary = path;
    }
    if let Some(path) = dp_binary {
        env.dp_binary = path;
    }
    env.work_dir = work_dir;
    let (table, value) = match scenario {
        Scenario::FloorServer { dir } => return floor::serve(&dir).await,
        Scenario::FleetWorker { specs } => return workers::serve(&specs).await,
        Scenario::Fleet(FleetArgs {
            dataplanes,
            updates,
            with_floor,
            connect_concurrency,
            connect_timeout,
            write_timeout,
            cluster,
            no_sled_baseline,
        }) => {
            let options = FleetOptions {
                dataplanes,
                updates,
                with_floor,
                connect_concurrency,
                connect_timeout: connect_timeout.0,
                write_timeout: write_timeout.0,
                backend: cluster.backend,
                cp_nodes: cluster.cp_nodes,
                workers: cluster.workers,
                sled_baseline: !no_sled_baseline,
            };
            let report = fleet::run(&env, &options).await?;
            (report.table(), report.to_json())
        }
        Scenario::Storm(StormArgs {
            dataplanes,
            licenses,
            connect_concurrency,
            connect_timeout,
            resync_timeout,
            first_node_dataplanes,
            cluster,
        }) => {
            let options = StormOptions {
                first_node_dataplanes,
                dataplanes,
                licenses,
                connect_concurrency,
                connect_timeout: connect_timeout.0,
                resync_timeout: resync_timeout.0,
                backend: cluster.backend,
                cp_nodes: cluster.cp_nodes,
                workers: cluster.workers,
            };
            let report = storm::run(&env, &options).await?;
            (report.table(), report.to_json())
        }
        Scenario::Admin(AdminArgs {
            requests,
            concurrency,
            backend,
        }) => {
            let options = AdminOptions {
                requests,
                concurrency,
                backend,
            };
            let report = admin::run(&env, &options).await?;
            (report.table(), report.to_json())
        }
        Scenario::Usage(UsageArgs {
            dataplanes,
            duration,
            retry_every,
        }) => {
            let options = UsageOptions {
                dataplanes,
                duration: duration.0,
                retry_every,
            };
            let report = usage::run(&env, &options).await?;
            (report.table(), report.to_json())
        }
        Scenario::DpUsage(DpUsageArgs {
            connections,
            duration,
            requests_per_connection,
        }) => {
            let options = DpUsageOptions {
                connections,
                duration: duration.0,
                requests_per_connection,
            };
            let report = dp_usage::run(&env, &options).await?;
            (report.table(), report.to_json())
        }
        Scenario::Ui(UiArgs {
            dataplanes,
            renders,
        }) => {
            let options = UiOptions {
                dataplanes,
                renders,
            };
            let report = ui::run(&options)?;
            (report.table(), report.to_json())
        }
    };
    print(json, &table, &value);
    Ok(())
}

fn print(json: bool, table: &Table, value: &serde_json::Value) {
    if json {
        eprintln!("{table}");
        println!("{value}");
    } else {
        println!("{table}");
    }
}
