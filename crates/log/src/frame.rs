//! The on-disk record frame: `len u32 LE | crc32 u32 LE | seq u64 LE | payload`.
//!
//! `len` is the payload's length in bytes; the CRC-32 (IEEE) covers the seq's eight bytes
//! followed by the payload.

use notadb_types::Seq;

/// Bytes in a frame before its payload: length, checksum and seq.
pub(crate) const FRAME_HEADER_BYTES: usize = 16;

/// Largest payload a frame can describe: its length field is a `u32`.
pub(crate) const MAX_FRAME_PAYLOAD_BYTES: usize = u32::MAX as usize;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// CRC-32 over the seq and the payload.
    pub crc: u32,
    /// The record's seq.
    pub seq: Seq,
}

impl FrameHeader {
    /// Decodes the first [`FRAME_HEADER_BYTES`] of `bytes`.
    pub fn decode(bytes: &[u8; FRAME_HEADER_BYTES]) -> FrameHeader {
        let word = |at: usize| {
            u32::from_le_bytes(
                bytes[at..at + 4]
                    .try_into()
                    .expect("a four-byte range of a 16-byte array"),
            )
        };
        let seq = u64::from_le_bytes(
            bytes[8..16]
                .try_into()
                .expect("an eight-byte range of a 16-byte array"),
        );
        FrameHeader {
            len: word(0),
            crc: word(4),
            seq: Seq(seq),
        }
    }

    /// Total bytes of the frame this header starts.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_BYTES as u64 + u64::from(self.len)
    }

    /// Whether `payload` is the one this header's checksum describes.
    pub fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize && checksum(self.seq, payload) == self.crc
    }
}

/// Total bytes of a frame carrying `payload_len` payload bytes.
pub(crate) fn frame_len(payload_len: usize) -> u64 {
    (FRAME_HEADER_BYTES + payload_len) as u64
}

/// The checksum a frame stores for `seq` and `payload`.
pub(crate) fn checksum(seq: Seq, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.0.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the frame of (`seq`, `payload`) to `out`. `payload` must be at most
/// [`MAX_FRAME_PAYLOAD_BYTES`] long (appends are checked before they reach the writer).
pub(crate) fn encode(out: &mut Vec<u8>, seq: Seq, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload sizes are checked against the limit");
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.0.to_le_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(frame: &[u8]) -> FrameHeader {
        FrameHeader::decode(frame[..FRAME_HEADER_BYTES].try_into().expect("16 bytes"))
    }

    #[test]
    fn round_trips_and_has_the_documented_layout() {
        let mut out = Vec::new();
        encode(&mut out, Seq(7), b"hello");
        assert_eq!(out.len() as u64, frame_len(5));
        assert_eq!(&out[0..4], &5u32.to_le_bytes());
        assert_eq!(&out[8..16], &7u64.to_le_bytes());
        assert_eq!(&out[16..], b"hello");
        let header = header_of(&out);
        assert_eq!(header.len, 5);
        assert_eq!(header.seq, Seq(7));
        assert_eq!(header.frame_len(), out.len() as u64);
        assert!(header.matches(&out[16..]));
    }

    #[test]
    fn checksum_covers_seq_and_payload() {
        let mut out = Vec::new();
        encode(&mut out, Seq(1), b"abc");
        let header = header_of(&out);
        assert!(!header.matches(b"abd"));
        assert!(!header.matches(b"ab"));
        let other_seq = FrameHeader {
            seq: Seq(2),
            ..header
        };
        assert!(!other_seq.matches(b"abc"));
    }

    #[test]
    fn empty_payload_frames_are_valid() {
        let mut out = Vec::new();
        encode(&mut out, Seq(3), b"");
        assert_eq!(out.len(), FRAME_HEADER_BYTES);
        assert!(header_of(&out).matches(b""));
    }

    #[test]
    fn zeroed_header_is_not_a_valid_frame() {
        let header = FrameHeader::decode(&[0; FRAME_HEADER_BYTES]);
        assert!(!header.matches(b""));
    }
}
