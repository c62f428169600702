//! NAT traversal: STUN address discovery, UPnP IGD port mapping, and UDP and
//! TCP hole punching between peers that exchanged rendezvous info.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod punch;
pub mod rendezvous;
pub mod stun;

pub use punch::{PunchConfig, PunchFailure, PunchFailureKind, Punched};
pub use rendezvous::{
    Filtering, Mapping, NatBehaviour, PrivRendezvousInfo, PubRendezvousInfo, gen_rendezvous_info,
    gen_rendezvous_info_with,
};
