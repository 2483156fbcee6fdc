use super::observe;
use crate::convert;
use crate::route::Router;
use crate::status::{convert_status, to_status};
use futures::future::try_join_all;
use notadb_node::{merge_aggregates, merge_scans, Mutation, Node};
use notadb_proto::v1::data_server::Data;
use notadb_proto::v1::*;
use notadb_proto::{
    element_from_proto, element_to_proto, token_to_proto, tuple_from_proto, tuple_to_proto,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

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

    async fn local_scan(
        &self,
        r: &ScanRequest,
        consistency: &notadb_node::Consistency,
    ) -> Result<notadb_node::ScanResult, Status> {
        self.node
            .scan(convert::scan(r)?, consistency)
            .await
            .map_err(to_status)
    }

    async fn local_aggregate(
        &self,
        r: &AggregateRequest,
        consistency: &notadb_node::Consistency,
    ) -> Result<notadb_node::AggregateResult, Status> {
        self.node
            .aggregate(convert::aggregate(r)?, consistency)
            .await
            .map_err(to_status)
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
                        return Err(Status::deadline_exceeded(
                            "the log did not acknowledge the write before the deadline; it may still be applied",
                        ))
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
        observe("Put", async {
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
        observe("Delete", async {
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
        observe("DeleteRange", async {
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
        observe("Write", async {
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
        observe("Get", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let key = convert::key(r.key.as_ref(), "key")?;
            let p = self
                .node
                .partition_of_key(&r.keyspace, &key, "key")
                .map_err(to_status)?;
            if let Some(group) = self.router.remote_group(p, request.metadata()) {
                let forwarded = self.router.forward(
                    group,
                    Some(p),
                    &consistency.tokens,
                    consistency.deadline,
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
        observe("MultiGet", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let keys = r
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| tuple_from_proto(Some(k), &format!("keys[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map_err(convert_status)?;
            // Keys by the shard group that answers them (None: this node), in request order.
            let mut by_group: BTreeMap<Option<u16>, Vec<usize>> = BTreeMap::new();
            for (i, key) in keys.iter().enumerate() {
                let p = self
                    .node
                    .partition_of_key(&r.keyspace, key, &format!("keys[{i}]"))
                    .map_err(to_status)?;
                by_group
                    .entry(self.router.remote_group(p, request.metadata()))
                    .or_default()
                    .push(i);
            }
            let mut results = vec![GetResponse::default(); keys.len()];
            let calls = by_group.into_iter().map(|(group, indexes)| {
                let consistency = &consistency;
                let keys = &keys;
                async move {
                    let answers = match group {
                        None => {
                            let mine: Vec<_> = indexes.iter().map(|&i| keys[i].clone()).collect();
                            let (format, values) = self
                                .node
                                .multi_get(&r.keyspace, &mine, consistency)
                                .await
                                .map_err(to_status)?;
                            values
                                .into_iter()
                                .map(|v| GetResponse {
                                    found: v.is_some(),
                                    value: v.map(|v| convert::value_to_proto(format, v)),
                                })
                                .collect()
                        }
                        Some(group) => {
                            let subset = MultiGetRequest {
                                keys: indexes.iter().map(|&i| r.keys[i].clone()).collect(),
                                ..r.clone()
                            };
                            self.router
                                .forward(
                                    group,
                                    None,
                                    &consistency.tokens,
                                    consistency.deadline,
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
        observe("Scan", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let scan = convert::scan(r)?;
            let one = self
                .node
                .partition_of_range(&scan.keyspace, &scan.range)
                .map_err(to_status)?;
            let forward = |group: u16, p: Option<notadb_types::PartitionId>| {
                self.router.forward(
                    group,
                    p,
                    &consistency.tokens,
                    consistency.deadline,
                    r.clone(),
                    |mut c, req| async move { c.scan(req).await },
                )
            };
            let result = match one {
                Some(p) => match self.router.remote_group(p, request.metadata()) {
                    Some(group) => return Ok(Response::new(forward(group, Some(p)).await?)),
                    None => self.local_scan(r, &consistency).await?,
                },
                None => {
                    let others = self.router.other_groups(request.metadata());
                    let (mine, theirs) = futures::future::try_join(
                        self.local_scan(r, &consistency),
                        try_join_all(others.into_iter().map(|g| forward(g, None))),
                    )
                    .await?;
                    if theirs.is_empty() {
                        mine
                    } else {
                        let def = self
                            .node
                            .describe_keyspace(&scan.keyspace)
                            .map_err(to_status)?
                            .def;
                        let mut parts = vec![mine];
                        for part in theirs {
                            parts.push(scan_from_proto(part, def.schema.value_format)?);
                        }
                        let limits = &self.node.config().limits;
                        let limit = if scan.limit == 0 {
                            limits.default_scan_limit
                        } else {
                            scan.limit
                        };
                        merge_scans(&def.schema, parts, limit, scan.reverse).map_err(to_status)?
                    }
                }
            };
            let format = result.format;
            let rows = result
                .rows
                .into_iter()
                .map(|row| Row {
                    key: Some(tuple_to_proto(&row.key)),
                    value: Some(convert::value_to_proto(format, row.value)),
                })
                .collect();
            Ok(Response::new(ScanResponse {
                rows,
                more: result.more,
            }))
        })
        .await
    }

    async fn aggregate(
        &self,
        request: Request<AggregateRequest>,
    ) -> Result<Response<AggregateResponse>, Status> {
        observe("Aggregate", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let aggregate = convert::aggregate(r)?;
            let one = self
                .node
                .partition_of_range(&aggregate.keyspace, &aggregate.range)
                .map_err(to_status)?;
            let forward =
                |group: u16, p: Option<notadb_types::PartitionId>, m: AggregateRequest| {
                    self.router.forward(
                        group,
                        p,
                        &consistency.tokens,
                        consistency.deadline,
                        m,
                        |mut c, req| async move { c.aggregate(req).await },
                    )
                };
            let others = match one {
                Some(p) => match self.router.remote_group(p, request.metadata()) {
                    Some(group) => {
                        return Ok(Response::new(forward(group, Some(p), r.clone()).await?))
                    }
                    None => Vec::new(),
                },
                None => self.router.other_groups(request.metadata()),
            };
            let result = if others.is_empty() {
                self.local_aggregate(r, &consistency).await?
            } else {
                // Every group returns all of its groups; the top-k is taken after merging.
                let all = AggregateRequest {
                    top_k: 0,
                    ..r.clone()
                };
                let (mine, theirs) = futures::future::try_join(
                    self.local_aggregate(&all, &consistency),
                    try_join_all(others.into_iter().map(|g| forward(g, None, all.clone()))),
                )
                .await?;
                let mut parts = vec![mine];
                for part in theirs {
                    parts.push(aggregate_from_proto(part)?);
                }
                merge_aggregates(
                    aggregate.function,
                    parts,
                    aggregate.top_k,
                    self.node.config().limits.max_aggregate_groups,
                )
                .map_err(to_status)?
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
        observe("Query", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let partition_key = convert::key(r.partition_key.as_ref(), "partition_key")?;
            let p = self
                .node
                .partition_of_prefix(&r.keyspace, &partition_key)
                .map_err(to_status)?;
            if let Some(group) = self.router.remote_group(p, request.metadata()) {
                let forwarded = self.router.forward(
                    group,
                    Some(p),
                    &consistency.tokens,
                    consistency.deadline,
                    r.clone(),
                    |mut c, req| async move { c.query(req).await },
                );
                return Ok(Response::new(forwarded.await?));
            }
            let args = if r.args_json.trim().is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&r.args_json).map_err(|e| {
                    Status::invalid_argument(format!("args_json: expected JSON text: {e}"))
                })?
            };
            let result = self
                .node
                .query(&r.name, &r.keyspace, partition_key, args, &consistency)
                .await
                .map_err(to_status)?;
            Ok(Response::new(QueryResponse {
                result_json: result.to_string(),
            }))
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
