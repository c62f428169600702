//! Rendezvous info: what two peers exchange out of band before punching.
//!
//! [`PubRendezvousInfo`] goes to the peer, as JSON (serde) or in the compact
//! binary form of [`PubRendezvousInfo::encode`] (version
//! [`RENDEZVOUS_VERSION`], a list of typed fields so later versions can add
//! fields old readers skip); [`PrivRendezvousInfo`] stays with us. Both
//! encodings enforce the same limits ([`PubRendezvousInfo::validate`]).
//!
//! A rendezvous info is for one attempt: make a fresh one
//! ([`gen_rendezvous_info`]) for every punch.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The version of both encodings.
pub const RENDEZVOUS_VERSION: u8 = 2;
/// The most endpoints of one kind (UDP, TCP) one rendezvous info carries.
pub const MAX_ENDPOINTS: usize = 16;
/// Length of the secret.
pub const SECRET_LEN: usize = 16;
/// Length of a static public key (X25519, as `transport` keys are).
pub const STATIC_KEY_LEN: usize = 32;
/// The longest binary encoding a decoder reads.
pub const MAX_ENCODED_LEN: usize = 1024;
/// The most listener endpoints one rendezvous info carries (so the
/// largest encoding stays under [`MAX_ENCODED_LEN`]).
pub const MAX_LISTENER_ENDPOINTS: usize = 8;
/// Length of a listener token.
pub const LISTENER_TOKEN_LEN: usize = 16;

/// The carrier protocol of a [`ListenerEndpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ListenerProtocol {
    /// TCP.
    Tcp,
    /// uTP over UDP.
    Utp,
}

/// An endpoint of one of the sender's listeners (public, UPnP-mapped or
/// on the LAN): the peer may dial it directly, carrying the info's
/// [`listener_token`](PubRendezvousInfo::listener_token) in its handshake,
/// and proving the sender's [`static_key`](PubRendezvousInfo::static_key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ListenerEndpoint {
    /// The carrier protocol.
    pub protocol: ListenerProtocol,
    /// The address.
    pub addr: SocketAddr,
}

/// How a NAT maps our internal address to external ones (RFC 4787), as far
/// as we learned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Mapping {
    /// Not measured (fewer than two STUN servers answered).
    #[default]
    Unknown,
    /// No NAT: the servers saw our local address.
    NoNat,
    /// The same external address for every destination ("easy", cone).
    EndpointIndependent,
    /// A new external address per destination ("hard", symmetric).
    EndpointDependent,
}

/// Which inbound packets a NAT lets in to a mapping (RFC 4787), as far as we
/// learned it (RFC 5780 tests, which need a server with two addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Filtering {
    /// Not measured.
    #[default]
    Unknown,
    /// Any source may send to a mapping (full cone, or no NAT and no firewall).
    EndpointIndependent,
    /// Only addresses we sent to (restricted cone).
    AddressDependent,
    /// Only address and port pairs we sent to (port-restricted).
    AddressAndPortDependent,
}

/// What we learned of our own NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NatBehaviour {
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
}

/// Our half of a rendezvous: kept private.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivRendezvousInfo {
    pub(crate) secret: [u8; SECRET_LEN],
    pub(crate) nat: NatBehaviour,
}

impl fmt::Debug for PrivRendezvousInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivRendezvousInfo")
            .field("secret", &"<hidden>")
            .field("nat", &self.nat)
            .finish()
    }
}

impl PrivRendezvousInfo {
    /// What we learned of our own NAT.
    pub fn nat(&self) -> NatBehaviour {
        self.nat
    }
}

