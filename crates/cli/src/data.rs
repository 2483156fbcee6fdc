//! `notadb put|get|delete|scan|aggregate|query|status`.

use crate::keys::{element_named, elements, schema, tuple_json};
use anyhow::{anyhow, bail, Context};
use base64::Engine;
use clap::Args;
use notadb_client::{proto, value_bytes, Client};
use notadb_proto::{element_from_proto, element_to_proto, tuple_from_proto, tuple_to_proto};
use notadb_types::{KeyspaceSchema, ValueFormat};
use serde_json::{json, Value};

/// Arguments of `notadb put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// The keyspace's name.
    pub keyspace: String,
    /// The key as a JSON array, e.g. `["s1", "shoes", 0.9, "i1"]`.
    pub key: String,
    /// The value: JSON text for JSON keyspaces, a string for bytes keyspaces.
    pub value: String,
}

/// Arguments of `notadb get` and `notadb delete`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The keyspace's name.
    pub keyspace: String,
    /// The key as a JSON array.
    pub key: String,
}

/// The range and filters of `notadb scan` and `notadb aggregate`.
#[derive(Args, Debug, Clone)]
pub struct RangeArgs {
    /// Leading key elements as a JSON array.
    #[arg(long, default_value = "[]")]
    pub prefix: String,
    /// Start bound: the elements after the prefix, as a JSON array (inclusive).
    #[arg(long)]
    pub start: Option<String>,
    /// Make the start bound exclusive.
    #[arg(long)]
    pub start_exclusive: bool,
    /// End bound: the elements after the prefix, as a JSON array (exclusive).
    #[arg(long)]
    pub end: Option<String>,
    /// Make the end bound inclusive.
    #[arg(long)]
    pub end_inclusive: bool,
    /// Filter on a JSON field: `field=value`, `field>=value`, ... (ops = != < <= > >=);
    /// the value is JSON text. Repeatable.
    #[arg(long = "where")]
    pub filters: Vec<String>,
    /// Filter on a key element: `element=value` (same ops). Repeatable.
    #[arg(long = "where-key")]
    pub key_filters: Vec<String>,
}

/// Arguments of `notadb scan`.
#[derive(Args, Debug)]
pub struct ScanArgs {
    /// The keyspace's name.
    pub keyspace: String,
    /// The range to read and the filters rows must pass.
    #[command(flatten)]
    pub range: RangeArgs,
    /// Most rows (0: the node's default).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Newest/largest first.
    #[arg(long)]
    pub reverse: bool,
}

/// Arguments of `notadb aggregate`.
#[derive(Args, Debug)]
pub struct AggregateArgs {
    /// The keyspace's name.
    pub keyspace: String,
    /// The range to aggregate over and the filters rows must pass.
    #[command(flatten)]
    pub range: RangeArgs,
    /// count, sum, min or max.
    #[arg(long = "fn", default_value = "count")]
    pub function: String,
    /// JSON field for sum/min/max.
    #[arg(long)]
    pub field: Option<String>,
    /// Key element to group by.
    #[arg(long)]
    pub group_by: Option<String>,
    /// Keep the k largest groups.
    #[arg(long, default_value_t = 0)]
    pub top: u32,
    /// Timestamp element for `--last`.
    #[arg(long)]
    pub window_element: Option<String>,
    /// Only rows whose window element is within this long before now, e.g. `1h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub last: Option<std::time::Duration>,
}

/// Arguments of `notadb query`.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// Handler name.
    pub name: String,
    /// The keyspace the partition key belongs to.
    pub keyspace: String,
    /// The partition key as a JSON array.
    pub partition_key: String,
    /// Arguments as JSON text.
    #[arg(default_value = "null")]
    pub args: String,
}

fn print_value(format: ValueFormat, value: &proto::Value) -> Value {
    let bytes = value_bytes(value);
    match format {
        ValueFormat::Json => {
            serde_json::from_slice(bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(bytes)))
        }
        ValueFormat::Bytes => match std::str::from_utf8(bytes) {
            Ok(s) => json!(s),
            Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(bytes)}),
        },
    }
}

/// Writes one value and prints the write's token as JSON. The value is sent as JSON text to
/// a JSON keyspace and as the string's bytes to a bytes keyspace.
pub async fn put(client: &Client, args: PutArgs) -> anyhow::Result<()> {
    let schema = schema(client, &args.keyspace).await?;
    let key = elements(&schema, &args.key, 0, "key")?;
    let kind = match schema.value_format {
        ValueFormat::Json => proto::value::Kind::Json(args.value),
        ValueFormat::Bytes => proto::value::Kind::Bytes(args.value.into_bytes()),
    };
    let token = client
        .put(&args.keyspace, &key, proto::Value { kind: Some(kind) })
        .await?;
    println!(
        "{}",
        json!({"token": {"partition": token.partition.0, "seq": token.seq.0}})
    );
    Ok(())
}

