//! The transaction calls of [`Client`]: run a registered procedure, list procedures.

use crate::{Client, ClientError};
use notadb_proto::{tuple_to_proto, v1};
use notadb_types::Element;

/// A declared key of a transaction.
pub fn txn_key(keyspace: &str, key: &[Element], access: v1::Access) -> v1::TxnKey {
    v1::TxnKey {
        keyspace: keyspace.into(),
        key: Some(tuple_to_proto(key)),
        access: access as i32,
    }
}

impl Client {
    /// Runs a transaction and returns its outcome once every participant has executed it.
    pub async fn transact(
        &self,
        request: v1::TransactRequest,
    ) -> Result<v1::TransactResponse, ClientError> {
        Ok(self
            .txn
            .clone()
            .transact(self.request(request))
            .await?
            .into_inner())
    }

    /// The procedures the node has registered.
    pub async fn list_procedures(&self) -> Result<Vec<String>, ClientError> {
        Ok(self
            .txn
            .clone()
            .list_procedures(self.request(v1::ListProceduresRequest {}))
            .await?
            .into_inner()
            .names)
    }
}
