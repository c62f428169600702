//! How a stream is carried.

use std::fmt;

use crate::endpoint::Protocol;

/// How a stream reaches its peer: over which kind of path and which carrier
/// protocol. Later kinds of path (hole-punched, through a port mapping,
/// relayed) are added as new variants, so match with a wildcard arm.
///
/// ```
/// use transport::{Path, Protocol};
///
/// let p = Path::Direct(Protocol::Tcp);
/// assert_eq!(p.protocol(), Protocol::Tcp);
/// assert_eq!(p.to_string(), "direct over tcp");
/// let m = Path::Mapped(Protocol::Utp);
/// assert_eq!(m.to_string(), "to a listener during a rendezvous over utp");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Path {
    /// Dialled straight to a listener's endpoint (on the LAN or beyond),
    /// whichever side dialled.
    Direct(Protocol),
    /// Through a hole punched in both sides' NATs by a rendezvous: uTP
    /// over a punched UDP hole, or a TCP simultaneous open.
    HolePunched(Protocol),
    /// During a rendezvous, dialled straight to one of the peer's
    /// listeners (public, or through its UPnP port mapping), whichever
    /// side dialled: the listener handed the stream to the rendezvous by
    /// the token in its handshake.
    Mapped(Protocol),
}

impl Path {
    /// The carrier protocol under the encryption.
    pub const fn protocol(&self) -> Protocol {
        match self {
            Path::Direct(p) | Path::HolePunched(p) | Path::Mapped(p) => *p,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Direct(p) => write!(f, "direct over {p}"),
            Path::HolePunched(p) => write!(f, "hole-punched over {p}"),
            Path::Mapped(p) => write!(f, "to a listener during a rendezvous over {p}"),
        }
    }
}
