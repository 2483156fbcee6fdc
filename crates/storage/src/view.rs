use crate::point_cache::PointCache;
use crate::row_cache::{Cached, GroupRows, RowCache};
use crate::{layout, StorageError};
use notadb_types::{KeyspaceId, KeyspaceSchema, PartitionId};
use rocksdb::{
    ColumnFamily, DBPinnableSlice, DBRawIterator, ErrorKind, ReadOptions, ReadTier, Snapshot, DB,
};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Reads (gets and cursor steps) a memory-only view allows before it gives up: a read that
/// needs more is not short enough to run on an async worker.
pub const MEMORY_VIEW_BUDGET: u32 = 4_096;

/// A consistent, read-only view of the whole instance at one instant (a RocksDB snapshot).
/// Every read a query makes goes through one view, so it sees one state.
///
/// A *memory-only* view (`RocksStorage::memory_view`) never touches the disk and is short:
/// it reads only the memtables and the block cache, at most `MEMORY_VIEW_BUDGET` times. When
/// it would need more it fails the read with `StorageError::WouldBlock` and remembers that it
/// did (`would_block`), so its caller can run the whole read again on a blocking thread with
/// an ordinary view, whatever the code in between did with the error.
pub struct ReadView<'a> {
    pub(crate) db: &'a DB,
    /// The options of its gets (snapshot, and read tier when memory-only), made once; before
    /// `snapshot`, so it is dropped before the snapshot it points to.
    pub(crate) get_options: ReadOptions,
    pub(crate) snapshot: Snapshot<'a>,
    pub(crate) data: &'a ColumnFamily,
    /// `Some(reads left)` for a memory-only view.
    pub(crate) budget: Option<AtomicU32>,
    pub(crate) blocked: AtomicBool,
    /// The storage's point cache, and its epoch before the snapshot was taken.
    pub(crate) point: Option<&'a PointCache>,
    pub(crate) point_epoch: u64,
    /// The storage's row cache, and its epoch before the snapshot was taken.
    pub(crate) rows: Option<&'a RowCache>,
    pub(crate) row_epoch: u64,
}

impl<'a> ReadView<'a> {
    /// True when this memory-only view refused a read: the answer built from it is incomplete.
    pub fn would_block(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Read options over `snapshot`, memory-only when `memory_only`.
    pub(crate) fn options_for(snapshot: &Snapshot<'_>, memory_only: bool) -> ReadOptions {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(snapshot);
        if memory_only {
            opts.set_read_tier(ReadTier::BlockCache);
        }
        opts
    }

    fn options(&self) -> ReadOptions {
        Self::options_for(&self.snapshot, self.budget.is_some())
    }

    /// Spends `n` reads of a memory-only view's budget; false when they are not left.
    fn spend(&self, n: u32) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        let ok = budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok();
        if !ok {
            self.blocked.store(true, Ordering::Relaxed);
        }
        ok
    }

    /// Converts a RocksDB error, noting "not in memory" as a refusal.
    fn error(&self, e: rocksdb::Error) -> StorageError {
        if e.kind() == ErrorKind::Incomplete && self.budget.is_some() {
            self.blocked.store(true, Ordering::Relaxed);
            StorageError::WouldBlock
        } else {
            StorageError::Rocks(e)
        }
    }

