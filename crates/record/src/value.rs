//! The stored form of a value: a one-byte header, the expiry when there is one, the user bytes.
//!
//! `0x00 | user bytes` never expires; `0x01 | expires_at (i64 micros, BE) | user bytes`
//! expires at that instant. The expiry is computed from data and log timestamps before the
//! write is appended, so every replica stores the same bytes.

const NO_EXPIRY: u8 = 0;
const WITH_EXPIRY: u8 = 1;

/// Encodes a stored value.
pub fn encode(expires_at: Option<i64>, user: &[u8]) -> Vec<u8> {
    match expires_at {
        None => {
            let mut out = Vec::with_capacity(1 + user.len());
            out.push(NO_EXPIRY);
            out.extend_from_slice(user);
            out
        }
        Some(at) => {
            let mut out = Vec::with_capacity(9 + user.len());
            out.push(WITH_EXPIRY);
            out.extend_from_slice(&at.to_be_bytes());
            out.extend_from_slice(user);
            out
        }
    }
}

/// Splits a stored value into its expiry and user bytes; `None` for a malformed header.
pub fn decode(stored: &[u8]) -> Option<(Option<i64>, &[u8])> {
    match stored.split_first()? {
        (&NO_EXPIRY, rest) => Some((None, rest)),
        (&WITH_EXPIRY, rest) => {
            let at: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            Some((Some(i64::from_be_bytes(at)), &rest[8..]))
        }
        _ => None,
    }
}

/// The user bytes if the value is live at `now_micros`, `None` if it expired (or is malformed).
pub fn live(stored: &[u8], now_micros: i64) -> Option<&[u8]> {
    match decode(stored)? {
        (Some(at), _) if at <= now_micros => None,
        (_, user) => Some(user),
    }
}

/// `live` for an owned stored value: its user bytes, the header dropped in place.
pub fn into_live(mut stored: Vec<u8>, now_micros: i64) -> Option<Vec<u8>> {
    let header = stored.len() - live(&stored, now_micros)?.len();
    stored.drain(..header);
    Some(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_expiry() {
        let v = encode(Some(100), b"abc");
        assert_eq!(decode(&v), Some((Some(100), &b"abc"[..])));
        assert_eq!(live(&v, 99), Some(&b"abc"[..]));
        assert_eq!(into_live(v.clone(), 99), Some(b"abc".to_vec()));
        assert_eq!(into_live(v.clone(), 100), None);
        assert_eq!(into_live(encode(None, b"xy"), 0), Some(b"xy".to_vec()));
        assert_eq!(live(&v, 100), None);
        let v = encode(None, b"");
        assert_eq!(live(&v, i64::MAX), Some(&b""[..]));
        assert_eq!(decode(&[7]), None);
        assert_eq!(decode(&[1, 0, 0]), None);
    }
}
