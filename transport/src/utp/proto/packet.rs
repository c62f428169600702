//! The BEP 29 packet format (version 1) and its selective-ACK extension.
//!
//! ```text
//! 0       4       8               16              24              32
//! +-------+-------+---------------+---------------+---------------+
//! | type  | ver   | extension     | connection_id                 |
//! +-------+-------+---------------+---------------+---------------+
//! | timestamp_microseconds                                        |
//! | timestamp_difference_microseconds                             |
//! | wnd_size                                                      |
//! | seq_nr                        | ack_nr                        |
//! +---------------+---------------+---------------+---------------+
//! ```
//!
//! Extensions follow the header as a chain of `(next extension type, length,
//! bytes)`; type 1 is the selective-ACK bitmask. Decoding never panics and
//! never allocates: [`Packet::decode`] borrows from the datagram.

use std::fmt;

/// Length of the fixed uTP header.
pub const HEADER_LEN: usize = 20;
/// The protocol version this crate speaks (and the only one it accepts).
pub const VERSION: u8 = 1;
/// Extension type of the selective-ACK bitmask.
pub const EXT_SELECTIVE_ACK: u8 = 1;
/// The longest selective-ACK bitmask we send, in bytes (covers 224 packets
/// past `ack_nr + 1`). Longer ones from peers are accepted and truncated.
pub const MAX_SACK_LEN: usize = 28;
/// Most payload bytes we put in one DATA packet. With the header and the
/// largest selective ACK a datagram is at most 1,450 bytes: under 1,500 on
/// the wire even over IPv6 (40 + 8 bytes of IP and UDP headers).
pub const MAX_PAYLOAD: usize = 1400;
/// The largest datagram we send.
pub const MAX_DATAGRAM: usize = HEADER_LEN + 2 + MAX_SACK_LEN + MAX_PAYLOAD;

/// The five packet types of BEP 29.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `ST_DATA` (0): carries payload.
    Data,
    /// `ST_FIN` (1): the last packet of the sender's stream.
    Fin,
    /// `ST_STATE` (2): an acknowledgement without payload.
    State,
    /// `ST_RESET` (3): terminates the connection forcefully.
    Reset,
    /// `ST_SYN` (4): opens a connection.
    Syn,
}

impl PacketType {
    fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            0 => Self::Data,
            1 => Self::Fin,
            2 => Self::State,
            3 => Self::Reset,
            4 => Self::Syn,
            _ => return None,
        })
    }

    fn nibble(self) -> u8 {
        match self {
            Self::Data => 0,
            Self::Fin => 1,
            Self::State => 2,
            Self::Reset => 3,
            Self::Syn => 4,
        }
    }
}

/// Why a datagram is not a uTP packet we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the 20-byte header.
    Truncated,
    /// A version other than 1.
    BadVersion(u8),
    /// A type nibble above 4.
    BadType(u8),
    /// An extension header or body runs past the end of the datagram.
    ExtensionOverrun,
    /// A selective-ACK extension whose length is zero or not a multiple of 4.
    BadSackLength(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => write!(f, "uTP packet shorter than its 20-byte header"),
            Self::BadVersion(v) => write!(f, "uTP packet with unsupported version {v}"),
            Self::BadType(t) => write!(f, "uTP packet with unknown type {t}"),
            Self::ExtensionOverrun => write!(f, "uTP extension runs past the end of the packet"),
            Self::BadSackLength(l) => write!(f, "uTP selective ACK with invalid length {l}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The fixed header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub packet_type: PacketType,
    /// The connection id this packet belongs to (the receiver's `recv_id`,
    /// or for a SYN the initiator's `recv_id`).
    pub connection_id: u16,
    /// Sender's clock in microseconds when the packet was sent (wraps).
    pub timestamp: u32,
    /// Sender's last measured `its receive time - our send timestamp` (wraps).
    pub timestamp_difference: u32,
    /// Bytes the sender can still receive (its advertised receive window).
    pub wnd_size: u32,
    /// Sequence number.
    pub seq_nr: u16,
    /// Last sequence number received in order.
    pub ack_nr: u16,
}

/// A decoded packet, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The header.
    pub header: Header,
    /// The selective-ACK bitmask, if present (bit 0 of byte 0 is `ack_nr + 2`).
    pub sack: Option<&'a [u8]>,
    /// The payload after the header and extensions.
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Decodes a datagram. Unknown extensions are skipped; the chain is
    /// walked at most once over the datagram's bytes so it cannot loop.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        let version = buf[0] & 0x0f;
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let packet_type =
            PacketType::from_nibble(buf[0] >> 4).ok_or(DecodeError::BadType(buf[0] >> 4))?;
        let u16_at = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let header = Header {
            packet_type,
            connection_id: u16_at(2),
            timestamp: u32_at(4),
            timestamp_difference: u32_at(8),
            wnd_size: u32_at(12),
            seq_nr: u16_at(16),
            ack_nr: u16_at(18),
        };
        let mut next = buf[1];
        let mut pos = HEADER_LEN;
        let mut sack = None;
        while next != 0 {
            if pos + 2 > buf.len() {
                return Err(DecodeError::ExtensionOverrun);
            }
            let kind = next;
            next = buf[pos];
            let len = buf[pos + 1] as usize;
            pos += 2;
            if pos + len > buf.len() {
                return Err(DecodeError::ExtensionOverrun);
            }
            if kind == EXT_SELECTIVE_ACK {
                if len == 0 || !len.is_multiple_of(4) {
                    return Err(DecodeError::BadSackLength(len as u8));
                }
                if sack.is_none() {
                    sack = Some(&buf[pos..pos + len]);
                }
            }
            pos += len;
        }
        Ok(Packet {
            header,
            sack,
            payload: &buf[pos..],
        })
    }
}

