//! The on-wire format of a beacon message (sans-IO: bytes in, bytes out).
//!
//! ```text
//!  0               4       5        6            6+id_len
//!  +---------------+-------+--------+---------------+----------------+
//!  | magic "CRBN"  |version| id_len |  id (id_len)  |  data          |
//!  +---------------+-------+--------+---------------+----------------+
//! ```
//!
//! - `magic` ([`MAGIC`]) tells our datagrams from other programs' broadcasts
//!   on the same port; anything else is dropped.
//! - `version` ([`VERSION`]) is 1. A datagram with another version is dropped,
//!   so a future format can change everything after this byte.
//! - `id_len` (0 to [`MAX_ID_BYTES`]) and `id`: the sender's random id, fixed
//!   for its life; a beacon drops datagrams carrying its own id (its echo).
//! - `data`: the payload, up to [`MAX_DATA_LEN`] bytes, to the end of the
//!   datagram (UDP keeps datagram boundaries, so no length field is needed).
//!
//! The largest datagram, [`MAX_PACKET_LEN`] bytes, fits in one IPv6 minimum-MTU
//! packet (1280 bytes less 48 bytes of IPv6 and UDP headers), so beacons are
//! never fragmented.
//!
//! # Example
//!
//! ```
//! use beacon::packet::{decode, encode};
//!
//! let mut wire = Vec::new();
//! encode(b"\x01\x02\x03\x04", b"hello", &mut wire).unwrap();
//! assert_eq!(wire.len(), 6 + 4 + 5);
//! let packet = decode(&wire).unwrap();
//! assert_eq!(packet.id, b"\x01\x02\x03\x04");
//! assert_eq!(packet.data, b"hello");
//! assert!(decode(b"not a beacon").is_err());
//! ```

use std::fmt;

/// The four bytes every beacon datagram starts with.
pub const MAGIC: [u8; 4] = *b"CRBN";

/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;

/// Bytes ahead of the id: magic, version and id length.
pub const HEADER_LEN: usize = MAGIC.len() + 2;

/// The longest id a beacon may have, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// The largest `data` a beacon may send, in bytes.
pub const MAX_DATA_LEN: usize = 1024;

/// The largest datagram this format allows (header, longest id, largest data):
/// 1094 bytes.
pub const MAX_PACKET_LEN: usize = HEADER_LEN + MAX_ID_BYTES + MAX_DATA_LEN;

/// A decoded beacon datagram, borrowing from the received bytes.
///
/// ```
/// let p = beacon::packet::decode(b"CRBN\x01\x01\xaahi").unwrap();
/// assert_eq!((p.id, p.data), (&b"\xaa"[..], &b"hi"[..]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The sender's id.
    pub id: &'a [u8],
    /// The sender's data.
    pub data: &'a [u8],
}

