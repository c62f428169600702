//! NAT traversal: STUN address discovery, UPnP IGD port mapping, and UDP and
//! TCP hole punching between peers that exchanged rendezvous info.
//!
//! # Layers
//!
//! - sans-IO cores, no sockets and no clock: [`stun`] (codec, Binding
//!   transaction, rate-limited responder), [`discovery`] (the RFC 5780 NAT
//!   behaviour tests), [`portmap`] (the UPnP port-mapping policy),
//!   [`punch`] (the UDP hole-punching protocol) and [`tcp_punch`] (the TCP
//!   punch handshake and its race); plain types: [`mapping`] (the mapping
//!   context and its options), [`rendezvous`];
//! - tokio drivers (`src/driver/`), the async face: [`aio`];
//! - the blocking API below, run on the shared `crust-runtime` (no thread per
//!   call): [`MappingContext`], [`MappedUdpSocket`], [`MappedTcpSocket`],
//!   [`gen_rendezvous_info`], [`PunchedUdpSocket::punch_hole`],
//!   [`tcp_punch_hole`], [`SimpleUdpHolePunchServer`], and [`diagnose`]
//!   (what `nat_check` prints).
//!
//! # Example: punching between two sockets on one host
//!
//! ```
//! use nat_traversal::*;
//! let mc = MappingContext::with_options(MappingOptions::default().igd(false)).unwrap();
//! let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
//! let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
//! let a = MappedUdpSocket::map(a, &mc).unwrap();
//! let b = MappedUdpSocket::map(b, &mc).unwrap();
//! let (a_priv, a_pub) = gen_rendezvous_info(a.endpoints.iter().map(|e| e.addr).collect());
//! let (b_priv, b_pub) = gen_rendezvous_info(b.endpoints.iter().map(|e| e.addr).collect());
//! let t = std::thread::spawn(move || PunchedUdpSocket::punch_hole(b.socket, b_priv, a_pub));
//! let pa = PunchedUdpSocket::punch_hole(a.socket, a_priv, b_pub).unwrap();
//! let pb = t.join().unwrap().unwrap();
//! assert_eq!(pa.peer_addr, pb.socket.local_addr().unwrap());
//! ```
//!
//! # Traffic
//!
//! The library contacts only the STUN servers it is given (it ships no list
//! of public servers) and, unless [`MappingOptions::igd`] is off, sends
//! SSDP multicast to find a UPnP gateway, from [`MappingOptions::local_ip`]
//! when set.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod aio;
mod auth;
pub mod diagnose;
pub mod discovery;
mod driver;
mod error;
pub mod mapping;
pub mod portmap;
pub mod punch;
pub mod rendezvous;
pub mod stun;
pub mod tcp_punch;

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

pub use driver::igd::IgdMapping;
pub use driver::mapping::MappingReport;
pub use error::{Error, PunchError, Result};
pub use mapping::{
    HolePunchServerAddr, IgdGateway, MappedSocketAddr, MappingContext, MappingOptions,
};
pub use portmap::IgdOutcome;
pub use punch::{PunchConfig, PunchFailure, PunchFailureKind, Punched};
pub use rendezvous::{
    Filtering, ListenerEndpoint, ListenerProtocol, Mapping, NatBehaviour, PrivRendezvousInfo,
    PubRendezvousInfo, RendezvousDecodeError, gen_rendezvous_info, gen_rendezvous_info_rng,
    gen_rendezvous_info_with,
};

/// `t + d`, or a point far beyond any real deadline when that overflows: a
/// configured duration (even `Duration::MAX`) never panics a core.
pub(crate) fn deadline_after(t: std::time::Instant, d: Duration) -> std::time::Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

/// The blocking constructors (the async one is [`aio::discover`]).
impl MappingContext {
    /// A context with default options: looks for a UPnP IGD on the local
    /// network (waiting at most [`MappingOptions::igd_timeout`]) and knows
    /// no STUN server until [`add_servers`](Self::add_servers).
    ///
    /// Sends SSDP multicast on the local network. To stay off the network
    /// (tests), use [`with_options`](Self::with_options) with `igd: false`.
    pub fn new() -> Result<MappingContext> {
        MappingContext::with_options(MappingOptions::default())
    }

