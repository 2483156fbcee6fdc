//! `notadb load`, and sending many writes with a bounded number in flight.

use crate::keys::{elements, schema};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use notadb_client::{json_value, proto, tuple, Client};
use notadb_types::{ElementType, KeyspaceSchema, PartitionId, Partitioner, Token, ValueFormat};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use tokio::task::JoinSet;

/// Arguments of `notadb load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The keyspace to load into.
    pub keyspace: String,
    /// A file of JSON lines (`{"key": [...], "value": ...}`) or CSV with a header (key element
    /// columns by name; the other columns become the JSON value, or a `value` column for bytes).
    pub file: PathBuf,
    /// jsonl or csv; by default from the file extension.
    #[arg(long)]
    pub format: Option<String>,
    /// Mutations per write.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Writes in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

/// A progress bar with the house style.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Sends chains of writes, at most `concurrency` chains at once; the writes of one chain go
/// one after another (so a later write to a key wins). Advances `bar` by each write's
/// mutation count and returns the newest token of every partition written.
pub async fn send_writes(
    client: &Client,
    chains: impl IntoIterator<Item = Vec<Vec<proto::Mutation>>>,
    concurrency: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Token>> {
    let mut newest: BTreeMap<PartitionId, Token> = BTreeMap::new();
    let mut note = |tokens: Vec<Token>| {
        for token in tokens {
            let entry = newest.entry(token.partition).or_insert(token);
            entry.seq = entry.seq.max(token.seq);
        }
    };
    let mut in_flight = JoinSet::new();
    for chain in chains {
        if in_flight.len() >= concurrency.max(1) {
            note(in_flight.join_next().await.expect("not empty")??);
        }
        let (client, bar) = (client.clone(), bar.clone());
        in_flight.spawn(async move {
            let mut tokens = Vec::with_capacity(chain.len());
            for write in chain {
                let n = write.len() as u64;
                tokens.push(client.write(write).await?);
                bar.inc(n);
            }
            Ok::<_, anyhow::Error>(tokens)
        });
    }
    while let Some(done) = in_flight.join_next().await {
        note(done??);
    }
    Ok(newest.into_values().collect())
}

fn row_to_mutation(
    schema: &KeyspaceSchema,
    key: Vec<notadb_types::Element>,
    value: Value,
) -> anyhow::Result<proto::Mutation> {
    let value = match (schema.value_format, value) {
        (ValueFormat::Json, v) => json_value(&v),
        (ValueFormat::Bytes, Value::String(s)) => proto::Value {
            kind: Some(proto::value::Kind::Bytes(s.into_bytes())),
        },
        (ValueFormat::Bytes, Value::Null) => proto::Value {
            kind: Some(proto::value::Kind::Bytes(Vec::new())),
        },
        (ValueFormat::Bytes, other) => bail!(
            "keyspace `{}` stores bytes: expected a string value, found {other}",
            schema.name
        ),
    };
    Ok(proto::Mutation {
        op: Some(proto::mutation::Op::Put(proto::PutRequest {
            keyspace: schema.name.clone(),
            key: Some(tuple(&key)),
            value: Some(value),
        })),
    })
}

/// A CSV cell of a key column, read by the element's type (a string column stays a string
/// even when it looks like a number).
fn key_cell(ty: ElementType, text: &str) -> Value {
    match ty {
        ElementType::String | ElementType::Bytes => Value::String(text.to_string()),
        ElementType::Timestamp => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.to_string())),
        _ => csv_cell(text),
    }
}

fn csv_cell(text: &str) -> Value {
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(|v| v.is_number() || v.is_boolean())
        .unwrap_or_else(|| Value::String(text.to_string()))
}

