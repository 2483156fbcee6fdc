use crate::status::{convert_status, invalid_argument, to_status};
use notadb_node::{KeyspaceInfo as NodeKeyspaceInfo, Node};
use notadb_proto::v1::keyspaces_server::Keyspaces;
use notadb_proto::v1::*;
use notadb_proto::{schema_from_proto, schema_to_proto};
use tonic::{Request, Response, Status};

/// The `Keyspaces` admin service.
pub struct KeyspacesService {
    node: Node,
}

impl KeyspacesService {
    /// Serves `node`.
    pub fn new(node: Node) -> KeyspacesService {
        KeyspacesService { node }
    }
}

fn info(k: NodeKeyspaceInfo) -> KeyspaceInfo {
    KeyspaceInfo {
        schema: Some(schema_to_proto(&k.def.schema)),
        id: k.def.id.0,
        approximate_bytes: k.approximate_bytes,
    }
}

#[tonic::async_trait]
impl Keyspaces for KeyspacesService {
    async fn create_keyspace(
        &self,
        request: Request<CreateKeyspaceRequest>,
    ) -> Result<Response<CreateKeyspaceResponse>, Status> {
        observe!("CreateKeyspace", async {
            let r = request.into_inner();
            let schema = r
                .schema
                .as_ref()
                .ok_or_else(|| invalid_argument("schema: required"))?;
            let schema = schema_from_proto(schema).map_err(convert_status)?;
            let (k, _) = self
                .node
                .create_keyspace(schema, r.if_not_exists)
                .await
                .map_err(to_status)?;
            Ok(Response::new(CreateKeyspaceResponse {
                keyspace: Some(info(k)),
            }))
        })
        .await
    }

    async fn list_keyspaces(
        &self,
        _request: Request<ListKeyspacesRequest>,
    ) -> Result<Response<ListKeyspacesResponse>, Status> {
        observe!("ListKeyspaces", async {
            let keyspaces = self.node.list_keyspaces().into_iter().map(info).collect();
            Ok(Response::new(ListKeyspacesResponse { keyspaces }))
        })
        .await
    }

    async fn describe_keyspace(
        &self,
        request: Request<DescribeKeyspaceRequest>,
    ) -> Result<Response<DescribeKeyspaceResponse>, Status> {
        observe!("DescribeKeyspace", async {
            let k = self
                .node
                .describe_keyspace(&request.get_ref().name)
                .map_err(to_status)?;
            Ok(Response::new(DescribeKeyspaceResponse {
                keyspace: Some(info(k)),
            }))
        })
        .await
    }

    async fn drop_keyspace(
        &self,
        request: Request<DropKeyspaceRequest>,
    ) -> Result<Response<DropKeyspaceResponse>, Status> {
        observe!("DropKeyspace", async {
            self.node
                .drop_keyspace(&request.get_ref().name)
                .await
                .map_err(to_status)?;
            Ok(Response::new(DropKeyspaceResponse {}))
        })
        .await
    }
}
