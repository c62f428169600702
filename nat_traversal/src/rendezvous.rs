//! Rendezvous info: what two peers exchange out of band before punching.
//!
//! [`PubRendezvousInfo`] goes to the peer (serde, or the compact binary form
//! of [`PubRendezvousInfo::encode`], version [`RENDEZVOUS_VERSION`]);
//! [`PrivRendezvousInfo`] stays with us.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The version of the compact encoding.
pub const RENDEZVOUS_VERSION: u8 = 1;
/// The most endpoints one rendezvous info carries.
pub const MAX_ENDPOINTS: usize = 16;
/// Length of the secret.
pub const SECRET_LEN: usize = 16;

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

/// The half a peer sends the other: our endpoints, our secret, and what we
/// know of our NAT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubRendezvousInfo {
    /// Format version ([`RENDEZVOUS_VERSION`]).
    pub version: u8,
    /// Endpoints to probe: mapped (external) and local addresses.
    pub endpoints: Vec<SocketAddr>,
    /// The sender's secret: probes carry it.
    pub secret: [u8; SECRET_LEN],
    /// What the sender learned of its NAT.
    pub nat: NatBehaviour,
}

/// Why bytes are not a [`PubRendezvousInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RendezvousDecodeError {
    /// No bytes at all.
    Empty,
    /// Another encoding version.
    Version(u8),
    /// Shorter than the fixed header.
    TruncatedHeader,
    /// A mapping code this version does not know.
    UnknownMapping(u8),
    /// A filtering code this version does not know.
    UnknownFiltering(u8),
    /// More than [`MAX_ENDPOINTS`] endpoints.
    TooManyEndpoints(u8),
    /// The bytes end inside an endpoint.
    TruncatedEndpoint,
    /// An address family other than 4 or 6.
    UnknownFamily(u8),
    /// An endpoint with port 0 or an unspecified address.
    UnusableEndpoint,
    /// Bytes after the last endpoint.
    TrailingBytes(usize),
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
            Self::TruncatedHeader => f.write_str("truncated header"),
            Self::UnknownMapping(c) => write!(f, "unknown mapping code {c}"),
            Self::UnknownFiltering(c) => write!(f, "unknown filtering code {c}"),
            Self::TooManyEndpoints(n) => {
                write!(f, "{n} endpoints, more than the {MAX_ENDPOINTS} allowed")
            }
            Self::TruncatedEndpoint => f.write_str("truncated endpoint"),
            Self::UnknownFamily(c) => write!(f, "unknown address family {c}"),
            Self::UnusableEndpoint => f.write_str("endpoint with port 0 or an unspecified address"),
            Self::TrailingBytes(n) => write!(f, "{n} trailing bytes"),
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

