//! The `Transactions` service: runs registered procedures as deterministic transactions.

use crate::status::{convert_status, invalid_argument, to_status};
use notadb_node::{Access, Node, Outcome, TxnKeyRequest, TxnRequest};
use notadb_proto::tuple_from_proto;
use notadb_proto::v1::transactions_server::Transactions;
use notadb_proto::v1::*;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long `Transact` waits for the answer when the request does not say.
pub const DEFAULT_TXN_TIMEOUT: Duration = Duration::from_secs(10);

/// The `Transactions` service.
pub struct TxnService {
    node: Node,
}

impl TxnService {
    pub fn new(node: Node) -> Self {
        TxnService { node }
    }
}

fn access_from_proto(access: i32, i: usize) -> Result<Access, Status> {
    match v1_access(access) {
        Some(notadb_proto::v1::Access::Read) => Ok(Access::Read),
        Some(notadb_proto::v1::Access::Write) => Ok(Access::Write),
        Some(notadb_proto::v1::Access::ReadWrite) => Ok(Access::ReadWrite),
        _ => Err(invalid_argument(format!(
            "keys[{i}].access: expected ACCESS_READ, ACCESS_WRITE or ACCESS_READ_WRITE, found {access}"
        ))),
    }
}

fn v1_access(access: i32) -> Option<notadb_proto::v1::Access> {
    notadb_proto::v1::Access::try_from(access).ok()
}

fn values(list: Vec<TxnKeyValue>) -> Vec<(usize, Option<Vec<u8>>)> {
    list.into_iter()
        .map(|v| (v.index as usize, v.value))
        .collect()
}

#[tonic::async_trait]
impl Transactions for TxnService {
    async fn transact(
        &self,
        request: Request<TransactRequest>,
    ) -> Result<Response<TransactResponse>, Status> {
        observe!("Transact", async {
            let r = request.into_inner();
            let mut keys = Vec::with_capacity(r.keys.len());
            for (i, k) in r.keys.iter().enumerate() {
                keys.push(TxnKeyRequest {
                    keyspace: k.keyspace.clone(),
                    key: tuple_from_proto(k.key.as_ref(), format_args!("keys[{i}].key"))
                        .map_err(convert_status)?,
                    access: access_from_proto(k.access, i)?,
                });
            }
            let timeout = match r.timeout_ms {
                0 => DEFAULT_TXN_TIMEOUT,
                ms => Duration::from_millis(u64::from(ms)),
            };
            let result = self
                .node
                .transact(
                    TxnRequest {
                        procedure: r.procedure,
                        args: r.args,
                        keys,
                        base: values(r.base),
                        recon: values(r.recon),
                        base_loader: (!r.base_loader.is_empty()).then_some(r.base_loader),
                    },
                    timeout,
                )
                .await
                .map_err(to_status)?;
            let outcome = match result.outcome {
                Outcome::Committed { output } => {
                    transact_response::Outcome::Committed(output.to_vec())
                }
                Outcome::Aborted { reason } => transact_response::Outcome::Aborted(reason),
                Outcome::Restart { .. } => transact_response::Outcome::RestartKey(
                    result.restart_key.unwrap_or_default() as u32,
                ),
            };
            Ok(Response::new(TransactResponse {
                txn_id: result.id.0.to_be_bytes().to_vec(),
                outcome: Some(outcome),
                participants: result.participants.iter().map(|p| u32::from(p.0)).collect(),
                tokens: result
                    .tokens
                    .iter()
                    .copied()
                    .map(notadb_proto::token_to_proto)
                    .collect(),
            }))
        })
        .await
    }

    async fn list_procedures(
        &self,
        _request: Request<ListProceduresRequest>,
    ) -> Result<Response<ListProceduresResponse>, Status> {
        observe!("ListProcedures", async {
            Ok(Response::new(ListProceduresResponse {
                names: self.node.procedure_names(),
            }))
        })
        .await
    }
}
