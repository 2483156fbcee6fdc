//! `notadb-bench compare` end to end on a tiny data set: the real binary against a node it
//! starts (the `notadb` binary beside it, which `cargo test --workspace` builds), real
//! PostgreSQL and Redis (started by `scripts/test.sh`) and its own nats-server.

const BIN: &str = env!("CARGO_BIN_EXE_notadb-bench");

/// A loopback address nothing listens on.
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}
use notadb_testkit::NatsServer;
use serde_json::Value;
use std::process::{Command, Output};

/// Flags that keep a run to seconds.
const TINY: &[&str] = &[
    "--keys",
    "2000",
    "--stores",
    "3",
    "--products",
    "2",
    "--items",
    "20",
    "--users",
    "40",
    "--events-per-user",
    "200",
    "--clients",
    "2",
    "--warmup",
    "100ms",
    "--duration",
    "300ms",
    "--repetitions",
    "2",
];

fn compare(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("compare")
        .args(TINY)
        .args(args)
        .output()
        .expect("run notadb-bench compare")
}

fn peer_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with scripts/test.sh, which starts PostgreSQL and Redis on loopback")
    })
}

fn drop_database(url: &str, db: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect postgres");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
            .await
            .expect("drop database");
    });
}

#[test]
fn every_system_answers_alike_and_the_report_has_tables_json_and_plots() {
    let (pg, redis) = (
        peer_url("NOTADB_POSTGRES_URL"),
        peer_url("NOTADB_REDIS_URL"),
    );
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&dir.path().join("nats")).expect("start nats-server");
    let out = dir.path().join("out");
    let db = format!("notadb_bench_test_{}", std::process::id());
    let output = compare(&[
        "--out",
        out.to_str().unwrap(),
        "--sweep",
        "1,2",
        "--grow",
        "2",
        "--postgres-url",
        &pg,
        "--postgres-db",
        &db,
        "--redis-url",
        &redis,
        "--nats-url",
        &nats.url(),
    ]);
    drop_database(&pg, &db);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench compare failed: {stderr}");
    assert!(!stderr.contains("skipping"), "a peer was skipped: {stderr}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let systems: Vec<&str> = report["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(systems, ["notadb", "postgres", "redis", "nats-kv"]);
    for s in report["systems"].as_array().unwrap() {
        assert_eq!(
            s["load_secs"].as_array().unwrap().len(),
            2,
            "{s}: loaded, then grown"
        );
    }
    for check in report["checks"].as_array().unwrap() {
        assert_eq!(
            check["disagreements"],
            serde_json::json!([]),
            "answers differ: {check}"
        );
        assert!(check["variants"].as_u64().unwrap() >= 2, "{check}");
    }
    let rows = report["rows"].as_array().unwrap();
    for row in rows {
        let m = row["result"]
            .get("Ok")
            .unwrap_or_else(|| panic!("a measurement failed: {row}"));
        let windows = m["windows"].as_array().unwrap();
        assert_eq!(windows.len(), 2, "{row}");
        for w in windows {
            assert!(w["ops_per_sec"].as_f64().unwrap() > 0.0, "{row}");
            assert_eq!(w["errors"], 0, "{row}");
            // Every system runs on this machine, so each window has its server CPU time
            // (peers' in clock ticks, which a short window may not reach).
            let cpu = w["server_cpu_us_per_op"].as_f64();
            assert!(cpu.is_some_and(|c| c >= 0.0), "no server CPU time: {row}");
            assert!(
                w["p50_ms"].as_f64().unwrap() <= w["p99_ms"].as_f64().unwrap(),
                "{row}"
            );
        }
    }
    for system in ["notadb", "postgres", "redis", "nats-kv"] {
        let cpu: f64 = rows
            .iter()
            .filter(|r| r["variant"]["system"] == system)
            .flat_map(|r| r["result"]["Ok"]["windows"].as_array().unwrap())
            .map(|w| w["server_cpu_us_per_op"].as_f64().unwrap())
            .sum();
        assert!(cpu > 0.0, "{system} used no CPU time in any window");
    }
    let has = |system: &str, workload: &str, phase: &str| {
        rows.iter().any(|r| {
            r["variant"]["system"] == system
                && r["variant"]["workload"] == workload
                && r["phase"] == phase
        })
    };
    for (system, workload) in [
        ("notadb", "q1"),
        ("postgres", "q1"),
        ("redis", "q1"),
        ("notadb", "q2"),
        ("postgres", "q2"),
        ("notadb", "get"),
        ("postgres", "get"),
        ("redis", "get"),
        ("nats-kv", "get"),
        ("notadb", "multi-get"),
        ("postgres", "multi-get"),
        ("redis", "multi-get"),
        ("notadb", "put"),
        ("postgres", "put"),
        ("redis", "put"),
        ("nats-kv", "put"),
    ] {
        assert!(has(system, workload, "main"), "no {system} {workload} row");
    }
    assert!(has("notadb", "q1", "sweep") && has("redis", "get", "grown"));
    assert!(rows.iter().any(|r| r["distribution"] == "zipfian"));

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    for needle in [
        "### Aims",
        "### Seed question 1",
        "### Scaling with concurrency",
        "### Scaling with data",
        "÷ best peer",
        "server CPU µs/op",
        "q1-throughput-vs-clients.svg",
    ] {
        assert!(md.contains(needle), "results.md lacks {needle}:\n{md}");
    }
    let svg = std::fs::read_to_string(out.join("get-throughput-vs-clients.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("redis GET") && svg.contains("notadb Get"));
    assert!(out.join("put-latency.svg").exists());
}

#[test]
fn a_peer_that_does_not_answer_is_skipped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let dead = format!("redis://{}", free_addr());
    let output = compare(&[
        "--out",
        out.to_str().unwrap(),
        "--systems",
        "notadb,redis",
        "--workloads",
        "get",
        "--distributions",
        "uniform",
        "--sweep",
        "2",
        "--grow",
        "1",
        "--redis-url",
        &dead,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("skipping redis: {dead}")),
        "{stderr}"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| redis | **skipped**"), "{md}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(report["skipped"][0]["system"], "redis");
    assert!(report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["variant"]["system"] == "notadb"));
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    for (args, expected) in [
        (&["--workloads", "nope"][..], "unknown workload `nope`"),
        (&["--systems", "mysql"][..], "--systems: unknown `mysql`"),
        (
            &["--sweep", "1,0"][..],
            "--sweep: expected positive numbers",
        ),
        (
            &["--distributions", "normal"][..],
            "unknown distribution `normal`",
        ),
        (&["--grow", "0"][..], "must be at least 1"),
    ] {
        let output = compare(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected `{expected}` in: {stderr}"
        );
    }
}