/// Prints one value as JSON (a bytes value as a string, or as `{"base64": ...}` when it is not
/// UTF-8); fails with `not found` when the key has no value.
pub async fn get(client: &Client, args: GetArgs) -> anyhow::Result<()> {
    let schema = schema(client, &args.keyspace).await?;
    let key = elements(&schema, &args.key, 0, "key")?;
    match client.get(&args.keyspace, &key, &[]).await? {
        Some(v) => println!("{}", print_value(schema.value_format, &v)),
        None => bail!("not found"),
    }
    Ok(())
}

/// Deletes one key and prints the write's token as JSON.
pub async fn delete(client: &Client, args: GetArgs) -> anyhow::Result<()> {
    let schema = schema(client, &args.keyspace).await?;
    let key = elements(&schema, &args.key, 0, "key")?;
    let token = client.delete(&args.keyspace, &key).await?;
    println!(
        "{}",
        json!({"token": {"partition": token.partition.0, "seq": token.seq.0}})
    );
    Ok(())
}

const OPS: [(&str, proto::FilterOp); 6] = [
    ("!=", proto::FilterOp::Ne),
    ("<=", proto::FilterOp::Le),
    (">=", proto::FilterOp::Ge),
    ("=", proto::FilterOp::Eq),
    ("<", proto::FilterOp::Lt),
    (">", proto::FilterOp::Gt),
];

fn split_filter(text: &str) -> anyhow::Result<(&str, proto::FilterOp, &str)> {
    OPS.iter()
        .filter_map(|(op, code)| text.find(op).map(|at| (at, op, code)))
        .min_by_key(|(at, op, _)| (*at, std::cmp::Reverse(op.len())))
        .map(|(at, op, code)| (text[..at].trim(), *code, text[at + op.len()..].trim()))
        .ok_or_else(|| {
            anyhow!("--where `{text}`: expected `name OP value` with OP one of = != < <= > >=")
        })
}

fn range(
    schema: &KeyspaceSchema,
    args: &RangeArgs,
) -> anyhow::Result<(proto::Range, Vec<proto::Filter>)> {
    let prefix = elements(schema, &args.prefix, 0, "--prefix")?;
    let bound = |json: &Option<String>,
                 inclusive: bool,
                 what: &str|
     -> anyhow::Result<Option<proto::Bound>> {
        json.as_ref()
            .map(|j| {
                Ok(proto::Bound {
                    key: Some(tuple_to_proto(&elements(schema, j, prefix.len(), what)?)),
                    inclusive,
                })
            })
            .transpose()
    };
    let range = proto::Range {
        prefix: Some(tuple_to_proto(&prefix)),
        start: bound(&args.start, !args.start_exclusive, "--start")?,
        end: bound(&args.end, args.end_inclusive, "--end")?,
    };
    let mut filters = Vec::new();
    for f in &args.filters {
        let (field, op, value) = split_filter(f)?;
        filters.push(proto::Filter {
            target: Some(proto::filter::Target::Field(field.into())),
            op: op as i32,
            element_value: None,
            json_value: value.into(),
        });
    }
    for f in &args.key_filters {
        let (name, op, value) = split_filter(f)?;
        filters.push(proto::Filter {
            target: Some(proto::filter::Target::Element(name.into())),
            op: op as i32,
            element_value: Some(element_to_proto(&element_named(schema, name, value)?)),
            json_value: String::new(),
        });
    }
    Ok((range, filters))
}

/// Prints each row of the range as a JSON line `{"key": [...], "value": ...}`, and a note on
/// stderr when the limit stopped the scan before the end of the range.
pub async fn scan(client: &Client, args: ScanArgs) -> anyhow::Result<()> {
    let schema = schema(client, &args.keyspace).await?;
    let (range, filters) = range(&schema, &args.range)?;
    let response = client
        .scan(proto::ScanRequest {
            keyspace: args.keyspace,
            range: Some(range),
            limit: args.limit,
            reverse: args.reverse,
            filters,
            tokens: vec![],
        })
        .await?;
    for row in &response.rows {
        let key = tuple_from_proto(row.key.as_ref(), "key").map_err(|e| anyhow!("{e}"))?;
        let value = row
            .value
            .as_ref()
            .map(|v| print_value(schema.value_format, v))
            .unwrap_or(Value::Null);
        println!("{}", json!({"key": tuple_json(&key), "value": value}));
    }
    if response.more {
        eprintln!("(more rows: raise --limit or continue after the last key)");
    }
    Ok(())
}

