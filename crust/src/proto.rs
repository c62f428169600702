//! The sans-IO core of a crust connection: frame codec, hello, beacon
//! payload, and the liveness (heartbeat) rules.
//!
//! Nothing here touches a socket or reads the clock: every function takes
//! bytes (and, for [`Liveness`], an `Instant`) and returns bytes, decisions
//! or errors, so it is tested deterministically and fuzzed directly.
//!
//! # Frames
//!
//! A crust connection is a transport stream (encrypted, authenticated)
//! carrying frames, each starting with a type byte from the registry
//! [`transport::wire::crust_frame`]:
//!
//! | type | frame | body |
//! |---|---|---|
//! | `0x10` | message | `len: u32 BE` then `len` bytes |
//! | `0x11` | heartbeat | none |
//! | `0x12` | hello | `len: u16 BE` then a [`Hello`] |
//! | `0x13` | reject | `code: u8` ([`RejectCode`]), `len: u8`, UTF-8 reason |
//! | `0x14` | close | none |
//!
//! Each side sends one hello first (the dialler at once, the acceptor after
//! it read and accepted the dialler's); then messages, heartbeats and
//! finally a close. A decoder refuses a message length over its configured
//! maximum before the body arrives, so a peer cannot make us buffer more.
//!
//! ```
//! use crust::proto::{decode_frame, encode_message_header, Frame};
//!
//! let mut wire = encode_message_header(5).to_vec();
//! wire.extend_from_slice(b"hello");
//! let (frame, used) = decode_frame(&wire, 1024).unwrap().unwrap();
//! assert_eq!(frame, Frame::Message(5..10));
//! assert_eq!(used, 10);
//! assert_eq!(&wire[5..10], b"hello");
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use transport::wire::{RejectCode, crust_frame};
use transport::{Endpoint, Protocol, PublicKey};

/// The crust connection protocol version carried in every hello.
pub const CRUST_VERSION: u8 = 1;
/// The longest network name, in bytes.
pub const MAX_NETWORK_NAME: usize = 64;
/// The most endpoints a hello or beacon carries.
pub const MAX_ENDPOINTS: usize = 16;
/// The largest hello body.
pub const MAX_HELLO_LEN: usize =
    1 + 1 + MAX_NETWORK_NAME + 4 + 1 + MAX_ENDPOINTS * ENDPOINT_MAX_LEN;
/// The longest reason a reject frame carries.
pub const MAX_REASON_LEN: usize = 255;
/// Bytes in a message frame's header.
pub const MESSAGE_HEADER_LEN: usize = 5;

const ENDPOINT_MAX_LEN: usize = 1 + 1 + 16 + 2;

/// Why bytes from the peer are not a valid crust frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// An unknown frame type byte.
    UnknownType(u8),
    /// A message longer than the configured maximum.
    MessageTooLarge {
        /// The length the peer announced.
        len: u64,
        /// Our maximum.
        max: usize,
    },
    /// A hello or reject whose body is malformed.
    Malformed(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownType(t) => write!(f, "unknown crust frame type 0x{t:02x}"),
            FrameError::MessageTooLarge { len, max } => write!(
                f,
                "the peer announced a {len}-byte message, over the maximum of {max} bytes"
            ),
            FrameError::Malformed(what) => write!(f, "malformed crust frame: {what}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// One decoded frame. Message bodies are given as a range of the input, so
/// the caller copies them once, where it wants them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A user message: its bytes are `input[range]`.
    Message(Range<usize>),
    /// A heartbeat.
    Heartbeat,
    /// The peer's hello.
    Hello(Hello),
    /// The peer refused us.
    Reject {
        /// Why.
        code: RejectCode,
        /// The peer's words.
        reason: String,
    },
    /// The peer closed cleanly.
    Close,
}

/// Decodes the frame at the start of `input`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((frame, used)))`
/// when a whole frame is there (`used` bytes of it), or an error that ends
/// the connection. A message length over `max_message` is refused as soon as
/// its header is complete.
///
/// # Errors
///
/// [`FrameError`] for an unknown type, an oversized message or a malformed
/// hello or reject.
pub fn decode_frame(
    input: &[u8],
    max_message: usize,
) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(&ty) = input.first() else {
        return Ok(None);
    };
    match ty {
        crust_frame::MESSAGE => {
            let Some(h) = input.get(1..MESSAGE_HEADER_LEN) else {
                return Ok(None);
            };
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if len > max_message {
                return Err(FrameError::MessageTooLarge {
                    len: len as u64,
                    max: max_message,
                });
            }
            let end = MESSAGE_HEADER_LEN + len;
            if input.len() < end {
                return Ok(None);
            }
            Ok(Some((Frame::Message(MESSAGE_HEADER_LEN..end), end)))
        }
        crust_frame::HEARTBEAT => Ok(Some((Frame::Heartbeat, 1))),
        crust_frame::CLOSE => Ok(Some((Frame::Close, 1))),
        crust_frame::HELLO => {
            let Some(h) = input.get(1..3) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes([h[0], h[1]]) as usize;
            if len > MAX_HELLO_LEN {
                return Err(FrameError::Malformed("hello longer than its maximum"));
            }
            let Some(body) = input.get(3..3 + len) else {
                return Ok(None);
            };
            Ok(Some((Frame::Hello(Hello::decode(body)?), 3 + len)))
        }
        crust_frame::REJECT => {
            let Some(h) = input.get(1..3) else {
                return Ok(None);
            };
            let (code, len) = (RejectCode::from_u8(h[0]), h[1] as usize);
            let Some(reason) = input.get(3..3 + len) else {
                return Ok(None);
            };
            let reason = String::from_utf8_lossy(reason).into_owned();
            Ok(Some((Frame::Reject { code, reason }, 3 + len)))
        }
        other => Err(FrameError::UnknownType(other)),
    }
}

