//! The node's reads: wait for tokens, then run on a blocking thread over one snapshot.

use crate::handler::{QueryContext, QueryHandler};
use crate::node::NodeInner;
use crate::query::aggregate::{aggregate_partition, AggregatePlan, Groups};
use crate::query::filter::{field_path, Filters};
use crate::query::range::{resolve, Partitions, ResolvedRange};
use crate::query::scan::{
    decode_rows, merge, scan_partition, PartitionRows, RawRows, RawScan, ScanPlan,
};
use crate::request::{
    AggregateFunction, AggregateRequest, AggregateResult, Bound, Consistency, ScanRequest,
    ScanResult,
};
use crate::{Node, NodeError};
use notadb_record::value;
use notadb_record::KeyspaceDef;
use notadb_storage::{ReadView, Values};
use notadb_types::{
    Element, ElementRef, ElementType, KeyspaceSchema, Order, PartitionId, Partitioner, TypesError,
    ValueFormat,
};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The node's read part: the registered query handlers and the counters of where reads ran.
pub(crate) struct Reads {
    pub handlers: BTreeMap<String, Arc<dyn QueryHandler>>,
    pub metrics: ReadMetrics,
}

impl Reads {
    /// Serves these handlers.
    pub fn new(handlers: BTreeMap<String, Arc<dyn QueryHandler>>) -> Reads {
        Reads {
            handlers,
            metrics: ReadMetrics {
                memory: metrics::counter!("notadb_reads_total", "path" => "memory"),
                blocking: metrics::counter!("notadb_reads_total", "path" => "blocking"),
            },
        }
    }
}

/// Reads by where they ran: on the serving thread from memory, or on the blocking pool.
pub(crate) struct ReadMetrics {
    pub memory: metrics::Counter,
    pub blocking: metrics::Counter,
}

impl Node {
    /// Names of the registered query handlers.
    pub fn handler_names(&self) -> Vec<String> {
        self.inner.reads.handlers.keys().cloned().collect()
    }

    /// Waits until every token is applied, or fails at the deadline.
    pub async fn wait_for(&self, consistency: &Consistency) -> Result<(), NodeError> {
        if consistency.tokens.is_empty() {
            return Ok(());
        }
        let max_wait = self.inner.config.limits.max_read_wait();
        let deadline = consistency
            .deadline
            .unwrap_or_else(|| Instant::now() + max_wait);
        for (i, token) in consistency.tokens.iter().enumerate() {
            let count = self.inner.partitioner.count();
            if token.partition.0 >= count {
                return Err(NodeError::invalid(format!(
                    "tokens[{i}]: partition {} does not exist (the cluster has {count} partitions)",
                    token.partition
                )));
            }
            if !self.owns(token.partition) {
                // Another shard group's write: the replicas serving it wait for it.
                continue;
            }
            let state = self.partition(token.partition);
            if token.seq > state.last_seq() {
                let last = self
                    .inner
                    .partitions
                    .log()
                    .bounds(token.partition)
                    .await?
                    .last;
                state.appended(last);
                if token.seq > last {
                    return Err(NodeError::invalid(format!(
                        "tokens[{i}]: seq {} is beyond the end of partition {}'s log (seq {last})",
                        token.seq, token.partition
                    )));
                }
            }
            let wait = state.wait_applied(token.seq);
            if tokio::time::timeout_at(deadline.into(), wait)
                .await
                .is_err()
            {
                return Err(NodeError::DeadlineExceeded(format!(
                    "token {token} was not applied before the deadline; partition {} has applied seq {}",
                    token.partition,
                    state.applied()
                )));
            }
        }
        Ok(())
    }

