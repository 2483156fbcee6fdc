//! notadb under comparison: a node this command starts (`notadb serve --with-examples` on a
//! temporary directory) or one the user names with `--notadb-addr`.

use super::dataset::Dataset;
use super::workload::{score_answer, Op, Params, Target, Variant, Workload, TOP_N};
use crate::cpu::Meter;
use crate::cpu::Placement;
use crate::node::StartedNode;
use crate::run::string_keyed_bytes;
use anyhow::{anyhow, bail, Context};
use futures::FutureExt;
use notadb_cli::load::{progress, send_writes};
use notadb_cli::seed;
use notadb_client::{proto, tuple, value_bytes, Client, Element, Token};
use notadb_examples::{activity, items};
use notadb_types::{KeyspaceSchema, PartitionId, Partitioner};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// Keyspace of the point workloads.
const KV: &str = "bench_kv";
/// Point keys per load write (one partition each).
const KEYS_PER_WRITE: usize = 500;
/// Writes in flight while loading.
const LOAD_CONCURRENCY: usize = 32;
/// Deadline of a benchmark request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct NotadbTarget {
    addr: String,
    client: Client,
    groups: u32,
    partitioner: Partitioner,
    description: String,
    /// The node this command started, stopped when the target is dropped.
    _node: Option<StartedNode>,
}

/// The caches of a node the benchmark starts, MiB.
#[derive(Clone, Copy, Debug)]
pub struct NodeMemory {
    pub block_cache_mb: usize,
    pub point_cache_mb: usize,
    pub row_cache_mb: usize,
}

impl NotadbTarget {
    /// Connects to `addr`, or starts a node with the caches of `memory` when `addr` is
    /// `None`.
    pub async fn open(
        addr: Option<&str>,
        memory: NodeMemory,
        placement: &Placement,
    ) -> anyhow::Result<NotadbTarget> {
        let (addr, node) = match addr {
            Some(a) => (a.to_string(), None),
            None => {
                let NodeMemory {
                    block_cache_mb,
                    point_cache_mb,
                    row_cache_mb,
                } = memory;
                let config = format!(
                    "[node]\nblock_cache_mb = {block_cache_mb}\npoint_cache_mb = {point_cache_mb}\n\
                     row_cache_mb = {row_cache_mb}\n"
                );
                let node = StartedNode::start(&config, placement).await?;
                (node.addr.clone(), Some(node))
            }
        };
        let client = Client::connect(&addr).await?.with_timeout(REQUEST_TIMEOUT);
        let status = client.status().await?;
        let cluster = client.cluster().await?;
        let partitioner =
            Partitioner::new(status.partition_count as u16).map_err(|e| anyhow!("{e}"))?;
        let description = format!(
            "notadb {}, {} ({}), {} partitions in {} shard group(s){}",
            status.version,
            if node.is_some() {
                "one node started by the benchmark"
            } else {
                "a running node"
            },
            match cluster.log.as_str() {
                "embedded" => "embedded log, fsync before every acknowledgement",
                other => other,
            },
            status.partition_count,
            cluster.group_count,
            if cluster.group_count > 1 {
                "; reads go straight to an owner (smart client) unless the row says otherwise"
            } else {
                ""
            },
        );
        Ok(NotadbTarget {
            addr,
            client,
            groups: cluster.group_count,
            partitioner,
            description,
            _node: node,
        })
    }

    fn partition(&self, schema: &KeyspaceSchema, key: &[Element]) -> anyhow::Result<PartitionId> {
        let encoded = schema
            .encode_prefix(&key[..schema.partition_by])
            .map_err(|e| anyhow!("{e}"))?;
        Ok(self.partitioner.partition_of(&encoded))
    }
}

fn kv_key(i: usize) -> Vec<Element> {
    vec![Element::String(Dataset::key(i))]
}

fn bytes(v: Vec<u8>) -> proto::Value {
    proto::Value {
        kind: Some(proto::value::Kind::Bytes(v)),
    }
}

fn put(keyspace: &str, key: &[Element], value: proto::Value) -> proto::Mutation {
    proto::Mutation {
        op: Some(proto::mutation::Op::Put(proto::PutRequest {
            keyspace: keyspace.into(),
            key: Some(tuple(key)),
            value: Some(value),
        })),
    }
}

fn variant(workload: Workload, name: &str, how: &str) -> Variant {
    Variant::new("notadb", workload, name, how)
}