/// The half a peer sends the other: our endpoints, our secret, what we know
/// of our NAT, and optionally our static public key.
///
/// Made by [`gen_rendezvous_info`] (and the `with_*` methods); decoded by
/// [`decode`](Self::decode) or serde, both of which refuse anything
/// [`validate`](Self::validate) refuses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "JsonRendezvousInfo", into = "JsonRendezvousInfo")]
#[non_exhaustive]
pub struct PubRendezvousInfo {
    /// UDP endpoints to probe: mapped (external) and local addresses.
    pub endpoints: Vec<SocketAddr>,
    /// TCP endpoints for the TCP punch, when they differ from `endpoints`
    /// (a rendezvous that maps one UDP and one TCP socket); empty means the
    /// TCP punch connects to `endpoints`.
    pub tcp_endpoints: Vec<SocketAddr>,
    /// The sender's secret: the punch key is derived from both sides'
    /// secrets; it never travels in a probe.
    pub secret: [u8; SECRET_LEN],
    /// What the sender learned of its NAT.
    pub nat: NatBehaviour,
    /// The sender's static public key, when the stream that follows the
    /// punch must prove it (the transport's Noise handshake).
    pub static_key: Option<[u8; STATIC_KEY_LEN]>,
    /// The sender's listeners' endpoints, which the peer may dial directly
    /// (at most [`MAX_LISTENER_ENDPOINTS`]); used only with a
    /// [`listener_token`](Self::listener_token) and a
    /// [`static_key`](Self::static_key).
    pub listener_endpoints: Vec<ListenerEndpoint>,
    /// The token a stream dialled to a listener endpoint carries in its
    /// encrypted handshake, so the sender hands it to this rendezvous.
    pub listener_token: Option<[u8; LISTENER_TOKEN_LEN]>,
}

/// Why bytes are not a [`PubRendezvousInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RendezvousDecodeError {
    /// No bytes at all.
    Empty,
    /// Another encoding version.
    Version(u8),
    /// Longer than [`MAX_ENCODED_LEN`].
    TooLong(usize),
    /// The bytes end inside a field.
    TruncatedField,
    /// A known field with the wrong length for its type.
    FieldLength {
        /// The field type.
        field: u8,
        /// Its length.
        len: u8,
    },
    /// A field that may appear once appeared again.
    DuplicateField(u8),
    /// No secret field.
    MissingSecret,
    /// A mapping code this version does not know.
    UnknownMapping(u8),
    /// A filtering code this version does not know.
    UnknownFiltering(u8),
    /// More than [`MAX_ENDPOINTS`] endpoints of one kind (or more than
    /// [`MAX_LISTENER_ENDPOINTS`] listener endpoints).
    TooManyEndpoints(usize),
    /// A listener protocol code this version does not know.
    UnknownListenerProtocol(u8),
    /// An address family other than 4 or 6.
    UnknownFamily(u8),
    /// An endpoint with port 0 or an unspecified address.
    UnusableEndpoint,
    /// A text form (JSON) field that is not what it should be; the text
    /// says which.
    Malformed(&'static str),
}