impl PubRendezvousInfo {
    /// The compact binary form: version, secret, NAT behaviour, endpoint
    /// count, then each endpoint as family (4 or 6), address, port.
    ///
    /// ```
    /// use nat_traversal::{gen_rendezvous_info, PubRendezvousInfo};
    /// let (_, ours) = gen_rendezvous_info(vec!["203.0.113.5:4000".parse().unwrap()]);
    /// let bytes = ours.encode();
    /// assert_eq!(PubRendezvousInfo::decode(&bytes).unwrap(), ours);
    /// assert!(PubRendezvousInfo::decode(&bytes[..bytes.len() - 1]).is_err());
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + 19 * self.endpoints.len());
        out.push(RENDEZVOUS_VERSION);
        out.extend_from_slice(&self.secret);
        out.push(mapping_code(self.nat.mapping) << 4 | filtering_code(self.nat.filtering));
        let eps = &self.endpoints[..self.endpoints.len().min(MAX_ENDPOINTS)];
        out.push(eps.len() as u8);
        for e in eps {
            match e.ip() {
                IpAddr::V4(ip) => {
                    out.push(4);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(6);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.extend_from_slice(&e.port().to_be_bytes());
        }
        out
    }

    /// Decodes [`encode`](Self::encode)'s output, rejecting anything else:
    /// another version, unknown codes, more than [`MAX_ENDPOINTS`]
    /// endpoints, port 0, unspecified addresses, trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<PubRendezvousInfo, RendezvousDecodeError> {
        use RendezvousDecodeError as E;
        let (&version, rest) = bytes.split_first().ok_or(E::Empty)?;
        if version != RENDEZVOUS_VERSION {
            return Err(E::Version(version));
        }
        if rest.len() < SECRET_LEN + 2 {
            return Err(E::TruncatedHeader);
        }
        let mut secret = [0u8; SECRET_LEN];
        secret.copy_from_slice(&rest[..SECRET_LEN]);
        let nat_byte = rest[SECRET_LEN];
        let mapping = match nat_byte >> 4 {
            0 => Mapping::Unknown,
            1 => Mapping::NoNat,
            2 => Mapping::EndpointIndependent,
            3 => Mapping::EndpointDependent,
            c => return Err(E::UnknownMapping(c)),
        };
        let filtering = match nat_byte & 0x0F {
            0 => Filtering::Unknown,
            1 => Filtering::EndpointIndependent,
            2 => Filtering::AddressDependent,
            3 => Filtering::AddressAndPortDependent,
            c => return Err(E::UnknownFiltering(c)),
        };
        let n = usize::from(rest[SECRET_LEN + 1]);
        if n > MAX_ENDPOINTS {
            return Err(E::TooManyEndpoints(rest[SECRET_LEN + 1]));
        }
        let mut p = &rest[SECRET_LEN + 2..];
        let mut endpoints = Vec::with_capacity(n);
        for _ in 0..n {
            let (&fam, r) = p.split_first().ok_or(E::TruncatedEndpoint)?;
            let alen = match fam {
                4 => 4,
                6 => 16,
                f => return Err(E::UnknownFamily(f)),
            };
            if r.len() < alen + 2 {
                return Err(E::TruncatedEndpoint);
            }
            let ip: IpAddr = if alen == 4 {
                Ipv4Addr::new(r[0], r[1], r[2], r[3]).into()
            } else {
                let mut o = [0u8; 16];
                o.copy_from_slice(&r[..16]);
                Ipv6Addr::from(o).into()
            };
            let port = u16::from_be_bytes([r[alen], r[alen + 1]]);
            if port == 0 || ip.is_unspecified() {
                return Err(E::UnusableEndpoint);
            }
            endpoints.push(SocketAddr::new(ip, port));
            p = &r[alen + 2..];
        }
        if !p.is_empty() {
            return Err(E::TrailingBytes(p.len()));
        }
        Ok(PubRendezvousInfo {
            version,
            endpoints,
            secret,
            nat: NatBehaviour { mapping, filtering },
        })
    }
}

/// Makes a fresh secret and the two halves of a rendezvous for `endpoints`
/// (the mapped socket's endpoints; at most [`MAX_ENDPOINTS`] are kept).
pub fn gen_rendezvous_info(endpoints: Vec<SocketAddr>) -> (PrivRendezvousInfo, PubRendezvousInfo) {
    gen_rendezvous_info_with(endpoints, NatBehaviour::default())
}

/// Like [`gen_rendezvous_info`], also carrying what we learned of our NAT
/// (so a failed punch can say why).
pub fn gen_rendezvous_info_with(
    mut endpoints: Vec<SocketAddr>,
    nat: NatBehaviour,
) -> (PrivRendezvousInfo, PubRendezvousInfo) {
    let secret: [u8; SECRET_LEN] = rand::random();
    endpoints.dedup();
    endpoints.truncate(MAX_ENDPOINTS);
    (
        PrivRendezvousInfo { secret, nat },
        PubRendezvousInfo {
            version: RENDEZVOUS_VERSION,
            endpoints,
            secret,
            nat,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIRE_MD: &str = include_str!("../../docs/wire.md");

    fn example() -> PubRendezvousInfo {
        PubRendezvousInfo {
            version: RENDEZVOUS_VERSION,
            endpoints: vec![
                "203.0.113.5:4000".parse().unwrap(),
                "[2001:db8::1]:4001".parse().unwrap(),
            ],
            secret: std::array::from_fn(|i| i as u8),
            nat: NatBehaviour {
                mapping: Mapping::EndpointIndependent,
                filtering: Filtering::AddressAndPortDependent,
            },
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
