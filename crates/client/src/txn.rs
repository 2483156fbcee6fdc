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

    /// Runs a dependent transaction (OLLP): `plan` performs the reconnaissance (reads through
    /// this client, typically) and returns the request, with the values it saw as `recon`.
    /// When a recon value changed before the transaction executed, the outcome is
    /// `restart_key` and nothing was written: `plan` runs again, at most `attempts` times in
    /// all, then [`ClientError::Restarted`]. Other outcomes and errors return at once.
    pub async fn transact_dependent<F, Fut>(
        &self,
        attempts: usize,
        mut plan: F,
    ) -> Result<v1::TransactResponse, ClientError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<v1::TransactRequest, ClientError>>,
    {
        let mut key = 0;
        for _ in 0..attempts.max(1) {
            let request = plan(self.clone()).await?;
            let response = self.transact(request).await?;
            match response.outcome {
                Some(v1::transact_response::Outcome::RestartKey(k)) => key = k,
                _ => return Ok(response),
            }
        }
        Err(ClientError::Restarted {
            attempts: attempts.max(1),
            key,
        })
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