    /// The stored value of one key (header included, see `value`).
    pub fn get(
        &self,
        p: PartitionId,
        ks: KeyspaceId,
        encoded: &[u8],
    ) -> Result<Option<DBPinnableSlice<'a>>, StorageError> {
        if !self.spend(1) {
            return Err(StorageError::WouldBlock);
        }
        self.lookup(&layout::data_key(p, ks, encoded))
    }

    /// One point lookup of a data key at the snapshot (the budget already spent).
    fn lookup(&self, key: &[u8]) -> Result<Option<DBPinnableSlice<'a>>, StorageError> {
        self.db
            .get_pinned_cf_opt(self.data, key, &self.get_options)
            .map_err(|e| self.error(e))
    }

    /// Appends the stored value of a data key to `out`, false when the key holds none: the
    /// point cache's entry if `cached` gives the cache (and the key's hash) and it holds
    /// one, else one lookup at the snapshot, which fills the cache.
    fn read_into(
        &self,
        key: &[u8],
        cached: Option<(&PointCache, u64)>,
        out: &mut Vec<u8>,
    ) -> Result<bool, StorageError> {
        if cached.is_some_and(|(cache, hash)| cache.get_into(hash, key, out)) {
            return Ok(true);
        }
        if !self.spend(1) {
            return Err(StorageError::WouldBlock);
        }
        let Some(stored) = self.lookup(key)? else {
            return Ok(false);
        };
        if let Some(cache) = self.point {
            cache.fill(key, &stored, self.point_epoch);
        }
        out.extend_from_slice(&stored);
        Ok(true)
    }

    /// The stored value of one key, for a view that reads nothing else: through the point
    /// cache, which answers with the key's newest committed value (never older than the
    /// snapshot, possibly newer: right for a view that reads one key; `multi_get` checks
    /// that its hits are its snapshot's).
    pub fn get_one(
        &self,
        p: PartitionId,
        ks: KeyspaceId,
        encoded: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let key = layout::data_key(p, ks, encoded);
        let cached = self.point.map(|cache| (cache, PointCache::hash(&key)));
        let mut value = Vec::new();
        let found = self.read_into(&key, cached, &mut value)?;
        Ok(found.then_some(value))
    }

    /// The stored values of many keys of one keyspace, in order, at the view's snapshot, in
    /// one buffer.
    ///
    /// The point cache answers the keys it holds when no write began since the view noted
    /// its epoch, checked before the first read and after the last (then the cache's newest
    /// values are the snapshot's); if one did, every key is read again at the snapshot. The
    /// others are one point lookup each.
    ///
    /// Not RocksDB's batched `MultiGet`: measured here, it read data blocks from the table
    /// files even under the memory-only read tier and left them out of the block cache, so
    /// every call paid `pread`s and checksums (2.4 µs per key against about 1 µs for gets).
    pub fn multi_get(
        &self,
        ks: KeyspaceId,
        keys: &[(PartitionId, &[u8])],
    ) -> Result<Values, StorageError> {
        let mut data_keys = DataKeys::with_capacity(keys.len(), self.point.is_some());
        for (p, k) in keys {
            data_keys.push(*p, ks, k);
        }
        let read_all = |cache: Option<&PointCache>| -> Result<Values, StorageError> {
            let mut out = Values::with_capacity(keys.len());
            for first in (0..keys.len()).step_by(PREFETCH_KEYS) {
                let group = first..(first + PREFETCH_KEYS).min(keys.len());
                if let Some(cache) = cache {
                    cache.prefetch(&data_keys.hashes[group.clone()]);
                }
                for i in group {
                    let start = out.bytes.len();
                    let cached = cache.map(|cache| (cache, data_keys.hashes[i]));
                    let found = self.read_into(data_keys.get(i), cached, &mut out.bytes)?;
                    out.spans.push(found.then_some((start, out.bytes.len())));
                }
            }
            Ok(out)
        };
        let cache = self.point.filter(|c| c.quiet_since(self.point_epoch));
        let out = read_all(cache)?;
        match cache {
            // A write began while the cache answered: its hits may be newer than the snapshot.
            Some(c) if !c.quiet_since(self.point_epoch) => read_all(None),
            _ => Ok(out),
        }
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
        let mut opts = self.options();
        opts.set_iterate_lower_bound(layout::data_key(p, ks, lower));
        opts.set_iterate_upper_bound(match upper {
            Some(upper) => layout::data_key(p, ks, upper),
            None => layout::keyspace_range(p, ks).1,
        });
        Cursor {
            source: Source::Rocks(self.db.raw_iterator_cf_opt(self.data, opts)),
            view: self,
            stopped: false,
        }
    }

    /// A cursor over `[lower, upper)` of a keyspace in a partition, as `cursor`, through the
    /// row cache when the range lies inside one partition key of `schema` (the keyspace's)
    /// and the storage has one: over that group's cached rows, read from this view into the
    /// cache when it holds none. With `Freshness::Newest` (for a view that reads nothing
    /// else) the cached rows are the group's newest committed ones, never older than the
    /// snapshot, possibly newer; with `Freshness::Snapshot` they are used only when they are
    /// the snapshot's. Otherwise, and for groups larger than the cache keeps, over RocksDB at
    /// the snapshot.
    pub fn group_cursor<'v>(
        &'v self,
        p: PartitionId,
        ks: KeyspaceId,
        schema: &KeyspaceSchema,
        (lower, upper): (&[u8], Option<&[u8]>),
        freshness: Freshness,
    ) -> Cursor<'v> {
        match self.group_rows(p, ks, schema, (lower, upper), freshness) {
            Some(rows) => {
                let (first, end) = rows.span(lower, upper);
                Cursor {
                    source: Source::Group {
                        first,
                        end,
                        at: end,
                        rows,
                    },
                    view: self,
                    stopped: false,
                }
            }
            None => self.cursor(p, ks, lower, upper),
        }
    }

    /// The rows of the group holding `[lower, upper)`, from the row cache or read from this
    /// view into it; `None` when there is no such group, it is too large, the cache would
    /// not keep rows read from this view (then a cursor reads only what it needs), or
    /// reading failed (the cursor over RocksDB that the caller makes instead meets the same
    /// failure and reports it).
    fn group_rows(
        &self,
        p: PartitionId,
        ks: KeyspaceId,
        schema: &KeyspaceSchema,
        (lower, upper): (&[u8], Option<&[u8]>),
        freshness: Freshness,
    ) -> Option<GroupRows> {
        let cache = self.rows?;
        let group = cache.group_of_range(p, ks, schema, lower, upper)?;
        let newest = freshness == Freshness::Newest;
        match cache.get(&group, self.row_epoch, newest) {
            Cached::Rows(rows) => return Some(rows),
            Cached::TooLarge | Cached::Missing { fillable: false } => return None,
            Cached::Missing { fillable: true } => {}
        }
        let tuple = layout::tuple_of(&group);
        let end = notadb_types::prefix_successor(tuple);
        let mut cursor = self.cursor(p, ks, tuple, end.as_deref());
        let mut rows = cache.builder();
        cursor.seek_to_first();
        while let Some((key, stored)) = cursor.entry() {
            if !rows.push(key, stored) {
                break;
            }
            cursor.next();
        }
        cursor.status().ok()?;
        cache.fill(&group, rows, self.row_epoch)
    }
}