/// The header of a message frame of `len` bytes.
pub fn encode_message_header(len: u32) -> [u8; MESSAGE_HEADER_LEN] {
    let l = len.to_be_bytes();
    [crust_frame::MESSAGE, l[0], l[1], l[2], l[3]]
}

/// A heartbeat frame.
pub const HEARTBEAT_FRAME: [u8; 1] = [crust_frame::HEARTBEAT];
/// A close frame.
pub const CLOSE_FRAME: [u8; 1] = [crust_frame::CLOSE];

/// Appends a reject frame; the reason is cut to [`MAX_REASON_LEN`] bytes (at
/// a character boundary).
pub fn encode_reject(code: RejectCode, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.push(crust_frame::REJECT);
    out.push(code.to_u8());
    out.push(end as u8);
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// What each side tells the other first: its crust version, its network
/// name and the endpoints it accepts connections on (addresses and
/// protocols; the key is the one the transport proved).
///
/// Body layout: `version: u8`, `name_len: u8`, name (UTF-8),
/// `inactivity_timeout_ms: u32 BE`, `count: u8`, then `count` endpoints as
/// in [`encode_endpoint_addrs`].
///
/// The inactivity timeout tells the peer how often it must heartbeat: each
/// side heartbeats at least three times per the other's timeout (see
/// [`heartbeat_period_for`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's crust version.
    pub version: u8,
    /// The sender's network name.
    pub network: String,
    /// After how long without hearing from us the sender declares us lost.
    pub inactivity_timeout: Duration,
    /// Where the sender accepts connections.
    pub listeners: Vec<(Protocol, SocketAddr)>,
}

/// The heartbeat period to use towards a peer: ours, or a third of the
/// peer's inactivity timeout if that is shorter (at least 1 ms).
///
/// ```
/// use std::time::Duration;
/// let s = Duration::from_secs;
/// assert_eq!(crust::proto::heartbeat_period_for(s(10), s(30)), s(10));
/// assert_eq!(crust::proto::heartbeat_period_for(s(10), s(3)), s(1));
/// ```
pub fn heartbeat_period_for(ours: Duration, peer_inactivity: Duration) -> Duration {
    ours.min(peer_inactivity / 3).max(Duration::from_millis(1))
}