impl fmt::Display for RendezvousDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid rendezvous info: ")?;
        match self {
            Self::Empty => f.write_str("empty"),
            Self::Version(v) => write!(
                f,
                "version {v}, this library reads version {RENDEZVOUS_VERSION}"
            ),
            Self::TooLong(n) => write!(f, "{n} bytes, more than the {MAX_ENCODED_LEN} allowed"),
            Self::TruncatedField => f.write_str("truncated field"),
            Self::FieldLength { field, len } => {
                write!(f, "field type {field:#04x} with the wrong length {len}")
            }
            Self::DuplicateField(t) => write!(f, "field type {t:#04x} appears twice"),
            Self::MissingSecret => f.write_str("no secret"),
            Self::UnknownMapping(c) => write!(f, "unknown mapping code {c}"),
            Self::UnknownFiltering(c) => write!(f, "unknown filtering code {c}"),
            Self::TooManyEndpoints(n) => {
                write!(
                    f,
                    "{n} endpoints of one kind, more than the {MAX_ENDPOINTS} allowed"
                )
            }
            Self::UnknownFamily(c) => write!(f, "unknown address family {c}"),
            Self::UnknownListenerProtocol(c) => write!(f, "unknown listener protocol {c}"),
            Self::UnusableEndpoint => f.write_str("endpoint with port 0 or an unspecified address"),
            Self::Malformed(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for RendezvousDecodeError {}

impl From<RendezvousDecodeError> for std::io::Error {
    fn from(e: RendezvousDecodeError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

fn mapping_code(m: Mapping) -> u8 {
    match m {
        Mapping::Unknown => 0,
        Mapping::NoNat => 1,
        Mapping::EndpointIndependent => 2,
        Mapping::EndpointDependent => 3,
    }
}

fn filtering_code(f: Filtering) -> u8 {
    match f {
        Filtering::Unknown => 0,
        Filtering::EndpointIndependent => 1,
        Filtering::AddressDependent => 2,
        Filtering::AddressAndPortDependent => 3,
    }
}

fn nat_from_byte(b: u8) -> Result<NatBehaviour, RendezvousDecodeError> {
    use RendezvousDecodeError as E;
    let mapping = match b >> 4 {
        0 => Mapping::Unknown,
        1 => Mapping::NoNat,
        2 => Mapping::EndpointIndependent,
        3 => Mapping::EndpointDependent,
        c => return Err(E::UnknownMapping(c)),
    };
    let filtering = match b & 0x0F {
        0 => Filtering::Unknown,
        1 => Filtering::EndpointIndependent,
        2 => Filtering::AddressDependent,
        3 => Filtering::AddressAndPortDependent,
        c => return Err(E::UnknownFiltering(c)),
    };
    Ok(NatBehaviour { mapping, filtering })
}

/// The binary form's field types (`docs/wire.md` §5). Types not listed are
/// skipped by readers of this version; 0x07 and 0x08 are reserved for
/// what later versions add.
mod field {
    /// The secret (16 bytes). Required, once.
    pub(super) const SECRET: u8 = 0x01;
    /// NAT behaviour (1 byte: mapping << 4 | filtering). At most once.
    pub(super) const NAT: u8 = 0x02;
    /// A UDP endpoint (family, address, port). Repeated.
    pub(super) const UDP_ENDPOINT: u8 = 0x03;
    /// A TCP endpoint (family, address, port). Repeated.
    pub(super) const TCP_ENDPOINT: u8 = 0x04;
    /// The static public key (32 bytes). At most once.
    pub(super) const STATIC_KEY: u8 = 0x05;
    /// A listener endpoint (protocol: 0 TCP, 1 uTP; then as an endpoint).
    /// Repeated.
    pub(super) const LISTENER_ENDPOINT: u8 = 0x06;
    /// The listener token (16 bytes). At most once.
    pub(super) const LISTENER_TOKEN: u8 = 0x09;
}

fn put_field(out: &mut Vec<u8>, t: u8, value: &[u8]) {
    out.push(t);
    // Every value this version writes is at most 32 bytes.
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

fn endpoint_bytes(e: &SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(19);
    match e.ip() {
        IpAddr::V4(ip) => {
            v.push(4);
            v.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            v.push(6);
            v.extend_from_slice(&ip.octets());
        }
    }
    v.extend_from_slice(&e.port().to_be_bytes());
    v
}

fn endpoint_from_bytes(t: u8, v: &[u8]) -> Result<SocketAddr, RendezvousDecodeError> {
    use RendezvousDecodeError as E;
    let bad_len = E::FieldLength {
        field: t,
        len: v.len() as u8,
    };
    let (&fam, r) = v.split_first().ok_or(bad_len)?;
    let ip: IpAddr = match (fam, r.len()) {
        (4, 6) => Ipv4Addr::new(r[0], r[1], r[2], r[3]).into(),
        (6, 18) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&r[..16]);
            Ipv6Addr::from(o).into()
        }
        (4 | 6, _) => return Err(bad_len),
        (f, _) => return Err(E::UnknownFamily(f)),
    };
    let port = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
    Ok(SocketAddr::new(ip, port))
}

fn check_endpoints(eps: &[SocketAddr]) -> Result<(), RendezvousDecodeError> {
    if eps.len() > MAX_ENDPOINTS {
        return Err(RendezvousDecodeError::TooManyEndpoints(eps.len()));
    }
    if eps.iter().any(|e| e.port() == 0 || e.ip().is_unspecified()) {
        return Err(RendezvousDecodeError::UnusableEndpoint);
    }
    Ok(())
}

fn check_listener_endpoints(eps: &[ListenerEndpoint]) -> Result<(), RendezvousDecodeError> {
    if eps.len() > MAX_LISTENER_ENDPOINTS {
        return Err(RendezvousDecodeError::TooManyEndpoints(eps.len()));
    }
    if eps
        .iter()
        .any(|e| e.addr.port() == 0 || e.addr.ip().is_unspecified())
    {
        return Err(RendezvousDecodeError::UnusableEndpoint);
    }
    Ok(())
}

impl PubRendezvousInfo {
    /// Checks the limits every decoder enforces: at most [`MAX_ENDPOINTS`]
    /// endpoints of each kind and [`MAX_LISTENER_ENDPOINTS`] listener
    /// endpoints, none with port 0 or an unspecified address.
    pub fn validate(&self) -> Result<(), RendezvousDecodeError> {
        check_endpoints(&self.endpoints)?;
        check_endpoints(&self.tcp_endpoints)?;
        check_listener_endpoints(&self.listener_endpoints)
    }

    /// With our listeners' endpoints (at most [`MAX_LISTENER_ENDPOINTS`]
    /// are kept; duplicates and unusable ones are dropped) and the token a
    /// stream dialled to them carries.
    pub fn with_listeners(
        mut self,
        endpoints: impl IntoIterator<Item = ListenerEndpoint>,
        token: [u8; LISTENER_TOKEN_LEN],
    ) -> Self {
        let mut seen = std::collections::HashSet::new();
        self.listener_endpoints = endpoints
            .into_iter()
            .filter(|e| e.addr.port() != 0 && !e.addr.ip().is_unspecified())
            .filter(|e| seen.insert(*e))
            .take(MAX_LISTENER_ENDPOINTS)
            .collect();
        self.listener_token = Some(token);
        self
    }

    /// With our static public key, which the stream after the punch must
    /// prove.
    pub fn with_static_key(mut self, key: [u8; STATIC_KEY_LEN]) -> Self {
        self.static_key = Some(key);
        self
    }

    /// With separate TCP endpoints (see
    /// [`tcp_endpoints`](Self::tcp_endpoints)); at most [`MAX_ENDPOINTS`]
    /// are kept.
    pub fn with_tcp_endpoints(mut self, mut endpoints: Vec<SocketAddr>) -> Self {
        dedup_keep_order(&mut endpoints);
        endpoints.truncate(MAX_ENDPOINTS);
        self.tcp_endpoints = endpoints;
        self
    }

    /// The endpoints the TCP punch connects to.
    pub fn tcp_punch_endpoints(&self) -> &[SocketAddr] {
        if self.tcp_endpoints.is_empty() {
            &self.endpoints
        } else {
            &self.tcp_endpoints
        }
    }

    /// The compact binary form: the version byte, then fields, each
    /// `type (1) ‖ length (1) ‖ value` (`docs/wire.md` §5).
    ///
    /// ```
    /// use nat_traversal::{gen_rendezvous_info, PubRendezvousInfo};
    /// let (_, ours) = gen_rendezvous_info(vec!["203.0.113.5:4000".parse().unwrap()]);
    /// let bytes = ours.encode();
    /// assert_eq!(PubRendezvousInfo::decode(&bytes).unwrap(), ours);
    /// assert!(PubRendezvousInfo::decode(&bytes[..bytes.len() - 1]).is_err());
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 21 * self.endpoints.len());
        out.push(RENDEZVOUS_VERSION);
        put_field(&mut out, field::SECRET, &self.secret);
        put_field(
            &mut out,
            field::NAT,
            &[mapping_code(self.nat.mapping) << 4 | filtering_code(self.nat.filtering)],
        );
        for e in self.endpoints.iter().take(MAX_ENDPOINTS) {
            put_field(&mut out, field::UDP_ENDPOINT, &endpoint_bytes(e));
        }
        for e in self.tcp_endpoints.iter().take(MAX_ENDPOINTS) {
            put_field(&mut out, field::TCP_ENDPOINT, &endpoint_bytes(e));
        }
        if let Some(k) = &self.static_key {
            put_field(&mut out, field::STATIC_KEY, k);
        }
        for e in self.listener_endpoints.iter().take(MAX_LISTENER_ENDPOINTS) {
            let mut v = vec![match e.protocol {
                ListenerProtocol::Tcp => 0,
                ListenerProtocol::Utp => 1,
            }];
            v.extend_from_slice(&endpoint_bytes(&e.addr));
            put_field(&mut out, field::LISTENER_ENDPOINT, &v);
        }
        if let Some(t) = &self.listener_token {
            put_field(&mut out, field::LISTENER_TOKEN, t);
        }
        out
    }

    /// Decodes [`encode`](Self::encode)'s output. Refuses another version,
    /// more than [`MAX_ENCODED_LEN`] bytes, truncated fields, known fields
    /// of the wrong length or repeated, a missing secret, unknown NAT codes,
    /// and what [`validate`](Self::validate) refuses; skips fields of types
    /// it does not know.
    pub fn decode(bytes: &[u8]) -> Result<PubRendezvousInfo, RendezvousDecodeError> {
        use RendezvousDecodeError as E;
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(E::TooLong(bytes.len()));
        }
        let (&version, mut p) = bytes.split_first().ok_or(E::Empty)?;
        if version != RENDEZVOUS_VERSION {
            return Err(E::Version(version));
        }
        let mut secret = None;
        let mut nat = None;
        let mut static_key = None;
        let mut endpoints = Vec::new();
        let mut tcp_endpoints = Vec::new();
        let mut listener_endpoints = Vec::new();
        let mut listener_token = None;
        while let [t, len, rest @ ..] = p {
            let (t, len) = (*t, usize::from(*len));
            if rest.len() < len {
                return Err(E::TruncatedField);
            }
            let (v, next) = rest.split_at(len);
            p = next;
            let bad_len = E::FieldLength {
                field: t,
                len: len as u8,
            };
            match t {
                field::SECRET => {
                    let s: [u8; SECRET_LEN] = v.try_into().map_err(|_| bad_len)?;
                    if secret.replace(s).is_some() {
                        return Err(E::DuplicateField(t));
                    }
                }
                field::NAT => {
                    let [b] = v else { return Err(bad_len) };
                    if nat.replace(nat_from_byte(*b)?).is_some() {
                        return Err(E::DuplicateField(t));
                    }
                }
                field::STATIC_KEY => {
                    let k: [u8; STATIC_KEY_LEN] = v.try_into().map_err(|_| bad_len)?;
                    if static_key.replace(k).is_some() {
                        return Err(E::DuplicateField(t));
                    }
                }
                field::UDP_ENDPOINT | field::TCP_ENDPOINT => {
                    let list = if t == field::UDP_ENDPOINT {
                        &mut endpoints
                    } else {
                        &mut tcp_endpoints
                    };
                    if list.len() == MAX_ENDPOINTS {
                        return Err(E::TooManyEndpoints(MAX_ENDPOINTS + 1));
                    }
                    list.push(endpoint_from_bytes(t, v)?);
                }
                field::LISTENER_ENDPOINT => {
                    if listener_endpoints.len() == MAX_LISTENER_ENDPOINTS {
                        return Err(E::TooManyEndpoints(MAX_LISTENER_ENDPOINTS + 1));
                    }
                    let (&p, a) = v.split_first().ok_or(bad_len)?;
                    let protocol = match p {
                        0 => ListenerProtocol::Tcp,
                        1 => ListenerProtocol::Utp,
                        c => return Err(E::UnknownListenerProtocol(c)),
                    };
                    let addr = endpoint_from_bytes(t, a).map_err(|e| match e {
                        E::FieldLength { .. } => bad_len,
                        other => other,
                    })?;
                    listener_endpoints.push(ListenerEndpoint { protocol, addr });
                }
                field::LISTENER_TOKEN => {
                    let k: [u8; LISTENER_TOKEN_LEN] = v.try_into().map_err(|_| bad_len)?;
                    if listener_token.replace(k).is_some() {
                        return Err(E::DuplicateField(t));
                    }
                }
                _ => {} // a later version's field: skipped
            }
        }
        if !p.is_empty() {
            return Err(E::TruncatedField);
        }
        let info = PubRendezvousInfo {
            endpoints,
            tcp_endpoints,
            secret: secret.ok_or(E::MissingSecret)?,
            nat: nat.unwrap_or_default(),
            static_key,
            listener_endpoints,
            listener_token,
        };
        info.validate()?;
        Ok(info)
    }
}

