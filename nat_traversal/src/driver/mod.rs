//! The tokio drivers of the sans-IO cores, re-exported by [`crate::aio`]:
//! STUN client and server ([`stun`]), NAT discovery and socket mapping
//! ([`mapping`]), UPnP IGD ([`igd`]).

use std::io;

pub(crate) mod igd;
pub(crate) mod mapping;
pub(crate) mod stun;

/// Errors a UDP socket reports for an earlier datagram (ICMP unreachable):
/// no reason to stop.
pub(crate) fn ignorable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}
