//! Typed keys from the JSON the command line takes, using the keyspace's schema.

use anyhow::{anyhow, bail, Context};
use notadb_client::Client;
use notadb_proto::schema_from_proto;
use notadb_types::{Element, KeyspaceSchema};
use serde_json::Value;

/// The schema of a keyspace, from the node.
pub async fn schema(client: &Client, keyspace: &str) -> anyhow::Result<KeyspaceSchema> {
    let info = client.describe_keyspace(keyspace).await?;
    let schema = info
        .schema
        .ok_or_else(|| anyhow!("the node returned no schema"))?;
    schema_from_proto(&schema).map_err(|e| anyhow!("{e}"))
}

/// Elements starting at key position `offset`, from a JSON array.
pub fn elements(
    schema: &KeyspaceSchema,
    json: &str,
    offset: usize,
    what: &str,
) -> anyhow::Result<Vec<Element>> {
    let value: Value = serde_json::from_str(json)
        .with_context(|| format!("{what}: expected a JSON array, found `{json}`"))?;
    let Value::Array(items) = value else {
        bail!("{what}: expected a JSON array, found `{json}`")
    };
    if offset + items.len() > schema.key.len() {
        bail!(
            "{what}: {} elements after position {offset}, keyspace `{}` keys have {}",
            items.len(),
            schema.name,
            schema.key.len()
        );
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let el = &schema.key[offset + i];
            Element::from_json(el.ty, v, &el.name).map_err(|e| anyhow!("{what}: {e}"))
        })
        .collect()
}

/// A key element value for a filter on element `name`, from JSON text (bare words are strings).
pub fn element_named(schema: &KeyspaceSchema, name: &str, text: &str) -> anyhow::Result<Element> {
    let index = schema
        .element_index(name)
        .ok_or_else(|| anyhow!("keyspace `{}` has no key element `{name}`", schema.name))?;
    let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
    Element::from_json(schema.key[index].ty, &value, name).map_err(|e| anyhow!("{e}"))
}

/// JSON for a key tuple.
pub fn tuple_json(elements: &[Element]) -> Value {
    Value::Array(elements.iter().map(Element::to_json).collect())
}
