//! NATS KV under comparison (point workloads only): a JetStream key-value bucket, one
//! connection per client.

use super::dataset::Dataset;
use super::workload::{Op, Params, Target, Variant, Workload};
use crate::cpu::{self, Meter};
use anyhow::anyhow;
use async_nats::jetstream::{self, kv};
use futures::{FutureExt, StreamExt};
use notadb_cli::load::progress;
use std::time::Duration;

/// The bucket the benchmark owns (replaced at the first load).
const BUCKET: &str = "notadb_bench_kv";
/// Puts in flight while loading.
const LOAD_CONCURRENCY: usize = 512;

pub struct NatsKvTarget {
    url: String,
    store: kv::Store,
    js: jetstream::Context,
    description: String,
}

async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await?)
}

fn bucket_config() -> kv::Config {
    kv::Config {
        bucket: BUCKET.into(),
        description: "notadb bench compare: point keys".into(),
        history: 1,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    }
}

impl NatsKvTarget {
    pub async fn open(url: &str) -> anyhow::Result<NatsKvTarget> {
        let client = connect(url).await?;
        let version = client.server_info().version;
        let js = jetstream::new(client);
        let store = js.create_key_value(bucket_config()).await?;
        Ok(NatsKvTarget {
            url: url.into(),
            store,
            js,
            description: format!("nats-server {version}, JetStream KV bucket (file storage, 1 replica, history 1), async-nats"),
        })
    }
}

fn variant(workload: Workload, name: &str, how: &str) -> Variant {
    Variant::new("nats-kv", workload, name, how)
}

#[async_trait::async_trait]
impl Target for NatsKvTarget {
    fn name(&self) -> &'static str {
        "nats-kv"
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn variants(&self) -> Vec<Variant> {
        vec![
            variant(Workload::Get, "KV get", "`Store::get` (a direct get of the key's last message)"),
            variant(Workload::Put, "KV put", "`Store::put`, acknowledged by JetStream (stored; JetStream syncs to disk on its own interval)"),
        ]
    }

    async fn load(&mut self, from: Option<&Dataset>, data: &Dataset) -> anyhow::Result<()> {
        if from.is_none() {
            // Start from an empty bucket so its stream holds exactly the data set.
            self.js.delete_key_value(BUCKET).await.ok();
            self.store = self.js.create_key_value(bucket_config()).await?;
        }
        let bar = progress(data.new_keys(from).len() as u64, "nats-kv");
        let store = &self.store;
        let mut puts = futures::stream::iter(data.new_keys(from))
            .map(|i| {
                let value = bytes::Bytes::from(data.value(i, 0));
                async move { store.put(Dataset::key(i), value).await }
            })
            .buffer_unordered(LOAD_CONCURRENCY);
        while let Some(done) = puts.next().await {
            done?;
            bar.inc(1);
        }
        bar.finish();
        Ok(())
    }

    async fn cpu_meter(&self) -> anyhow::Result<Meter> {
        Ok(Meter::Named(&[cpu::NATS]))
    }

    async fn connect(&self, variant: &Variant, data: &Dataset) -> anyhow::Result<Op> {
        let store = jetstream::new(connect(&self.url).await?)
            .get_key_value(BUCKET)
            .await?;
        let data = *data;
        let op: Op = match variant.workload {
            Workload::Get => Box::new(move |p: &Params| {
                let (store, key) = (store.clone(), Dataset::key(p.key));
                async move {
                    let v = store
                        .get(key)
                        .await?
                        .ok_or_else(|| anyhow!("key not found"))?;
                    Ok(vec![String::from_utf8_lossy(&v).into_owned()])
                }
                .boxed()
            }),
            Workload::Put => Box::new(move |p: &Params| {
                let (store, key) = (store.clone(), Dataset::key(p.key));
                let value = bytes::Bytes::from(data.value(p.key, p.version));
                async move {
                    store.put(key, value).await?;
                    Ok(Vec::new())
                }
                .boxed()
            }),
            other => anyhow::bail!("nats-kv has no variant of {}", other.id()),
        };
        Ok(op)
    }
}
