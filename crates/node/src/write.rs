//! The write path's pure half: a typed mutation becomes a validated log operation and the
//! partition it belongs to. Nothing here touches the log; everything is checked before.

use crate::query::range::{resolve, Partitions};
use crate::request::{Mutation, ValueInput};
use crate::{Limits, NodeError};
use notadb_record::value;
use notadb_record::KeyspaceDef;
use notadb_record::Op;
use notadb_types::{Element, EncodedKey, PartitionId, Partitioner, TtlSpec, ValueFormat};

/// A mutation ready to append.
#[derive(Debug)]
pub struct Prepared {
    /// The partition whose log takes the operation.
    pub partition: PartitionId,
    /// `None` for a delete of an empty range: it still takes a place in the log.
    pub op: Option<Op>,
}

/// Everything `prepare` needs besides the mutation.
pub struct WriteContext<'a> {
    /// Maps partition keys to partitions.
    pub partitioner: &'a Partitioner,
    /// The limits the mutation must stay within.
    pub limits: &'a Limits,
    /// The append time stamped on the write (TTL from append counts from it).
    pub ts_micros: i64,
}

/// Encodes `key` for `def` and checks it against `max_key_bytes`; errors name `field`.
pub(crate) fn key_of(
    def: &KeyspaceDef,
    key: &[Element],
    limits: &Limits,
    field: &str,
) -> Result<EncodedKey, NodeError> {
    let encoded = def
        .schema
        .encode_key(key)
        .map_err(|e| NodeError::invalid(format!("{field}key: {e}")))?;
    if encoded.bytes.len() > limits.max_key_bytes {
        return Err(NodeError::invalid(format!(
            "{field}key: encoded key is {} bytes, the limit is {} (max_key_bytes)",
            encoded.bytes.len(),
            limits.max_key_bytes
        )));
    }
    Ok(encoded)
}

fn user_value(
    def: &KeyspaceDef,
    value: ValueInput,
    limits: &Limits,
    field: &str,
) -> Result<Vec<u8>, NodeError> {
    let bytes = match (def.schema.value_format, value) {
        (ValueFormat::Bytes, ValueInput::Bytes(b)) => b,
        (ValueFormat::Bytes, ValueInput::Json(_)) => {
            return Err(NodeError::invalid(format!(
                "{field}value: keyspace `{}` stores bytes values, found a json value",
                def.schema.name
            )))
        }
        (ValueFormat::Json, ValueInput::Json(s)) => s.into_bytes(),
        (ValueFormat::Json, ValueInput::Bytes(b)) => b,
    };
    if bytes.len() > limits.max_value_bytes {
        return Err(NodeError::invalid(format!(
            "{field}value: {} bytes, the limit is {} (max_value_bytes)",
            bytes.len(),
            limits.max_value_bytes
        )));
    }
    if def.schema.value_format == ValueFormat::Json {
        if let Err(e) = std::str::from_utf8(&bytes) {
            return Err(NodeError::invalid(format!(
                "{field}value: keyspace `{}` stores JSON values, the value is not UTF-8: {e}",
                def.schema.name
            )));
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            return Err(NodeError::invalid(format!(
                "{field}value: keyspace `{}` stores JSON values, the value is not JSON: {e}",
                def.schema.name
            )));
        }
    }
    Ok(bytes)
}

/// A TTL as signed micros (schemas reject TTLs above `i64::MAX`; saturate regardless).
fn micros(ttl: u64) -> i64 {
    i64::try_from(ttl).unwrap_or(i64::MAX)
}

fn expiry(def: &KeyspaceDef, key: &[Element], ts_micros: i64) -> Option<i64> {
    match &def.schema.ttl {
        None => None,
        Some(TtlSpec::Append { ttl_micros }) => Some(ts_micros.saturating_add(micros(*ttl_micros))),
        Some(TtlSpec::Element { ttl_micros, .. }) => {
            let index = def.schema.ttl_element_index()?;
            match key.get(index) {
                Some(Element::Timestamp(t)) => Some(t.saturating_add(micros(*ttl_micros))),
                _ => None,
            }
        }
    }
}

/// Validates one mutation of keyspace `def`. `field` prefixes error messages
/// (e.g. `mutations[3].`).
pub fn prepare(
    def: &KeyspaceDef,
    mutation: Mutation,
    ctx: &WriteContext<'_>,
    field: &str,
) -> Result<Prepared, NodeError> {
    let keyspace = def.id;
    match mutation {
        Mutation::Put { key, value, .. } => {
            let encoded = key_of(def, &key, ctx.limits, field)?;
            let user = user_value(def, value, ctx.limits, field)?;
            let stored = value::encode(expiry(def, &key, ctx.ts_micros), &user);
            let partition = ctx.partitioner.partition_of(encoded.partition_key());
            Ok(Prepared {
                partition,
                op: Some(Op::Put {
                    keyspace,
                    key: encoded.bytes,
                    stored,
                }),
            })
        }
        Mutation::Delete { key, .. } => {
            let encoded = key_of(def, &key, ctx.limits, field)?;
            let partition = ctx.partitioner.partition_of(encoded.partition_key());
            Ok(Prepared {
                partition,
                op: Some(Op::Delete {
                    keyspace,
                    key: encoded.bytes,
                }),
            })
        }
        Mutation::DeleteRange { range, .. } => {
            let resolved = resolve(&def.schema, ctx.partitioner, &range)
                .map_err(|e| NodeError::invalid(format!("{field}{e}")))?;
            let Partitions::One(partition) = resolved.partitions else {
                return Err(NodeError::invalid(format!(
                    "{field}range.prefix: a delete range must include the partition key (the first {} elements of `{}` keys)",
                    def.schema.partition_by, def.schema.name
                )));
            };
            if resolved.is_empty() {
                return Ok(Prepared {
                    partition,
                    op: None,
                });
            }
            // An empty end means "to the end of the keyspace".
            let end = resolved.upper.unwrap_or_default();
            Ok(Prepared {
                partition,
                op: Some(Op::DeleteRange {
                    keyspace,
                    start: resolved.lower,
                    end,
                }),
            })
        }
    }
}

/// The keyspace a mutation names.
pub fn keyspace_of(mutation: &Mutation) -> &str {
    match mutation {
        Mutation::Put { keyspace, .. }
        | Mutation::Delete { keyspace, .. }
        | Mutation::DeleteRange { keyspace, .. } => keyspace,
    }
}
