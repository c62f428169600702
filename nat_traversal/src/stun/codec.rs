//! STUN message codec (RFC 8489), enough for Binding and RFC 5780 behaviour
//! discovery: XOR-MAPPED-ADDRESS, MAPPED-ADDRESS, CHANGE-REQUEST,
//! RESPONSE-ORIGIN, OTHER-ADDRESS, ERROR-CODE, SOFTWARE, FINGERPRINT.
//!
//! The decoder is strict about framing (header bits, magic cookie, length,
//! padding, FINGERPRINT last and correct) and never panics; unknown
//! attributes are skipped. No I/O here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie of RFC 8489.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The Binding method.
pub const BINDING: u16 = 0x0001;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 20;
/// The largest message the decoder accepts: room for RFC 5780 PADDING tests
/// (coturn's client sends 1532-byte requests) and no more.
pub const MAX_MESSAGE_LEN: usize = 2048;
/// The most attributes the decoder reads from one message.
pub const MAX_ATTRIBUTES: usize = 32;

const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_CHANGE_REQUEST: u16 = 0x0003;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_RESPONSE_PORT: u16 = 0x0027;
const ATTR_SOFTWARE: u16 = 0x8022;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_RESPONSE_ORIGIN: u16 = 0x802B;
const ATTR_OTHER_ADDRESS: u16 = 0x802C;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// A STUN transaction id (96 bits).
pub type TransactionId = [u8; 12];

/// The class of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A request.
    Request,
    /// An indication.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// A decoded (or to be encoded) STUN message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The class (`None` only in `Default`; encoding requires it).
    pub class: Option<Class>,
    /// The method (12 bits).
    pub method: u16,
    /// The transaction id.
    pub transaction_id: TransactionId,
    /// XOR-MAPPED-ADDRESS.
    pub xor_mapped_address: Option<SocketAddr>,
    /// MAPPED-ADDRESS.
    pub mapped_address: Option<SocketAddr>,
    /// CHANGE-REQUEST (change IP, change port).
    pub change_request: Option<(bool, bool)>,
    /// RESPONSE-PORT (RFC 5780): where the client wants the answer.
    pub response_port: Option<u16>,
    /// RESPONSE-ORIGIN.
    pub response_origin: Option<SocketAddr>,
    /// OTHER-ADDRESS.
    pub other_address: Option<SocketAddr>,
    /// ERROR-CODE (code, reason).
    pub error_code: Option<(u16, String)>,
    /// SOFTWARE.
    pub software: Option<String>,
    /// Whether a FINGERPRINT was present (it was checked when decoding).
    pub fingerprint: bool,
}

/// Why bytes are not a STUN message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header, or shorter than the header says.
    Truncated,
    /// Larger than [`MAX_MESSAGE_LEN`].
    TooLong,
    /// The two top bits are not zero, or the length is not a multiple of 4.
    BadHeader,
    /// The magic cookie is wrong (not RFC 5389/8489 STUN).
    BadCookie,
    /// An attribute runs past the end of the message.
    BadAttribute(u16),
    /// The FINGERPRINT does not match, or is not the last attribute.
    BadFingerprint,
    /// More than [`MAX_ATTRIBUTES`] attributes.
    TooManyAttributes,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated STUN message"),
            DecodeError::TooLong => write!(f, "STUN message longer than {MAX_MESSAGE_LEN} bytes"),
            DecodeError::BadHeader => write!(f, "not a STUN header"),
            DecodeError::BadCookie => write!(f, "wrong STUN magic cookie"),
            DecodeError::BadAttribute(t) => write!(f, "malformed STUN attribute 0x{t:04x}"),
            DecodeError::BadFingerprint => write!(f, "bad STUN FINGERPRINT"),
            DecodeError::TooManyAttributes => write!(f, "too many STUN attributes"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// CRC-32 (IEEE 802.3), as FINGERPRINT needs.
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn class_bits(c: Class) -> u16 {
    match c {
        Class::Request => 0x0000,
        Class::Indication => 0x0010,
        Class::Success => 0x0100,
        Class::Error => 0x0110,
    }
}

fn message_type(class: Class, method: u16) -> u16 {
    let m = method & 0x0FFF;
    ((m & 0x0F80) << 2) | ((m & 0x0070) << 1) | (m & 0x000F) | class_bits(class)
}

/// Whether `bytes` look like a STUN message (top bits zero, magic cookie):
/// a cheap test to tell STUN from other traffic on a shared socket.
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] & 0xC0 == 0 && bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
}

impl Message {
    /// A Binding request.
    pub fn binding_request(transaction_id: TransactionId) -> Message {
        Message {
            class: Some(Class::Request),
            method: BINDING,
            transaction_id,
            ..Message::default()
        }
    }