/// The JSON form: `docs/wire.md` §5. Unknown keys are ignored (a later
/// version's fields); the limits are [`PubRendezvousInfo::validate`]'s.
#[derive(Serialize, Deserialize)]
struct JsonRendezvousInfo {
    version: u8,
    secret: String,
    #[serde(default)]
    nat: NatBehaviour,
    #[serde(default)]
    endpoints: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tcp_endpoints: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    static_key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    listener_endpoints: Vec<ListenerEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listener_token: Option<String>,
}

impl TryFrom<JsonRendezvousInfo> for PubRendezvousInfo {
    type Error = RendezvousDecodeError;

    fn try_from(j: JsonRendezvousInfo) -> Result<PubRendezvousInfo, RendezvousDecodeError> {
        use RendezvousDecodeError as E;
        if j.version != RENDEZVOUS_VERSION {
            return Err(E::Version(j.version));
        }
        // Bound the lists before anything else looks at them.
        check_endpoints(&j.endpoints)?;
        check_endpoints(&j.tcp_endpoints)?;
        check_listener_endpoints(&j.listener_endpoints)?;
        let secret = hex_array::<SECRET_LEN>(&j.secret)
            .ok_or(E::Malformed("secret is not 32 hex digits"))?;
        let static_key = match &j.static_key {
            Some(k) => Some(
                hex_array::<STATIC_KEY_LEN>(k)
                    .ok_or(E::Malformed("static_key is not 64 hex digits"))?,
            ),
            None => None,
        };
        let listener_token = match &j.listener_token {
            Some(k) => Some(
                hex_array::<LISTENER_TOKEN_LEN>(k)
                    .ok_or(E::Malformed("listener_token is not 32 hex digits"))?,
            ),
            None => None,
        };
        let info = PubRendezvousInfo {
            endpoints: j.endpoints,
            tcp_endpoints: j.tcp_endpoints,
            secret,
            nat: j.nat,
            static_key,
            listener_endpoints: j.listener_endpoints,
            listener_token,
        };
        info.validate()?;
        Ok(info)
    }
}

