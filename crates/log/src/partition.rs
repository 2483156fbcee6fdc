//! [`Partition`]: one partition's index and acknowledgement watch.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use notadb_types::Seq;
use tokio::sync::watch;

use crate::index::PartitionIndex;

/// The state of one partition shared by the writer thread and readers.
#[derive(Debug)]
pub(crate) struct Partition {
    /// Acknowledged records only; the writer commits to it after a batch is durable.
    index: RwLock<PartitionIndex>,
    /// The last acknowledged seq; readers wait on it for new entries.
    pub acked: watch::Sender<Seq>,
}

impl Partition {
    /// A partition whose acknowledged entries `index` describes.
    pub fn new(index: PartitionIndex) -> Partition {
        let last = index.bounds().last;
        Partition {
            index: RwLock::new(index),
            acked: watch::Sender::new(last),
        }
    }

    /// Read access to the index. A panic elsewhere cannot leave the index half-updated (each
    /// mutation is a single push or drain), so a poisoned lock is still usable.
    pub fn index(&self) -> RwLockReadGuard<'_, PartitionIndex> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write access to the index; only the writer thread takes it.
    pub fn index_mut(&self) -> RwLockWriteGuard<'_, PartitionIndex> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}
