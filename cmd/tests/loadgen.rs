//! The end-to-end load generator (`loadgen`) drives the built orchestrator:
//! every load gets its row, every figure and floor is positive, no call
//! fails, and a baseline binary is measured beside it in sync mode.

use std::path::PathBuf;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_measures_every_load_of_the_built_orchestrator() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_circles_orchestrator"));
    let mut options = loadgen::Options::quick(binary.clone());
    options.baseline = Some(binary);
    options.warmup = Duration::from_millis(50);
    options.duration = Duration::from_millis(400);
    options.requests = 30;
    let report = loadgen::run(&options).await.expect("the run completes");

    // Sequential p50 and p99, 8 throughput loads, 3 read and 3 write loads per mode.
    assert_eq!(
        report.rows.len(),
        2 + 8 + 2 * (3 + 3),
        "{}",
        report.render()
    );
    for row in &report.rows {
        let shown = report.render();
        assert!(row.value > 0.0 && row.floor > 0.0, "{row:?}\n{shown}");
        assert_eq!(row.errors, 0, "{row:?}\n{shown}");
        // Every closed-loop load says how busy the machine and Redis were.
        let saturation = row.saturation.filter(|s| s.machine > 0.0 && s.redis > 0.0);
        assert_eq!(
            saturation.is_some(),
            row.metric == loadgen::Metric::Throughput,
            "{row:?}"
        );
        match row.durability {
            "sync" => assert!(row.baseline.is_some_and(|b| b > 0.0), "{row:?}"),
            _ => assert_eq!(row.baseline, None, "the baseline has no --durability"),
        }
    }
    for (circles, conns) in [(1, 1), (1, 16), (1, 64), (1, 256), (4, 256)] {
        assert!(
            report.rows.iter().any(|r| r.load == "`40 + 2`"
                && (r.circles, r.conns) == (circles, conns)
                && r.metric == loadgen::Metric::Throughput),
            "no `40 + 2` row at {circles} circles, {conns} connections"
        );
    }
    for (load, durability) in [
        ("read: `db::get`", "sync"),
        ("read: `db::get`", "flush"),
        ("write: 1 KiB `db::insert`", "sync"),
        ("write: 1 KiB `db::insert`", "flush"),
    ] {
        assert!(
            report
                .rows
                .iter()
                .any(|r| r.load == load && r.durability == durability),
            "no {load} row in {durability} mode"
        );
    }
    let table = report.render();
    assert!(
        table.contains("| p50 ms |") && table.contains("new/baseline"),
        "{table}"
    );
    assert!(table.contains("nproc"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capacity_run_splits_each_task_s_cpu_between_gateway_worker_and_redis() {
    let options = loadgen::capacity::CapacityOptions {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_circles_orchestrator")),
        circles: 2,
        conns: 8,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(600),
        memory: Some(Duration::from_millis(1200)),
        sample: Duration::from_millis(400),
        extra: vec!["--delivered-ttl=1s".into()],
    };
    let report = loadgen::capacity::run(&options)
        .await
        .expect("the run completes");
    let shown = report.render();
    assert_eq!(report.rows.len(), 2, "{shown}");
    for row in &report.rows {
        assert_eq!(row.errors, 0, "{shown}");
        assert!(row.throughput > 0.0, "{shown}");
        // Every task crosses all three processes, so each spends CPU on it.
        assert!(
            row.gateway_us > 0.0 && row.worker_us > 0.0 && row.redis_us > 0.0,
            "{shown}"
        );
    }
    assert!(report.memory.len() >= 2, "{shown}");
    assert!(report.memory.iter().all(|s| s.used_memory > 0), "{shown}");
    assert!(report.memory_throughput > 0.0, "{shown}");
    assert!(shown.contains("| gateway | worker | redis |"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_option_for_the_binary_under_test_reaches_it() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_circles_orchestrator"));
    let mut options = loadgen::Options::quick(binary);
    options.extra = vec!["--claim-batch=0".into()];
    let err = loadgen::run(&options)
        .await
        .expect_err("the orchestrator refuses a claim batch of 0");
    let shown = format!("{err:#}");
    assert!(
        shown.contains("exited") && shown.contains("--claim-batch"),
        "{shown}"
    );
}
