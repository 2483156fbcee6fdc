use crate::layout;
use notadb_types::{KeyspaceId, PartitionId, Seq};
use rocksdb::{ColumnFamily, WriteBatch};

/// Mutations that commit atomically: data of any partitions, their applied positions, meta.
/// Built by the caller with the handles `RocksStorage::batch` gives it.
pub struct StorageBatch<'a> {
    pub(crate) inner: WriteBatch,
    pub(crate) data: &'a ColumnFamily,
    pub(crate) meta: &'a ColumnFamily,
    /// Whether the storage has a point cache, which `touched` and `ranged` keep current.
    pub(crate) track: bool,
    /// Data keys put or deleted.
    pub(crate) touched: Vec<Vec<u8>>,
    /// Whether a range of data keys is deleted.
    pub(crate) ranged: bool,
}

impl StorageBatch<'_> {
    /// Stores `stored` (see `value::encode`) under a key of a keyspace in a partition.
    pub fn put(&mut self, p: PartitionId, ks: KeyspaceId, encoded: &[u8], stored: &[u8]) {
        let key = layout::data_key(p, ks, encoded);
        self.inner.put_cf(self.data, &key, stored);
        self.touch(key);
    }

    fn touch(&mut self, key: Vec<u8>) {
        if self.track {
            self.touched.push(key);
        }
    }

    /// Deletes one key.
    pub fn delete(&mut self, p: PartitionId, ks: KeyspaceId, encoded: &[u8]) {
        let key = layout::data_key(p, ks, encoded);
        self.inner.delete_cf(self.data, &key);
        self.touch(key);
    }

    /// Deletes the encoded keys in `[start, end)` of a keyspace in a partition; an empty `end`
    /// runs to the end of the keyspace.
    pub fn delete_range(&mut self, p: PartitionId, ks: KeyspaceId, start: &[u8], end: &[u8]) {
        let end = if end.is_empty() {
            layout::keyspace_range(p, ks).1
        } else {
            layout::data_key(p, ks, end)
        };
        self.inner
            .delete_range_cf(self.data, layout::data_key(p, ks, start), end);
        self.ranged = true;
    }

    /// Deletes all of a keyspace's data in a partition and marks it dropped there.
    pub fn drop_keyspace(&mut self, p: PartitionId, ks: KeyspaceId) {
        let (start, end) = layout::keyspace_range(p, ks);
        self.inner.delete_range_cf(self.data, start, end);
        self.ranged = true;
        self.inner.put_cf(self.meta, layout::dropped_key(p, ks), []);
    }

    /// Records the partition's applied position, atomically with the rest of the batch.
    pub fn set_applied(&mut self, p: PartitionId, seq: Seq) {
        self.inner
            .put_cf(self.meta, layout::applied_key(p), seq.0.to_be_bytes());
    }

    /// Writes a metadata entry.
    pub fn put_meta(&mut self, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.meta, key, value);
    }

    /// Deletes a metadata entry.
    pub fn delete_meta(&mut self, key: &[u8]) {
        self.inner.delete_cf(self.meta, key);
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}
