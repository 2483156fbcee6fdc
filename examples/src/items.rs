//! Seed question 1: "the available items of store S for product P, best score first, top N".

use notadb::{
    Element, ElementType, KeyElement, KeyRange, KeyspaceSchema, NodeError, Order, QueryContext,
    ValueFormat,
};
use serde_json::{json, Value};

/// Keyspace `items`: key `(store_id, product, score desc, item_id)`, partitioned by
/// `store_id`, JSON values with `available: bool`.
pub fn schema() -> KeyspaceSchema {
    let el = |name: &str, ty, order| KeyElement {
        name: name.into(),
        ty,
        order,
    };
    KeyspaceSchema {
        name: "items".into(),
        key: vec![
            el("store_id", ElementType::String, Order::Asc),
            el("product", ElementType::String, Order::Asc),
            el("score", ElementType::F64, Order::Desc),
            el("item_id", ElementType::String, Order::Asc),
        ],
        partition_by: 1,
        value_format: ValueFormat::Json,
        ttl: None,
    }
}

/// Handler `top_available`. Partition key: `[store_id]`; args: `{"product": P, "limit": N}`
/// (limit defaults to 10). Rows come best score first because `score` sorts descending.
pub fn top_available(ctx: &QueryContext<'_>, args: &Value) -> Result<Value, NodeError> {
    let product = args["product"]
        .as_str()
        .ok_or_else(|| NodeError::invalid("args.product: expected a string"))?;
    let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    let mut prefix = ctx.partition_key().to_vec();
    prefix.push(Element::String(product.into()));
    let mut top = Vec::with_capacity(limit);
    let mut rows = ctx.scan("items", &KeyRange::prefix(prefix), false)?;
    while top.len() < limit {
        let Some(row) = rows.next_raw() else { break };
        let row = row?;
        // Rows are borrowed: only `available` is read until a row is chosen.
        if row.field("available") != Some(Value::Bool(true)) {
            continue;
        }
        let key = row.key()?;
        let value = row
            .json()
            .map_err(|e| NodeError::Internal(format!("item value: {e}")))?;
        top.push(json!({"item_id": key[3].to_json(), "score": key[2].to_json(), "item": value}));
    }
    Ok(Value::Array(top))
}
