//! Where things live in RocksDB. Pure functions over bytes.

use notadb_types::{KeyspaceId, PartitionId};

/// Column family holding user data.
pub const DATA_CF: &str = "data";
/// Column family holding applied positions, the catalog and other node metadata.
pub const META_CF: &str = "meta";

/// Bytes before the encoded key tuple in a data key.
pub const DATA_KEY_HEADER: usize = 6;

/// `partition | keyspace | encoded tuple`.
pub fn data_key(partition: PartitionId, keyspace: KeyspaceId, encoded: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(DATA_KEY_HEADER + encoded.len());
    append_data_key(&mut key, partition, keyspace, encoded);
    key
}

/// `data_key` appended to `out`.
pub fn append_data_key(
    out: &mut Vec<u8>,
    partition: PartitionId,
    keyspace: KeyspaceId,
    encoded: &[u8],
) {
    out.extend_from_slice(&partition.0.to_be_bytes());
    out.extend_from_slice(&keyspace.0.to_be_bytes());
    out.extend_from_slice(encoded);
}

/// The range `[start, end)` holding all of one keyspace's data in one partition.
pub fn keyspace_range(partition: PartitionId, keyspace: KeyspaceId) -> (Vec<u8>, Vec<u8>) {
    let start = data_key(partition, keyspace, &[]);
    let end = match keyspace.0.checked_add(1) {
        Some(next) => data_key(partition, KeyspaceId(next), &[]),
        None => partition_range(partition).1,
    };
    (start, end)
}

/// The range `[start, end)` holding all data of one partition.
pub fn partition_range(partition: PartitionId) -> (Vec<u8>, Vec<u8>) {
    let start = partition.0.to_be_bytes().to_vec();
    let end = match partition.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    };
    (start, end)
}

/// The encoded tuple of a data key (what follows the header).
pub fn tuple_of(data_key: &[u8]) -> &[u8] {
    data_key.get(DATA_KEY_HEADER..).unwrap_or(&[])
}

/// Meta key of a partition's applied seq.
pub fn applied_key(partition: PartitionId) -> Vec<u8> {
    let mut key = b"applied/".to_vec();
    key.extend_from_slice(&partition.0.to_be_bytes());
    key
}

/// Meta key marking that a keyspace was dropped in a partition (later writes to it are skipped).
pub fn dropped_key(partition: PartitionId, keyspace: KeyspaceId) -> Vec<u8> {
    let mut key = b"dropped/".to_vec();
    key.extend_from_slice(&partition.0.to_be_bytes());
    key.extend_from_slice(&keyspace.0.to_be_bytes());
    key
}

/// Parses a `dropped_key`.
pub fn parse_dropped_key(key: &[u8]) -> Option<(PartitionId, KeyspaceId)> {
    let rest = key.strip_prefix(b"dropped/")?;
    let p: [u8; 2] = rest.get(..2)?.try_into().ok()?;
    let k: [u8; 4] = rest.get(2..6)?.try_into().ok()?;
    Some((
        PartitionId(u16::from_be_bytes(p)),
        KeyspaceId(u32::from_be_bytes(k)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_contiguous_and_ordered() {
        let (s0, e0) = partition_range(PartitionId(0));
        let (s1, _) = partition_range(PartitionId(1));
        assert_eq!(e0, s1);
        let k = data_key(PartitionId(0), KeyspaceId(u32::MAX), &[0xff; 8]);
        assert!(k >= s0 && k < e0);
        let (ks, ke) = keyspace_range(PartitionId(0), KeyspaceId(3));
        let inside = data_key(PartitionId(0), KeyspaceId(3), b"x");
        assert!(inside >= ks && inside < ke);
        assert!(data_key(PartitionId(0), KeyspaceId(4), b"") >= ke);
    }

    #[test]
    fn dropped_key_round_trips() {
        let key = dropped_key(PartitionId(7), KeyspaceId(9));
        assert_eq!(
            parse_dropped_key(&key),
            Some((PartitionId(7), KeyspaceId(9)))
        );
        assert_eq!(parse_dropped_key(b"dropped/x"), None);
    }
}