    /// A context with `opts`.
    ///
    /// ```
    /// use nat_traversal::{MappingContext, MappingOptions};
    /// let mc = MappingContext::with_options(
    ///     MappingOptions::default()
    ///         .igd(false)
    ///         .stun_servers(vec!["127.0.0.1:3478".parse().unwrap()]),
    /// )
    /// .unwrap();
    /// assert_eq!(mc.stun_servers().len(), 1);
    /// ```
    pub fn with_options(opts: MappingOptions) -> Result<MappingContext> {
        crust_runtime::block_on(aio::discover(opts))?
    }
}

fn to_tokio_udp(socket: UdpSocket) -> io::Result<tokio::net::UdpSocket> {
    socket.set_nonblocking(true)?;
    let _guard = crust_runtime::handle().enter();
    tokio::net::UdpSocket::from_std(socket)
}

fn to_std_udp(socket: tokio::net::UdpSocket) -> io::Result<UdpSocket> {
    let s = socket.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// A UDP socket and the endpoints peers may reach it at.
#[derive(Debug)]
pub struct MappedUdpSocket {
    /// The socket (blocking mode).
    pub socket: UdpSocket,
    /// Local, STUN-mapped and UPnP-mapped endpoints.
    pub endpoints: Vec<MappedSocketAddr>,
    /// What we learned of our NAT (for [`gen_rendezvous_info_with`]).
    pub nat: NatBehaviour,
    /// The UPnP port mapping, if one was made: renewed while this lives,
    /// removed when it is dropped. Keep it as long as you use the socket.
    pub igd: Option<IgdMapping>,
    /// What happened with the UPnP gateway.
    pub igd_outcome: IgdOutcome,
    /// Each STUN server's answer: the address it saw, or why not.
    pub stun_seen: Vec<(SocketAddr, Result<SocketAddr>)>,
}

impl MappedUdpSocket {
    /// Binds a new UDP socket (on [`MappingOptions::local_ip`] if set) and
    /// maps it.
    pub fn new(mc: &MappingContext) -> Result<MappedUdpSocket> {
        let ip = mc
            .options()
            .local_ip
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        MappedUdpSocket::map(UdpSocket::bind((ip, 0))?, mc)
    }

    /// Maps `socket`: asks every STUN server of `mc` (each bounded by
    /// [`MappingOptions::stun`]) and the UPnP gateway. Servers that do not
    /// answer are skipped; with none at all the endpoints are the local
    /// ones.
    pub fn map(socket: UdpSocket, mc: &MappingContext) -> Result<MappedUdpSocket> {
        let mc = mc.clone();
        crust_runtime::block_on(async move {
            let s = to_tokio_udp(socket)?;
            let report = aio::map_udp(&s, &mc).await;
            let socket = to_std_udp(s)?;
            let r = report?;
            Ok(MappedUdpSocket {
                socket,
                endpoints: r.endpoints,
                nat: r.nat,
                igd: r.igd_mapping,
                igd_outcome: r.igd,
                stun_seen: r.stun,
            })
        })?
    }
}

/// A TCP socket bound with `SO_REUSEADDR`/`SO_REUSEPORT` (not yet
/// listening or connected), and the endpoints peers may reach it at.
#[derive(Debug)]
pub struct MappedTcpSocket {
    /// The bound socket.
    pub socket: socket2::Socket,
    /// Local, STUN-mapped and UPnP-mapped endpoints.
    pub endpoints: Vec<MappedSocketAddr>,
    /// What we learned of our NAT's TCP mapping.
    pub nat: NatBehaviour,
    /// The UPnP port mapping, if one was made (see [`MappedUdpSocket::igd`]).
    pub igd: Option<IgdMapping>,
    /// What happened with the UPnP gateway.
    pub igd_outcome: IgdOutcome,
    /// Each STUN server's answer (over TCP): the address it saw, or why not.
    pub stun_seen: Vec<(SocketAddr, Result<SocketAddr>)>,
}

/// A TCP socket bound to `local` with `SO_REUSEADDR` (and `SO_REUSEPORT`
/// on Unix), not yet listening: the socket a TCP punch needs.
pub fn reusable_std_tcp(local: SocketAddr) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    s.bind(&local.into())?;
    Ok(s)
}

