//! Partitioning: which partition an encoded partition key belongs to.

use crate::error::TypesError;
use crate::ids::PartitionId;

/// The partition count of a cluster created without one.
pub const DEFAULT_PARTITIONS: u16 = 64;

/// Maps encoded partition keys to partitions: `xxh3_64(bytes) mod count`. The count is fixed when
/// the cluster is created; changing it would move almost every key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partitioner {
    count: u16,
}

impl Partitioner {
    /// The partition count of a cluster created without one (same as [`DEFAULT_PARTITIONS`]).
    pub const DEFAULT_PARTITIONS: u16 = DEFAULT_PARTITIONS;

    /// A partitioner over `count` partitions; `count` must be at least 1.
    pub fn new(count: u16) -> Result<Self, TypesError> {
        if count == 0 {
            return Err(TypesError::Schema(
                "partition count must be between 1 and 65535, found 0".to_owned(),
            ));
        }
        Ok(Partitioner { count })
    }

    /// The number of partitions.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The partition of an encoded partition key (see `EncodedKey::partition_key`).
    pub fn partition_of(&self, encoded_partition_key: &[u8]) -> PartitionId {
        let hash = xxhash_rust::xxh3::xxh3_64(encoded_partition_key);
        let partition = hash % u64::from(self.count);
        PartitionId(u16::try_from(partition).expect("a value mod a u16 count fits in u16"))
    }

    /// Every partition, `0..count`, in order.
    pub fn all(&self) -> impl Iterator<Item = PartitionId> {
        (0..self.count).map(PartitionId)
    }
}

impl Default for Partitioner {
    /// [`DEFAULT_PARTITIONS`] partitions.
    fn default() -> Self {
        Partitioner {
            count: DEFAULT_PARTITIONS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_partitions_is_an_error() {
        let err = Partitioner::new(0).expect_err("zero");
        assert_eq!(
            err.to_string(),
            "partition count must be between 1 and 65535, found 0"
        );
        assert_eq!(Partitioner::new(1).map(|p| p.count()), Ok(1));
    }

    #[test]
    fn golden_partition() {
        // Pinned: changing the hash or its input would move every stored key.
        let p = Partitioner::new(DEFAULT_PARTITIONS).expect("64 partitions");
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b"store-1"), GOLDEN_HASH);
        assert_eq!(p.partition_of(b"store-1"), PartitionId(GOLDEN_PARTITION));
        assert_eq!(Partitioner::default(), p);
    }

    const GOLDEN_HASH: u64 = 9_849_068_431_109_957_751;
    const GOLDEN_PARTITION: u16 = 55;

    #[test]
    fn partition_of_is_stable_and_in_range() {
        for count in [1, 2, 3, 64, 1000, u16::MAX] {
            let p = Partitioner::new(count).expect("count >= 1");
            let mut used = std::collections::BTreeSet::new();
            for i in 0..2000u32 {
                let key = format!("store-{i}");
                let part = p.partition_of(key.as_bytes());
                assert!(part.0 < count, "{part} < {count}");
                assert_eq!(part, p.partition_of(key.as_bytes()), "stable");
                used.insert(part);
            }
            // 2000 keys reach every one of up to 64 partitions, and most of a larger count
            // (1000 partitions: 865 expected).
            let want = if count <= 64 { usize::from(count) } else { 800 };
            assert!(
                used.len() >= want,
                "{count}: {} partitions used",
                used.len()
            );
        }
    }

    #[test]
    fn all_lists_every_partition_once() {
        let p = Partitioner::new(5).expect("5");
        let all: Vec<PartitionId> = p.all().collect();
        assert_eq!(all, (0..5).map(PartitionId).collect::<Vec<_>>());
        assert_eq!(Partitioner::default().all().count(), 64);
    }
}