/// Why a datagram is not a beacon message we accept.
///
/// ```
/// use beacon::packet::{decode, DecodeError};
/// assert_eq!(decode(b"CRB"), Err(DecodeError::TooShort { len: 3 }));
/// assert_eq!(decode(b"HTTP/1.1"), Err(DecodeError::ForeignMagic));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than the header.
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// Does not start with [`MAGIC`]: another program's datagram.
    ForeignMagic,
    /// A format version this crate does not read.
    UnsupportedVersion(u8),
    /// The id length byte is above [`MAX_ID_BYTES`].
    IdTooLong(u8),
    /// The datagram ends inside the id.
    Truncated {
        /// The id length the header announced.
        id_len: u8,
        /// The datagram's length.
        len: usize,
    },
    /// Longer than [`MAX_PACKET_LEN`], or the data is longer than
    /// [`MAX_DATA_LEN`].
    TooLong {
        /// The datagram's length (at least; a receive buffer may have cut it).
        len: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooShort { len } => write!(
                f,
                "datagram of {len} bytes is shorter than the {HEADER_LEN}-byte beacon header"
            ),
            DecodeError::ForeignMagic => write!(f, "datagram does not start with the beacon magic"),
            DecodeError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "beacon format version {v} is not supported (we read {VERSION})"
                )
            }
            DecodeError::IdTooLong(n) => {
                write!(
                    f,
                    "beacon id length {n} exceeds the limit of {MAX_ID_BYTES} bytes"
                )
            }
            DecodeError::Truncated { id_len, len } => write!(
                f,
                "datagram of {len} bytes ends inside its {id_len}-byte beacon id"
            ),
            DecodeError::TooLong { len } => write!(
                f,
                "datagram of {len} bytes exceeds the beacon limit of {MAX_PACKET_LEN} bytes"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a message cannot be encoded.
///
/// ```
/// use beacon::packet::{encode, EncodeError, MAX_DATA_LEN};
/// let err = encode(b"id", &vec![0; MAX_DATA_LEN + 1], &mut Vec::new()).unwrap_err();
/// assert_eq!(err, EncodeError::DataTooLong { len: MAX_DATA_LEN + 1 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The id is longer than [`MAX_ID_BYTES`].
    IdTooLong {
        /// The id's length.
        len: usize,
    },
    /// The data is longer than [`MAX_DATA_LEN`].
    DataTooLong {
        /// The data's length.
        len: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::IdTooLong { len } => write!(
                f,
                "beacon id of {len} bytes exceeds the limit of {MAX_ID_BYTES} bytes"
            ),
            EncodeError::DataTooLong { len } => write!(
                f,
                "beacon data of {len} bytes exceeds the limit of {MAX_DATA_LEN} bytes"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

impl From<EncodeError> for std::io::Error {
    fn from(e: EncodeError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// Writes the datagram for `id` and `data` into `out` (cleared first).
///
/// # Errors
///
/// [`EncodeError`] if `id` or `data` is over its limit; `out` is then left
/// empty.
///
/// ```
/// let mut out = Vec::new();
/// beacon::packet::encode(b"", b"x", &mut out).unwrap();
/// assert_eq!(out, b"CRBN\x01\x00x");
/// ```
pub fn encode(id: &[u8], data: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.clear();
    let id_len = u8::try_from(id.len())
        .ok()
        .filter(|&n| usize::from(n) <= MAX_ID_BYTES)
        .ok_or(EncodeError::IdTooLong { len: id.len() })?;
    if data.len() > MAX_DATA_LEN {
        return Err(EncodeError::DataTooLong { len: data.len() });
    }
    out.reserve(HEADER_LEN + id.len() + data.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(id_len);
    out.extend_from_slice(id);
    out.extend_from_slice(data);
    Ok(())
}

/// Reads a datagram. Never panics, whatever the bytes.
///
/// # Errors
///
/// [`DecodeError`] says why the datagram is not a beacon message.
///
/// ```
/// let p = beacon::packet::decode(b"CRBN\x01\x00data").unwrap();
/// assert!(p.id.is_empty());
/// assert_eq!(p.data, b"data");
/// ```
pub fn decode(datagram: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let len = datagram.len();
    if len < HEADER_LEN {
        // A short datagram that is a prefix of another program's is still foreign,
        // but "too short" is the more useful thing to log.
        return Err(DecodeError::TooShort { len });
    }
    if datagram[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::ForeignMagic);
    }
    let version = datagram[MAGIC.len()];
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if len > MAX_PACKET_LEN {
        return Err(DecodeError::TooLong { len });
    }
    let id_len = datagram[MAGIC.len() + 1];
    if usize::from(id_len) > MAX_ID_BYTES {
        return Err(DecodeError::IdTooLong(id_len));
    }
    let rest = &datagram[HEADER_LEN..];
    if rest.len() < usize::from(id_len) {
        return Err(DecodeError::Truncated { id_len, len });
    }
    let (id, data) = rest.split_at(usize::from(id_len));
    if data.len() > MAX_DATA_LEN {
        return Err(DecodeError::TooLong { len });
    }
    Ok(Packet { id, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_md_example() {
        const WIRE_MD: &str = include_str!("../../docs/wire.md");
        let mut wire = Vec::new();
        encode(&[0xa1, 0xb2, 0xc3, 0xd4], b"hello", &mut wire).unwrap();
        netlab::wire_doc::assert_hex(WIRE_MD, "beacon-packet", &wire);
        let doc = netlab::wire_doc::hex(WIRE_MD, "beacon-packet");
        let p = decode(&doc).unwrap();
        assert_eq!(
            (p.id, p.data),
            (&[0xa1, 0xb2, 0xc3, 0xd4][..], &b"hello"[..])
        );
    }
    use proptest::prelude::*;

    #[test]
    fn round_trip_limits() {
        let id = [7u8; MAX_ID_BYTES];
        let data = [9u8; MAX_DATA_LEN];
        let mut out = Vec::new();
        encode(&id, &data, &mut out).unwrap();
        assert_eq!(out.len(), MAX_PACKET_LEN);
        let p = decode(&out).unwrap();
        assert_eq!(p.id, &id[..]);
        assert_eq!(p.data, &data[..]);
    }

    #[test]
    fn encode_refuses_over_limits() {
        let mut out = vec![1, 2, 3];
        assert_eq!(
            encode(&[0; MAX_ID_BYTES + 1], b"", &mut out),
            Err(EncodeError::IdTooLong {
                len: MAX_ID_BYTES + 1
            })
        );
        assert!(out.is_empty());
        assert_eq!(
            encode(&[0; 300], b"", &mut out),
            Err(EncodeError::IdTooLong { len: 300 })
        );
        let err = encode(b"", &[0; MAX_DATA_LEN + 1], &mut out).unwrap_err();
        assert!(err.to_string().contains("1024"), "{err}");
        let io: std::io::Error = err.into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn decode_errors() {
        assert_eq!(decode(b""), Err(DecodeError::TooShort { len: 0 }));
        assert_eq!(decode(b"CRBN\x01"), Err(DecodeError::TooShort { len: 5 }));
        assert_eq!(decode(b"XRBN\x01\x00"), Err(DecodeError::ForeignMagic));
        assert_eq!(
            decode(b"CRBN\x02\x00"),
            Err(DecodeError::UnsupportedVersion(2))
        );
        assert_eq!(decode(b"CRBN\x01\x41"), Err(DecodeError::IdTooLong(65)));
        assert_eq!(
            decode(b"CRBN\x01\x04abc"),
            Err(DecodeError::Truncated { id_len: 4, len: 9 })
        );
        let mut big = b"CRBN\x01\x00".to_vec();
        big.resize(HEADER_LEN + MAX_DATA_LEN + 1, 0);
        assert_eq!(
            decode(&big),
            Err(DecodeError::TooLong {
                len: HEADER_LEN + MAX_DATA_LEN + 1
            })
        );
        let mut huge = big.clone();
        huge.resize(65_000, 0);
        assert_eq!(decode(&huge), Err(DecodeError::TooLong { len: 65_000 }));
        // Exactly at the header: empty id and data.
        let p = decode(b"CRBN\x01\x00").unwrap();
        assert!(p.id.is_empty() && p.data.is_empty());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_decode_round_trip(
            id in proptest::collection::vec(any::<u8>(), 0..=MAX_ID_BYTES),
            data in proptest::collection::vec(any::<u8>(), 0..=MAX_DATA_LEN),
        ) {
            let mut out = Vec::new();
            encode(&id, &data, &mut out).unwrap();
            let p = decode(&out).unwrap();
            prop_assert_eq!(p.id, &id[..]);
            prop_assert_eq!(p.data, &data[..]);
        }

        #[test]
        fn truncation_is_rejected_or_shorter_data(
            id in proptest::collection::vec(any::<u8>(), 1..=MAX_ID_BYTES),
            data in proptest::collection::vec(any::<u8>(), 0..64),
            cut in 0usize..200,
        ) {
            let mut out = Vec::new();
            encode(&id, &data, &mut out).unwrap();
            let cut = cut.min(out.len());
            match decode(&out[..cut]) {
                Ok(p) => {
                    prop_assert_eq!(p.id, &id[..]);
                    prop_assert!(data.starts_with(p.data));
                }
                Err(_) => prop_assert!(cut < HEADER_LEN + id.len()),
            }
        }
    }
}
