//! LAN peer discovery by UDP broadcast and IPv6 link-local multicast.
//!
//! Not built yet: every constructor returns an
//! [`std::io::ErrorKind::Unsupported`] "not yet implemented" error.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

use std::io;
use std::time::Duration;

/// A beacon that broadcasts `id || data` and receives other beacons' messages.
#[derive(Debug)]
pub struct Beacon {
    _private: (),
}

/// Changes what a running [`Beacon`] sends and how often.
#[derive(Debug)]
pub struct BeaconController {
    _private: (),
}

impl Beacon {
    /// Starts a beacon on `port`.
    ///
    /// # Errors
    ///
    /// Not yet implemented: always returns [`io::ErrorKind::Unsupported`].
    ///
    /// ```
    /// use std::time::Duration;
    /// assert!(beacon::Beacon::new(5484, 8, b"hi".to_vec(), Duration::from_secs(1)).is_err());
    /// ```
    pub fn new(
        _port: u16,
        _id_bytes: usize,
        _data: Vec<u8>,
        _period: Duration,
    ) -> io::Result<(Beacon, BeaconController)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "beacon::Beacon is not yet implemented",
        ))
    }
}