impl Header {
    /// Writes the header, an optional selective ACK and `payload` into `out`;
    /// returns the number of bytes written.
    ///
    /// # Panics
    ///
    /// If `out` is too short or `sack` is empty, not a multiple of 4, or
    /// longer than 255 bytes: all are caller bugs, never network input.
    pub fn encode(&self, sack: Option<&[u8]>, payload: &[u8], out: &mut [u8]) -> usize {
        let sack_len = sack.map_or(0, |s| 2 + s.len());
        let total = HEADER_LEN + sack_len + payload.len();
        assert!(out.len() >= total, "uTP encode buffer too short");
        out[0] = (self.packet_type.nibble() << 4) | VERSION;
        out[1] = if sack.is_some() { EXT_SELECTIVE_ACK } else { 0 };
        out[2..4].copy_from_slice(&self.connection_id.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.timestamp_difference.to_be_bytes());
        out[12..16].copy_from_slice(&self.wnd_size.to_be_bytes());
        out[16..18].copy_from_slice(&self.seq_nr.to_be_bytes());
        out[18..20].copy_from_slice(&self.ack_nr.to_be_bytes());
        let mut pos = HEADER_LEN;
        if let Some(s) = sack {
            assert!(
                !s.is_empty() && s.len().is_multiple_of(4) && s.len() <= 255,
                "bad selective ACK length"
            );
            out[pos] = 0;
            out[pos + 1] = s.len() as u8;
            out[pos + 2..pos + 2 + s.len()].copy_from_slice(s);
            pos += 2 + s.len();
        }
        out[pos..pos + payload.len()].copy_from_slice(payload);
        total
    }
}

