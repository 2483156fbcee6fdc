//! Shared test fixtures: seed-like schemas and a node on a temporary directory.

#![allow(dead_code)]

use notadb_node::{ManualClock, Mutation, Node, NodeBuilder, NodeConfig, ValueInput};
use notadb_types::{Element, ElementType, KeyElement, KeyspaceSchema, Order, TtlSpec, ValueFormat};
use std::sync::Arc;

pub const HOUR: i64 = 3_600_000_000;
/// A fixed "now" for tests that use the manual clock.
pub const T0: i64 = 1_800_000_000_000_000;

pub fn el(name: &str, ty: ElementType, order: Order) -> KeyElement {
    KeyElement {
        name: name.into(),
        ty,
        order,
    }
}

pub fn items() -> KeyspaceSchema {
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

pub fn activity() -> KeyspaceSchema {
    KeyspaceSchema {
        name: "activity".into(),
        key: vec![
            el("user_id", ElementType::String, Order::Asc),
            el("ts", ElementType::Timestamp, Order::Asc),
            el("feature", ElementType::String, Order::Asc),
            el("item_id", ElementType::String, Order::Asc),
        ],
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: Some(TtlSpec::Element {
            element: "ts".into(),
            ttl_micros: 24 * HOUR as u64,
        }),
    }
}

pub fn s(v: &str) -> Element {
    Element::String(v.into())
}

pub fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        partitions: 8,
        ..NodeConfig::default()
    }
}

/// A node with the seed keyspaces and a manual clock at `T0`.
pub async fn node(dir: &std::path::Path) -> (Node, ManualClock) {
    let clock = ManualClock::new(T0);
    let node = NodeBuilder::new(config(dir))
        .clock(Arc::new(clock.clone()))
        .keyspace(items())
        .keyspace(activity())
        .open()
        .await
        .expect("node opens");
    (node, clock)
}

pub fn item(store: &str, product: &str, score: f64, id: &str, available: bool) -> Mutation {
    Mutation::Put {
        keyspace: "items".into(),
        key: vec![s(store), s(product), Element::F64(score), s(id)],
        value: ValueInput::Json(format!(r#"{{"available": {available}, "price": {score}}}"#)),
    }
}

pub fn event(user: &str, ts: i64, feature: &str, item: &str) -> Mutation {
    Mutation::Put {
        keyspace: "activity".into(),
        key: vec![s(user), Element::Timestamp(ts), s(feature), s(item)],
        value: ValueInput::Bytes(Vec::new()),
    }
}

/// A node with `items` and the given limits.
pub async fn items_node(
    dir: &std::path::Path,
    limits: impl FnOnce(&mut notadb_node::Limits),
) -> Node {
    let mut config = config(dir);
    limits(&mut config.limits);
    NodeBuilder::new(config)
        .keyspace(items())
        .open()
        .await
        .expect("node opens")
}

/// Writes `rows` items (product "p", scores 0..rows) for each store, one write per store;
/// returns the tokens.
pub async fn fill_stores(node: &Node, stores: &[&str], rows: u32) -> Vec<notadb_types::Token> {
    let mut tokens = Vec::new();
    for store in stores {
        let batch = (0..rows)
            .map(|i| item(store, "p", f64::from(i), &format!("{store}{i:02}"), true))
            .collect();
        tokens.push(node.write(batch).await.expect("write"));
    }
    tokens
}

/// The real embedded log (8 partitions) behind two gates: appends wait while `appends` is
/// closed, reads return nothing while `reads` is closed. Counts the appends started and fails
/// those whose number (from 1) is in `fail`. Lets a test hold writes in flight, or keep them
/// acknowledged but unapplied.
pub struct GatedLog {
    inner: notadb_log::EmbeddedLog,
    pub appends: tokio::sync::watch::Sender<bool>,
    pub reads: tokio::sync::watch::Sender<bool>,
    pub started: std::sync::atomic::AtomicUsize,
    fail: Vec<usize>,
}

impl GatedLog {
    /// A log in `dir/log` with the gates open as given.
    pub fn open(
        dir: &std::path::Path,
        appends_open: bool,
        reads_open: bool,
        fail: Vec<usize>,
    ) -> Arc<GatedLog> {
        Arc::new(GatedLog {
            inner: notadb_log::EmbeddedLog::open(
                &dir.join("log"),
                8,
                notadb_log::EmbeddedLogOptions::default(),
            )
            .expect("log"),
            appends: tokio::sync::watch::Sender::new(appends_open),
            reads: tokio::sync::watch::Sender::new(reads_open),
            started: std::sync::atomic::AtomicUsize::new(0),
            fail,
        })
    }
}

#[async_trait::async_trait]
impl notadb_log::Log for GatedLog {
    fn partitions(&self) -> u16 {
        self.inner.partitions()
    }
    async fn append(
        &self,
        p: notadb_types::PartitionId,
        payload: bytes::Bytes,
    ) -> Result<notadb_types::Seq, notadb_log::LogError> {
        let n = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        self.appends
            .subscribe()
            .wait_for(|open| *open)
            .await
            .expect("gate");
        if self.fail.contains(&n) {
            return Err(notadb_log::LogError::Unavailable(format!(
                "append {n} refused"
            )));
        }
        self.inner.append(p, payload).await
    }
    async fn read(
        &self,
        p: notadb_types::PartitionId,
        from: notadb_types::Seq,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<notadb_log::LogEntry>, notadb_log::LogError> {
        let mut open = self.reads.subscribe();
        if tokio::time::timeout(wait, open.wait_for(|o| *o))
            .await
            .is_err()
        {
            return Ok(Vec::new());
        }
        self.inner.read(p, from, max, wait).await
    }
    async fn truncate_before(
        &self,
        p: notadb_types::PartitionId,
        before: notadb_types::Seq,
    ) -> Result<(), notadb_log::LogError> {
        self.inner.truncate_before(p, before).await
    }
    async fn bounds(
        &self,
        p: notadb_types::PartitionId,
    ) -> Result<notadb_log::LogBounds, notadb_log::LogError> {
        self.inner.bounds(p).await
    }
    async fn flush(&self) -> Result<(), notadb_log::LogError> {
        self.inner.flush().await
    }
}