impl Hello {
    /// Appends the hello frame (type, length, body). Network names over
    /// [`MAX_NETWORK_NAME`] bytes and endpoints beyond [`MAX_ENDPOINTS`] are
    /// cut (the config refuses such names before they get here).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[crust_frame::HELLO, 0, 0]);
        out.push(self.version);
        push_name(&self.network, out);
        let ms = self.inactivity_timeout.as_millis().min(u32::MAX as u128) as u32;
        out.extend_from_slice(&ms.to_be_bytes());
        encode_endpoint_addrs(&self.listeners, out);
        let len = (out.len() - start - 3) as u16;
        out[start + 1..start + 3].copy_from_slice(&len.to_be_bytes());
    }

    /// Decodes a hello body.
    ///
    /// # Errors
    ///
    /// [`FrameError::Malformed`] naming what is wrong.
    pub fn decode(body: &[u8]) -> Result<Hello, FrameError> {
        let mut r = Reader(body);
        let version = r.u8("hello version")?;
        let network = r.name()?;
        let ms = r.take(4, "inactivity timeout")?;
        let ms = u32::from_be_bytes([ms[0], ms[1], ms[2], ms[3]]);
        if ms == 0 {
            return Err(FrameError::Malformed("an inactivity timeout of 0"));
        }
        let listeners = decode_endpoint_addrs(&mut r)?;
        if !r.0.is_empty() {
            return Err(FrameError::Malformed("trailing bytes after the hello"));
        }
        Ok(Hello {
            version,
            network,
            inactivity_timeout: Duration::from_millis(ms.into()),
            listeners,
        })
    }
}

fn push_name(name: &str, out: &mut Vec<u8>) {
    let mut end = name.len().min(MAX_NETWORK_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&name.as_bytes()[..end]);
}

