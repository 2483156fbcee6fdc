use super::observe;
use crate::convert;
use crate::status::{convert_status, to_status};
use notadb_node::{Mutation, Node};
use notadb_proto::v1::data_server::Data;
use notadb_proto::v1::*;
use notadb_proto::{element_to_proto, token_to_proto, tuple_from_proto, tuple_to_proto};
use tonic::{Request, Response, Status};

/// The `Data` service.
pub struct DataService {
    node: Node,
}

impl DataService {
    /// Serves `node`.
    pub fn new(node: Node) -> DataService {
        DataService { node }
    }

    /// Appends the mutations; `batch` is a client's `Write` (errors name `mutations[i]`).
    async fn write(
        &self,
        mutations: Vec<Mutation>,
        batch: bool,
    ) -> Result<Response<WriteResponse>, Status> {
        let token = if batch {
            self.node.write_batch(mutations).await
        } else {
            self.node.write(mutations).await
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
            self.write(vec![convert::put(request.get_ref(), "")?], false)
                .await
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        observe("Delete", async {
            self.write(vec![convert::delete(request.get_ref(), "")?], false)
                .await
        })
        .await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        observe("DeleteRange", async {
            self.write(vec![convert::delete_range(request.get_ref(), "")?], false)
                .await
        })
        .await
    }

    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        observe("Write", async {
            self.write(convert::mutations(request.get_ref())?, true)
                .await
        })
        .await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        observe("Get", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let key = convert::key(r.key.as_ref(), "key")?;
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
            let (format, values) = self
                .node
                .multi_get(&r.keyspace, &keys, &consistency)
                .await
                .map_err(to_status)?;
            let results = values
                .into_iter()
                .map(|v| GetResponse {
                    found: v.is_some(),
                    value: v.map(|v| convert::value_to_proto(format, v)),
                })
                .collect();
            Ok(Response::new(MultiGetResponse { results }))
        })
        .await
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        observe("Scan", async {
            let r = request.get_ref();
            let consistency = convert::consistency(&r.tokens, request.metadata())?;
            let scan = convert::scan(r)?;
            let result = self
                .node
                .scan(scan, &consistency)
                .await
                .map_err(to_status)?;
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
            let result = self
                .node
                .aggregate(aggregate, &consistency)
                .await
                .map_err(to_status)?;
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
