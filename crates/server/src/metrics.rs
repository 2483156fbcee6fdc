//! The process-wide Prometheus recorder and the gauges refreshed at each scrape.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use notadb_node::Node;
use std::sync::OnceLock;

/// Latency buckets, seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets. Between scrapes the recorder
/// keeps every raw sample; folding them bounds its memory at any request rate.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the recorder once per process and returns its handle. When another recorder is
/// already installed (an embedding program's), metrics go there and this page stays empty.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder is already installed; /metrics shows only what this one sees"
            );
        }
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("notadb-metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no metrics upkeep thread: histograms grow until scraped");
        }
        handle
    })
}

/// Sets the per-partition and storage gauges from the node's current state.
pub fn refresh(node: &Node) {
    let status = node.status();
    for p in &status.partitions {
        let label = p.partition.0.to_string();
        metrics::gauge!("notadb_partition_applied_seq", "partition" => label.clone())
            .set(p.applied.0 as f64);
        metrics::gauge!("notadb_partition_last_seq", "partition" => label.clone())
            .set(p.last.0 as f64);
        metrics::gauge!("notadb_partition_lag_records", "partition" => label.clone())
            .set(p.lag_records as f64);
        metrics::gauge!("notadb_partition_lag_seconds", "partition" => label).set(p.lag_seconds);
    }
    metrics::gauge!("notadb_ready").set(if status.ready { 1.0 } else { 0.0 });
    let memory = node.storage().memory_usage();
    metrics::gauge!("notadb_rocksdb_memory_bytes", "kind" => "memtables")
        .set(memory.memtables as f64);
    metrics::gauge!("notadb_rocksdb_memory_bytes", "kind" => "block_cache")
        .set(memory.block_cache as f64);
    metrics::gauge!("notadb_rocksdb_memory_bytes", "kind" => "table_readers")
        .set(memory.table_readers as f64);
    metrics::gauge!("notadb_rocksdb_memory_bytes", "kind" => "point_cache")
        .set(memory.point_cache as f64);
    metrics::gauge!("notadb_rocksdb_memory_bytes", "kind" => "row_cache")
        .set(memory.row_cache as f64);
}

/// CPU time (user and system) this process has used, in microseconds (`getrusage`).
pub fn process_cpu_micros() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0;
    };
    let micros = |t: nix::sys::time::TimeVal| u64::try_from(t.num_microseconds()).unwrap_or(0);
    micros(usage.user_time()) + micros(usage.system_time())
}