/// Which rows a `ReadView::group_cursor` may answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The newest committed rows: for a view that reads nothing but this range.
    Newest,
    /// The view's snapshot's rows only: for a view that reads more than one thing.
    Snapshot,
}

/// Keys a `multi_get` looks up in the point cache together: it loads their slots, then
/// their entries, before it reads the first (`PointCache::prefetch`), so up to this many
/// cache misses are in flight at once, about what a core can keep going, and the lines
/// loaded stay in its first-level cache until they are read.
const PREFETCH_KEYS: usize = 16;

/// The data keys of a `multi_get`, in one buffer, with their point cache hashes when the
/// storage has a point cache (none otherwise).
struct DataKeys {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    hashes: Vec<u64>,
    hashed: bool,
}

impl DataKeys {
    fn with_capacity(keys: usize, hashed: bool) -> Self {
        DataKeys {
            bytes: Vec::with_capacity(keys * (layout::DATA_KEY_HEADER + 32)),
            ends: Vec::with_capacity(keys),
            hashes: Vec::with_capacity(if hashed { keys } else { 0 }),
            hashed,
        }
    }

    fn push(&mut self, p: PartitionId, ks: KeyspaceId, encoded: &[u8]) {
        let start = self.bytes.len();
        layout::append_data_key(&mut self.bytes, p, ks, encoded);
        if self.hashed {
            self.hashes.push(PointCache::hash(&self.bytes[start..]));
        }
        self.ends.push(self.bytes.len());
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).map_or(0, |prev| self.ends[prev]);
        &self.bytes[start..self.ends[i]]
    }
}

