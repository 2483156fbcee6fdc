//! In-process seed question 1: top-10 available items of a store and product, on the calling
//! thread (no gRPC, no token wait): over RocksDB (from memtables, then from table files), and
//! through the row cache.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use notadb_node::{Consistency, Filter, FilterOp, KeyRange, NodeBuilder, NodeConfig, ScanRequest};

const STORES: usize = 20;
const PRODUCTS: usize = 20;
const ITEMS: usize = 200;

fn request(store: usize, product: usize) -> ScanRequest {
    ScanRequest {
        keyspace: "items".into(),
        range: KeyRange::prefix(vec![
            common::s(&format!("store-{store}")),
            common::s(&format!("product-{product}")),
        ]),
        limit: 10,
        reverse: false,
        filters: vec![Filter::Field {
            path: "available".into(),
            op: FilterOp::Eq,
            value: serde_json::json!(true),
        }],
    }
}

/// A node holding `STORES * PRODUCTS` groups of `ITEMS` items, all applied.
fn load(
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    row_cache_mb: usize,
) -> notadb_node::Node {
    let config = NodeConfig {
        data_dir: dir.to_path_buf(),
        log_fsync: "never".into(),
        // Flushed below, at a known moment.
        flush_idle_secs: 0,
        row_cache_mb,
        ..NodeConfig::default()
    };
    runtime.block_on(async {
        let node = NodeBuilder::new(config)
            .keyspace(common::items())
            .open()
            .await
            .expect("open");
        let mut tokens = Vec::new();
        for s in 0..STORES {
            for p in 0..PRODUCTS {
                let batch = (0..ITEMS)
                    .map(|i| {
                        let score = ((i * 7919) % 1000) as f64 / 1000.0;
                        common::item(
                            &format!("store-{s}"),
                            &format!("product-{p}"),
                            score,
                            &format!("item-{i}"),
                            i % 2 == 0,
                        )
                    })
                    .collect();
                tokens.push(node.write(batch).await.expect("write"));
            }
        }
        node.scan(request(0, 0), &Consistency::tokens(tokens))
            .await
            .expect("applied");
        node
    })
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (dir, cached_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    // One node reading RocksDB only, one through the row cache (the default).
    let node = load(&runtime, dir.path(), 0);
    let cached = load(
        &runtime,
        cached_dir.path(),
        NodeConfig::default().row_cache_mb,
    );
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut run =
        |group: &mut criterion::BenchmarkGroup<_>, node: &notadb_node::Node, name: &str| {
            group.bench_function(name, |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let result = node
                        .scan_blocking(&request(i % STORES, (i / STORES) % PRODUCTS))
                        .expect("scan");
                    assert_eq!(result.rows.len(), 10);
                    result
                })
            });
        };
    // Right after a load the rows are in memtables; a serving node flushes them to table
    // files once writes go quiet.
    run(&mut group, &node, "top10_available_items/memtable");
    runtime.block_on(node.settle_storage()).expect("flush");
    run(&mut group, &node, "top10_available_items/table_files");
    runtime.block_on(cached.settle_storage()).expect("flush");
    run(&mut group, &cached, "top10_available_items/row_cache");
    group.finish();
    runtime.block_on(node.shutdown()).expect("shutdown");
    runtime.block_on(cached.shutdown()).expect("shutdown");
}

criterion_group!(benches, bench);
criterion_main!(benches);