impl MappedTcpSocket {
    /// Binds a new reusable TCP socket and maps it.
    pub fn new(mc: &MappingContext) -> Result<MappedTcpSocket> {
        let ip = mc
            .options()
            .local_ip
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        MappedTcpSocket::map(reusable_std_tcp(SocketAddr::new(ip, 0))?, mc)
    }

    /// Maps a bound reusable socket (its port is what STUN servers see, from
    /// other sockets bound to the same port).
    pub fn map(socket: socket2::Socket, mc: &MappingContext) -> Result<MappedTcpSocket> {
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
        let mc = mc.clone();
        let r = crust_runtime::block_on(async move { aio::map_tcp(local, &mc).await })??;
        Ok(MappedTcpSocket {
            socket,
            endpoints: r.endpoints,
            nat: r.nat,
            igd: r.igd_mapping,
            igd_outcome: r.igd,
            stun_seen: r.stun,
        })
    }
}

/// A UDP socket with a hole punched to a peer.
#[derive(Debug)]
pub struct PunchedUdpSocket {
    /// The socket (blocking mode). Late probes from the peer may still
    /// arrive on it for a moment: protocols on top must ignore datagrams
    /// they do not understand.
    pub socket: UdpSocket,
    /// The peer's address as it reaches us.
    pub peer_addr: SocketAddr,
    /// How long it took.
    pub elapsed: Duration,
    /// Probes we sent.
    pub probes_sent: u32,
}

impl PunchedUdpSocket {
    /// Punches a hole from `socket` to the peer whose rendezvous info is
    /// `their_pub`, with [`PunchConfig::default`] (8 s at most).
    pub fn punch_hole(
        socket: UdpSocket,
        our_priv: PrivRendezvousInfo,
        their_pub: PubRendezvousInfo,
    ) -> Result<PunchedUdpSocket> {
        PunchedUdpSocket::punch_hole_with(socket, our_priv, their_pub, &PunchConfig::default())
    }

    /// Like [`punch_hole`](Self::punch_hole) with explicit timing.
    pub fn punch_hole_with(
        socket: UdpSocket,
        our_priv: PrivRendezvousInfo,
        their_pub: PubRendezvousInfo,
        cfg: &PunchConfig,
    ) -> Result<PunchedUdpSocket> {
        let cfg = cfg.clone();
        crust_runtime::block_on(async move {
            let s = to_tokio_udp(socket).map_err(Error::io("hole punching"))?;
            let r = aio::punch_hole(&s, &our_priv, &their_pub, &cfg).await?;
            Ok(PunchedUdpSocket {
                socket: to_std_udp(s).map_err(Error::io("hole punching"))?,
                peer_addr: r.peer_addr,
                elapsed: r.elapsed,
                probes_sent: r.probes_sent,
            })
        })
        .map_err(Error::io("hole punching"))?
    }
}

/// Punches a TCP connection from a [`MappedTcpSocket`]'s socket to the peer
/// (simultaneous open plus accept on the same port, then both sides prove
/// they hold the secrets), with [`PunchConfig::default`]'s time limit.
pub fn tcp_punch_hole(
    socket: socket2::Socket,
    our_priv: PrivRendezvousInfo,
    their_pub: PubRendezvousInfo,
) -> Result<TcpStream> {
    tcp_punch_hole_with(socket, our_priv, their_pub, &PunchConfig::default())
}