    /// Encodes the message, with a FINGERPRINT at the end.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let class = self.class.unwrap_or(Class::Request);
        out.extend_from_slice(&message_type(class, self.method).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id);
        let tid = self.transaction_id;
        if let Some(a) = self.mapped_address {
            put_attr(&mut out, ATTR_MAPPED_ADDRESS, &addr_value(a, None));
        }
        if let Some(a) = self.xor_mapped_address {
            put_attr(
                &mut out,
                ATTR_XOR_MAPPED_ADDRESS,
                &addr_value(a, Some(&tid)),
            );
        }
        if let Some((ip, port)) = self.change_request {
            let v: u32 = (if ip { 4 } else { 0 }) | (if port { 2 } else { 0 });
            put_attr(&mut out, ATTR_CHANGE_REQUEST, &v.to_be_bytes());
        }
        if let Some(p) = self.response_port {
            put_attr(
                &mut out,
                ATTR_RESPONSE_PORT,
                &[(p >> 8) as u8, p as u8, 0, 0],
            );
        }
        if let Some(a) = self.response_origin {
            put_attr(&mut out, ATTR_RESPONSE_ORIGIN, &addr_value(a, None));
        }
        if let Some(a) = self.other_address {
            put_attr(&mut out, ATTR_OTHER_ADDRESS, &addr_value(a, None));
        }
        if let Some((code, reason)) = &self.error_code {
            let mut v = vec![0, 0, (code / 100) as u8 & 0x07, (code % 100) as u8];
            v.extend_from_slice(reason.as_bytes());
            put_attr(&mut out, ATTR_ERROR_CODE, &v);
        }
        if let Some(s) = &self.software {
            put_attr(&mut out, ATTR_SOFTWARE, s.as_bytes());
        }
        // FINGERPRINT: the length field counts it before the CRC is taken.
        let len = (out.len() - HEADER_LEN + 8) as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        let crc = crc32(&out) ^ FINGERPRINT_XOR;
        put_attr(&mut out, ATTR_FINGERPRINT, &crc.to_be_bytes());
        out
    }

    /// Decodes one message that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong);
        }
        let ty = u16::from_be_bytes([bytes[0], bytes[1]]);
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if ty & 0xC000 != 0 || !len.is_multiple_of(4) {
            return Err(DecodeError::BadHeader);
        }
        if bytes[4..8] != MAGIC_COOKIE.to_be_bytes() {
            return Err(DecodeError::BadCookie);
        }
        if bytes.len() != HEADER_LEN + len {
            return Err(DecodeError::Truncated);
        }
        let class = match ty & 0x0110 {
            0x0000 => Class::Request,
            0x0010 => Class::Indication,
            0x0100 => Class::Success,
            _ => Class::Error,
        };
        let method = (ty & 0x000F) | ((ty & 0x00E0) >> 1) | ((ty & 0x3E00) >> 2);
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&bytes[8..20]);
        let mut m = Message {
            class: Some(class),
            method,
            transaction_id: tid,
            ..Message::default()
        };
        let mut pos = HEADER_LEN;
        let mut count = 0;
        while pos < bytes.len() {
            count += 1;
            if count > MAX_ATTRIBUTES {
                return Err(DecodeError::TooManyAttributes);
            }
            if bytes.len() - pos < 4 {
                return Err(DecodeError::Truncated);
            }
            let at = u16::from_be_bytes([bytes[pos], bytes[pos + 1]]);
            let alen = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
            let start = pos + 4;
            let padded = alen.div_ceil(4) * 4;
            if bytes.len() - start < padded {
                return Err(DecodeError::BadAttribute(at));
            }
            let v = &bytes[start..start + alen];
            let bad = || DecodeError::BadAttribute(at);
            match at {
                ATTR_MAPPED_ADDRESS => {
                    m.mapped_address = Some(parse_addr(v, None).ok_or_else(bad)?)
                }
                ATTR_XOR_MAPPED_ADDRESS => {
                    m.xor_mapped_address = Some(parse_addr(v, Some(&tid)).ok_or_else(bad)?)
                }
                ATTR_RESPONSE_ORIGIN => {
                    m.response_origin = Some(parse_addr(v, None).ok_or_else(bad)?)
                }
                ATTR_OTHER_ADDRESS => m.other_address = Some(parse_addr(v, None).ok_or_else(bad)?),
                ATTR_CHANGE_REQUEST => {
                    if v.len() != 4 {
                        return Err(bad());
                    }
                    m.change_request = Some((v[3] & 4 != 0, v[3] & 2 != 0));
                }
                ATTR_RESPONSE_PORT => {
                    if v.len() != 4 {
                        return Err(bad());
                    }
                    m.response_port = Some(u16::from_be_bytes([v[0], v[1]]));
                }
                ATTR_ERROR_CODE => {
                    if v.len() < 4 {
                        return Err(bad());
                    }
                    let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
                    let reason = String::from_utf8_lossy(&v[4..]).into_owned();
                    m.error_code = Some((code, reason));
                }
                ATTR_SOFTWARE => m.software = Some(String::from_utf8_lossy(v).into_owned()),
                ATTR_FINGERPRINT => {
                    if v.len() != 4 || start + 4 != bytes.len() {
                        return Err(DecodeError::BadFingerprint);
                    }
                    let want = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                    if crc32(&bytes[..pos]) ^ FINGERPRINT_XOR != want {
                        return Err(DecodeError::BadFingerprint);
                    }
                    m.fingerprint = true;
                }
                _ => {} // unknown: skipped
            }
            pos = start + padded;
        }
        Ok(m)
    }

    /// The address the server saw: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.
    pub fn reflexive_address(&self) -> Option<SocketAddr> {
        self.xor_mapped_address.or(self.mapped_address)
    }
}

