//! The fleet benchmark at a size a test can afford, asserting correctness only (timing depends
//! on the machine; the numbers live in `BENCHMARKS.md`): every simulated data plane converges
//! on every write, against the control plane and against the floor, a control plane killed
//! and restarted resends nothing a data plane already holds, and usage reports from many data
//! planes at once (retries among them) add up exactly, as do `POST /usage` increments at one
//! data-plane agent, in memory and on disk after a clean stop. The same runs on three
//! `licsync-cp` nodes on one real PostgreSQL server, with the data planes in worker processes:
//! every data plane converges (and on the one sled node of the baseline), the data planes of a
//! node killed with SIGKILL fail over to the others with nothing resent, and durable license
//! writes on PostgreSQL are all answered.
//!
//! Runs the debug `licsync-cp` and `licsync-dp` (build them first: `cargo build -p licsync-cp
//! -p licsync-dp`) and this crate's `licsync-bench` for the floor.

use std::path::PathBuf;
use std::time::Duration;

use licsync_tests::bench::BenchEnv;
use licsync_tests::bench::admin::{self, AdminOptions};
use licsync_tests::bench::cluster::Backend;
use licsync_tests::bench::dp_usage::{self, DpUsageOptions};
use licsync_tests::bench::fleet::{self, FleetOptions};
use licsync_tests::bench::storm::{self, StormOptions};
use licsync_tests::bench::usage::{self, UsageOptions};
use licsync_tests::process::binary;

const N: usize = 20;