/// Like [`tcp_punch_hole`] with explicit timing.
pub fn tcp_punch_hole_with(
    socket: socket2::Socket,
    our_priv: PrivRendezvousInfo,
    their_pub: PubRendezvousInfo,
    cfg: &PunchConfig,
) -> Result<TcpStream> {
    let cfg = cfg.clone();
    socket.listen(16).map_err(Error::io("hole punching"))?;
    socket
        .set_nonblocking(true)
        .map_err(Error::io("hole punching"))?;
    let std_listener: std::net::TcpListener = socket.into();
    crust_runtime::block_on(async move {
        let l =
            tokio::net::TcpListener::from_std(std_listener).map_err(Error::io("hole punching"))?;
        let (s, _) = aio::tcp_punch_hole(l, &our_priv, &their_pub, &cfg).await?;
        let s = s.into_std().map_err(Error::io("hole punching"))?;
        s.set_nonblocking(false)
            .map_err(Error::io("hole punching"))?;
        Ok(s)
    })
    .map_err(Error::io("hole punching"))?
}

/// A STUN Binding server over UDP and TCP (see [`aio::StunServer`]), running
/// on the shared runtime until dropped.
#[derive(Debug)]
pub struct SimpleUdpHolePunchServer {
    server: Option<aio::StunServer>,
}

impl SimpleUdpHolePunchServer {
    /// A server on a free port of [`MappingOptions::local_ip`] (all
    /// addresses if unset).
    pub fn new(mc: &MappingContext) -> Result<SimpleUdpHolePunchServer> {
        let ip = mc
            .options()
            .local_ip
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        SimpleUdpHolePunchServer::bind(SocketAddr::new(ip, 0), None)
    }

    /// A server on `primary`; with `alternate` (another IP and port) it
    /// also answers RFC 5780 behaviour-discovery requests. Answers and rate
    /// limit: [`stun::ResponderConfig::default`].
    pub fn bind(
        primary: SocketAddr,
        alternate: Option<SocketAddr>,
    ) -> Result<SimpleUdpHolePunchServer> {
        SimpleUdpHolePunchServer::bind_with(primary, alternate, stun::ResponderConfig::default())
    }

    /// Like [`bind`](Self::bind), with what the answers carry and their
    /// rate limit.
    ///
    /// ```
    /// use nat_traversal::stun::{RateLimitConfig, ResponderConfig};
    /// let cfg = ResponderConfig::default()
    ///     .rate_limit(Some(RateLimitConfig::default().prefix_burst(8)));
    /// let s = nat_traversal::SimpleUdpHolePunchServer::bind_with(
    ///     "127.0.0.1:0".parse().unwrap(), None, cfg).unwrap();
    /// assert_eq!(s.addresses().len(), 1);
    /// assert_eq!(s.stats().answered, 0);
    /// ```
    pub fn bind_with(
        primary: SocketAddr,
        alternate: Option<SocketAddr>,
        cfg: stun::ResponderConfig,
    ) -> Result<SimpleUdpHolePunchServer> {
        let server = crust_runtime::block_on(async move {
            aio::StunServer::bind_with(primary, alternate, cfg).await
        })??;
        Ok(SimpleUdpHolePunchServer {
            server: Some(server),
        })
    }

    /// What the UDP responder did so far (see [`stun::ResponderStats`]).
    pub fn stats(&self) -> stun::ResponderStats {
        self.server.as_ref().map(|s| s.stats()).unwrap_or_default()
    }

    /// The UDP addresses it answers on (primary first).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.server
            .as_ref()
            .map(|s| s.udp_addrs().to_vec())
            .unwrap_or_default()
    }

    /// The TCP addresses it answers on.
    pub fn tcp_addresses(&self) -> Vec<SocketAddr> {
        self.server
            .as_ref()
            .map(|s| s.tcp_addrs().to_vec())
            .unwrap_or_default()
    }
}

impl Drop for SimpleUdpHolePunchServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            crust_runtime::finish_in_drop("closing a STUN server", None, s.shutdown());
        }
    }
}
