//! The big-endian, length-prefixed byte layout shared by notadb's log entries: a writer's
//! helpers and a bounds-checked [`WireReader`] whose errors say what was expected and where.

/// Appends `bytes` with a `u32` big-endian length prefix.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("entries are limited far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Bytes that do not hold what a [`WireReader`] was asked to read. Deterministic: every
/// reader of the same bytes meets the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes are left than the next read needs.
    #[error("entry truncated: needs {needs} bytes at offset {at}, has {len}")]
    Truncated {
        /// Bytes the read needs.
        needs: usize,
        /// Where it starts.
        at: usize,
        /// The length of the whole input.
        len: usize,
    },
    /// A count promises more items than the bytes left can hold.
    #[error("entry claims {claimed} items but has {left} bytes left")]
    Count {
        /// The count read.
        claimed: usize,
        /// Bytes left after it.
        left: usize,
    },
}

/// Reads the layout [`put_bytes`] and `to_be_bytes` write; every read checks the length left.
pub struct WireReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> WireReader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        WireReader { bytes, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes, or an error naming the offset when fewer are left.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(WireError::Truncated {
                needs: n,
                at: self.pos,
                len: self.bytes.len(),
            })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b: [u8; 2] = self.take(2)?.try_into().expect("take returned 2 bytes");
        Ok(u16::from_be_bytes(b))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b: [u8; 4] = self.take(4)?.try_into().expect("take returned 4 bytes");
        Ok(u32::from_be_bytes(b))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b: [u8; 8] = self.take(8)?.try_into().expect("take returned 8 bytes");
        Ok(u64::from_be_bytes(b))
    }

    /// A big-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, WireError> {
        let b: [u8; 8] = self.take(8)?.try_into().expect("take returned 8 bytes");
        Ok(i64::from_be_bytes(b))
    }

    /// Bytes written by [`put_bytes`].
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A count written as `u32` that is about to be read as `count` items of at least
    /// `min_item` bytes each: refused when the bytes left cannot hold them, so a corrupt count
    /// cannot make a decoder reserve memory it will never fill.
    pub fn count(&mut self, min_item: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(WireError::Count {
                claimed: n,
                left: self.remaining(),
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncation() {
        let mut out = Vec::new();
        out.push(7);
        out.extend_from_slice(&513u16.to_be_bytes());
        put_bytes(&mut out, b"abc");
        out.extend_from_slice(&(-5i64).to_be_bytes());
        let mut r = WireReader::new(&out);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 513);
        assert_eq!(r.bytes().unwrap(), b"abc");
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.remaining(), 0);
        assert_eq!(
            r.u32().unwrap_err(),
            WireError::Truncated {
                needs: 4,
                at: out.len(),
                len: out.len()
            }
        );
        let mut r = WireReader::new(&[0, 0, 0, 9, 1]);
        assert_eq!(
            r.count(1).unwrap_err(),
            WireError::Count {
                claimed: 9,
                left: 1
            }
        );
    }
}
