//! A cluster on NATS JetStream: the metadata, members and lease stores are key-value buckets
//! (`{name}_meta`, `{name}_members`, `{name}_leases`), checkpoints go to the object store
//! `{name}_checkpoints`, the partition and sequencer logs are [`JetStreamLog`]s, and reports of
//! finished transactions travel on core NATS (at most once): the subject
//! `{name}.txn.done.{origin}` carries [`encode_report`](notadb_node::encode_report) bytes, and
//! each node subscribes to its own origin tag.

use super::{Backend, Broker, LeaseContext};
use crate::control::{KvChange, KvEntry, KvStore, Objects};
use crate::error::{nats, ClusterError};
use crate::meta::{self, ClusterDoc};
use crate::{txn, ClusterConfig};
use async_nats::jetstream::{self, kv, object_store};
use async_nats::Client;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use notadb_jetstream::{JetStreamLog, JetStreamOptions};
use notadb_log::Log;
use notadb_node::{decode_report, Finished, Node, NodeConfig, TxnNotifier};
use notadb_types::PartitionId;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long connecting to NATS may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to NATS and opens the cluster's buckets, object store and logs.
pub(crate) async fn open(
    config: &ClusterConfig,
    node_config: &NodeConfig,
) -> Result<(Backend, ClusterDoc), ClusterError> {
    let options = &config.jetstream;
    let client = options
        .auth
        .connect_options()
        .await?
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(options.url.as_str())
        .await
        .map_err(|e| notadb_jetstream::connect_error(&options.url, &e))?;
    let js = jetstream::new(client.clone());
    let meta: Arc<dyn KvStore> = Arc::new(JetStreamKv(
        bucket(
            &js,
            kv::Config {
                bucket: format!("{}_meta", options.name),
                description: "notadb cluster metadata: shape, keyspaces, checkpoints".into(),
                history: 5,
                num_replicas: options.replicas,
                ..Default::default()
            },
        )
        .await?,
    ));
    let doc = meta::cluster_doc(
        meta.as_ref(),
        ClusterDoc::new(node_config.partitions, config.groups),
    )
    .await?;
    let members = bucket(
        &js,
        kv::Config {
            bucket: format!("{}_members", options.name),
            description: "notadb members: heartbeats".into(),
            history: 1,
            max_age: config.member_ttl(),
            num_replicas: options.replicas,
            ..Default::default()
        },
    )
    .await?;
    let objects = object_store(&js, &options.name, options.replicas).await?;
    let log = JetStreamLog::connect(options.clone(), doc.partitions).await?;
    let sequencer = JetStreamLog::connect(
        JetStreamOptions {
            name: txn::sequencer_name(&options.name),
            // The forwarder truncates it; expiring entries it has not copied would lose
            // transactions.
            max_age: None,
            max_bytes: None,
            ..options.clone()
        },
        1,
    )
    .await?;
    let backend = Backend {
        meta,
        members: Arc::new(JetStreamKv(members)),
        objects: Arc::new(JetStreamObjects(objects)),
        log: Arc::new(log),
        sequencer: Arc::new(sequencer),
        notifier: Arc::new(NatsNotifier {
            client: client.clone(),
            name: options.name.clone(),
        }),
        broker: Box::new(JetStreamBroker {
            client,
            js,
            options: options.clone(),
        }),
    };
    Ok((backend, doc))
}

/// Opens the bucket `config.bucket`, creating it with `config` when missing.
async fn bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, ClusterError> {
    let name = config.bucket.clone();
    let store = match js.get_key_value(name.clone()).await {
        Ok(store) => store,
        Err(_) => match js.create_key_value(config).await {
            Ok(store) => store,
            // Another node created it in between.
            Err(_) => js
                .get_key_value(name.clone())
                .await
                .map_err(|e| nats(&format!("opening bucket {name}"), e))?,
        },
    };
    store
        .status()
        .await
        .map_err(|e| nats(&format!("reading bucket {name}"), e))?;
    Ok(store)
}

/// Opens (or creates) the checkpoint object store `{name}_checkpoints`.
async fn object_store(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, ClusterError> {
    let bucket = format!("{name}_checkpoints");
    if let Ok(store) = js.get_object_store(&bucket).await {
        return Ok(store);
    }
    let config = object_store::Config {
        bucket: bucket.clone(),
        description: Some("notadb checkpoints".into()),
        num_replicas: replicas,
        ..Default::default()
    };
    match js.create_object_store(config).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .get_object_store(&bucket)
            .await
            .map_err(|e| nats(&format!("opening object store {bucket}"), e)),
    }
}

