//! Seed question 2: "the items user U viewed most in the past hour".

use notadb::{
    Bound, Element, ElementType, KeyElement, KeyRange, KeyspaceSchema, NodeError, Order,
    QueryContext, TtlSpec, ValueFormat,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Microseconds in an hour.
pub const HOUR_MICROS: i64 = 3_600_000_000;

/// Keyspace `activity`: key `(user_id, ts, feature, item_id)`, partitioned by `user_id`,
/// entries expire 24 hours after `ts`.
pub fn schema() -> KeyspaceSchema {
    let el = |name: &str, ty| KeyElement {
        name: name.into(),
        ty,
        order: Order::Asc,
    };
    KeyspaceSchema {
        name: "activity".into(),
        key: vec![
            el("user_id", ElementType::String),
            el("ts", ElementType::Timestamp),
            el("feature", ElementType::String),
            el("item_id", ElementType::String),
        ],
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: Some(TtlSpec::Element {
            element: "ts".into(),
            ttl_micros: 24 * HOUR_MICROS as u64,
        }),
    }
}

/// Handler `most_viewed`. Partition key: `[user_id]`; args: `{"window_secs": S, "limit": N}`
/// (defaults 3600 and 10). Counts `view` events per item since `now - window`, most first.
pub fn most_viewed(ctx: &QueryContext<'_>, args: &Value) -> Result<Value, NodeError> {
    let window = args
        .get("window_secs")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    let since = Element::Timestamp(ctx.now_micros() - window * 1_000_000);
    let range = KeyRange {
        prefix: ctx.partition_key().to_vec(),
        start: Some(Bound {
            key: vec![since],
            inclusive: true,
        }),
        end: None,
    };
    let mut views: BTreeMap<String, u64> = BTreeMap::new();
    for row in ctx.scan("activity", &range, false)? {
        let row = row?;
        if let (Element::String(feature), Element::String(item)) = (&row.key[2], &row.key[3]) {
            if feature == "view" {
                *views.entry(item.clone()).or_default() += 1;
            }
        }
    }
    let mut ranked: Vec<(String, u64)> = views.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit);
    Ok(Value::Array(
        ranked
            .into_iter()
            .map(|(item, views)| json!({"item_id": item, "views": views}))
            .collect(),
    ))
}