#[async_trait::async_trait]
impl Target for NotadbTarget {
    fn name(&self) -> &'static str {
        "notadb"
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn variants(&self) -> Vec<Variant> {
        let mut v = vec![
            variant(Workload::Q1, "Scan", "built-in `Scan` of the store and product prefix with a JSON-field filter `available = true`, limit 10 (rows are stored best score first: key `(store_id, product, score desc, item_id)`)"),
            variant(Workload::Q1, "handler top_available", "custom Rust handler over the same range (`examples/src/items.rs`)"),
            variant(Workload::Q2, "Aggregate", "built-in `Aggregate`: count of `view` rows grouped by item over the user's last hour (key `(user_id, ts, feature, item_id)`), top 10"),
            variant(Workload::Q2, "handler most_viewed", "custom Rust handler over the same range (`examples/src/activity.rs`)"),
        ];
        if self.groups > 1 {
            v.push(variant(
                Workload::Get,
                "Get, smart client",
                "`Get` sent straight to a replica that owns the key",
            ));
            v.push(variant(
                Workload::Get,
                "Get, forwarding node",
                "`Get` sent to one node, which forwards it to the owner when it is not one",
            ));
        } else {
            v.push(variant(
                Workload::Get,
                "Get",
                "`Get` of a byte value under a string key",
            ));
        }
        v.push(variant(
            Workload::MultiGet,
            "MultiGet",
            "one `MultiGet` of 100 keys",
        ));
        v.push(variant(
            Workload::Put,
            "Put",
            "`Put`, acknowledged once appended to the log (durable)",
        ));
        v.push(variant(Workload::Put, "Put, then visible", "`Put`, then a `Get` carrying its token from a replica (the write is applied and visible there)"));
        v
    }

