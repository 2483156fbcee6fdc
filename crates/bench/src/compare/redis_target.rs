//! Redis under comparison: plain strings for values and item records, a sorted set of the
//! available items per store and product, one multiplexed connection per client.

use super::dataset::Dataset;
use super::workload::{score_answer, Op, Params, Target, Variant, Workload};
use crate::cpu::{self, Meter};
use anyhow::anyhow;
use futures::FutureExt;
use notadb_cli::load::progress;
use notadb_cli::seed;
use redis::aio::MultiplexedConnection;

/// Every key the benchmark writes starts with this; the first load deletes them all.
const PREFIX: &str = "notadb-bench:";
/// Keys per `SCAN` step while deleting an earlier run's keys.
const SCAN_COUNT: usize = 10_000;
/// Commands per pipeline while loading.
const PIPELINE: u64 = 1_000;
/// Seed question 1 in one round trip: the 10 best ids of the sorted set, then their records.
const TOP_ITEMS: &str = r#"
local ids = redis.call('ZREVRANGE', KEYS[1], 0, 9)
if #ids == 0 then return {} end
for i = 1, #ids do ids[i] = ARGV[1] .. ids[i] end
return redis.call('MGET', unpack(ids))
"#;

pub struct RedisTarget {
    client: redis::Client,
    con: MultiplexedConnection,
    description: String,
}

fn kv(i: usize) -> String {
    format!("{PREFIX}kv:{}", Dataset::key(i))
}

fn top_key(store: &str, product: &str) -> String {
    format!("{PREFIX}top:{store}:{product}")
}

fn item_prefix() -> String {
    format!("{PREFIX}item:")
}

impl RedisTarget {
    pub async fn open(url: &str) -> anyhow::Result<RedisTarget> {
        let client = redis::Client::open(url)?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut con)
            .await?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        let mut settings = Vec::new();
        for name in ["appendonly", "appendfsync", "save"] {
            let v: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut con)
                .await?;
            settings.push(format!(
                "{name}={}",
                v.get(1).map(String::as_str).unwrap_or("?")
            ));
        }
        Ok(RedisTarget {
            client,
            con,
            description: format!(
                "Redis {version} ({}), redis-rs multiplexed connections",
                settings.join(", ")
            ),
        })
    }
}

/// Sends the commands of `PIPELINE` rows at a time, advancing a progress bar by rows.
struct Pipeliner<'c> {
    con: &'c mut MultiplexedConnection,
    pipe: redis::Pipeline,
    queued: u64,
    bar: indicatif::ProgressBar,
}

impl Pipeliner<'_> {
    /// One row's commands are in `pipe`.
    async fn row(&mut self) -> anyhow::Result<()> {
        self.queued += 1;
        if self.queued == PIPELINE {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        // redis-rs refuses an empty pipeline.
        if self.queued > 0 {
            self.pipe.query_async::<()>(&mut *self.con).await?;
            self.pipe = redis::pipe();
            self.bar.inc(self.queued);
            self.queued = 0;
        }
        Ok(())
    }
}

fn variant(workload: Workload, name: &str, how: &str) -> Variant {
    Variant::new("redis", workload, name, how)
}

#[async_trait::async_trait]
impl Target for RedisTarget {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn variants(&self) -> Vec<Variant> {
        vec![
            variant(Workload::Q1, "Lua: ZREVRANGE + MGET", "a sorted set per store and product holding only the available items (by score), item records as JSON strings; one `EVALSHA` returns the 10 best records in one round trip"),
            variant(Workload::Get, "GET", "`GET` of a string"),
            variant(Workload::MultiGet, "MGET", "`MGET` of 100 keys"),
            variant(Workload::Put, "SET", "`SET`, acknowledged from memory (durability as `appendonly`/`appendfsync` say)"),
        ]
    }

