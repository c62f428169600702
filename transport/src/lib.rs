//! Encrypted, key-authenticated byte streams over TCP and uTP.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod utp;
