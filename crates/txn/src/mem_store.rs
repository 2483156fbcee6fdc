//! [`MemStore`]: the in-memory [`TxnStore`], for simulations, tests and benchmarks.

use std::collections::BTreeMap;

use bytes::Bytes;
use notadb_types::Seq;

use crate::{StoreError, TxnKey, TxnStore, WriteOrigin};

/// A partition's data in a map. Writes apply at once; barriers are only recorded.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    /// The data.
    pub data: BTreeMap<TxnKey, Bytes>,
    /// The barrier entries run, in order.
    pub barriers: Vec<Seq>,
}

impl TxnStore for MemStore {
    fn get(&mut self, key: &TxnKey) -> Result<Option<Bytes>, StoreError> {
        Ok(self.data.get(key).cloned())
    }

    fn write(
        &mut self,
        _seq: Seq,
        writes: &[(TxnKey, Option<Bytes>)],
        _origin: WriteOrigin,
    ) -> Result<(), StoreError> {
        for (k, v) in writes {
            match v {
                Some(v) => self.data.insert(k.clone(), v.clone()),
                None => self.data.remove(k),
            };
        }
        Ok(())
    }

    fn barrier(&mut self, seq: Seq, _payload: &Bytes) -> Result<(), StoreError> {
        self.barriers.push(seq);
        Ok(())
    }
}
