//! Key codec micro-benchmarks: encoding and decoding two typical keys, and partitioning.
//!
//! Run: `cargo bench -p notadb-types --bench codec -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion};
use notadb_types::{
    encode_tuple, Element, ElementType, KeyElement, KeyspaceSchema, Order, Partitioner, ValueFormat,
};
use std::hint::black_box;

fn keyspace(name: &str, key: &[(&str, ElementType, Order)]) -> KeyspaceSchema {
    let schema = KeyspaceSchema {
        name: name.to_owned(),
        key: key
            .iter()
            .map(|(n, ty, order)| KeyElement::new(*n, *ty, *order))
            .collect(),
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: None,
    };
    schema.validate().expect("benchmark schema is valid");
    schema
}

fn bench_key(c: &mut Criterion, label: &str, schema: &KeyspaceSchema, values: &[Element]) {
    let encoded = schema.encode_key(values).expect("benchmark key is valid");
    c.bench_function(&format!("encode_key/{label}"), |b| {
        b.iter(|| schema.encode_key(black_box(values)))
    });
    let mut buf = Vec::with_capacity(64);
    c.bench_function(&format!("encode_tuple_reused_buf/{label}"), |b| {
        b.iter(|| {
            buf.clear();
            encode_tuple(&mut buf, &schema.key, black_box(values)).map(|()| buf.len())
        })
    });
    c.bench_function(&format!("decode_key/{label}"), |b| {
        b.iter(|| schema.decode_key(black_box(&encoded.bytes)))
    });
    c.bench_function(&format!("partition_key_len/{label}"), |b| {
        b.iter(|| schema.partition_key_len(black_box(&encoded.bytes)))
    });
}

fn codec(c: &mut Criterion) {
    use ElementType::{String as Str, Timestamp, F64};
    let items = keyspace(
        "items",
        &[
            ("store", Str, Order::Asc),
            ("product", Str, Order::Asc),
            ("score", F64, Order::Desc),
            ("item", Str, Order::Asc),
        ],
    );
    let item = [
        Element::from("store-42"),
        Element::from("shoes"),
        Element::F64(0.87),
        Element::from("item-00123"),
    ];
    bench_key(c, "store_item", &items, &item);

    let views = keyspace(
        "views",
        &[
            ("user", Str, Order::Asc),
            ("ts", Timestamp, Order::Asc),
            ("kind", Str, Order::Asc),
            ("item", Str, Order::Asc),
        ],
    );
    let view = [
        Element::from("user-7"),
        Element::Timestamp(1_795_341_600_000_000),
        Element::from("view"),
        Element::from("item-9"),
    ];
    bench_key(c, "user_view", &views, &view);

    let partitioner = Partitioner::default();
    let key = items.encode_key(&item).expect("benchmark key is valid");
    c.bench_function("partition_of/store_item", |b| {
        b.iter(|| partitioner.partition_of(black_box(key.partition_key())))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