    async fn load(&mut self, from: Option<&Dataset>, data: &Dataset) -> anyhow::Result<()> {
        if from.is_none() {
            // An earlier run may have loaded a larger data set under the same names.
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{PREFIX}*"))
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut self.con)
                    .await?;
                if !keys.is_empty() {
                    redis::cmd("UNLINK")
                        .arg(keys)
                        .query_async::<()>(&mut self.con)
                        .await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let size = data.seed;
        let items = data.items() - from.map_or(0, Dataset::items);
        let mut out = Pipeliner {
            con: &mut self.con,
            pipe: redis::pipe(),
            queued: 0,
            bar: progress((items + data.new_keys(from).len()) as u64, "redis"),
        };
        let all_items = data
            .new_stores(from)
            .flat_map(|s| (0..size.products).flat_map(move |p| seed::items(&size, s, p)));
        for item in all_items {
            let record = serde_json::json!({"item_id": item.item, "score": item.score, "available": item.available, "price": item.price, "name": item.name});
            out.pipe
                .cmd("SET")
                .arg(format!("{}{}", item_prefix(), item.item))
                .arg(record.to_string())
                .ignore();
            if item.available {
                out.pipe
                    .cmd("ZADD")
                    .arg(top_key(&item.store, &item.product))
                    .arg(item.score)
                    .arg(&item.item)
                    .ignore();
            }
            out.row().await?;
        }
        for i in data.new_keys(from) {
            out.pipe
                .cmd("SET")
                .arg(kv(i))
                .arg(data.value(i, 0))
                .ignore();
            out.row().await?;
        }
        out.flush().await?;
        out.bar.finish();
        Ok(())
    }

    async fn cpu_meter(&self) -> anyhow::Result<Meter> {
        Ok(Meter::Named(&[cpu::REDIS]))
    }

    async fn connect(&self, variant: &Variant, data: &Dataset) -> anyhow::Result<Op> {
        let con = self.client.get_multiplexed_async_connection().await?;
        let data = *data;
        let op: Op = match variant.workload {
            Workload::Q1 => {
                let script = redis::Script::new(TOP_ITEMS);
                Box::new(move |p: &Params| {
                    let (mut con, script) = (con.clone(), script.clone());
                    let key = top_key(&seed::store(p.store), &seed::product(p.product));
                    async move {
                        let records: Vec<Option<String>> = script
                            .key(key)
                            .arg(item_prefix())
                            .invoke_async(&mut con)
                            .await?;
                        let scores = records
                            .iter()
                            .map(|r| {
                                let r: serde_json::Value = serde_json::from_str(
                                    r.as_deref().ok_or_else(|| anyhow!("item record missing"))?,
                                )?;
                                r["score"]
                                    .as_f64()
                                    .ok_or_else(|| anyhow!("item record without a score"))
                            })
                            .collect::<anyhow::Result<Vec<f64>>>()?;
                        Ok(score_answer(scores))
                    }
                    .boxed()
                })
            }
            Workload::Get => Box::new(move |p: &Params| {
                let (mut con, key) = (con.clone(), kv(p.key));
                async move {
                    let v: Option<Vec<u8>> =
                        redis::cmd("GET").arg(key).query_async(&mut con).await?;
                    let v = v.ok_or_else(|| anyhow!("key not found"))?;
                    Ok(vec![String::from_utf8_lossy(&v).into_owned()])
                }
                .boxed()
            }),
            Workload::MultiGet => Box::new(move |p: &Params| {
                let mut con = con.clone();
                let keys: Vec<String> = p.keys.iter().map(|&k| kv(k)).collect();
                async move {
                    let v: Vec<Option<Vec<u8>>> =
                        redis::cmd("MGET").arg(keys).query_async(&mut con).await?;
                    Ok(vec![v.iter().flatten().count().to_string()])
                }
                .boxed()
            }),
            Workload::Put => Box::new(move |p: &Params| {
                let (mut con, key, value) = (con.clone(), kv(p.key), data.value(p.key, p.version));
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .query_async::<()>(&mut con)
                        .await?;
                    Ok(Vec::new())
                }
                .boxed()
            }),
            Workload::Q2 => anyhow::bail!("redis has no variant of {}", variant.workload.id()),
        };
        Ok(op)
    }
}