/// What a running cluster asks of JetStream.
struct JetStreamBroker {
    client: Client,
    js: jetstream::Context,
    options: JetStreamOptions,
}

#[async_trait::async_trait]
impl Broker for JetStreamBroker {
    async fn open_log(&self, partitions: u16) -> Result<Arc<dyn Log>, ClusterError> {
        Ok(Arc::new(
            JetStreamLog::connect(self.options.clone(), partitions).await?,
        ))
    }

    async fn receive_reports(
        &self,
        node: Node,
        mut stop: watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>, ClusterError> {
        let mut sub = self
            .client
            .subscribe(subject(&self.options.name, node.txn_origin()))
            .await
            .map_err(|e| nats("subscribing to transaction reports", e))?;
        Ok(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    m = sub.next() => m,
                };
                let Some(message) = message else { return };
                match decode_report(&message.payload) {
                    Ok((partition, finished)) => node.txn_reported(partition, &finished),
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed transaction report"),
                }
            }
        }))
    }

    async fn hold_lease(
        &self,
        key: &str,
        context: LeaseContext,
        held: watch::Sender<bool>,
        stop: watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>, ClusterError> {
        let ttl = context.config.member_ttl();
        let store = bucket(
            &self.js,
            kv::Config {
                bucket: format!("{}_leases", self.options.name),
                description: "notadb leases: one holder per name".into(),
                history: 1,
                max_age: ttl,
                num_replicas: self.options.replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(tokio::spawn(crate::lease::hold_lease(
            store,
            key.to_string(),
            context.routes.self_id().to_string(),
            ttl,
            held,
            stop,
        )))
    }
}

fn subject(name: &str, origin: u32) -> String {
    format!("{name}.txn.done.{origin:08x}")
}

/// Publishes reports of finished transactions, one message per origin and applied batch.
struct NatsNotifier {
    client: Client,
    name: String,
}

impl TxnNotifier for NatsNotifier {
    fn finished(&self, partition: PartitionId, finished: &[Finished]) {
        // Messages stay well under NATS's payload limit (1 MiB by default): a report holds
        // outputs and abort reasons.
        let limit = self.client.server_info().max_payload / 2;
        for (origin, payload) in txn::reports(partition, finished, limit) {
            let client = self.client.clone();
            let subject = subject(&self.name, origin);
            tokio::spawn(async move {
                if let Err(e) = client.publish(subject, payload.into()).await {
                    tracing::warn!(error = %e, "publishing a transaction report failed");
                }
            });
        }
    }
}

/// A JetStream key-value bucket as a [`KvStore`].
pub(crate) struct JetStreamKv(pub kv::Store);

fn live(entry: kv::Entry) -> Option<KvEntry> {
    (entry.operation == kv::Operation::Put).then(|| KvEntry {
        key: entry.key,
        value: entry.value,
        revision: entry.revision,
    })
}

/// Whether a watch of `prefixes` can use subject wildcards: every prefix ends a subject
/// token (`a.b.`). Any other prefix is watched by filtering every change of the bucket.
fn wildcards(prefixes: &[&str]) -> bool {
    prefixes
        .iter()
        .all(|p| p.ends_with('.') && !p.starts_with('.'))
}

#[async_trait::async_trait]
impl KvStore for JetStreamKv {
    async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, ClusterError> {
        match self.0.create(key, value).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(nats(&format!("creating {key}"), e)),
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, ClusterError> {
        self.0
            .put(key, value)
            .await
            .map_err(|e| nats(&format!("writing {key}"), e))
    }

    async fn entry(&self, key: &str) -> Result<Option<KvEntry>, ClusterError> {
        let entry = self
            .0
            .entry(key)
            .await
            .map_err(|e| nats(&format!("reading {key}"), e))?;
        Ok(entry.and_then(live))
    }

    async fn delete_at(&self, key: &str, revision: u64) -> Result<(), ClusterError> {
        match self.0.delete_expect_revision(key, Some(revision)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(
                ClusterError::Conflict(format!("{key} no longer has revision {revision}")),
            ),
            Err(e) => Err(nats(&format!("deleting {key}"), e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ClusterError> {
        self.0
            .delete(key)
            .await
            .map_err(|e| nats(&format!("deleting {key}"), e))
    }

    async fn entries(&self, prefix: &str) -> Result<Vec<KvEntry>, ClusterError> {
        let mut listing = self.0.keys().await.map_err(|e| nats("listing keys", e))?;
        let mut keys = Vec::new();
        while let Some(key) = listing.next().await {
            let key = key.map_err(|e| nats("listing keys", e))?;
            if key.starts_with(prefix) {
                keys.push(key);
            }
        }
        keys.sort();
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(entry) = self.entry(&key).await? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    async fn watch(&self, prefixes: &[&str]) -> Result<BoxStream<'static, KvChange>, ClusterError> {
        let watch = if wildcards(prefixes) {
            let subjects: Vec<String> = prefixes.iter().map(|p| format!("{p}>")).collect();
            self.0.watch_many(subjects).await
        } else {
            self.0.watch_all().await
        }
        .map_err(|e| nats("watching keys", e))?;
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        Ok(watch
            .take_while(|e| futures::future::ready(e.is_ok()))
            .filter_map(move |e| {
                let change = e
                    .ok()
                    .filter(|e| prefixes.iter().any(|p| e.key.starts_with(p)))
                    .map(|e| match e.operation {
                        kv::Operation::Put => KvChange::Put(KvEntry {
                            key: e.key,
                            value: e.value,
                            revision: e.revision,
                        }),
                        kv::Operation::Delete | kv::Operation::Purge => KvChange::Deleted(e.key),
                    });
                futures::future::ready(change)
            })
            .boxed())
    }
}

/// The JetStream object store as [`Objects`].
pub(crate) struct JetStreamObjects(pub object_store::ObjectStore);

#[async_trait::async_trait]
impl Objects for JetStreamObjects {
    async fn put(&self, name: &str, path: &Path) -> Result<(), ClusterError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClusterError::Checkpoint(format!("opening {}: {e}", path.display())))?;
        self.0
            .put(name, &mut file)
            .await
            .map(|_| ())
            .map_err(|e| nats(&format!("uploading {name}"), e))
    }

    async fn get(&self, name: &str, path: &Path) -> Result<(), ClusterError> {
        let mut object = self
            .0
            .get(name)
            .await
            .map_err(|e| nats(&format!("downloading {name}"), e))?;
        let mut out = tokio::fs::File::create(path)
            .await
            .map_err(|e| ClusterError::Checkpoint(format!("creating {}: {e}", path.display())))?;
        tokio::io::copy(&mut object, &mut out)
            .await
            .map_err(|e| ClusterError::Checkpoint(format!("downloading {name}: {e}")))?;
        out.sync_all()
            .await
            .map_err(|e| ClusterError::Checkpoint(format!("syncing {}: {e}", path.display())))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ClusterError> {
        let mut list = self
            .0
            .list()
            .await
            .map_err(|e| nats("listing checkpoint objects", e))?;
        let mut names = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| nats("listing checkpoint objects", e))?;
            if info.name.starts_with(prefix) {
                names.push(info.name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete(&self, name: &str) -> Result<(), ClusterError> {
        match self.0.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(nats(&format!("deleting {name}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notadb_testkit::NatsServer;

    async fn server() -> (NatsServer, tempfile::TempDir, jetstream::Context) {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = tokio::task::block_in_place(|| NatsServer::start(&dir.path().join("nats")))
            .expect("start nats-server");
        let client = async_nats::connect(server.url()).await.expect("connect");
        (server, dir, jetstream::new(client))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bucket_passes_the_kv_store_suite() {
        let (_server, _dir, js) = server().await;
        let config = kv::Config {
            bucket: "suite_meta".into(),
            history: 5,
            ..Default::default()
        };
        let store = JetStreamKv(bucket(&js, config).await.expect("bucket"));
        crate::conformance::kv_store(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_object_store_passes_the_objects_suite() {
        let (_server, dir, js) = server().await;
        let store = JetStreamObjects(object_store(&js, "suite", 1).await.expect("object store"));
        crate::conformance::objects(&store, dir.path()).await;
    }
}