fn env() -> BenchEnv {
    BenchEnv {
        cp_binary: binary("licsync-cp"),
        dp_binary: binary("licsync-dp"),
        bench_binary: PathBuf::from(env!("CARGO_BIN_EXE_licsync-bench")),
        work_dir: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dataplane_converges_on_every_write_against_the_cp_and_the_floor() {
    let options = FleetOptions {
        dataplanes: N,
        updates: 3,
        with_floor: true,
        connect_concurrency: 0,
        connect_timeout: Duration::from_secs(120),
        write_timeout: Duration::from_secs(60),
        backend: Backend::Sled,
        cp_nodes: 1,
        workers: 0,
        sled_baseline: false,
    };
    let report = fleet::run(&env(), &options).await.unwrap();
    let floor = report.floor.as_ref().expect("floor phase ran");
    for (server, phase) in [("licsync-cp", &report.cp), ("floor", floor)] {
        assert_eq!(phase.synced, N, "{server}: data planes synced at connect");
        assert_eq!(phase.write_errors, 0, "{server}: writes refused");
        assert_eq!(
            phase.missed, 0,
            "{server}: (data plane, write) pairs missed"
        );
        assert_eq!(phase.propagation.count, N * 3, "{server}: arrivals");
        assert_eq!(phase.licenses_resent, 0, "{server}: licenses resent");
    }
    assert!(report.converged());

    let json = report.to_json();
    assert_eq!(json["scenario"], "fleet");
    assert_eq!(json["converged"], true);
    for key in ["p50", "p90", "p99", "max"] {
        assert!(json["cp"]["propagation_ms"][key].is_number(), "{json}");
        assert!(json["floor"]["propagation_ms"][key].is_number(), "{json}");
    }
    assert!(json["ratio_to_floor"]["p99"].is_number(), "{json}");
    assert!(json["cp"]["rss_per_dp_kib"].is_number(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_cp_resyncs_everyone_and_resends_nothing() {
    let options = StormOptions {
        dataplanes: N,
        licenses: 2,
        connect_concurrency: 0,
        connect_timeout: Duration::from_secs(120),
        resync_timeout: Duration::from_secs(120),
        backend: Backend::Sled,
        cp_nodes: 1,
        workers: 0,
        first_node_dataplanes: None,
    };
    let report = storm::run(&env(), &options).await.unwrap();
    assert_eq!(report.synced, N);
    assert_eq!(report.resynced, N, "every data plane resynchronised");
    assert_eq!(report.redundant_resends, 0, "nothing held was sent again");
    assert!(report.state_intact, "every data plane holds what it held");
    let json = report.to_json();
    assert_eq!(json["scenario"], "storm");
    assert_eq!(json["redundant_resends"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reports_from_many_dataplanes_add_up_exactly() {
    let options = UsageOptions {
        dataplanes: N,
        duration: Duration::from_secs(3),
        retry_every: 4,
    };
    let report = usage::run(&env(), &options).await.unwrap();
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert!(report.receipts >= N as u64, "every data plane got receipts");
    assert!(report.retries > 0, "retries were sent");
    assert_eq!(report.receipt_mismatches, 0);
    assert_eq!(report.cp_total, report.receipted_total);
    assert_eq!(report.receipted_total, report.sent_total);
    assert_eq!(report.dataplanes_off, 0);
    assert!(report.exact());
    let json = report.to_json();
    assert_eq!(json["scenario"], "usage");
    assert_eq!(json["exact"], true);
    assert!(json["reports_per_s"].as_f64().unwrap() > 0.0, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_usage_increments_at_one_agent_add_up_in_memory_and_on_disk() {
    let options = DpUsageOptions {
        connections: 2,
        duration: Duration::from_secs(1),
        // Some clients reconnect mid-run: a new connection must not lose or double a count.
        requests_per_connection: 50,
    };
    let report = dp_usage::run(&env(), &options).await.unwrap();
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert_eq!(report.refused, 0, "{:?}", report.first_error);
    assert!(report.accepted > 0, "the agent accepted increments");
    assert!(report.connections_opened >= 2);
    assert_eq!(report.agent_total, report.accepted, "GET /usage total");
    assert!(report.clean_exit, "the agent exits 0 on SIGTERM");
    assert_eq!(
        report.file_total, report.accepted,
        "usage.json after SIGTERM"
    );
    assert!(report.exact());
    let json = report.to_json();
    assert_eq!(json["scenario"], "dp-usage");
    assert_eq!(json["exact"], true);
    assert_eq!(json["accepted"], json["file_total"]);
    assert!(json["increments_per_s"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["latency_ms"]["p99"].is_number(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_postgres_nodes_and_worker_processes_converge_like_one_sled_node() {
    let options = FleetOptions {
        dataplanes: N,
        updates: 3,
        with_floor: false,
        connect_concurrency: 0,
        connect_timeout: Duration::from_secs(120),
        write_timeout: Duration::from_secs(60),
        backend: Backend::Postgres,
        cp_nodes: 3,
        // The data planes live in two worker processes, as in the 45,000 run.
        workers: 2,
        sled_baseline: true,
    };
    let report = fleet::run(&env(), &options).await.unwrap();
    let baseline = report.baseline.as_ref().expect("sled baseline ran");
    for (server, phase) in [("three nodes", &report.cp), ("one sled node", baseline)] {
        assert_eq!(phase.synced, N, "{server}: data planes synced at connect");
        assert_eq!(phase.write_errors, 0, "{server}: writes refused");
        assert_eq!(
            phase.missed, 0,
            "{server}: (data plane, write) pairs missed"
        );
        assert_eq!(phase.propagation.count, N * 3, "{server}: arrivals");
        assert_eq!(phase.licenses_resent, 0, "{server}: licenses resent");
    }
    assert_eq!(report.cp.nodes.len(), 3);
    let spread: Vec<usize> = report.cp.nodes.iter().map(|m| m.dataplanes).collect();
    assert_eq!(spread, [7, 7, 6], "round robin over the nodes");
    assert!(report.converged());
    let json = report.to_json();
    assert_eq!(json["backend"], "postgres");
    assert_eq!(json["converged"], true);
    assert!(json["ratio_to_sled"]["p99"].is_number(), "{json}");
    assert_eq!(json["cp"]["nodes"].as_array().unwrap().len(), 3, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dataplanes_of_a_killed_node_fail_over_and_nothing_is_resent() {
    let options = StormOptions {
        dataplanes: N,
        licenses: 2,
        connect_concurrency: 0,
        connect_timeout: Duration::from_secs(120),
        resync_timeout: Duration::from_secs(120),
        backend: Backend::Postgres,
        cp_nodes: 3,
        workers: 2,
        // More than an equal share (7), as the 45,000 run gives the node it kills 15,000.
        first_node_dataplanes: Some(10),
    };
    let report = storm::run(&env(), &options).await.unwrap();
    assert_eq!(report.synced, N);
    assert_eq!(report.killed_dataplanes, 10, "the first node's share");
    assert_eq!(report.resynced, 10, "each of them resynchronised elsewhere");
    assert_eq!(report.redundant_resends, 0, "nothing held was sent again");
    assert!(report.state_intact, "every data plane holds what it held");
    assert!(report.restart.is_none(), "the killed node stays down");
    let json = report.to_json();
    assert_eq!(json["scenario"], "storm");
    assert_eq!(json["cp_nodes"], 3);
    assert_eq!(json["first_node_dataplanes"], 10);
    assert_eq!(json["redundant_resends"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_license_writes_on_postgres_are_all_answered() {
    let options = AdminOptions {
        requests: 200,
        concurrency: 8,
        backend: Backend::Postgres,
    };
    let report = admin::run(&env(), &options).await.unwrap();
    assert_eq!(report.post.ok, 200);
    assert_eq!(report.post.errors, 0);
    assert_eq!(report.get.ok, 200);
    assert_eq!(report.get.errors, 0);
    assert_eq!(report.to_json()["backend"], "postgres");
}