/// The length of the first STUN message in a TCP byte stream, once its
/// header is in `buf`.
pub fn framed_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    Some(HEADER_LEN + usize::from(u16::from_be_bytes([buf[2], buf[3]])))
}

fn put_attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn xor_key(tid: &TransactionId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    k[4..].copy_from_slice(tid);
    k
}

fn addr_value(a: SocketAddr, xor: Option<&TransactionId>) -> Vec<u8> {
    let key = xor.map(xor_key);
    let mut port = a.port();
    if key.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let mut v = vec![0];
    match a.ip() {
        IpAddr::V4(ip) => {
            v.push(1);
            v.extend_from_slice(&port.to_be_bytes());
            let mut o = ip.octets();
            if let Some(k) = key {
                o.iter_mut().zip(k.iter()).for_each(|(b, k)| *b ^= k);
            }
            v.extend_from_slice(&o);
        }
        IpAddr::V6(ip) => {
            v.push(2);
            v.extend_from_slice(&port.to_be_bytes());
            let mut o = ip.octets();
            if let Some(k) = key {
                o.iter_mut().zip(k.iter()).for_each(|(b, k)| *b ^= k);
            }
            v.extend_from_slice(&o);
        }
    }
    v
}

fn parse_addr(v: &[u8], xor: Option<&TransactionId>) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let key = xor.map(xor_key);
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    if key.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    match (v[1], v.len()) {
        (1, 8) => {
            let mut o = [v[4], v[5], v[6], v[7]];
            if let Some(k) = key {
                o.iter_mut().zip(k.iter()).for_each(|(b, k)| *b ^= k);
            }
            Some(SocketAddr::new(Ipv4Addr::from(o).into(), port))
        }
        (2, 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&v[4..20]);
            if let Some(k) = key {
                o.iter_mut().zip(k.iter()).for_each(|(b, k)| *b ^= k);
            }
            Some(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 5769 §2.2: sample IPv4 response (XOR-MAPPED-ADDRESS 192.0.2.1:32853,
    // SOFTWARE "test vector", MESSAGE-INTEGRITY, FINGERPRINT).
    const RFC5769_RESPONSE: &str = "0101003c2112a442b7e7a701bc34d686fa87dfae\
        8022000b7465737420766563746f7220\
        002000080001a147e112a643\
        000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
        80280004c07d4c96";

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_rfc5769_sample_response() {
        let m = Message::decode(&unhex(RFC5769_RESPONSE)).unwrap();
        assert_eq!(m.class, Some(Class::Success));
        assert_eq!(m.method, BINDING);
        assert_eq!(
            m.xor_mapped_address,
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert_eq!(m.software.as_deref(), Some("test vector"));
        assert!(m.fingerprint);
    }

    #[test]
    fn crc32_matches_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trips_every_attribute() {
        let m = Message {
            class: Some(Class::Success),
            method: BINDING,
            transaction_id: [7; 12],
            xor_mapped_address: Some("[2001:db8::1]:4000".parse().unwrap()),
            mapped_address: Some("203.0.113.9:1".parse().unwrap()),
            change_request: Some((true, false)),
            response_port: Some(40000),
            response_origin: Some("203.0.113.1:3478".parse().unwrap()),
            other_address: Some("203.0.113.2:3479".parse().unwrap()),
            error_code: Some((420, "Unknown".into())),
            software: Some("crust".into()),
            fingerprint: true,
        };
        let bytes = m.encode();
        assert!(is_stun(&bytes));
        assert_eq!(framed_len(&bytes), Some(bytes.len()));
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn rejects_corruption() {
        let good = Message::binding_request([1; 12]).encode();
        let original = Message::decode(&good).unwrap();
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                // Either refused, or (a flip that turns FINGERPRINT into an
                // unknown attribute) visibly not the same message.
                assert_ne!(
                    Message::decode(&b).ok(),
                    Some(original.clone()),
                    "byte {i} bit {bit}"
                );
            }
        }
        for n in 0..good.len() {
            assert!(Message::decode(&good[..n]).is_err());
        }
    }
}
