//! crust: a peer-to-peer connection manager.
//!
//! Not built yet: the `Service` arrives with its own issue. Until then use the
//! `transport` crate directly (re-exported here as [`transport`]).

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub use beacon;
pub use nat_traversal;
pub use transport;