    async fn load(&mut self, from: Option<&Dataset>, data: &Dataset) -> anyhow::Result<()> {
        let client = &self.client;
        if from.is_none() {
            client.create_keyspace(&items::schema(), true).await?;
            client.create_keyspace(&activity::schema(), true).await?;
            client
                .create_keyspace(&string_keyed_bytes(KV), true)
                .await?;
        }
        let bar = progress(data.new_rows(from), "notadb");
        let size = data.seed;
        let items: Vec<Vec<Vec<proto::Mutation>>> = data
            .new_stores(from)
            .flat_map(|s| (0..size.products).map(move |p| (s, p)))
            .map(|(s, p)| vec![seed::items_batch(&size, s, p)])
            .collect();
        let mut tokens = send_writes(client, items, LOAD_CONCURRENCY, &bar).await?;
        let events: Vec<Vec<Vec<proto::Mutation>>> = data
            .new_users(from)
            .map(|u| vec![seed::activity_batch(&size, u, data.now_micros)])
            .collect();
        tokens.extend(send_writes(client, events, LOAD_CONCURRENCY, &bar).await?);
        let kv_schema = string_keyed_bytes(KV);
        let mut by_partition: BTreeMap<PartitionId, Vec<Vec<proto::Mutation>>> = BTreeMap::new();
        for i in data.new_keys(from) {
            let key = kv_key(i);
            let chain = by_partition
                .entry(self.partition(&kv_schema, &key)?)
                .or_default();
            match chain.last_mut() {
                Some(write) if write.len() < KEYS_PER_WRITE => {}
                _ => chain.push(Vec::with_capacity(KEYS_PER_WRITE)),
            }
            let write = chain.last_mut().expect("pushed above");
            write.push(put(KV, &key, bytes(data.value(i, 0))));
        }
        // Each partition's writes form one chain, split so the chains keep every connection busy.
        let chains = by_partition
            .into_values()
            .flat_map(|writes| {
                let per = writes.len().div_ceil(4).max(1);
                writes.chunks(per).map(<[_]>::to_vec).collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        tokens.extend(send_writes(client, chains, LOAD_CONCURRENCY, &bar).await?);
        bar.finish();
        client
            .clone()
            .with_timeout(Duration::from_secs(1800))
            .multi_get(KV, &[kv_key(0)], &tokens)
            .await
            .context("waiting until the loaded data is applied")?;
        Ok(())
    }

    async fn cpu_meter(&self) -> anyhow::Result<Meter> {
        Meter::notadb_at(&self.addr).await
    }

    async fn connect(&self, variant: &Variant, data: &Dataset) -> anyhow::Result<Op> {
        let client = if self.groups > 1 && !variant.name.contains("forwarding") {
            Client::connect_routed(&self.addr).await?
        } else {
            Client::connect(&self.addr).await?
        }
        .with_timeout(REQUEST_TIMEOUT);
        let data = *data;
        let op: Op = match (variant.workload, variant.name.as_str()) {
            (Workload::Q1, "Scan") => Box::new(move |p: &Params| {
                let c = client.clone();
                let request =
                    seed::top_items_request(&seed::store(p.store), &seed::product(p.product), &[]);
                async move {
                    let rows = c.scan(request).await?.rows;
                    // The score read from each row's key message, as the peers' answers are
                    // read for it: converting every key to typed elements (three strings
                    // copied a row) made the load generator's core, not the node's, set the
                    // pace of this workload.
                    let scores = rows
                        .iter()
                        .map(|r| {
                            let score = r.key.as_ref().and_then(|k| k.elements.get(2));
                            match score.and_then(|e| e.kind.as_ref()) {
                                Some(proto::element::Kind::F64(s)) => Ok(*s),
                                other => {
                                    Err(anyhow!("score: expected an f64 element, found {other:?}"))
                                }
                            }
                        })
                        .collect::<anyhow::Result<Vec<f64>>>()?;
                    Ok(score_answer(scores))
                }
                .boxed()
            }),
            (Workload::Q1, _) => Box::new(move |p: &Params| {
                let c = client.clone();
                let (store, args) = (
                    [Element::String(seed::store(p.store))],
                    json!({"product": seed::product(p.product), "limit": TOP_N}),
                );
                async move {
                    // The answer's text read into the scores alone, as the peers' answers are
                    // read: a `serde_json::Value` tree of every record made the load
                    // generator's core, not the node's, set the pace of this workload.
                    #[derive(serde::Deserialize)]
                    struct Scored {
                        score: f64,
                    }
                    let text = c
                        .query_text("top_available", "items", &store, &args, &[])
                        .await?;
                    let rows: Vec<Scored> = serde_json::from_str(&text)?;
                    Ok(score_answer(rows.iter().map(|r| r.score)))
                }
                .boxed()
            }),
            (Workload::Q2, "Aggregate") => Box::new(move |p: &Params| {
                let c = client.clone();
                let request = seed::most_viewed_request(&seed::user(p.user));
                async move {
                    let groups = c.aggregate(request).await?.groups;
                    Ok(groups
                        .iter()
                        .map(|g| format!("{}", g.value as u64))
                        .collect())
                }
                .boxed()
            }),
            (Workload::Q2, _) => Box::new(move |p: &Params| {
                let c = client.clone();
                let user = [Element::String(seed::user(p.user))];
                async move {
                    let rows = c
                        .query(
                            "most_viewed",
                            "activity",
                            &user,
                            &json!({"window_secs": 3600, "limit": TOP_N}),
                            &[],
                        )
                        .await?;
                    let rows = rows
                        .as_array()
                        .ok_or_else(|| anyhow!("expected an array"))?;
                    Ok(rows.iter().map(|r| r["views"].to_string()).collect())
                }
                .boxed()
            }),
            (Workload::Get, _) => Box::new(move |p: &Params| {
                let (c, key) = (client.clone(), kv_key(p.key));
                async move {
                    let v = c
                        .get(KV, &key, &[])
                        .await?
                        .ok_or_else(|| anyhow!("key not found"))?;
                    Ok(vec![String::from_utf8_lossy(value_bytes(&v)).into_owned()])
                }
                .boxed()
            }),
            (Workload::MultiGet, _) => Box::new(move |p: &Params| {
                let c = client.clone();
                let keys: Vec<Vec<Element>> = p.keys.iter().map(|&k| kv_key(k)).collect();
                async move {
                    let found = c.multi_get(KV, &keys, &[]).await?.iter().flatten().count();
                    Ok(vec![found.to_string()])
                }
                .boxed()
            }),
            (Workload::Put, name) => {
                let visible = name.contains("visible");
                Box::new(move |p: &Params| {
                    let (c, key, value) =
                        (client.clone(), kv_key(p.key), data.value(p.key, p.version));
                    async move {
                        let token: Token = c.put(KV, &key, bytes(value)).await?;
                        // Another client may overwrite the key in between: the token read
                        // proves this write was applied, not that its value is still there.
                        if visible && c.get(KV, &key, &[token]).await?.is_none() {
                            bail!("the key was not found after its write was applied");
                        }
                        Ok(Vec::new())
                    }
                    .boxed()
                })
            }
        };
        Ok(op)
    }
}
