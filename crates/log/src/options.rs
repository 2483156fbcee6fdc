//! [`EmbeddedLogOptions`]: how the embedded log syncs and sizes its files.

use crate::FsyncPolicy;

/// Default size at which the active segment is sealed and a new one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Default bytes of the newest entries kept in memory for readers, shared evenly among
/// partitions.
pub const DEFAULT_TAIL_BYTES: usize = 64 << 20;

/// Default largest payload one append accepts.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 16 << 20;

/// Options of [`EmbeddedLog::open`](crate::EmbeddedLog::open).
#[derive(Clone, Debug)]
pub struct EmbeddedLogOptions {
    /// When appended entries are forced to stable storage.
    pub fsync: FsyncPolicy,
    /// The log starts a new segment file once the active one holds at least this many bytes.
    pub segment_bytes: u64,
    /// Bytes of the newest entries kept in memory, shared evenly among partitions: a reader
    /// that keeps up (the apply loop) gets them without reading a file.
    pub tail_bytes: usize,
    /// Largest payload one append accepts; larger ones fail with
    /// [`LogError::EntryTooLarge`](crate::LogError::EntryTooLarge). Capped at `u32::MAX`, the
    /// largest payload a record frame can describe.
    pub max_entry_bytes: usize,
}

impl Default for EmbeddedLogOptions {
    fn default() -> Self {
        EmbeddedLogOptions {
            fsync: FsyncPolicy::default(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            tail_bytes: DEFAULT_TAIL_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}