/// Reads the rows of a load file as (partition, mutation).
fn read_rows(
    schema: &KeyspaceSchema,
    partitioner: &Partitioner,
    args: &LoadArgs,
) -> anyhow::Result<Vec<(PartitionId, proto::Mutation)>> {
    let format = args.format.clone().unwrap_or_else(|| {
        if args.file.extension().is_some_and(|e| e == "csv") {
            "csv".into()
        } else {
            "jsonl".into()
        }
    });
    let mut rows = Vec::new();
    let mut push =
        |key: Vec<notadb_types::Element>, value: Value, line: usize| -> anyhow::Result<()> {
            let encoded = schema
                .encode_prefix(&key[..schema.partition_by])
                .map_err(|e| anyhow!("line {line}: {e}"))?;
            rows.push((
                partitioner.partition_of(&encoded),
                row_to_mutation(schema, key, value).with_context(|| format!("line {line}"))?,
            ));
            Ok(())
        };
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    match format.as_str() {
        "jsonl" => {
            for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let row: Value = serde_json::from_str(&line)
                    .with_context(|| format!("line {}: malformed JSON", i + 1))?;
                let key = row
                    .get("key")
                    .ok_or_else(|| anyhow!("line {}: no `key`", i + 1))?;
                let key = elements(schema, &key.to_string(), 0, &format!("line {} key", i + 1))?;
                if key.len() != schema.key.len() {
                    bail!(
                        "line {}: key has {} elements, expected {}",
                        i + 1,
                        key.len(),
                        schema.key.len()
                    );
                }
                push(key, row.get("value").cloned().unwrap_or(Value::Null), i + 1)?;
            }
        }
        "csv" => {
            let mut reader = csv::Reader::from_reader(file);
            let headers = reader.headers()?.clone();
            let positions: Vec<usize> = schema
                .key
                .iter()
                .map(|el| {
                    headers
                        .iter()
                        .position(|h| h == el.name)
                        .ok_or_else(|| anyhow!("csv: no column `{}`", el.name))
                })
                .collect::<anyhow::Result<_>>()?;
            for (i, record) in reader.records().enumerate() {
                let record = record?;
                let line = i + 2;
                let key_json = Value::Array(
                    positions
                        .iter()
                        .zip(&schema.key)
                        .map(|(p, el)| key_cell(el.ty, &record[*p]))
                        .collect(),
                );
                let key = elements(
                    schema,
                    &key_json.to_string(),
                    0,
                    &format!("line {line} key"),
                )?;
                let value = match schema.value_format {
                    ValueFormat::Bytes => headers
                        .iter()
                        .position(|h| h == "value")
                        .map(|p| Value::String(record[p].to_string()))
                        .unwrap_or(Value::Null),
                    ValueFormat::Json => Value::Object(
                        headers
                            .iter()
                            .enumerate()
                            .filter(|(p, _)| !positions.contains(p))
                            .map(|(p, h)| (h.to_string(), csv_cell(&record[p])))
                            .collect::<Map<_, _>>(),
                    ),
                };
                push(key, value, line)?;
            }
        }
        other => bail!("--format: expected jsonl or csv, found `{other}`"),
    }
    Ok(rows)
}

/// Reads every row of the file, then writes them in batches of `--batch`: one chain of writes
/// per partition, in file order, so a key repeated in the file ends with its last row.
pub async fn run(client: &Client, args: LoadArgs) -> anyhow::Result<()> {
    let schema = schema(client, &args.keyspace).await?;
    let status = client.status().await?;
    let partitioner =
        Partitioner::new(status.partition_count as u16).map_err(|e| anyhow!("{e}"))?;
    let rows = read_rows(&schema, &partitioner, &args)?;
    let total = rows.len() as u64;
    let mut by_partition: BTreeMap<PartitionId, Vec<proto::Mutation>> = BTreeMap::new();
    for (p, m) in rows {
        by_partition.entry(p).or_default().push(m);
    }
    let batch = args.batch.max(1);
    let bar = progress(total, "loading");
    // One chain per partition: its writes go in order, so a key repeated in the file ends
    // with its last row; partitions load in parallel.
    let chains = by_partition
        .into_values()
        .map(|rows| rows.chunks(batch).map(<[_]>::to_vec).collect::<Vec<_>>());
    let written = send_writes(client, chains, args.concurrency, &bar)
        .await?
        .len();
    bar.finish();
    println!(
        "loaded {total} rows into {} ({written} partitions written)",
        args.keyspace
    );
    Ok(())
}
