//! Test support for the crust workspace. Not published.
//!
//! - [`sim`]: a seeded, deterministic simulated network with a virtual clock
//!   (loss, burst loss, reordering, duplication, delay and jitter, bandwidth
//!   with a queue, MTU, and NAT mapping/filtering kinds) for driving sans-IO
//!   protocol cores. Owned by the uTP work; the hole-punching core uses it too.
//! - [`lab`]: real Linux network namespaces, veth pairs, bridges, kernel NATs
//!   (nftables), `miniupnpd` and `coturn`, for the privileged lab tests
//!   (`CRUST_LAB=1`, root). Owned by the NAT traversal work.
//! - [`wire_doc`]: reads the worked examples of `docs/wire.md` so each
//!   crate's tests check them against its code.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod lab;
pub mod sim;
pub mod wire_doc;