impl From<PubRendezvousInfo> for JsonRendezvousInfo {
    fn from(i: PubRendezvousInfo) -> JsonRendezvousInfo {
        JsonRendezvousInfo {
            version: RENDEZVOUS_VERSION,
            secret: hex::encode(i.secret),
            nat: i.nat,
            endpoints: i.endpoints,
            tcp_endpoints: i.tcp_endpoints,
            static_key: i.static_key.map(hex::encode),
            listener_endpoints: i.listener_endpoints,
            listener_token: i.listener_token.map(hex::encode),
        }
    }
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn dedup_keep_order(v: &mut Vec<SocketAddr>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|e| seen.insert(*e));
}

/// Makes a fresh secret and the two halves of a rendezvous for `endpoints`
/// (the mapped socket's endpoints; duplicates are dropped and at most
/// [`MAX_ENDPOINTS`] kept).
pub fn gen_rendezvous_info(endpoints: Vec<SocketAddr>) -> (PrivRendezvousInfo, PubRendezvousInfo) {
    gen_rendezvous_info_with(endpoints, NatBehaviour::default())
}

/// Like [`gen_rendezvous_info`], also carrying what we learned of our NAT
/// (so a failed punch can say why).
pub fn gen_rendezvous_info_with(
    endpoints: Vec<SocketAddr>,
    nat: NatBehaviour,
) -> (PrivRendezvousInfo, PubRendezvousInfo) {
    gen_rendezvous_info_rng(&mut rand::rng(), endpoints, nat)
}

