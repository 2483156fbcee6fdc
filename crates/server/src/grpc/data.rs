use crate::convert;
use crate::encode;
use crate::frame::multi_get;
use crate::route::{Route, Router};
use crate::status::{convert_status, invalid_argument, to_status};
use futures::future::try_join_all;
use notadb_node::{
    merge_aggregates, merge_scans, Consistency, MultiGetValues, Mutation, Node, NodeError,
};
use notadb_proto::v1::data_client::DataClient;
use notadb_proto::v1::data_server::Data;
use notadb_proto::v1::*;
use notadb_proto::{element_from_proto, element_to_proto, token_to_proto, tuple_from_proto};
use notadb_types::GroupId;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A scan's answer: rows read here, as stored, or a message from other shard groups.
pub(crate) enum ScanAnswer {
    Here(notadb_node::RawScan),
    Message(ScanResponse),
}

/// The `Data` service.
pub struct DataService {
    node: Node,
    router: Arc<Router>,
}

impl DataService {
    /// Serves `node`, forwarding through `router`.
    pub fn new(node: Node, router: Arc<Router>) -> DataService {
        DataService { node, router }
    }

    /// A scan, answered here (rows as stored, for the caller to encode) or by other shard
    /// groups (their answer, or every group's merged).
    pub(crate) async fn scan_answer(
        &self,
        request: Request<ScanRequest>,
    ) -> Result<ScanAnswer, Status> {
        observe!("Scan", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let scan = convert::scan(r)?;
            let route = self.router.route(request.metadata(), || {
                self.node.partition_of_range(&scan.keyspace, &scan.range)
            })?;
            let call = |mut c: DataClient<Channel>, req| async move { c.scan(req).await };
            let merged = match route {
                Route::Here => {
                    let raw = self.node.scan_raw(scan, &consistency).await;
                    return raw.map(ScanAnswer::Here).map_err(to_status);
                }
                Route::Group(f, group, p) => {
                    let forwarded = f.forward(group, Some(p), &consistency, r.clone(), call);
                    return Ok(ScanAnswer::Message(forwarded.await?));
                }
                Route::Everywhere(f, others) => {
                    let def = self
                        .node
                        .describe_keyspace(&scan.keyspace)
                        .map_err(to_status)?
                        .def;
                    let limit = match scan.limit {
                        0 => self.node.config().limits.default_scan_limit,
                        n => n,
                    };
                    let reverse = scan.reverse;
                    let (mine, theirs) = futures::future::try_join(
                        async { self.node.scan(scan, &consistency).await.map_err(to_status) },
                        try_join_all(
                            others
                                .into_iter()
                                .map(|g| f.forward(g, None, &consistency, r.clone(), call)),
                        ),
                    )
                    .await?;
                    let mut parts = vec![mine];
                    for part in theirs {
                        parts.push(scan_from_proto(part, def.schema.value_format)?);
                    }
                    merge_scans(&def.schema, parts, limit, reverse).map_err(to_status)?
                }
            };
            Ok(ScanAnswer::Message(encode::scan_result_message(merged)))
        })
        .await
    }

    /// A frame `MultiGet` (its message's bytes) answered straight from the read's buffer, or
    /// `None` when the request is not one this path serves (see `frame::multi_get`): then
    /// the gRPC method must answer it.
    pub(crate) fn multi_get_direct<'s>(
        &'s self,
        metadata: &MetadataMap,
        body: &[u8],
    ) -> Option<impl Future<Output = Result<MultiGetValues, Status>> + 's> {
        let parsed = multi_get::parse(&self.node, body)?;
        if self.router.scattering(metadata).is_some()
            && !parsed.keys.iter().all(|(p, _)| self.node.owns(p))
        {
            return None;
        }
        let consistency = convert::consistency(&parsed.tokens, metadata);
        Some(observe!("MultiGet", async move {
            // In the gRPC method's order, so errors are the same.
            self.node
                .check_multi_get_keys(parsed.keys.len())
                .map_err(to_status)?;
            let consistency = consistency?;
            self.node
                .multi_get_encoded(parsed.def, parsed.keys, &consistency)
                .await
                .map_err(to_status)
        }))
    }

    /// The values of `keys`, all of them on this node.
    async fn local_multi_get(
        &self,
        keyspace: &str,
        keys: &[Vec<notadb_types::Element>],
        consistency: &Consistency,
    ) -> Result<Vec<GetResponse>, Status> {
        let (format, values) = self
            .node
            .multi_get(keyspace, keys, consistency)
            .await
            .map_err(to_status)?;
        Ok(values
            .into_iter()
            .map(|v| GetResponse {
                found: v.is_some(),
                value: v.map(|v| convert::value_to_proto(format, v)),
            })
            .collect())
    }

    /// Appends the mutations; `batch` is a client's `Write` (errors name `mutations[i]`).
    async fn write(
        &self,
        mutations: Vec<Mutation>,
        batch: bool,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Response<WriteResponse>, Status> {
        let write = async {
            if batch {
                self.node.write_batch(mutations).await
            } else {
                self.node.write(mutations).await
            }
        };
        // Answer DEADLINE_EXCEEDED just before the transport's own timeout would cancel the
        // call, so clients see the retryable code for a write the log did not acknowledge in
        // time (it may still be appended).
        let token = match convert::deadline(metadata) {
            None => write.await,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let margin = (left / 20).min(std::time::Duration::from_millis(50));
                match tokio::time::timeout(left - margin, write).await {
                    Ok(token) => token,
                    Err(_) => {
                        return Err(to_status(NodeError::DeadlineExceeded(
                            "the log did not acknowledge the write before the deadline; it may still be applied"
                                .into(),
                        )))
                    }
                }
            }
        };
        Ok(Response::new(WriteResponse {
            token: Some(token_to_proto(token.map_err(to_status)?)),
        }))
    }
}

