//! Seed question 1: "the available items of store S for product P, best score first, top N".

use notadb::{
    Element, ElementType, KeyElement, KeyRange, KeyspaceSchema, NodeError, Order, QueryContext,
    ValueFormat,
};
use serde_json::Value;

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
/// The answer, `[{"item": <stored value>, "item_id": I, "score": S}, ...]`, is written as
/// JSON text (register it as `JsonHandler(top_available)`): each chosen row's stored JSON is
/// copied in, never parsed.
pub fn top_available(ctx: &QueryContext<'_>, args: &Value) -> Result<String, NodeError> {
    let product = args["product"]
        .as_str()
        .ok_or_else(|| NodeError::invalid("args.product: expected a string"))?;
    let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    let mut prefix = ctx.partition_key().to_vec();
    prefix.push(Element::String(product.into()));
    let mut out = String::with_capacity(256 * limit.min(100) + 2);
    out.push('[');
    let mut found = 0;
    let mut rows = ctx.scan("items", &KeyRange::prefix(prefix), false)?;
    while found < limit {
        let Some(row) = rows.next_raw() else { break };
        let row = row?;
        // Rows are borrowed: only `available` is read until a row is chosen.
        if row.field("available") != Some(Value::Bool(true)) {
            continue;
        }
        // `[score, item]`: the store and product are the prefix scanned.
        let key = row.key_after(2)?;
        if found > 0 {
            out.push(',');
        }
        // Object keys in sorted order, as a `serde_json::Value` would print them.
        out.push_str(r#"{"item":"#);
        out.push_str(row.json_text()?);
        out.push_str(r#","item_id":"#);
        key[1].write_json(&mut out);
        out.push_str(r#","score":"#);
        key[0].write_json(&mut out);
        out.push('}');
        found += 1;
    }
    out.push(']');
    Ok(out)
}