/// Like [`gen_rendezvous_info_with`], the secret drawn from `rng` (a
/// simulation passes a seeded one, so a run replays from its seed).
pub fn gen_rendezvous_info_rng<R: rand::CryptoRng + ?Sized>(
    rng: &mut R,
    mut endpoints: Vec<SocketAddr>,
    nat: NatBehaviour,
) -> (PrivRendezvousInfo, PubRendezvousInfo) {
    let mut secret = [0u8; SECRET_LEN];
    rng.fill_bytes(&mut secret);
    dedup_keep_order(&mut endpoints);
    endpoints.truncate(MAX_ENDPOINTS);
    (
        PrivRendezvousInfo { secret, nat },
        PubRendezvousInfo {
            endpoints,
            tcp_endpoints: Vec::new(),
            secret,
            nat,
            static_key: None,
            listener_endpoints: Vec::new(),
            listener_token: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIRE_MD: &str = include_str!("../../docs/wire.md");

    fn example() -> PubRendezvousInfo {
        PubRendezvousInfo {
            endpoints: vec![
                "203.0.113.5:4000".parse().unwrap(),
                "[2001:db8::1]:4001".parse().unwrap(),
            ],
            tcp_endpoints: vec!["203.0.113.5:4002".parse().unwrap()],
            secret: std::array::from_fn(|i| i as u8),
            nat: NatBehaviour {
                mapping: Mapping::EndpointIndependent,
                filtering: Filtering::AddressAndPortDependent,
            },
            static_key: Some(std::array::from_fn(|i| 0xa0 + i as u8)),
            listener_endpoints: Vec::new(),
            listener_token: None,
        }
    }

    fn example_with_listeners() -> PubRendezvousInfo {
        let mut i = example();
        i.endpoints.truncate(1);
        i.tcp_endpoints.clear();
        i.with_listeners(
            [
                ListenerEndpoint {
                    protocol: ListenerProtocol::Tcp,
                    addr: "198.51.100.9:5483".parse().unwrap(),
                },
                ListenerEndpoint {
                    protocol: ListenerProtocol::Utp,
                    addr: "198.51.100.9:5484".parse().unwrap(),
                },
            ],
            std::array::from_fn(|i| 0xc0 + i as u8),
        )
    }

    #[test]
    fn wire_md_listener_example_and_limits() {
        let i = example_with_listeners();
        netlab::wire_doc::assert_hex(WIRE_MD, "rendezvous-binary-listeners", &i.encode());
        let doc = netlab::wire_doc::hex(WIRE_MD, "rendezvous-binary-listeners");
        assert_eq!(PubRendezvousInfo::decode(&doc).unwrap(), i);
        let json = serde_json::to_string(&i).unwrap();
        assert_eq!(serde_json::from_str::<PubRendezvousInfo>(&json).unwrap(), i);
        // The largest info this version writes still decodes.
        let v6 = |n: u16| SocketAddr::new("2001:db8::1".parse().unwrap(), 1000 + n);
        let mut big = example();
        big.endpoints = (0..16).map(v6).collect();
        big.tcp_endpoints = (16..32).map(v6).collect();
        let big = big.with_listeners(
            (32..50).map(|n| ListenerEndpoint {
                protocol: ListenerProtocol::Utp,
                addr: v6(n),
            }),
            [1; 16],
        );
        assert_eq!(big.listener_endpoints.len(), MAX_LISTENER_ENDPOINTS);
        let bytes = big.encode();
        assert!(bytes.len() <= MAX_ENCODED_LEN, "{}", bytes.len());
        assert_eq!(PubRendezvousInfo::decode(&bytes).unwrap(), big);
        // Too many, an unknown protocol, a duplicate token: refused.
        let mut b = i.encode();
        for _ in 0..MAX_LISTENER_ENDPOINTS {
            b.extend_from_slice(&[0x06, 8, 0, 4, 198, 51, 100, 9, 0x15, 0x6b]);
        }
        assert_eq!(
            PubRendezvousInfo::decode(&b),
            Err(RendezvousDecodeError::TooManyEndpoints(
                MAX_LISTENER_ENDPOINTS + 1
            ))
        );
        let mut b = i.encode();
        b.extend_from_slice(&[0x06, 8, 7, 4, 198, 51, 100, 9, 0x15, 0x6b]);
        assert_eq!(
            PubRendezvousInfo::decode(&b),
            Err(RendezvousDecodeError::UnknownListenerProtocol(7))
        );
        let mut b = i.encode();
        b.extend_from_slice(&[0x06, 3, 0, 4, 1]);
        assert!(matches!(
            PubRendezvousInfo::decode(&b),
            Err(RendezvousDecodeError::FieldLength { field: 6, .. })
        ));
        let mut b = i.encode();
        b.extend_from_slice(&[0x09, 16]);
        b.extend_from_slice(&[0; 16]);
        assert_eq!(
            PubRendezvousInfo::decode(&b),
            Err(RendezvousDecodeError::DuplicateField(9))
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_limits_hold() {
        let mut b = example().encode();
        // A later version's field (type 0x07, 3 bytes) is skipped.
        b.extend_from_slice(&[0x07, 3, 1, 2, 3]);
        assert_eq!(PubRendezvousInfo::decode(&b).unwrap(), example());
        // Truncated anywhere: an error inside a field; at a field boundary
        // the fields before it (the channel that carries the info frames
        // it; the secret comes first, so nothing decodes without it).
        for n in 0..b.len() {
            if let Ok(i) = PubRendezvousInfo::decode(&b[..n]) {
                assert_eq!(i.secret, example().secret, "{n}");
                assert!(example().endpoints.starts_with(&i.endpoints), "{n}");
            }
        }
        // Too many endpoints, port 0, duplicate singletons, wrong lengths.
        let mut many = example();
        many.endpoints = (0..17)
            .map(|i| format!("192.0.2.1:{}", 1000 + i).parse().unwrap())
            .collect();
        assert_eq!(
            PubRendezvousInfo::decode(&many.encode_unbounded()),
            Err(RendezvousDecodeError::TooManyEndpoints(17))
        );
        assert_eq!(
            many.validate(),
            Err(RendezvousDecodeError::TooManyEndpoints(17))
        );
        let mut zero = example();
        zero.endpoints[0].set_port(0);
        assert_eq!(
            PubRendezvousInfo::decode(&zero.encode()),
            Err(RendezvousDecodeError::UnusableEndpoint)
        );
        let mut dup = example().encode();
        dup.extend_from_slice(&[0x01, 16]);
        dup.extend_from_slice(&[9; 16]);
        assert_eq!(
            PubRendezvousInfo::decode(&dup),
            Err(RendezvousDecodeError::DuplicateField(1))
        );
        let mut short = vec![RENDEZVOUS_VERSION, 0x05, 31];
        short.extend_from_slice(&[0; 31]);
        assert_eq!(
            PubRendezvousInfo::decode(&short),
            Err(RendezvousDecodeError::FieldLength { field: 5, len: 31 })
        );
        assert_eq!(
            PubRendezvousInfo::decode(&[RENDEZVOUS_VERSION]),
            Err(RendezvousDecodeError::MissingSecret)
        );
        assert_eq!(
            PubRendezvousInfo::decode(&vec![RENDEZVOUS_VERSION; 2000]),
            Err(RendezvousDecodeError::TooLong(2000))
        );
        assert_eq!(
            PubRendezvousInfo::decode(&[1, 0]),
            Err(RendezvousDecodeError::Version(1))
        );
    }

    #[test]
    fn json_enforces_the_same_limits() {
        let good = serde_json::to_string(&example()).unwrap();
        let parse = |s: &str| serde_json::from_str::<PubRendezvousInfo>(s);
        assert_eq!(parse(&good).unwrap(), example());
        // Unknown keys are a later version's: ignored.
        let extra = good.replacen('{', "{\"relays\":[1,2],", 1);
        assert_eq!(parse(&extra).unwrap(), example());
        let eps: Vec<String> = (0..17)
            .map(|i| format!("\"192.0.2.1:{}\"", 1000 + i))
            .collect();
        let many = format!(
            "{{\"version\":2,\"secret\":\"{}\",\"endpoints\":[{}]}}",
            "00".repeat(16),
            eps.join(",")
        );
        let e = parse(&many).unwrap_err().to_string();
        assert!(e.contains("17 endpoints"), "{e}");
        for (bad, want) in [
            (
                good.replace("203.0.113.5:4000", "0.0.0.0:4000"),
                "unspecified",
            ),
            (good.replace("203.0.113.5:4000", "203.0.113.5:0"), "port 0"),
            (good.replace("\"version\":2", "\"version\":1"), "version 1"),
            (good.replace("000102", "0001"), "secret"),
            (good.replace("a0a1a2", "zz"), "static_key"),
        ] {
            let e = parse(&bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    impl PubRendezvousInfo {
        /// encode() without its bound on endpoints, to test decoders.
        fn encode_unbounded(&self) -> Vec<u8> {
            let mut out = vec![RENDEZVOUS_VERSION];
            put_field(&mut out, field::SECRET, &self.secret);
            for e in &self.endpoints {
                put_field(&mut out, field::UDP_ENDPOINT, &endpoint_bytes(e));
            }
            out
        }
    }

    #[test]
    fn wire_md_binary_example() {
        netlab::wire_doc::assert_hex(WIRE_MD, "rendezvous-binary", &example().encode());
        let doc = netlab::wire_doc::hex(WIRE_MD, "rendezvous-binary");
        assert_eq!(PubRendezvousInfo::decode(&doc).unwrap(), example());
    }

    #[test]
    fn wire_md_json_example() {
        let doc = netlab::wire_doc::text(WIRE_MD, "rendezvous-json");
        assert_eq!(serde_json::to_string(&example()).unwrap(), doc.trim());
        let parsed: PubRendezvousInfo = serde_json::from_str(&doc).unwrap();
        assert_eq!(parsed, example());
    }
}
