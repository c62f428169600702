//! The sans-IO uTP core: packet codec, one-connection machine, and the
//! endpoint machine that multiplexes connections over one UDP socket.
//!
//! Nothing here does I/O or reads a clock: every time-dependent call takes
//! `now: Instant`, randomness comes from a seed in [`EndpointConfig`].
//! Network input never panics: malformed packets are counted and dropped.

mod connection;
mod endpoint;
pub mod packet;

pub use connection::{Config, Connection, ConnectionError, State, Stats};
pub use endpoint::{
    ConnectionHandle, Endpoint, EndpointConfig, EndpointError, EndpointStats, SynCookies, Transmit,
    rendezvous_id,
};
pub use packet::{DecodeError, Header, MAX_DATAGRAM, MAX_PAYLOAD, Packet, PacketType};