/// Appends `count: u8` then each endpoint as `protocol: u8` (0 tcp, 1 utp),
/// `family: u8` (4 or 6), the address (4 or 16 bytes), `port: u16 BE`. At
/// most [`MAX_ENDPOINTS`] are written.
pub fn encode_endpoint_addrs(eps: &[(Protocol, SocketAddr)], out: &mut Vec<u8>) {
    let eps = &eps[..eps.len().min(MAX_ENDPOINTS)];
    out.push(eps.len() as u8);
    for (p, a) in eps {
        out.push(match p {
            Protocol::Tcp => 0,
            Protocol::Utp => 1,
        });
        match a.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
}

fn decode_endpoint_addrs(r: &mut Reader<'_>) -> Result<Vec<(Protocol, SocketAddr)>, FrameError> {
    let count = r.u8("endpoint count")? as usize;
    if count > MAX_ENDPOINTS {
        return Err(FrameError::Malformed("more endpoints than the maximum"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let protocol = match r.u8("endpoint protocol")? {
            0 => Protocol::Tcp,
            1 => Protocol::Utp,
            _ => return Err(FrameError::Malformed("unknown endpoint protocol")),
        };
        let ip = match r.u8("address family")? {
            4 => {
                let b = r.take(4, "IPv4 address")?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let b: [u8; 16] = r
                    .take(16, "IPv6 address")?
                    .try_into()
                    .map_err(|_| FrameError::Malformed("IPv6 address"))?;
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => return Err(FrameError::Malformed("unknown address family")),
        };
        let p = r.take(2, "port")?;
        let port = u16::from_be_bytes([p[0], p[1]]);
        if port == 0 || ip.is_unspecified() {
            return Err(FrameError::Malformed(
                "an endpoint with port 0 or an unspecified address",
            ));
        }
        out.push((protocol, SocketAddr::new(ip, port)));
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Malformed(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        Ok(self.take(1, what)?[0])
    }

    fn name(&mut self) -> Result<String, FrameError> {
        let len = self.u8("network name length")? as usize;
        if len > MAX_NETWORK_NAME {
            return Err(FrameError::Malformed("network name longer than 64 bytes"));
        }
        let b = self.take(len, "network name")?;
        String::from_utf8(b.to_vec()).map_err(|_| FrameError::Malformed("network name not UTF-8"))
    }
}

/// The data a service's beacon carries: `magic "CRSB"`, `version: u8`,
/// the network name, the service's public key (32 bytes), and its accepting
/// endpoints (as in [`encode_endpoint_addrs`]).
///
/// Beacons are not authenticated: a receiver keeps only the endpoints whose
/// address is the beacon sender's own (see [`BeaconPayload::endpoints_from`]).
///
/// ```
/// use crust::proto::BeaconPayload;
/// use transport::{Identity, Protocol};
///
/// let key = Identity::generate().public_key();
/// let p = BeaconPayload {
///     network: "demo".into(),
///     public_key: key,
///     listeners: vec![(Protocol::Tcp, "127.0.0.1:5483".parse().unwrap())],
/// };
/// let bytes = p.encode();
/// assert_eq!(BeaconPayload::decode(&bytes).unwrap(), p);
/// let eps = p.endpoints_from("127.0.0.1:5484".parse().unwrap());
/// assert_eq!(eps.len(), 1);
/// assert!(p.endpoints_from("127.0.0.9:5484".parse().unwrap()).is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeaconPayload {
    /// The sender's network name.
    pub network: String,
    /// The sender's public key.
    pub public_key: PublicKey,
    /// Where it accepts connections.
    pub listeners: Vec<(Protocol, SocketAddr)>,
}

/// The first bytes of a crust service beacon payload.
pub const BEACON_MAGIC: [u8; 4] = *b"CRSB";
/// The beacon payload version.
pub const BEACON_VERSION: u8 = 1;

impl BeaconPayload {
    /// The payload's bytes (at most 4 + 1 + 65 + 32 + 1 + 16 × 20 = 423,
    /// within the beacon's 1,024-byte data limit).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&BEACON_MAGIC);
        out.push(BEACON_VERSION);
        push_name(&self.network, &mut out);
        out.extend_from_slice(self.public_key.as_bytes());
        encode_endpoint_addrs(&self.listeners, &mut out);
        out
    }

    /// Decodes a payload.
    ///
    /// # Errors
    ///
    /// [`FrameError::Malformed`] naming what is wrong (another magic, version
    /// or a truncated or oversized part).
    pub fn decode(bytes: &[u8]) -> Result<BeaconPayload, FrameError> {
        let mut r = Reader(bytes);
        if r.take(4, "beacon magic")? != BEACON_MAGIC {
            return Err(FrameError::Malformed("not a crust service beacon"));
        }
        if r.u8("beacon version")? != BEACON_VERSION {
            return Err(FrameError::Malformed("unknown beacon version"));
        }
        let network = r.name()?;
        let key: [u8; 32] = r
            .take(32, "public key")?
            .try_into()
            .map_err(|_| FrameError::Malformed("public key"))?;
        let listeners = decode_endpoint_addrs(&mut r)?;
        if !r.0.is_empty() {
            return Err(FrameError::Malformed("trailing bytes after the beacon"));
        }
        Ok(BeaconPayload {
            network,
            public_key: PublicKey::from_bytes(key),
            listeners,
        })
    }

    /// The announced endpoints that are on the sender's own address `from`
    /// (the source of the beacon datagram): a LAN attacker cannot make us
    /// dial a third host by announcing its address.
    pub fn endpoints_from(&self, from: SocketAddr) -> Vec<Endpoint> {
        self.listeners
            .iter()
            .filter(|(_, a)| same_ip(a.ip(), from.ip()))
            .map(|&(p, a)| Endpoint::new(p, a, self.public_key))
            .collect()
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V6(b)) | (IpAddr::V6(b), IpAddr::V4(a)) => {
            b.to_ipv4_mapped() == Some(a)
        }
        _ => a == b,
    }
}

/// What [`Liveness::poll`] says to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivenessAction {
    /// Nothing before the given instant.
    Wait(Instant),
    /// Send a heartbeat now (we sent nothing for a heartbeat period).
    SendHeartbeat,
    /// The peer has been silent for the inactivity timeout: it is lost.
    Lost,
}

/// The heartbeat rules of one connection, on virtual time.
///
/// Any bytes received count as a sign of life; any frame sent counts as
/// ours. After `heartbeat_period` without sending, send a heartbeat; after
/// `inactivity_timeout` without receiving, the peer is lost.
///
/// ```
/// use std::time::{Duration, Instant};
/// use crust::proto::{Liveness, LivenessAction};
///
/// let t0 = Instant::now();
/// let mut l = Liveness::new(t0, Duration::from_secs(10), Duration::from_secs(30));
/// assert_eq!(l.poll(t0), LivenessAction::Wait(t0 + Duration::from_secs(10)));
/// assert_eq!(l.poll(t0 + Duration::from_secs(10)), LivenessAction::SendHeartbeat);
/// l.handle_sent(t0 + Duration::from_secs(10));
/// l.handle_received(t0 + Duration::from_secs(12));
/// assert_eq!(l.poll(t0 + Duration::from_secs(41)), LivenessAction::SendHeartbeat);
/// assert_eq!(l.poll(t0 + Duration::from_secs(42)), LivenessAction::Lost);
/// ```
#[derive(Clone, Debug)]
pub struct Liveness {
    last_sent: Instant,
    last_received: Instant,
    heartbeat_period: Duration,
    inactivity_timeout: Duration,
}

impl Liveness {
    /// A connection that was last heard from and sent to at `now`.
    pub fn new(now: Instant, heartbeat_period: Duration, inactivity_timeout: Duration) -> Self {
        Liveness {
            last_sent: now,
            last_received: now,
            heartbeat_period,
            inactivity_timeout,
        }
    }

    /// We sent a frame at `now`.
    pub fn handle_sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    /// Bytes arrived from the peer at `now`.
    pub fn handle_received(&mut self, now: Instant) {
        self.last_received = self.last_received.max(now);
    }

    /// When the peer is declared lost unless it is heard from before.
    pub fn lost_at(&self) -> Option<Instant> {
        self.last_received.checked_add(self.inactivity_timeout)
    }

    /// What to do at `now`: losing the peer comes before heartbeating it.
    pub fn poll(&self, now: Instant) -> LivenessAction {
        let lost_at = self.lost_at();
        if lost_at.is_some_and(|t| now >= t) {
            return LivenessAction::Lost;
        }
        let beat_at = self.last_sent.checked_add(self.heartbeat_period);
        if beat_at.is_some_and(|t| now >= t) {
            return LivenessAction::SendHeartbeat;
        }
        let next = match (beat_at, lost_at) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            // Both periods beyond what an Instant can hold: check again in a
            // day (a config of that size is refused, this is a guard).
            (None, None) => now + Duration::from_secs(86_400),
        };
        LivenessAction::Wait(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            version: CRUST_VERSION,
            network: "net".into(),
            inactivity_timeout: Duration::from_secs(30),
            listeners: vec![
                (Protocol::Tcp, "192.0.2.1:5483".parse().unwrap()),
                (Protocol::Utp, "[2001:db8::1]:5484".parse().unwrap()),
            ],
        }
    }

    #[test]
    fn hello_round_trips_and_every_truncation_asks_for_more() {
        let mut wire = Vec::new();
        hello().encode(&mut wire);
        let (f, used) = decode_frame(&wire, 10).unwrap().unwrap();
        assert_eq!(f, Frame::Hello(hello()));
        assert_eq!(used, wire.len());
        for cut in 0..wire.len() {
            assert_eq!(decode_frame(&wire[..cut], 10), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn hello_example_bytes() {
        let h = Hello {
            version: 1,
            network: "ab".into(),
            inactivity_timeout: Duration::from_secs(30),
            listeners: vec![(Protocol::Tcp, "192.0.2.1:5483".parse().unwrap())],
        };
        let mut wire = Vec::new();
        h.encode(&mut wire);
        assert_eq!(
            hex::encode(&wire),
            "1200110102616200007530010004c0000201156b"
        );
    }

    const WIRE_MD: &str = include_str!("../../docs/wire.md");

    #[test]
    fn wire_md_examples_match_the_code() {
        use netlab::wire_doc::assert_hex;
        let mut wire = Vec::new();
        Hello {
            version: 1,
            network: "ab".into(),
            inactivity_timeout: Duration::from_secs(30),
            listeners: vec![(Protocol::Tcp, "192.0.2.1:5483".parse().unwrap())],
        }
        .encode(&mut wire);
        assert_hex(WIRE_MD, "crust-hello", &wire);
        wire.clear();
        encode_reject(RejectCode::OtherNetwork, "right", &mut wire);
        assert_hex(WIRE_MD, "crust-reject", &wire);
        wire.clear();
        wire.extend_from_slice(&encode_message_header(2));
        wire.extend_from_slice(b"hi");
        wire.extend_from_slice(&HEARTBEAT_FRAME);
        wire.extend_from_slice(&CLOSE_FRAME);
        assert_hex(WIRE_MD, "crust-message-heartbeat-close", &wire);
        let p = BeaconPayload {
            network: "ab".into(),
            public_key: PublicKey::from_bytes([7; 32]),
            listeners: vec![(Protocol::Tcp, "127.0.0.1:5483".parse().unwrap())],
        };
        assert_hex(WIRE_MD, "crust-beacon-payload", &p.encode());
        // And the documented bytes decode to the same frames.
        let doc = netlab::wire_doc::hex(WIRE_MD, "crust-message-heartbeat-close");
        let (f, n) = decode_frame(&doc, 10).unwrap().unwrap();
        assert_eq!((f, n), (Frame::Message(5..7), 7));
        assert_eq!(MAX_HELLO_LEN, 391);
    }

    #[test]
    fn oversized_message_is_refused_from_its_header() {
        let wire = encode_message_header(1025);
        assert_eq!(
            decode_frame(&wire, 1024),
            Err(FrameError::MessageTooLarge {
                len: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn unknown_type_and_malformed_hello() {
        assert_eq!(
            decode_frame(&[0x3f], 10),
            Err(FrameError::UnknownType(0x3f))
        );
        // A hello whose endpoint count exceeds the maximum.
        let wire = [crust_frame::HELLO, 0, 8, 1, 0, 0, 0, 0, 1, 17, 0];
        assert!(matches!(
            decode_frame(&wire, 10),
            Err(FrameError::Malformed(_))
        ));
        // A hello announcing port 0.
        let wire = [
            crust_frame::HELLO,
            0,
            14,
            1,
            0,
            0,
            0,
            0,
            1,
            1,
            0,
            4,
            1,
            2,
            3,
            4,
            0,
            0,
        ];
        assert!(matches!(
            decode_frame(&wire, 10),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn reject_round_trips_and_cuts_long_reasons() {
        let mut wire = Vec::new();
        encode_reject(RejectCode::OtherNetwork, &"é".repeat(200), &mut wire);
        let (f, used) = decode_frame(&wire, 0).unwrap().unwrap();
        assert_eq!(used, wire.len());
        let Frame::Reject { code, reason } = f else {
            panic!("not a reject: {f:?}")
        };
        assert_eq!(code, RejectCode::OtherNetwork);
        assert_eq!(reason.len(), 254);
        let wire = [crust_frame::REJECT, 99, 0];
        assert_eq!(
            decode_frame(&wire, 0).unwrap().unwrap().0,
            Frame::Reject {
                code: RejectCode::Unknown(99),
                reason: String::new()
            }
        );
    }

    #[test]
    fn beacon_payload_rejects_junk_and_filters_by_sender() {
        let key = PublicKey::from_bytes([7; 32]);
        let p = BeaconPayload {
            network: "n".into(),
            public_key: key,
            listeners: vec![
                (Protocol::Tcp, "192.0.2.1:1".parse().unwrap()),
                (Protocol::Utp, "192.0.2.66:2".parse().unwrap()),
            ],
        };
        let bytes = p.encode();
        assert_eq!(BeaconPayload::decode(&bytes).unwrap(), p);
        for cut in 0..bytes.len() {
            assert!(BeaconPayload::decode(&bytes[..cut]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(BeaconPayload::decode(&long).is_err());
        let eps = p.endpoints_from("192.0.2.1:9".parse().unwrap());
        assert_eq!(
            eps,
            vec![Endpoint::new(
                Protocol::Tcp,
                "192.0.2.1:1".parse().unwrap(),
                key
            )]
        );
    }

    #[test]
    fn liveness_heartbeats_and_loses_on_virtual_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Liveness::new(t0, s(10), s(30));
        let mut t = t0;
        let mut beats = 0;
        // The peer keeps talking: we heartbeat every 10 s and never lose it.
        while t < t0 + s(100) {
            match l.poll(t) {
                LivenessAction::Wait(next) => {
                    assert!(next > t);
                    t = next;
                }
                LivenessAction::SendHeartbeat => {
                    beats += 1;
                    l.handle_sent(t);
                }
                LivenessAction::Lost => panic!("lost a talking peer at {:?}", t - t0),
            }
            l.handle_received(t);
        }
        // Heartbeats at 10, 20, ... 90 s.
        assert_eq!(beats, 9);
        // Then it falls silent at 100 s: lost at exactly 130 s.
        let mut t = t0 + s(100);
        loop {
            match l.poll(t) {
                LivenessAction::Wait(next) => t = next,
                LivenessAction::SendHeartbeat => l.handle_sent(t),
                LivenessAction::Lost => break,
            }
        }
        assert_eq!(t - t0, s(130));
    }

    #[test]
    fn huge_periods_never_overflow() {
        let t0 = Instant::now();
        let l = Liveness::new(t0, Duration::MAX, Duration::MAX);
        assert!(matches!(l.poll(t0), LivenessAction::Wait(_)));
    }
}