/// Prints each group as a JSON line `{"group": ..., "value": ..., "rows": ...}`, then the
/// number of rows scanned on stderr.
pub async fn aggregate(client: &Client, args: AggregateArgs) -> anyhow::Result<()> {
    let schema = schema(client, &args.keyspace).await?;
    let (range, filters) = range(&schema, &args.range)?;
    let function = match args.function.as_str() {
        "count" => proto::AggregateFunction::Count,
        "sum" => proto::AggregateFunction::Sum,
        "min" => proto::AggregateFunction::Min,
        "max" => proto::AggregateFunction::Max,
        other => bail!("--fn: expected count, sum, min or max, found `{other}`"),
    };
    let window = match (args.window_element, args.last) {
        (Some(element), Some(last)) => Some(proto::TimeWindow {
            element,
            from_micros: None,
            to_micros: None,
            last_micros: Some(last.as_micros() as i64),
        }),
        (None, None) => None,
        _ => bail!("--window-element and --last go together"),
    };
    let response = client
        .aggregate(proto::AggregateRequest {
            keyspace: args.keyspace,
            range: Some(range),
            filters,
            function: function as i32,
            field: args.field.unwrap_or_default(),
            group_by: args.group_by.unwrap_or_default(),
            top_k: args.top,
            window,
            tokens: vec![],
        })
        .await?;
    for g in &response.groups {
        let key = match &g.key {
            Some(k) => element_from_proto(k, "group")
                .map_err(|e| anyhow!("{e}"))?
                .to_json(),
            None => Value::Null,
        };
        println!(
            "{}",
            json!({"group": key, "value": g.value, "rows": g.rows})
        );
    }
    eprintln!("({} rows scanned)", response.rows_scanned);
    Ok(())
}

/// Calls a registered query handler on the partition owning the partition key and prints its
/// result as pretty JSON.
pub async fn query(client: &Client, args: QueryArgs) -> anyhow::Result<()> {
    let schema = schema(client, &args.keyspace).await?;
    let partition_key = elements(&schema, &args.partition_key, 0, "partition_key")?;
    let query_args: Value = serde_json::from_str(&args.args).context("args: expected JSON text")?;
    let result = client
        .query(&args.name, &args.keyspace, &partition_key, &query_args, &[])
        .await?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

/// Prints the node's readiness and partitions lagging behind their log, its transmitter's
/// progress, and the cluster's members with each partition's applied seq and lag.
pub async fn status(client: &Client) -> anyhow::Result<()> {
    let s = client.status().await?;
    let behind: u64 = s.partitions.iter().map(|p| p.lag_records).sum();
    let applied: u64 = s.partitions.iter().map(|p| p.applied_seq).sum();
    println!(
        "node {} (v{}): {}, {} partitions, {applied} entries applied, {behind} behind",
        s.node_id,
        s.version,
        if s.ready { "ready" } else { "NOT READY" },
        s.partition_count
    );
    for p in s.partitions.iter().filter(|p| p.lag_records > 0) {
        println!(
            "  partition {}: applied {} of {} ({:.3}s behind)",
            p.partition, p.applied_seq, p.last_seq, p.lag_seconds
        );
    }
    if let Some(t) = &s.transmitter {
        let lag: u64 = t.partitions.iter().map(|p| p.lag_records).sum();
        let secs = t
            .partitions
            .iter()
            .map(|p| p.lag_seconds)
            .fold(0.0, f64::max);
        println!(
            "transmitter: {}, {lag} entries behind ({secs:.3}s), {} rows written, {} dead letters, {} retries{}",
            if t.active { "active" } else { "standing by" },
            t.rows,
            t.dead_letters,
            t.retries,
            if t.last_error.is_empty() { String::new() } else { format!(", last error: {}", t.last_error) }
        );
    }
    let c = client.cluster().await?;
    println!(
        "cluster: {} log, {} partitions in {} shard groups, {} live members",
        c.log,
        c.partition_count,
        c.group_count,
        c.members.len()
    );
    for m in &c.members {
        let (lag, lag_s) = (m.lag_records_total(), m.max_lag_seconds());
        println!(
            "  group {} {} at {} (admin {}): {}, {} partitions, {lag} behind, {lag_s:.3}s max lag, heartbeat {} ms ago",
            m.group,
            m.node_id,
            m.grpc_addr,
            m.admin_addr,
            if m.ready { "ready" } else { "NOT READY" },
            m.partitions.len(),
            m.heartbeat_age_ms
        );
        // partition:applied/lag, eight to a line.
        let cells: Vec<String> = m
            .partitions
            .iter()
            .map(|p| format!("p{}:{}/{}", p.partition, p.applied_seq, p.lag_records))
            .collect();
        for line in cells.chunks(8) {
            println!("    {}", line.join("  "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_split_on_the_first_longest_operator() {
        let (f, op, v) = split_filter("price>=10").expect("valid");
        assert_eq!((f, op, v), ("price", proto::FilterOp::Ge, "10"));
        let (f, op, v) = split_filter("available = true").expect("valid");
        assert_eq!((f, op, v), ("available", proto::FilterOp::Eq, "true"));
        let (_, op, _) = split_filter("a!=1").expect("valid");
        assert_eq!(op, proto::FilterOp::Ne);
        assert!(split_filter("nothing").is_err());
    }
}