/// Values read by `ReadView::multi_get`, one per key in key order, some absent, in one
/// buffer (one allocation for a whole request, however many keys it reads).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Values {
    bytes: Vec<u8>,
    /// Per key, where its value lies in `bytes`; `None` when the key holds none.
    spans: Vec<Option<(usize, usize)>>,
}

impl Values {
    fn with_capacity(keys: usize) -> Self {
        Values {
            // Sized up front for values of about 100 bytes: growing by doubling cost a 100-key
            // MultiGet about 25% more CPU (glibc consolidated its fast bins).
            bytes: Vec::with_capacity(keys * 128),
            spans: Vec::with_capacity(keys),
        }
    }

    /// How many values (present or absent) it holds.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `i`th key's stored value (header included, see `value`).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.spans[i].map(|(start, end)| &self.bytes[start..end])
    }

    /// The values in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Option<&[u8]>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// A raw cursor over one keyspace range of one partition, yielding encoded tuples and stored
/// values without copying them.
pub struct Cursor<'a> {
    pub(crate) source: Source<'a>,
    view: &'a ReadView<'a>,
    /// A memory-only view's budget ran out: the cursor reads as ended, with an error.
    stopped: bool,
}

/// What a cursor steps through.
pub(crate) enum Source<'a> {
    /// RocksDB at the view's snapshot.
    Rocks(DBRawIterator<'a>),
    /// A cached group's rows `first..end`; `at == end` is past either end.
    Group {
        rows: GroupRows,
        first: usize,
        end: usize,
        at: usize,
    },
}

impl<'a> Cursor<'a> {
    /// Moves a RocksDB cursor with `rocks` (spending a read of a memory-only view's budget),
    /// a group's with `group` (from memory, no budget).
    fn step<'c>(
        &'c mut self,
        rocks: impl FnOnce(&'c mut DBRawIterator<'a>),
        group: impl FnOnce(usize, usize, usize) -> usize,
    ) {
        match &mut self.source {
            Source::Rocks(it) => {
                if self.view.spend(1) {
                    rocks(it);
                } else {
                    self.stopped = true;
                }
            }
            Source::Group { first, end, at, .. } => *at = group(*first, *end, *at),
        }
    }

    /// Positions at the first entry of the range.
    pub fn seek_to_first(&mut self) {
        self.step(|it| it.seek_to_first(), |first, _, _| first);
    }

    /// Positions at the last entry of the range.
    pub fn seek_to_last(&mut self) {
        self.step(
            |it| it.seek_to_last(),
            |first, end, _| if end > first { end - 1 } else { end },
        );
    }

    /// Moves forward.
    pub fn next(&mut self) {
        self.step(|it| it.next(), |_, end, at| (at + 1).min(end));
    }

    /// Moves backward.
    pub fn prev(&mut self) {
        self.step(
            |it| it.prev(),
            |first, end, at| if at > first && at < end { at - 1 } else { end },
        );
    }

    /// The current entry: encoded tuple and stored value; `None` past either end.
    pub fn entry(&self) -> Option<(&[u8], &[u8])> {
        if self.stopped {
            return None;
        }
        match &self.source {
            Source::Rocks(it) => {
                let (key, value) = it.item()?;
                Some((layout::tuple_of(key), value))
            }
            Source::Group { rows, end, at, .. } => (at < end).then(|| rows.get(*at)),
        }
    }

    /// An error the cursor met, if iteration stopped because of one.
    pub fn status(&self) -> Result<(), StorageError> {
        if self.stopped {
            return Err(StorageError::WouldBlock);
        }
        match &self.source {
            Source::Rocks(it) => it.status().map_err(|e| self.view.error(e)),
            Source::Group { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