#[tonic::async_trait]
impl Data for DataService {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<WriteResponse>, Status> {
        observe!("Put", async {
            self.write(
                vec![convert::put(request.get_ref(), "")?],
                false,
                request.metadata(),
            )
            .await
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        observe!("Delete", async {
            self.write(
                vec![convert::delete(request.get_ref(), "")?],
                false,
                request.metadata(),
            )
            .await
        })
        .await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        observe!("DeleteRange", async {
            self.write(
                vec![convert::delete_range(request.get_ref(), "")?],
                false,
                request.metadata(),
            )
            .await
        })
        .await
    }

    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        observe!("Write", async {
            self.write(
                convert::mutations(request.get_ref())?,
                true,
                request.metadata(),
            )
            .await
        })
        .await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        observe!("Get", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let key = convert::key(r.key.as_ref(), "key")?;
            let route = self.router.route(request.metadata(), || {
                self.node
                    .partition_of_key(&r.keyspace, &key, "key")
                    .map(Some)
            })?;
            if let Route::Group(f, group, p) = route {
                let forwarded = f.forward(
                    group,
                    Some(p),
                    &consistency,
                    r.clone(),
                    |mut c, req| async move { c.get(req).await },
                );
                return Ok(Response::new(forwarded.await?));
            }
            let (format, value) = self
                .node
                .get(&r.keyspace, &key, &consistency)
                .await
                .map_err(to_status)?;
            Ok(Response::new(GetResponse {
                found: value.is_some(),
                value: value.map(|v| convert::value_to_proto(format, v)),
            }))
        })
        .await
    }

