//! Endpoints: where to connect (with the peer's key) and where to listen.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::identity::PublicKey;

/// The transport protocol that carries a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// uTP (BEP 29) over UDP.
    Utp,
}

impl Protocol {
    /// The URL scheme: `"tcp"` or `"utp"`.
    pub const fn scheme(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Utp => "utp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

impl FromStr for Protocol {
    type Err = Error;

    fn from_str(s: &str) -> Result<Protocol> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "utp" => Ok(Protocol::Utp),
            _ => Err(Error::InvalidEndpoint {
                input: s.to_owned(),
                reason: format!("unknown protocol {s:?} (expected \"tcp\" or \"utp\")"),
            }),
        }
    }
}

/// An address a peer can be reached at, with the public key it must prove it
/// holds.
///
/// Written as `tcp://203.0.113.7:5483/?pubkey=<64 hex digits>`, or with an
/// IPv6 address in brackets: `utp://[2001:db8::1]:5483/?pubkey=...`.
/// Parsing is strict: each error names the part that is wrong.
///
/// ```
/// use transport::{Endpoint, Protocol};
/// let text = "tcp://203.0.113.7:5483/?pubkey=\
///             00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// let ep: Endpoint = text.parse()?;
/// assert_eq!(ep.protocol, Protocol::Tcp);
/// assert_eq!(ep.addr.port(), 5483);
/// assert_eq!(ep.to_string(), text);
/// # Ok::<(), transport::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// The protocol to connect with.
    pub protocol: Protocol,
    /// The socket address to connect to.
    pub addr: SocketAddr,
    /// The key the peer must hold.
    pub public_key: PublicKey,
}

impl Endpoint {
    /// An endpoint from its parts.
    pub const fn new(protocol: Protocol, addr: SocketAddr, public_key: PublicKey) -> Endpoint {
        Endpoint {
            protocol,
            addr,
            public_key,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}/?pubkey={}",
            self.protocol, self.addr, self.public_key
        )
    }
}

/// Splits `proto://addr` (and what follows) into its parts, with errors that
/// name the part.
fn parse_scheme_addr(input: &str) -> Result<(Protocol, SocketAddr, &str)> {
    let bad = |reason: String| Error::InvalidEndpoint {
        input: input.to_owned(),
        reason,
    };
    let (scheme, rest) = input.split_once("://").ok_or_else(|| {
        bad("missing \"://\" after the protocol (expected tcp://ADDR:PORT...)".into())
    })?;
    let protocol = match scheme {
        "tcp" => Protocol::Tcp,
        "utp" => Protocol::Utp,
        _ => {
            return Err(bad(format!(
                "unknown protocol {scheme:?} (expected \"tcp\" or \"utp\")"
            )));
        }
    };
    let addr_end = rest.find('/').unwrap_or(rest.len());
    let (addr_text, tail) = rest.split_at(addr_end);
    let addr: SocketAddr = addr_text.parse().map_err(|_| {
        bad(format!(
            "bad socket address {addr_text:?} (expected IP:PORT, IPv6 in brackets: [::1]:PORT)"
        ))
    })?;
    Ok((protocol, addr, tail))
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(input: &str) -> Result<Endpoint> {
        let bad = |reason: String| Error::InvalidEndpoint {
            input: input.to_owned(),
            reason,
        };
        let (protocol, addr, tail) = parse_scheme_addr(input)?;
        let query = tail
            .strip_prefix("/?")
            .ok_or_else(|| bad("missing \"/?pubkey=<64 hex digits>\" after the address".into()))?;
        let mut public_key = None;
        for pair in query.split('&') {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("query parameter {pair:?} has no '='")))?;
            match name {
                "pubkey" if public_key.is_none() => {
                    public_key = Some(
                        value
                            .parse::<PublicKey>()
                            .map_err(|e| bad(format!("pubkey: {e}")))?,
                    );
                }
                "pubkey" => return Err(bad("pubkey is given twice".into())),
                _ => return Err(bad(format!("unknown query parameter {name:?}"))),
            }
        }
        let public_key = public_key.ok_or_else(|| bad("missing pubkey".into()))?;
        Ok(Endpoint {
            protocol,
            addr,
            public_key,
        })
    }
}

/// An address to listen on, like `tcp://0.0.0.0:5483` or `utp://[::]:0`.
///
/// The key is not part of it: a [`Listener`](crate::Listener) proves the
/// [`Identity`](crate::Identity) it was bound with.
///
/// ```
/// use transport::{ListenEndpoint, Protocol};
/// let le: ListenEndpoint = "tcp://127.0.0.1:0".parse()?;
/// assert_eq!(le.protocol, Protocol::Tcp);
/// assert_eq!(le.to_string(), "tcp://127.0.0.1:0");
/// # Ok::<(), transport::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenEndpoint {
    /// The protocol to accept.
    pub protocol: Protocol,
    /// The local address to bind.
    pub addr: SocketAddr,
}

impl ListenEndpoint {
    /// A listen endpoint from its parts.
    pub const fn new(protocol: Protocol, addr: SocketAddr) -> ListenEndpoint {
        ListenEndpoint { protocol, addr }
    }
}

impl fmt::Display for ListenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.protocol, self.addr)
    }
}

impl FromStr for ListenEndpoint {
    type Err = Error;