    /// Runs a read over one consistent view. First on this thread over a memory-only view
    /// (memtables and block cache, a bounded number of reads): a read of a hot working set
    /// then costs no hop to the blocking pool, which on a small machine is most of a point
    /// read's latency. A read that needs the disk or more work runs again, from the start
    /// and on a fresh snapshot, on the blocking pool.
    async fn on_view<R, F>(&self, f: F) -> Result<R, NodeError>
    where
        R: Send + 'static,
        F: Fn(&NodeInner, &ReadView<'_>, i64) -> Result<R, NodeError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let now = inner.clock.now_micros();
        {
            let view = inner.storage.memory_view();
            let result = f(&inner, &view, now);
            if !view.would_block() {
                inner.reads.metrics.memory.increment(1);
                return result;
            }
        }
        inner.reads.metrics.blocking.increment(1);
        tokio::task::spawn_blocking(move || {
            let view = inner.storage.view();
            f(&inner, &view, now)
        })
        .await?
    }

    /// The partition and encoding of a key; an error names the key as `field()` says (built
    /// only then: a multi-get of many keys formats no labels).
    fn key_partition(
        &self,
        def: &KeyspaceDef,
        key: &[Element],
        field: impl FnOnce() -> String,
    ) -> Result<(PartitionId, Vec<u8>), NodeError> {
        let encoded = def
            .schema
            .encode_key(key)
            .map_err(|e| NodeError::invalid(format!("{}: {e}", field())))?;
        Ok((
            self.inner.partitioner.partition_of(encoded.partition_key()),
            encoded.bytes,
        ))
    }

    /// The value of one key, and the keyspace's value format.
    pub async fn get(
        &self,
        keyspace: &str,
        key: &[Element],
        consistency: &Consistency,
    ) -> Result<(ValueFormat, Option<Vec<u8>>), NodeError> {
        let def = self.keyspace(keyspace)?;
        let (p, encoded) = self.key_partition(&def, key, || "key".into())?;
        self.check_owned(p)?;
        self.wait_for(consistency).await?;
        let format = def.schema.value_format;
        self.on_view(move |_, view, now| {
            // This view reads one key: the point cache may answer.
            let stored = view.get_one(p, def.id, &encoded)?;
            Ok((format, stored.and_then(|s| value::into_live(s, now))))
        })
        .await
    }

    /// Refuses a `MultiGet` of more than `max_multi_get_keys` keys. A server checks the whole
    /// request with it before decoding the keys or splitting them among shard groups.
    pub fn check_multi_get_keys(&self, n: usize) -> Result<(), NodeError> {
        let limit = self.inner.config.limits.max_multi_get_keys;
        if n > limit {
            return Err(NodeError::invalid(format!(
                "keys: {n} keys, the limit is {limit} (max_multi_get_keys)"
            )));
        }
        Ok(())
    }