    async fn multi_get(
        &self,
        request: Request<MultiGetRequest>,
    ) -> Result<Response<MultiGetResponse>, Status> {
        observe!("MultiGet", async {
            let r = request.get_ref();
            // The whole request, before any key is decoded or a shard group sees its share.
            self.node
                .check_multi_get_keys(r.keys.len())
                .map_err(to_status)?;
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let keys = r
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| tuple_from_proto(Some(k), format_args!("keys[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map_err(convert_status)?;
            let Some(forwarder) = self.router.scattering(request.metadata()) else {
                let results = self
                    .local_multi_get(&r.keyspace, &keys, &consistency)
                    .await?;
                return Ok(Response::new(MultiGetResponse { results }));
            };
            // Keys by the shard group that answers them (None: this node), in request order.
            let mut by_group: BTreeMap<Option<GroupId>, Vec<usize>> = BTreeMap::new();
            for (i, key) in keys.iter().enumerate() {
                let p = self
                    .node
                    .partition_of_key(&r.keyspace, key, &format!("keys[{i}]"))
                    .map_err(to_status)?;
                by_group
                    .entry(forwarder.remote_group(p))
                    .or_default()
                    .push(i);
            }
            let calls = by_group.into_iter().map(|(group, indexes)| {
                let consistency = &consistency;
                let keys = &keys;
                async move {
                    let answers = match group {
                        None => {
                            let mine: Vec<_> = indexes.iter().map(|&i| keys[i].clone()).collect();
                            self.local_multi_get(&r.keyspace, &mine, consistency)
                                .await?
                        }
                        Some(group) => {
                            let subset = MultiGetRequest {
                                keys: indexes.iter().map(|&i| r.keys[i].clone()).collect(),
                                ..r.clone()
                            };
                            forwarder
                                .forward(
                                    group,
                                    None,
                                    consistency,
                                    subset,
                                    |mut c, req| async move { c.multi_get(req).await },
                                )
                                .await?
                                .results
                        }
                    };
                    Ok::<_, Status>((indexes, answers))
                }
            });
            let mut results = vec![GetResponse::default(); keys.len()];
            for (indexes, answers) in try_join_all(calls).await? {
                for (i, answer) in indexes.into_iter().zip(answers) {
                    results[i] = answer;
                }
            }
            Ok(Response::new(MultiGetResponse { results }))
        })
        .await
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        match self.scan_answer(request).await? {
            ScanAnswer::Here(raw) => {
                Ok(Response::new(encode::scan_message(raw).map_err(to_status)?))
            }
            ScanAnswer::Message(message) => Ok(Response::new(message)),
        }
    }

    async fn aggregate(
        &self,
        request: Request<AggregateRequest>,
    ) -> Result<Response<AggregateResponse>, Status> {
        observe!("Aggregate", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let mut aggregate = convert::aggregate(r)?;
            let route = self.router.route(request.metadata(), || {
                self.node
                    .partition_of_range(&aggregate.keyspace, &aggregate.range)
            })?;
            let call = |mut c: DataClient<Channel>, req| async move { c.aggregate(req).await };
            let result = match route {
                Route::Here => self
                    .node
                    .aggregate(aggregate, &consistency)
                    .await
                    .map_err(to_status)?,
                Route::Group(f, group, p) => {
                    let forwarded = f.forward(group, Some(p), &consistency, r.clone(), call);
                    return Ok(Response::new(forwarded.await?));
                }
                Route::Everywhere(f, others) => {
                    // Every group returns all of its groups; the top-k is taken after merging.
                    let (function, top_k) = (aggregate.function, aggregate.top_k);
                    aggregate.top_k = 0;
                    let all = AggregateRequest {
                        top_k: 0,
                        ..r.clone()
                    };
                    let (mine, theirs) = futures::future::try_join(
                        async {
                            self.node
                                .aggregate(aggregate, &consistency)
                                .await
                                .map_err(to_status)
                        },
                        try_join_all(
                            others
                                .into_iter()
                                .map(|g| f.forward(g, None, &consistency, all.clone(), call)),
                        ),
                    )
                    .await?;
                    let mut parts = vec![mine];
                    for part in theirs {
                        parts.push(aggregate_from_proto(part)?);
                    }
                    let max_groups = self.node.config().limits.max_aggregate_groups;
                    merge_aggregates(function, parts, top_k, max_groups).map_err(to_status)?
                }
            };
            let groups = result
                .groups
                .into_iter()
                .map(|g| Group {
                    key: g.key.as_ref().map(element_to_proto),
                    value: g.value,
                    rows: g.rows,
                })
                .collect();
            Ok(Response::new(AggregateResponse {
                groups,
                rows_scanned: result.rows_scanned,
            }))
        })
        .await
    }

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        observe!("Query", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let partition_key = convert::key(r.partition_key.as_ref(), "partition_key")?;
            let route = self.router.route(request.metadata(), || {
                self.node
                    .partition_of_prefix(&r.keyspace, &partition_key)
                    .map(Some)
            })?;
            if let Route::Group(f, group, p) = route {
                let forwarded = f.forward(
                    group,
                    Some(p),
                    &consistency,
                    r.clone(),
                    |mut c, req| async move { c.query(req).await },
                );
                return Ok(Response::new(forwarded.await?));
            }
            let args = if r.args_json.trim().is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&r.args_json)
                    .map_err(|e| invalid_argument(format!("args_json: expected JSON text: {e}")))?
            };
            let result_json = self
                .node
                .query_json(&r.name, &r.keyspace, partition_key, args, &consistency)
                .await
                .map_err(to_status)?;
            Ok(Response::new(QueryResponse { result_json }))
        })
        .await
    }
}

/// Another group's scan answer as the node's result.
fn scan_from_proto(
    part: ScanResponse,
    format: notadb_types::ValueFormat,
) -> Result<notadb_node::ScanResult, Status> {
    let rows = part
        .rows
        .into_iter()
        .map(|row| {
            let key = tuple_from_proto(row.key.as_ref(), "rows.key").map_err(convert_status)?;
            let value = match row.value.and_then(|v| v.kind) {
                Some(value::Kind::Json(s)) => s.into_bytes(),
                Some(value::Kind::Bytes(b)) => b,
                None => Vec::new(),
            };
            Ok(notadb_node::Row { key, value })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(notadb_node::ScanResult {
        format,
        rows,
        more: part.more,
    })
}

/// Another group's aggregate answer as the node's result.
fn aggregate_from_proto(part: AggregateResponse) -> Result<notadb_node::AggregateResult, Status> {
    let groups = part
        .groups
        .into_iter()
        .map(|g| {
            let key = g
                .key
                .as_ref()
                .map(|k| element_from_proto(k, "groups.key"))
                .transpose()
                .map_err(convert_status)?;
            Ok(notadb_node::Group {
                key,
                value: g.value,
                rows: g.rows,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(notadb_node::AggregateResult {
        groups,
        rows_scanned: part.rows_scanned,
    })
}
