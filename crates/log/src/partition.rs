//! [`Partition`]: one partition's directory, index and acknowledgement watch.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use notadb_types::Seq;
use tokio::sync::watch;

use crate::index::PartitionIndex;
use crate::segment::{self, with_path, Segment};
use crate::LogError;

/// Prefix of partition directory names; the rest is the partition number in 5 digits.
const PARTITION_DIR_PREFIX: char = 'p';

/// Digits of the partition number in a partition directory name (enough for any `u16`).
const PARTITION_DIR_DIGITS: usize = 5;

/// The state of one partition shared by the writer thread and readers.
#[derive(Debug)]
pub(crate) struct Partition {
    /// The partition's directory, holding its segment files.
    pub dir: PathBuf,
    /// Acknowledged records only; the writer commits to it after a batch is durable.
    index: RwLock<PartitionIndex>,
    /// The last acknowledged seq; readers wait on it for new entries.
    pub acked: watch::Sender<Seq>,
}

impl Partition {
    /// Opens (or creates) the partition directory `dir`, verifying every segment and cutting a
    /// torn tail off the last one.
    pub fn open(dir: PathBuf) -> Result<Partition, LogError> {
        fs::create_dir_all(&dir).map_err(with_path(&dir))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(with_path(&dir))? {
            let name = entry.map_err(with_path(&dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = segment::parse_file_name(&name).filter(|s| s.0 > 0) {
                found.push(first);
            } else if segment::is_segment_name(&name) {
                return Err(LogError::Corrupt(format!(
                    "{}: expected segment files named by a positive 20-digit seq, found {name:?}",
                    dir.display()
                )));
            }
        }
        found.sort_unstable();
        let mut segments = VecDeque::with_capacity(found.len().max(1));
        for (i, first) in found.iter().enumerate() {
            let path = dir.join(segment::file_name(*first));
            if let Some(previous) = segments.back().map(Segment::next_seq) {
                if *first != previous {
                    return Err(LogError::Corrupt(format!(
                        "{}: expected the segment after seq {} to start at seq {}, found one \
                         starting at seq {}",
                        path.display(),
                        previous.0 - 1,
                        previous.0,
                        first.0
                    )));
                }
            }
            let last = i + 1 == found.len();
            segments.push_back(Segment::recover(path, *first, last)?);
        }
        if segments.is_empty() {
            segments.push_back(Segment::create(&dir, Seq(1))?);
        }
        let index = PartitionIndex::new(segments);
        let last = index.bounds().last;
        Ok(Partition {
            dir,
            index: RwLock::new(index),
            acked: watch::Sender::new(last),
        })
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

/// The directory name of partition `partition`.
pub(crate) fn dir_name(partition: u16) -> String {
    format!(
        "{PARTITION_DIR_PREFIX}{partition:0width$}",
        width = PARTITION_DIR_DIGITS
    )
}

/// Whether `name` is a partition directory name.
pub(crate) fn is_partition_dir_name(name: &str) -> bool {
    name.strip_prefix(PARTITION_DIR_PREFIX)
        .is_some_and(|digits| {
            digits.len() == PARTITION_DIR_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())
        })
}

/// The directory of partition `partition` in the log directory `log_dir`.
pub(crate) fn dir_path(log_dir: &Path, partition: u16) -> PathBuf {
    log_dir.join(dir_name(partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names() {
        assert_eq!(dir_name(0), "p00000");
        assert_eq!(dir_name(u16::MAX), "p65535");
        assert!(is_partition_dir_name("p00042"));
        assert!(!is_partition_dir_name("p42"));
        assert!(!is_partition_dir_name("LOG_META"));
    }
}
