//! Record frames: how one entry is laid out in a log segment.
//!
//! `len u32 LE | crc32 u32 LE | partition u16 LE | 0u16 | seq u64 LE | payload`, where `len`
//! is the payload's length and the CRC covers every byte after it (partition, seq, payload), so
//! a frame moved to another partition or seq no longer checks.

use notadb_types::Seq;

/// Bytes of a frame header.
pub(crate) const FRAME_HEADER_BYTES: usize = 20;

/// Largest payload a frame can describe.
pub(crate) const MAX_FRAME_PAYLOAD_BYTES: usize = u32::MAX as usize;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Payload bytes that follow the header.
    pub len: u32,
    /// CRC-32 of the header's bytes after it, and of the payload.
    pub crc: u32,
    /// The partition whose entry this is.
    pub partition: u16,
    /// The entry's seq in its partition.
    pub seq: Seq,
}

impl FrameHeader {
    /// Reads a header from its bytes (any bytes decode; [`FrameHeader::matches`] checks them).
    pub fn decode(bytes: &[u8; FRAME_HEADER_BYTES]) -> FrameHeader {
        let word = |at: usize| {
            u32::from_le_bytes(
                bytes[at..at + 4]
                    .try_into()
                    .expect("a four-byte range of the header"),
            )
        };
        FrameHeader {
            len: word(0),
            crc: word(4),
            partition: u16::from_le_bytes([bytes[8], bytes[9]]),
            seq: Seq(u64::from_le_bytes(
                bytes[12..20]
                    .try_into()
                    .expect("an eight-byte range of the header"),
            )),
        }
    }

    /// Header plus payload bytes.
    pub fn frame_len(&self) -> u64 {
        frame_len(self.len as usize)
    }

    /// Whether `payload` is this header's payload, intact.
    pub fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize
            && checksum(self.partition, self.seq, payload) == self.crc
    }
}

/// Bytes of the frame of a payload of `payload_len` bytes.
pub(crate) fn frame_len(payload_len: usize) -> u64 {
    (FRAME_HEADER_BYTES + payload_len) as u64
}

/// The bytes the checksum covers besides the payload.
fn covered(partition: u16, seq: Seq) -> [u8; 12] {
    let mut bytes = [0u8; 12];
    bytes[0..2].copy_from_slice(&partition.to_le_bytes());
    bytes[4..12].copy_from_slice(&seq.0.to_le_bytes());
    bytes
}

/// The checksum of a frame.
pub(crate) fn checksum(partition: u16, seq: Seq, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&covered(partition, seq));
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the frame of `payload`, entry `seq` of `partition`, to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, partition: u16, seq: Seq, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload sizes are checked against the limit");
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(partition, seq, payload).to_le_bytes());
    out.extend_from_slice(&covered(partition, seq));
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(frame: &[u8]) -> FrameHeader {
        FrameHeader::decode(frame[..FRAME_HEADER_BYTES].try_into().expect("20 bytes"))
    }

    #[test]
    fn round_trips_and_has_the_documented_layout() {
        let mut out = Vec::new();
        encode(&mut out, 3, Seq(7), b"hello");
        assert_eq!(out.len() as u64, frame_len(5));
        assert_eq!(&out[0..4], &5u32.to_le_bytes());
        assert_eq!(&out[8..10], &3u16.to_le_bytes());
        assert_eq!(&out[10..12], &[0, 0]);
        assert_eq!(&out[12..20], &7u64.to_le_bytes());
        assert_eq!(&out[20..], b"hello");
        let header = header_of(&out);
        assert_eq!((header.len, header.partition, header.seq), (5, 3, Seq(7)));
        assert_eq!(header.frame_len(), out.len() as u64);
        assert!(header.matches(&out[20..]));
    }

    #[test]
    fn checksum_covers_partition_seq_and_payload() {
        let mut out = Vec::new();
        encode(&mut out, 1, Seq(1), b"abc");
        let header = header_of(&out);
        assert!(!header.matches(b"abd"));
        assert!(!header.matches(b"ab"));
        for other in [
            FrameHeader {
                seq: Seq(2),
                ..header
            },
            FrameHeader {
                partition: 2,
                ..header
            },
        ] {
            assert!(!other.matches(b"abc"));
        }
    }

    #[test]
    fn empty_payload_frames_are_valid() {
        let mut out = Vec::new();
        encode(&mut out, 0, Seq(3), b"");
        assert_eq!(out.len(), FRAME_HEADER_BYTES);
        assert!(header_of(&out).matches(b""));
    }

    #[test]
    fn zeroed_header_is_not_a_valid_frame() {
        let header = FrameHeader::decode(&[0; FRAME_HEADER_BYTES]);
        assert!(!header.matches(b""));
    }
}
