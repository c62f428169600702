//! uTP (BEP 29): a sans-IO protocol core, an endpoint machine that
//! multiplexes connections over one UDP socket, and its tokio driver.
//!
//! - [`proto`]: the core. [`proto::Endpoint`] sorts datagrams into
//!   connections (by source address and connection id), answers strays with
//!   RESET and limits the SYN backlog; [`proto::Connection`] is one
//!   connection: handshake, sequence numbers with wrap-around, selective
//!   ACK, fast retransmit, RTO, LEDBAT congestion control, FIN and RESET.
//! - [`aio`]: the tokio face: [`aio::UtpSocket`] (one driver task per UDP
//!   socket) and [`aio::UtpStream`] (`AsyncRead + AsyncWrite`), raw uTP
//!   without encryption.

pub mod aio;
pub mod proto;
