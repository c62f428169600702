//! uTP (BEP 29): a sans-IO protocol core, an endpoint machine that
//! multiplexes connections over one UDP socket, and its tokio driver.
//!
//! - [`proto`]: the core, with no I/O and no clock. [`proto::Endpoint`]
//!   sorts datagrams into connections (by source address and connection
//!   id), answers strays with RESET and bounds the SYN backlog;
//!   [`proto::Connection`] is one connection: handshake, sequence numbers
//!   with wrap-around, selective ACK (sent and honoured), fast retransmit,
//!   RTO as BEP 29 says (RTT and variance, 500 ms floor, back-off, bounded
//!   retries; RTT samples only from packets sent once and not deemed lost,
//!   the latest such per ack), LEDBAT with a 100 ms target and, as in
//!   libutp, slow start again from one packet after a timeout, receive
//!   window, keep-alive,
//!   FIN (`eof_pkt`) and RESET, and rendezvous (the initiator sends the
//!   SYN, the responder accepts only that SYN).
//! - [`aio`]: the tokio face: [`aio::UtpSocket`] owns one UDP socket and one
//!   driver task on the shared crust runtime; [`aio::UtpStream`] is
//!   `AsyncRead + AsyncWrite + Unpin + Send`. Raw uTP, without encryption:
//!   the Noise layer of the transport goes on top of it.
//!
//! # Driving the core
//!
//! After every input (`handle_datagram`, `handle_timeout`) or command
//! (`connect`, a connection's `write`/`read`/`close`), call
//! `poll_transmit` until it returns `None`, then `poll_timeout` for the
//! next deadline. `take_touched` names the connections whose state may
//! have changed. `transport/tests/utp_sim.rs` drives two endpoints over
//! `netlab::sim`; [`aio`] drives one over a real socket.
//!
//! # Where libutp and BEP 29 differ
//!
//! libutp's wire behaviour wins, with a comment at each place: the
//! SYN-ACK carries the responder's *next* sequence number (so the
//! initiator's `ack_nr` becomes `seq_nr - 1`), a RESET may carry either
//! connection id, and LEDBAT grows the window while `off_target > 0`
//! (delay under target).

pub mod aio;
pub mod proto;