    fn from_str(input: &str) -> Result<ListenEndpoint> {
        let (protocol, addr, tail) = parse_scheme_addr(input)?;
        if !tail.is_empty() && tail != "/" {
            return Err(Error::InvalidEndpoint {
                input: input.to_owned(),
                reason: format!("unexpected {tail:?} after the address of a listen endpoint"),
            });
        }
        Ok(ListenEndpoint { protocol, addr })
    }
}

/// Things that name one or more [`Endpoint`]s, like
/// [`ToSocketAddrs`](std::net::ToSocketAddrs) for socket addresses:
/// an `Endpoint`, a string, or a slice or `Vec` of endpoints.
pub trait ToEndpoints {
    /// The endpoints, in the order to try them.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEndpoint`] if a string does not parse.
    fn to_endpoints(&self) -> Result<Vec<Endpoint>>;
}

/// Things that name one or more [`ListenEndpoint`]s: a `ListenEndpoint`, a
/// string, or a slice or `Vec` of them.
pub trait ToListenEndpoints {
    /// The listen endpoints.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEndpoint`] if a string does not parse.
    fn to_listen_endpoints(&self) -> Result<Vec<ListenEndpoint>>;
}

macro_rules! impl_to_many {
    ($trait:ident, $method:ident, $item:ty) => {
        impl $trait for $item {
            fn $method(&self) -> Result<Vec<$item>> {
                Ok(vec![*self])
            }
        }
        impl $trait for str {
            fn $method(&self) -> Result<Vec<$item>> {
                Ok(vec![self.parse()?])
            }
        }
        impl $trait for String {
            fn $method(&self) -> Result<Vec<$item>> {
                self.as_str().$method()
            }
        }
        impl $trait for [$item] {
            fn $method(&self) -> Result<Vec<$item>> {
                Ok(self.to_vec())
            }
        }
        impl<const N: usize> $trait for [$item; N] {
            fn $method(&self) -> Result<Vec<$item>> {
                Ok(self.to_vec())
            }
        }
        impl $trait for Vec<$item> {
            fn $method(&self) -> Result<Vec<$item>> {
                Ok(self.clone())
            }
        }
        impl<T: $trait + ?Sized> $trait for &T {
            fn $method(&self) -> Result<Vec<$item>> {
                (**self).$method()
            }
        }
    };
}

impl_to_many!(ToEndpoints, to_endpoints, Endpoint);
impl_to_many!(ToListenEndpoints, to_listen_endpoints, ListenEndpoint);

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn endpoint_round_trips() {
        for text in [
            format!("tcp://203.0.113.7:5483/?pubkey={KEY}"),
            format!("tcp://[2001:db8::1]:5483/?pubkey={KEY}"),
            format!("utp://[::1]:345/?pubkey={KEY}"),
        ] {
            let ep: Endpoint = text.parse().unwrap();
            assert_eq!(ep.to_string(), text);
        }
    }

    #[test]
    fn uppercase_hex_is_accepted_and_shown_lowercase() {
        let text = format!("tcp://127.0.0.1:1/?pubkey={}", KEY.to_uppercase());
        let ep: Endpoint = text.parse().unwrap();
        assert_eq!(ep.to_string(), format!("tcp://127.0.0.1:1/?pubkey={KEY}"));
    }

    #[test]
    fn endpoint_errors_name_the_part() {
        let cases = [
            (format!("udp://1.2.3.4:5/?pubkey={KEY}"), "unknown protocol"),
            (format!("tcp:/1.2.3.4:5/?pubkey={KEY}"), "missing \"://\""),
            (format!("tcp://1.2.3.4/?pubkey={KEY}"), "bad socket address"),
            (format!("tcp://::1:5/?pubkey={KEY}"), "bad socket address"),
            ("tcp://1.2.3.4:5".to_string(), "missing \"/?pubkey="),
            ("tcp://1.2.3.4:5/?pubkey=abcd".to_string(), "pubkey:"),
            (
                format!("tcp://1.2.3.4:5/?key={KEY}"),
                "unknown query parameter",
            ),
            (
                format!("tcp://1.2.3.4:5/?pubkey={KEY}&pubkey={KEY}"),
                "twice",
            ),
            ("tcp://1.2.3.4:5/?".to_string(), "has no '='"),
        ];
        for (input, want) in cases {
            let e = input.parse::<Endpoint>().unwrap_err().to_string();
            assert!(e.contains(want), "{input}: {e}");
            assert!(e.contains("invalid endpoint"), "{input}: {e}");
        }
    }

    #[test]
    fn listen_endpoints() {
        let le: ListenEndpoint = "utp://[::]:0".parse().unwrap();
        assert_eq!(le.protocol, Protocol::Utp);
        assert_eq!(le.to_string(), "utp://[::]:0");
        assert!(
            "tcp://0.0.0.0:1/?pubkey=x"
                .parse::<ListenEndpoint>()
                .is_err()
        );
        let many = ["tcp://127.0.0.1:0".parse::<ListenEndpoint>().unwrap(); 2];
        assert_eq!(many.to_listen_endpoints().unwrap().len(), 2);
        assert_eq!("tcp://127.0.0.1:0".to_listen_endpoints().unwrap().len(), 1);
    }
}
