//! Identifier newtypes shared by every crate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A partition: the unit of ordering and placement. `P` partitions are numbered `0..P`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId(pub u16);

/// A position in one partition's log. The first entry has seq 1; seq 0 means "nothing".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Seq(pub u64);

/// A shard group: the replicas that serve one share of the partitions. A single node is
/// group 0 of one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct GroupId(pub u16);

impl fmt::Display for GroupId {
    /// The bare number: lease names, checkpoint keys and flags use it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<GroupId> for u32 {
    fn from(g: GroupId) -> u32 {
        u32::from(g.0)
    }
}

impl TryFrom<u32> for GroupId {
    type Error = std::num::TryFromIntError;

    /// A group id from the wire (`uint32`), which holds no more than a `u16`.
    fn try_from(g: u32) -> Result<GroupId, Self::Error> {
        u16::try_from(g).map(GroupId)
    }
}

/// A keyspace's numeric id, assigned once at creation and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyspaceId(pub u32);

/// Cache ids live above every keyspace id, so a cache's rows and a keyspace's never share a
/// storage range: keyspace ids are counters or metadata revisions, far below 2^31.
pub const CACHE_ID_BASE: u32 = 0x8000_0000;

/// A cache's id: `CACHE_ID_BASE | (xxh3_64(name) & 0x7fff_ffff)`. Every node computes it from
/// the name alone, so log entries and stored rows need no id assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CacheId(pub u32);

impl CacheId {
    /// The id of the cache named `name`.
    pub fn of(name: &str) -> CacheId {
        let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes());
        CacheId(CACHE_ID_BASE | (hash as u32 & !CACHE_ID_BASE))
    }
}

impl std::fmt::Display for CacheId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Returned by every write: a read that carries it sees at least that write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token {
    /// The partition written to.
    pub partition: PartitionId,
    /// The write's position in that partition's log.
    pub seq: Seq,
}

impl Seq {
    /// The seq after this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for KeyspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(partition {}, seq {})", self.partition, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sit_above_keyspace_ids_and_follow_the_name() {
        let a = CacheId::of("users");
        assert!(a.0 >= CACHE_ID_BASE);
        assert_eq!(a, CacheId::of("users"));
        assert_ne!(a, CacheId::of("users2"));
    }

    #[test]
    fn group_ids_print_bare_and_refuse_wire_values_beyond_a_u16() {
        assert_eq!(GroupId(7).to_string(), "7");
        assert_eq!(GroupId::try_from(65_535u32), Ok(GroupId(65_535)));
        assert!(GroupId::try_from(65_536u32).is_err());
        assert_eq!(u32::from(GroupId(3)), 3);
    }
}
