use crate::{layout, StorageError};
use notadb_types::{KeyspaceId, PartitionId};
use rocksdb::{ColumnFamily, DBPinnableSlice, DBRawIterator, ReadOptions, Snapshot, DB};

/// A consistent, read-only view of the whole instance at one instant (a RocksDB snapshot).
/// Every read a query makes goes through one view, so it sees one state.
pub struct ReadView<'a> {
    pub(crate) db: &'a DB,
    pub(crate) snapshot: Snapshot<'a>,
    pub(crate) data: &'a ColumnFamily,
}

impl<'a> ReadView<'a> {
    /// The stored value of one key (header included, see `value`).
    pub fn get(
        &self,
        p: PartitionId,
        ks: KeyspaceId,
        encoded: &[u8],
    ) -> Result<Option<DBPinnableSlice<'a>>, StorageError> {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        Ok(self
            .db
            .get_pinned_cf_opt(self.data, layout::data_key(p, ks, encoded), &opts)?)
    }

    /// A cursor over the encoded keys (it borrows the view: the snapshot outlives it) in `[lower, upper)` of a keyspace in a partition; `upper`
    /// `None` runs to the end of the keyspace.
    pub fn cursor<'v>(
        &'v self,
        p: PartitionId,
        ks: KeyspaceId,
        lower: &[u8],
        upper: Option<&[u8]>,
    ) -> Cursor<'v> {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        opts.set_iterate_lower_bound(layout::data_key(p, ks, lower));
        opts.set_iterate_upper_bound(match upper {
            Some(upper) => layout::data_key(p, ks, upper),
            None => layout::keyspace_range(p, ks).1,
        });
        Cursor {
            inner: self.db.raw_iterator_cf_opt(self.data, opts),
        }
    }
}

/// A raw cursor over one keyspace range of one partition, yielding encoded tuples and stored
/// values without copying them.
pub struct Cursor<'a> {
    inner: DBRawIterator<'a>,
}

impl Cursor<'_> {
    /// Positions at the first entry of the range.
    pub fn seek_to_first(&mut self) {
        self.inner.seek_to_first();
    }

    /// Positions at the last entry of the range.
    pub fn seek_to_last(&mut self) {
        self.inner.seek_to_last();
    }

    /// Moves forward.
    pub fn next(&mut self) {
        self.inner.next();
    }

    /// Moves backward.
    pub fn prev(&mut self) {
        self.inner.prev();
    }

    /// The current entry: encoded tuple and stored value; `None` past either end.
    pub fn entry(&self) -> Option<(&[u8], &[u8])> {
        let (key, value) = self.inner.item()?;
        Some((layout::tuple_of(key), value))
    }

    /// An error the cursor met, if iteration stopped because of one.
    pub fn status(&self) -> Result<(), StorageError> {
        Ok(self.inner.status()?)
    }
}