/// `a - b` on the 16-bit sequence circle, as a signed distance.
pub fn seq_diff(a: u16, b: u16) -> i16 {
    a.wrapping_sub(b) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIRE_MD: &str = include_str!("../../../../docs/wire.md");

    #[test]
    fn wire_md_examples() {
        let mut out = [0u8; MAX_DATAGRAM];
        let syn = Header {
            packet_type: PacketType::Syn,
            connection_id: 0x1234,
            timestamp: 0x0001_e240,
            timestamp_difference: 0,
            wnd_size: 0x0010_0000,
            seq_nr: 0x2a2a,
            ack_nr: 0,
        };
        let n = syn.encode(None, &[], &mut out);
        netlab::wire_doc::assert_hex(WIRE_MD, "utp-syn", &out[..n]);
        let state = Header {
            packet_type: PacketType::State,
            connection_id: 0x1234,
            timestamp: 0x0001_e2a4,
            timestamp_difference: 0x0000_0064,
            wnd_size: 0x000f_a000,
            seq_nr: 0x5151,
            ack_nr: 0x2a2b,
        };
        let n = state.encode(Some(&[0b0000_0101, 0, 0, 0]), &[], &mut out);
        netlab::wire_doc::assert_hex(WIRE_MD, "utp-state-sack", &out[..n]);
        let doc = netlab::wire_doc::hex(WIRE_MD, "utp-state-sack");
        let p = Packet::decode(&doc).unwrap();
        assert_eq!(p.header, state);
        assert_eq!(p.sack, Some(&[5u8, 0, 0, 0][..]));
        let id = netlab::wire_doc::text(WIRE_MD, "utp-rendezvous-id");
        let (nonce, value) = id.trim().split_once(" -> ").unwrap();
        let nonce = nonce.trim().trim_matches('"');
        assert_eq!(
            format!(
                "0x{:04x}",
                super::super::endpoint::rendezvous_id(nonce.as_bytes())
            ),
            value.trim()
        );
    }

    fn header(t: PacketType) -> Header {
        Header {
            packet_type: t,
            connection_id: 0xbeef,
            timestamp: 0x0102_0304,
            timestamp_difference: 0x0506_0708,
            wnd_size: 0x0009_0a0b,
            seq_nr: 0xfffe,
            ack_nr: 7,
        }
    }

    #[test]
    fn round_trip_all_types() {
        for t in [
            PacketType::Data,
            PacketType::Fin,
            PacketType::State,
            PacketType::Reset,
            PacketType::Syn,
        ] {
            let mut buf = [0u8; MAX_DATAGRAM];
            let sack = [0b1010_0000u8, 0, 0, 1];
            let n = header(t).encode(Some(&sack), b"hello", &mut buf);
            assert_eq!(n, HEADER_LEN + 6 + 5);
            let p = Packet::decode(&buf[..n]).unwrap();
            assert_eq!(p.header, header(t));
            assert_eq!(p.sack, Some(&sack[..]));
            assert_eq!(p.payload, b"hello");
        }
    }

    #[test]
    fn wire_layout_matches_bep29() {
        let mut buf = [0u8; 64];
        let n = header(PacketType::Syn).encode(None, &[], &mut buf);
        assert_eq!(
            &buf[..n],
            &[
                0x41, 0, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 10, 11, 0xff, 0xfe, 0, 7
            ]
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut buf = [0u8; 64];
        let n = header(PacketType::Data).encode(None, b"x", &mut buf);
        assert_eq!(Packet::decode(&buf[..19]), Err(DecodeError::Truncated));
        let mut b = buf;
        b[0] = 0x02;
        assert_eq!(Packet::decode(&b[..n]), Err(DecodeError::BadVersion(2)));
        b[0] = 0x51;
        assert_eq!(Packet::decode(&b[..n]), Err(DecodeError::BadType(5)));
        // An extension announced but absent.
        let mut b = buf;
        b[1] = 1;
        assert_eq!(
            Packet::decode(&b[..HEADER_LEN + 1]),
            Err(DecodeError::ExtensionOverrun)
        );
        // Extension length past the end.
        b[HEADER_LEN] = 0;
        b[HEADER_LEN + 1] = 200;
        assert_eq!(
            Packet::decode(&b[..HEADER_LEN + 6]),
            Err(DecodeError::ExtensionOverrun)
        );
        // SACK of length 3.
        b[HEADER_LEN + 1] = 3;
        assert_eq!(
            Packet::decode(&b[..HEADER_LEN + 6]),
            Err(DecodeError::BadSackLength(3))
        );
        // A chain of unknown extensions that "points to itself" ends at the
        // end of the buffer instead of looping.
        let mut b = [0u8; HEADER_LEN + 40];
        b[0] = 0x01;
        b[1] = 9;
        for i in 0..20 {
            b[HEADER_LEN + 2 * i] = 9;
            b[HEADER_LEN + 2 * i + 1] = 0;
        }
        assert_eq!(Packet::decode(&b), Err(DecodeError::ExtensionOverrun));
    }

    #[test]
    fn unknown_extensions_are_skipped() {
        let mut b = vec![0x01, 7];
        b.extend_from_slice(&[0u8; 18]);
        b.extend_from_slice(&[EXT_SELECTIVE_ACK, 2, 0xaa, 0xbb]);
        b.extend_from_slice(&[0, 4, 1, 2, 3, 4]);
        b.extend_from_slice(b"pay");
        let p = Packet::decode(&b).unwrap();
        assert_eq!(p.sack, Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(p.payload, b"pay");
    }

    #[test]
    fn seq_diff_wraps() {
        assert_eq!(seq_diff(2, 0xffff), 3);
        assert_eq!(seq_diff(0xffff, 2), -3);
    }
}
