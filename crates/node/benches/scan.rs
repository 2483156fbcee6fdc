//! In-process seed question 1: top-10 available items of a store and product, over RocksDB,
//! on the calling thread (no gRPC, no token wait).

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

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig {
        data_dir: dir.path().to_path_buf(),
        log_fsync: "never".into(),
        // Flushed below, at a known moment.
        flush_idle_secs: 0,
        ..NodeConfig::default()
    };
    let node = runtime.block_on(async {
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
    });
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut run = |group: &mut criterion::BenchmarkGroup<_>, name: &str| {
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
    run(&mut group, "top10_available_items/memtable");
    runtime.block_on(node.settle_storage()).expect("flush");
    run(&mut group, "top10_available_items/table_files");
    group.finish();
    runtime.block_on(node.shutdown()).expect("shutdown");
}

criterion_group!(benches, bench);
criterion_main!(benches);
