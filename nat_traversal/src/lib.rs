//! NAT traversal: STUN address discovery, UPnP IGD port mapping, and UDP and
//! TCP hole punching between peers that exchanged rendezvous info.
//!
//! Not built yet: [`MappingContext::new`] returns an
//! [`std::io::ErrorKind::Unsupported`] "not yet implemented" error.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

use std::io;

/// What the library knows of ways to map sockets: UPnP gateways and STUN
/// servers. Keep one for the life of the program.
#[derive(Debug)]
pub struct MappingContext {
    _private: (),
}

impl MappingContext {
    /// Creates a mapping context.
    ///
    /// # Errors
    ///
    /// Not yet implemented: always returns [`io::ErrorKind::Unsupported`].
    pub fn new() -> io::Result<MappingContext> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "nat_traversal::MappingContext is not yet implemented",
        ))
    }
}