    /// The values of many keys (any partitions), in request order, from one snapshot.
    pub async fn multi_get(
        &self,
        keyspace: &str,
        keys: &[Vec<Element>],
        consistency: &Consistency,
    ) -> Result<(ValueFormat, Vec<Option<Vec<u8>>>), NodeError> {
        self.check_multi_get_keys(keys.len())?;
        let def = self.keyspace(keyspace)?;
        let mut encoded = EncodedKeys::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let values = k.iter().map(Element::as_ref);
            encoded
                .push(&def.schema, &self.inner.partitioner, values)
                .map_err(|e| NodeError::invalid(format!("keys[{i}]: {e}")))?;
        }
        let values = self.multi_get_encoded(def, encoded, consistency).await?;
        let out = (0..values.len()).map(|i| values.get(i).map(<[u8]>::to_vec));
        Ok((values.format(), out.collect()))
    }

    /// `multi_get` of keys already encoded (`EncodedKeys::push`), answered in one buffer.
    pub async fn multi_get_encoded(
        &self,
        def: Arc<KeyspaceDef>,
        keys: EncodedKeys,
        consistency: &Consistency,
    ) -> Result<MultiGetValues, NodeError> {
        self.check_multi_get_keys(keys.len())?;
        for (p, _) in &keys.ends {
            self.check_owned(*p)?;
        }
        self.wait_for(consistency).await?;
        self.on_view(move |_, view, now| {
            let keys: Vec<(PartitionId, &[u8])> = keys.iter().collect();
            Ok(MultiGetValues {
                stored: view.multi_get(def.id, &keys)?,
                format: def.schema.value_format,
                now,
            })
        })
        .await
    }

    /// The owned partitions a range covers: a range inside one partition key must be owned;
    /// a range over all partitions covers the owned ones (other shard groups cover the rest).
    fn partitions_of(&self, partitions: &Partitions) -> Result<Vec<PartitionId>, NodeError> {
        match partitions {
            Partitions::One(p) => {
                self.check_owned(*p)?;
                Ok(vec![*p])
            }
            Partitions::All => Ok(self.owned_partitions()),
        }
    }

    /// The partition of `key` in `keyspace` (routing); errors name the key `field`.
    pub fn partition_of_key(
        &self,
        keyspace: &str,
        key: &[Element],
        field: &str,
    ) -> Result<PartitionId, NodeError> {
        let def = self.keyspace(keyspace)?;
        Ok(self.key_partition(&def, key, || field.to_string())?.0)
    }

    /// The partition of a partition key of `keyspace` (routing a `Query`).
    pub fn partition_of_prefix(
        &self,
        keyspace: &str,
        partition_key: &[Element],
    ) -> Result<PartitionId, NodeError> {
        let def = self.keyspace(keyspace)?;
        let encoded = def
            .schema
            .encode_prefix(partition_key)
            .map_err(|e| NodeError::invalid(format!("partition_key: {e}")))?;
        Ok(self.inner.partitioner.partition_of(&encoded))
    }

    /// The one partition a scan or aggregate range falls in, or `None` when it covers all
    /// partitions (routing).
    pub fn partition_of_range(
        &self,
        keyspace: &str,
        range: &crate::request::KeyRange,
    ) -> Result<Option<PartitionId>, NodeError> {
        let def = self.keyspace(keyspace)?;
        Ok(
            match resolve(&def.schema, &self.inner.partitioner, range)?.partitions {
                Partitions::One(p) => Some(p),
                Partitions::All => None,
            },
        )
    }

    fn prepare_scan(&self, request: &ScanRequest) -> Result<PreparedScan, NodeError> {
        let limits = &self.inner.config.limits;
        let limit = match request.limit {
            0 => limits.default_scan_limit,
            n if n > limits.max_scan_limit => {
                return Err(NodeError::invalid(format!(
                    "limit: {n} is over the maximum {} (max_scan_limit)",
                    limits.max_scan_limit
                )))
            }
            n => n,
        };
        let def = self.keyspace(&request.keyspace)?;
        let range = resolve(&def.schema, &self.inner.partitioner, &request.range)?;
        let filters = Filters::compile(&def.schema, &request.filters)?;
        let partitions = self.partitions_of(&range.partitions)?;
        Ok(PreparedScan {
            def,
            range,
            filters,
            partitions,
            limit,
            max_bytes: limits.max_scan_bytes,
            reverse: request.reverse,
        })
    }

    /// Rows of a range, in key order (or reversed), after filters, up to the limit.
    pub async fn scan(
        &self,
        request: ScanRequest,
        consistency: &Consistency,
    ) -> Result<ScanResult, NodeError> {
        self.scan_raw(request, consistency).await?.decode()
    }

    /// `scan` with the rows as stored: keys still encoded, for callers that write them
    /// straight into an answer.
    pub async fn scan_raw(
        &self,
        request: ScanRequest,
        consistency: &Consistency,
    ) -> Result<RawScan, NodeError> {
        let prepared = self.prepare_scan(&request)?;
        self.wait_for(consistency).await?;
        self.on_view(move |_, view, now| prepared.run(view, now))
            .await
    }

    /// `scan_raw` on the calling thread, without waiting for tokens (benchmarks, embedding
    /// code that runs on its own threads). It blocks on RocksDB: never call it from async code.
    pub fn scan_blocking(&self, request: &ScanRequest) -> Result<RawScan, NodeError> {
        let prepared = self.prepare_scan(request)?;
        let view = self.inner.storage.view();
        prepared.run(&view, self.inner.clock.now_micros())
    }

    /// Count, sum, min or max over a range, grouped by a key element, top-k.
    pub async fn aggregate(
        &self,
        mut request: AggregateRequest,
        consistency: &Consistency,
    ) -> Result<AggregateResult, NodeError> {
        let def = self.keyspace(&request.keyspace)?;
        let schema = &def.schema;
        let field = match (request.function, &request.field) {
            (AggregateFunction::Count, _) => None,
            (_, None) => {
                return Err(NodeError::invalid(
                    "field: sum, min and max need a JSON field",
                ))
            }
            (_, Some(path)) => {
                if schema.value_format != ValueFormat::Json {
                    return Err(NodeError::invalid(format!(
                        "field: keyspace `{}` stores bytes; sum, min and max need JSON values",
                        schema.name
                    )));
                }
                Some(field_path(path, "field")?)
            }
        };
        let element = |name: &str, what: &str| {
            schema.element_index(name).ok_or_else(|| {
                NodeError::invalid(format!(
                    "{what}: keyspace `{}` has no key element `{name}`",
                    schema.name
                ))
            })
        };
        let group_by = request
            .group_by
            .as_deref()
            .map(|g| element(g, "group_by"))
            .transpose()?;
        let now = self.inner.clock.now_micros();
        let window = match &request.window {
            None => None,
            Some(w) => {
                let i = element(&w.element, "window.element")?;
                if schema.key[i].ty != ElementType::Timestamp {
                    return Err(NodeError::invalid(format!(
                        "window.element: `{}` is {}, a window needs a timestamp element",
                        w.element,
                        schema.key[i].ty.name()
                    )));
                }
                let from = match (w.last, w.from) {
                    (Some(_), Some(_)) => {
                        return Err(NodeError::invalid(
                            "window: give either last or from, not both",
                        ))
                    }
                    (Some(last), None) if last <= 0 => {
                        return Err(NodeError::invalid(format!(
                            "window.last: expected a positive duration, found {last}"
                        )))
                    }
                    (Some(last), None) => now.saturating_sub(last),
                    (None, from) => from.unwrap_or(i64::MIN),
                };
                let to = w.to.unwrap_or(i64::MAX);
                if from >= to {
                    return Err(NodeError::invalid(format!(
                        "window: from ({from}) must be before to ({to})"
                    )));
                }
                // The window element right after the prefix narrows the range itself.
                if i == request.range.prefix.len()
                    && request.range.start.is_none()
                    && request.range.end.is_none()
                {
                    let lo = Some(Bound {
                        key: vec![Element::Timestamp(from)],
                        inclusive: true,
                    });
                    let hi = (to != i64::MAX).then(|| Bound {
                        key: vec![Element::Timestamp(to)],
                        inclusive: false,
                    });
                    let (start, end) = match schema.key[i].order {
                        Order::Asc => (lo, hi),
                        Order::Desc => (
                            hi.map(|b| Bound {
                                inclusive: false,
                                ..b
                            }),
                            lo,
                        ),
                    };
                    request.range.start = start;
                    request.range.end = end;
                }
                Some((i, from, to))
            }
        };
        let range = resolve(schema, &self.inner.partitioner, &request.range)?;
        let filters = Filters::compile(schema, &request.filters)?;
        let partitions = self.partitions_of(&range.partitions)?;
        self.wait_for(consistency).await?;
        let limits = self.inner.config.limits.clone();
        let function = request.function;
        let top_k = request.top_k;
        let def = def.clone();
        self.on_view(move |_, view, now_view| {
            let plan = AggregatePlan {
                keyspace: def.id,
                schema: &def.schema,
                range: &range,
                filters: &filters,
                function,
                field: field.clone(),
                group_by,
                window,
                max_rows: limits.max_aggregate_rows,
                max_groups: limits.max_aggregate_groups,
                now_micros: now_view,
            };
            let mut all = Groups::default();
            for p in &partitions {
                let groups = aggregate_partition(view, &plan, *p, all.rows_scanned)?;
                all.merge(function, groups, plan.max_groups)?;
            }
            let rows_scanned = all.rows_scanned;
            Ok(AggregateResult {
                groups: all.top(top_k),
                rows_scanned,
            })
        })
        .await
    }

    /// Runs the handler `name` on the partition owning `partition_key` of `keyspace`.
    pub async fn query(
        &self,
        name: &str,
        keyspace: &str,
        partition_key: Vec<Element>,
        args: serde_json::Value,
        consistency: &Consistency,
    ) -> Result<serde_json::Value, NodeError> {
        let answer = |h: &dyn QueryHandler, ctx: &QueryContext<'_>, args: &serde_json::Value| {
            h.run(ctx, args)
        };
        self.run_handler(name, keyspace, partition_key, args, consistency, answer)
            .await
    }

    /// `query`, answered as JSON text (what a client receives: a handler that writes its
    /// answer as text skips building a `serde_json::Value`).
    pub async fn query_json(
        &self,
        name: &str,
        keyspace: &str,
        partition_key: Vec<Element>,
        args: serde_json::Value,
        consistency: &Consistency,
    ) -> Result<String, NodeError> {
        let answer = |h: &dyn QueryHandler, ctx: &QueryContext<'_>, args: &serde_json::Value| {
            h.run_json(ctx, args)
        };
        self.run_handler(name, keyspace, partition_key, args, consistency, answer)
            .await
    }

    async fn run_handler<R: Send + 'static>(
        &self,
        name: &str,
        keyspace: &str,
        partition_key: Vec<Element>,
        args: serde_json::Value,
        consistency: &Consistency,
        answer: fn(
            &dyn QueryHandler,
            &QueryContext<'_>,
            &serde_json::Value,
        ) -> Result<R, NodeError>,
    ) -> Result<R, NodeError> {
        let handler = self
            .inner
            .reads
            .handlers
            .get(name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .inner
                    .reads
                    .handlers
                    .keys()
                    .map(String::as_str)
                    .collect();
                NodeError::NotFound(format!(
                    "no query handler named `{name}` (registered: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
        let def = self.keyspace(keyspace)?;
        if partition_key.len() != def.schema.partition_by {
            return Err(NodeError::invalid(format!(
                "partition_key: keyspace `{keyspace}` is partitioned by its first {} elements, found {}",
                def.schema.partition_by,
                partition_key.len()
            )));
        }
        let encoded = def
            .schema
            .encode_prefix(&partition_key)
            .map_err(|e| NodeError::invalid(format!("partition_key: {e}")))?;
        let partition = self.inner.partitioner.partition_of(&encoded);
        self.check_owned(partition)?;
        self.wait_for(consistency).await?;
        self.on_view(move |inner, view, now| {
            let keyspaces = inner.catalog.read().snapshot();
            let ctx = QueryContext {
                view,
                keyspaces: &keyspaces,
                partitioner: &inner.partitioner,
                partition,
                partition_key: &partition_key,
                now_micros: now,
            };
            answer(handler.as_ref(), &ctx, &args)
        })
        .await
    }
}

/// Merges the answers of several shard groups to one scan (each answer in key order, or
/// reversed), as one node merges its partitions.
pub fn merge_scans(
    schema: &notadb_types::KeyspaceSchema,
    parts: Vec<ScanResult>,
    limit: usize,
    reverse: bool,
) -> Result<ScanResult, NodeError> {
    let parts = parts
        .into_iter()
        .map(|part| {
            let mut rows = RawRows::with_capacity(part.rows.len());
            for row in &part.rows {
                rows.push(&schema.encode_key(&row.key)?.bytes, &row.value);
            }
            Ok(PartitionRows {
                rows,
                more: part.more,
            })
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    let (rows, more) = merge(parts, limit, reverse);
    decode_rows(schema, &rows, more)
}

/// Merges the complete groups of several shard groups' aggregates and keeps the top `top_k`
/// (all when 0): exact, because every shard returned all of its groups.
pub fn merge_aggregates(
    function: AggregateFunction,
    parts: Vec<AggregateResult>,
    top_k: usize,
    max_groups: usize,
) -> Result<AggregateResult, NodeError> {
    let mut all = Groups::default();
    for part in parts {
        all.merge(function, Groups::from_result(part), max_groups)?;
    }
    let rows_scanned = all.rows_scanned;
    Ok(AggregateResult {
        groups: all.top(top_k),
        rows_scanned,
    })
}

/// A validated scan.
struct PreparedScan {
    def: Arc<KeyspaceDef>,
    range: ResolvedRange,
    filters: Filters,
    partitions: Vec<PartitionId>,
    limit: usize,
    max_bytes: usize,
    reverse: bool,
}

impl PreparedScan {
    fn run(&self, view: &ReadView<'_>, now: i64) -> Result<RawScan, NodeError> {
        let plan = ScanPlan {
            keyspace: self.def.id,
            schema: &self.def.schema,
            range: &self.range,
            filters: &self.filters,
            limit: self.limit,
            // Each partition gets its share of the request's budget.
            max_bytes: self.max_bytes / self.partitions.len().max(1),
            reverse: self.reverse,
            now_micros: now,
        };
        let parts = self
            .partitions
            .iter()
            .map(|p| scan_partition(view, &plan, *p))
            .collect::<Result<Vec<_>, _>>()?;
        let (rows, more) = merge(parts, self.limit, self.reverse);
        Ok(RawScan {
            def: self.def.clone(),
            rows,
            more,
        })
    }
}

/// Full keys of one keyspace, encoded, each with its partition, in one buffer.
#[derive(Clone, Debug, Default)]
pub struct EncodedKeys {
    bytes: Vec<u8>,
    /// Per key, its partition and where it ends in `bytes`.
    ends: Vec<(PartitionId, usize)>,
}

impl EncodedKeys {
    /// Room for `keys` keys.
    pub fn with_capacity(keys: usize) -> Self {
        EncodedKeys {
            bytes: Vec::with_capacity(keys * 32),
            ends: Vec::with_capacity(keys),
        }
    }

    /// Appends the key of `values` (the schema's elements, all of them), locating its
    /// partition. On error (`KeyspaceSchema::encode_key`'s) nothing is appended.
    pub fn push<'v>(
        &mut self,
        schema: &KeyspaceSchema,
        partitioner: &Partitioner,
        values: impl ExactSizeIterator<Item = ElementRef<'v>> + Clone,
    ) -> Result<(), TypesError> {
        let start = self.bytes.len();
        let partition_key_len = schema.encode_key_into(&mut self.bytes, values)?;
        let p = partitioner.partition_of(&self.bytes[start..start + partition_key_len]);
        self.ends.push((p, self.bytes.len()));
        Ok(())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The keys in order, with their partitions.
    pub fn iter(&self) -> impl Iterator<Item = (PartitionId, &[u8])> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|(_, end)| *end));
        self.ends
            .iter()
            .zip(starts)
            .map(|((p, end), start)| (*p, &self.bytes[start..*end]))
    }
}

/// The values a `MultiGet` read, one per key in request order, in one buffer.
pub struct MultiGetValues {
    stored: Values,
    format: ValueFormat,
    /// The read's clock: values that expired by then read as absent.
    now: i64,
}

impl MultiGetValues {
    /// Number of keys read.
    pub fn len(&self) -> usize {
        self.stored.len()
    }

    /// Whether no keys were read.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }

    /// The `i`th key's value; `None` when it has none or it expired.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.stored.get(i).and_then(|s| value::live(s, self.now))
    }

    /// How the keyspace stores values.
    pub fn format(&self) -> ValueFormat {
        self.format
    }
}
