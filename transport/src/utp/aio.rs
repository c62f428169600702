//! The tokio face of uTP: raw (unencrypted) uTP streams over one UDP
//! socket.
//!
//! A [`UtpSocket`] owns a UDP socket and one driver task on the shared
//! crust runtime ([`crust_runtime::spawn`]) that moves datagrams between
//! the socket and the sans-IO [`Endpoint`]. Every [`UtpStream`] made on the
//! socket (by [`UtpSocket::connect`], [`UtpSocket::accept`] or
//! [`UtpSocket::rendezvous_connect`]) is a connection of that endpoint:
//! many streams, one task, one socket.
//!
//! Lifetime: dropping a stream closes it gracefully (FIN after the data
//! written). When the socket and all its streams are dropped, the driver
//! keeps running only until every connection's data and FIN are
//! acknowledged (or failed), for at most [`CLOSE_LINGER`], then ends and
//! closes the UDP socket.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use transport::utp::aio::UtpSocket;
//!
//! let server = UtpSocket::bind("127.0.0.1:0".parse().unwrap())?;
//! let client = UtpSocket::bind("127.0.0.1:0".parse().unwrap())?;
//! let addr = server.local_addr();
//! tokio::spawn(async move {
//!     let (mut s, _peer) = server.accept().await.unwrap();
//!     let mut buf = Vec::new();
//!     s.read_to_end(&mut buf).await.unwrap();
//! });
//! let mut c = client.connect(addr).await?;
//! c.write_all(b"hello").await?;
//! c.shutdown().await?; // sends FIN
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::proto::{ConnectionHandle, Endpoint, EndpointConfig, MAX_DATAGRAM, Transmit};

/// How long a driver whose socket and streams were all dropped keeps
/// running to deliver data and FINs still unacknowledged.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Requested kernel send and receive buffer of the UDP socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// Datagrams read per driver turn before transmitting (bounds latency and
/// coalesces acks).
const RECV_BATCH: usize = 64;

#[derive(Default)]
struct Wakers {
    read: Option<Waker>,
    write: Option<Waker>,
}

struct Inner {
    ep: Endpoint,
    wakers: HashMap<ConnectionHandle, Wakers>,
    accept_waker: Option<Waker>,
    /// The socket handle plus live streams.
    handles: usize,
    driver_alive: bool,
    /// Scratch buffer for outgoing datagrams.
    out: Vec<u8>,
    /// Scratch buffer for incoming datagrams.
    rbuf: Vec<u8>,
    /// Datagrams the kernel refused with `WouldBlock`, to retry first.
    blocked: Option<Blocked>,
    /// Datagrams gathered for one (GSO) send.
    batch: Vec<u8>,
    /// Whether the socket coalesces received datagrams (UDP GRO).
    gro: bool,
    gso: Gso,
    /// When the driver will wake up by itself next.
    driver_deadline: Option<Instant>,
}

impl Inner {
    /// Sends what the endpoint has to send, from whichever task holds the
    /// lock (a stream's task sends its own data without waking the
    /// driver). Returns true when the kernel buffer is full and the driver
    /// must wait for the socket to become writable.
    fn flush(&mut self, socket: &tokio::net::UdpSocket, local: SocketAddr, now: Instant) -> bool {
        if let Some(b) = &self.blocked {
            match send_batch(socket, b.to, &b.data, b.segment, &mut self.gso) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => log::debug!("uTP socket {local}: send to {}: {e}", b.to),
                Ok(()) => {}
            }
            self.blocked = None;
        }
        // Consecutive datagrams to one destination, all of one size but
        // the last, go out in one GSO send (Linux); otherwise one by one.
        // `pending` is a datagram already polled into `self.out` that
        // starts the next batch.
        let mut pending: Option<Transmit> = None;
        loop {
            self.batch.clear();
            let mut to = None;
            let mut segment = 0;
            let mut count = 0;
            loop {
                let t = match pending.take() {
                    Some(t) => t,
                    None => match self.ep.poll_transmit(now, &mut self.out) {
                        Some(t) => t,
                        None => break,
                    },
                };
                match to {
                    Some(d) if t.destination != d || t.len > segment => {
                        pending = Some(t);
                        break;
                    }
                    Some(_) => {}
                    None => {
                        to = Some(t.destination);
                        segment = t.len;
                    }
                }
                self.batch.extend_from_slice(&self.out[..t.len]);
                count += 1;
                if t.len < segment || count >= GSO_MAX_SEGMENTS || !self.gso.enabled {
                    break;
                }
            }
            let Some(to) = to else {
                return false;
            };
            match send_batch(socket, to, &self.batch, segment, &mut self.gso) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A `pending` datagram is dropped here, like a loss on
                    // the path: its connection resends it.
                    self.blocked = Some(Blocked {
                        to,
                        data: self.batch.clone(),
                        segment,
                    });
                    return true;
                }
                Err(e) => log::debug!("uTP socket {local}: send to {to}: {e}"),
            }
        }
    }

    /// Reads the datagrams waiting in the socket into the endpoint (from
    /// whichever task holds the lock) and collects the wakers of the
    /// connections they touched.
    fn receive(
        &mut self,
        socket: &tokio::net::UdpSocket,
        local: SocketAddr,
        now: Instant,
        wake: &mut Vec<Waker>,
    ) {
        #[cfg(target_os = "linux")]
        {
            // Error readiness is cleared only by a WouldBlock under it.
            let mut unreachable = Vec::new();
            let _ = socket.try_io(tokio::io::Interest::ERROR, || {
                unreachable.extend(drain_error_queue(socket));
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
            for to in unreachable {
                log::debug!("uTP socket {local}: {to} is unreachable");
                self.ep.handle_unreachable(now, to);
            }
        }
        for _ in 0..RECV_BATCH {
            match recv_batch(socket, &mut self.rbuf, self.gro) {
                Ok((n, from, segment)) => {
                    // With GRO one read may hold several datagrams of
                    // `segment` bytes (the last maybe shorter).
                    for d in self.rbuf[..n].chunks(segment.max(1)) {
                        self.ep.handle_datagram(now, from, d);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // An ICMP error (we asked for them with IP_RECVERR):
                    // the error queue says for which destination. Only
                    // connects to it fail; the socket, listening and every
                    // other connection go on.
                    log::debug!("uTP socket {local}: recv error: {e}");
                    #[cfg(target_os = "linux")]
                    for to in drain_error_queue(socket) {
                        log::debug!("uTP socket {local}: {to} is unreachable");
                        self.ep.handle_unreachable(now, to);
                    }
                    #[cfg(not(target_os = "linux"))]
                    break;
                }
            }
        }
        for h in self.ep.take_touched() {
            if let Some(w) = self.wakers.get_mut(&h) {
                wake.extend(w.read.take());
                wake.extend(w.write.take());
            }
        }
        if self.ep.backlog_len() > 0 {
            wake.extend(self.accept_waker.take());
        }
    }

    /// Whether the driver must be woken: blocked output, or a timer
    /// earlier than the one it sleeps on.
    fn driver_needed(&mut self, blocked: bool) -> bool {
        blocked
            || match (self.ep.poll_timeout(), self.driver_deadline) {
                (Some(t), Some(d)) => t < d,
                (Some(_), None) => true,
                (None, _) => false,
            }
    }
}

/// Datagrams held back by a full kernel buffer: `data` holds datagrams of
/// `segment` bytes (the last may be shorter) for `to`.
struct Blocked {
    to: SocketAddr,
    data: Vec<u8>,
    segment: usize,
}

/// Whether UDP generic segmentation offload works on this socket (turned
/// off at the first refusal).
struct Gso {
    enabled: bool,
}

/// Most datagrams in one GSO send (the kernel allows 64).
const GSO_MAX_SEGMENTS: usize = 32;

/// Sends `data` (datagrams of `segment` bytes, the last maybe shorter) to
/// `to`, in one GSO `sendmsg` when there are several and GSO works.
fn send_batch(
    socket: &tokio::net::UdpSocket,
    to: SocketAddr,
    data: &[u8],
    segment: usize,
    gso: &mut Gso,
) -> io::Result<()> {
    match send_batch_once(socket, to, data, segment, gso) {
        // With IP_RECVERR an ICMP error for *any* destination of this
        // shared socket (a peer that closed its port, say) is also left
        // pending on the socket, and the next send — to whoever — fails
        // with it (ECONNREFUSED) without sending. Sending again sends: the
        // failed call cleared the pending error (the error queue still
        // tells the receive path which destination it was). Without this
        // retry a good connection lost a datagram each time another peer
        // went away, and stalled for a retransmission timeout (up to
        // ~900 ms seen in crust's hostile-peer tests).
        Err(e) if e.kind() != io::ErrorKind::WouldBlock && is_pending_icmp_error(&e) => {
            send_batch_once(socket, to, data, segment, gso)
        }
        r => r,
    }
}

/// Whether `e` is an ICMP error that a send reports for an earlier
/// datagram (see [`send_batch`]).
fn is_pending_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

fn send_batch_once(
    socket: &tokio::net::UdpSocket,
    to: SocketAddr,
    data: &[u8],
    segment: usize,
    gso: &mut Gso,
) -> io::Result<()> {
    if data.len() <= segment {
        return socket.try_send_to(data, to).map(|_| ());
    }
    #[cfg(target_os = "linux")]
    if gso.enabled {
        match socket.try_io(tokio::io::Interest::WRITABLE, || {
            gso_send(socket, to, data, segment)
        }) {
            Err(e)
                if e.kind() != io::ErrorKind::WouldBlock
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                    ) =>
            {
                log::debug!("UDP GSO unavailable ({e}); sending datagrams one by one");
                gso.enabled = false;
            }
            r => return r,
        }
    }
    // Without GSO: one by one. A WouldBlock part-way resends the whole
    // batch later; duplicates are harmless to uTP.
    for d in data.chunks(segment) {
        socket.try_send_to(d, to)?;
    }
    Ok(())
}

/// Asks the kernel to coalesce received datagrams (UDP GRO, Linux).
fn enable_gro(socket: &std::net::UdpSocket) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a plain setsockopt on a valid fd with an int option.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_GRO,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        r == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        false
    }
}

/// Asks the kernel to report ICMP errors (port unreachable) on this
/// unconnected socket, through its error queue (Linux `IP_RECVERR`).
fn enable_recverr(socket: &std::net::UdpSocket, v6: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        let (level, name) = if v6 {
            (libc::SOL_IPV6, libc::IPV6_RECVERR)
        } else {
            (libc::SOL_IP, libc::IP_RECVERR)
        };
        // SAFETY: a plain setsockopt on a valid fd with an int option.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        r == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, v6);
        false
    }
}

/// Reads the socket's error queue (bounded) and returns the destinations
/// reported refused (ICMP port unreachable).
#[cfg(target_os = "linux")]
fn drain_error_queue(socket: &tokio::net::UdpSocket) -> Vec<SocketAddr> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    for _ in 0..64 {
        // SAFETY: sockaddr_storage and msghdr are plain data; zero is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut data = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut control = [0u64; 16];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = &mut storage as *mut _ as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: every pointer in msg refers to a live local buffer of the
        // stated size for the duration of the call.
        let n = unsafe {
            libc::recvmsg(
                socket.as_raw_fd(),
                &mut msg,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            break;
        }
        let mut refused = false;
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of
        // well-formed cmsgs; CMSG_FIRSTHDR/NXTHDR stay within them, and an
        // IP(V6)_RECVERR cmsg starts with a sock_extended_err whose first
        // field is the u32 errno.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let c = &*cmsg;
                if (c.cmsg_level == libc::SOL_IP && c.cmsg_type == libc::IP_RECVERR)
                    || (c.cmsg_level == libc::SOL_IPV6 && c.cmsg_type == libc::IPV6_RECVERR)
                {
                    let errno = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const u32);
                    refused |= errno == libc::ECONNREFUSED as u32;
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if refused && let Some(to) = std_addr(&storage) {
            out.push(to);
        }
    }
    out
}

/// The address in a `sockaddr_storage` the kernel filled.
#[cfg(target_os = "linux")]
fn std_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, which
            // fits in sockaddr_storage.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Receives one datagram, or with GRO several coalesced ones: returns the
/// bytes read, the source and the size of each datagram in them.
fn recv_batch(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
    gro: bool,
) -> io::Result<(usize, SocketAddr, usize)> {
    #[cfg(target_os = "linux")]
    if gro {
        return socket.try_io(tokio::io::Interest::READABLE, || gro_recv(socket, buf));
    }
    let _ = gro;
    socket.try_recv_from(buf).map(|(n, from)| (n, from, n))
}

#[cfg(target_os = "linux")]
fn gro_recv(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, usize)> {
    use std::os::fd::AsRawFd;
    // SAFETY: sockaddr_storage and msghdr are plain data; zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut storage as *mut _ as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in msg refers to a live local buffer of the
    // stated size for the duration of the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let mut segment = n;
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed cmsgs; CMSG_FIRSTHDR/NXTHDR stay within them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const u16);
                if size > 0 {
                    segment = size as usize;
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let from = match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, which
            // fits in sockaddr_storage.
            let a = unsafe { &*(&storage as *const _ as *const libc::sockaddr_in) };
            SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(&storage as *const _ as *const libc::sockaddr_in6) };
            SocketAddr::V6(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram from a non-IP address",
            ));
        }
    };
    Ok((n, from, segment))
}

#[cfg(target_os = "linux")]
fn gso_send(
    socket: &tokio::net::UdpSocket,
    to: SocketAddr,
    data: &[u8],
    segment: usize,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let addr = socket2::SockAddr::from(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64s for the alignment a cmsghdr needs.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = addr.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as _;
    // SAFETY: msg_control points to `control`, which is large enough for
    // one cmsghdr with a u16 payload (CMSG_SPACE(2) <= 64 bytes), and
    // outlives the sendmsg call; CMSG_FIRSTHDR returns a pointer into it.
    let r = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, segment as u16);
        libc::sendmsg(socket.as_raw_fd(), &msg, 0)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

struct Shared {
    inner: Mutex<Inner>,
    notify: Notify,
    local: SocketAddr,
    socket: tokio::net::UdpSocket,
}

impl Shared {
    /// After a stream command: send its output here and now, and wake the
    /// driver only if it has to do something.
    fn flush_from_stream(&self, mut g: MutexGuard<'_, Inner>) {
        let blocked = g.flush(&self.socket, self.local, Instant::now());
        let wake = g.driver_needed(blocked);
        drop(g);
        if wake {
            self.notify.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the endpoint in an unknown
        // state only if the core panicked, which is a bug; go on anyway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "uTP socket driver has stopped")
}

/// A UDP socket carrying uTP connections. Cheap to share by reference;
/// dropping it (and every stream made from it) stops its driver task.
pub struct UtpSocket {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UtpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtpSocket")
            .field("local", &self.shared.local)
            .finish()
    }
}

impl UtpSocket {
    /// Binds a UDP socket on `addr` and starts its driver. The socket
    /// accepts incoming connections (see [`UtpSocket::set_listening`]).
    pub fn bind(addr: SocketAddr) -> io::Result<UtpSocket> {
        let s = Self::from_std_with_config(std::net::UdpSocket::bind(addr)?, config())?;
        s.set_listening(true);
        Ok(s)
    }

    /// Like [`UtpSocket::bind`] with explicit endpoint settings.
    pub fn bind_with_config(addr: SocketAddr, config: EndpointConfig) -> io::Result<UtpSocket> {
        let s = Self::from_std_with_config(std::net::UdpSocket::bind(addr)?, config)?;
        s.set_listening(true);
        Ok(s)
    }

    /// Uses an already bound (for instance already hole-punched) UDP
    /// socket. It does not accept incoming SYNs until
    /// [`UtpSocket::set_listening`]`(true)`; rendezvous connections work
    /// without it.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UtpSocket> {
        Self::from_std_with_config(socket, config())
    }

    /// Like [`UtpSocket::from_std`] with explicit endpoint settings.
    /// `config.seed` is mixed with fresh randomness: connection ids and
    /// initial sequence numbers on a real socket must not be predictable.
    pub fn from_std_with_config(
        socket: std::net::UdpSocket,
        mut config: EndpointConfig,
    ) -> io::Result<UtpSocket> {
        config.seed ^= rand::random::<u64>();
        socket.set_nonblocking(true)?;
        // Bulk transfers arrive in bursts: a small kernel buffer drops
        // them (the kernel caps these at net.core.[rw]mem_max).
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        let gro = enable_gro(&socket);
        let local = socket.local_addr()?;
        if !enable_recverr(&socket, local.is_ipv6()) {
            log::debug!("uTP socket {local}: no ICMP error reports (IP_RECVERR)");
        }
        let socket = {
            let _guard = crust_runtime::handle().enter();
            tokio::net::UdpSocket::from_std(socket)?
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                ep: Endpoint::new(config, Instant::now()),
                wakers: HashMap::new(),
                accept_waker: None,
                handles: 1,
                driver_alive: true,
                out: vec![0; MAX_DATAGRAM],
                rbuf: vec![0; 65536],
                blocked: None,
                batch: Vec::with_capacity(GSO_MAX_SEGMENTS * MAX_DATAGRAM),
                gro,
                gso: Gso {
                    enabled: cfg!(target_os = "linux"),
                },
                driver_deadline: None,
            }),
            notify: Notify::new(),
            local,
            socket,
        });
        crust_runtime::spawn(drive(shared.clone()));
        Ok(UtpSocket { shared })
    }

    /// The local address of the UDP socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Whether SYNs from unknown peers are accepted into the backlog for
    /// [`UtpSocket::accept`]; when not, they are refused with RESET.
    pub fn set_listening(&self, listening: bool) {
        self.shared.lock().ep.set_listening(listening);
    }

    /// Counters of dropped and refused packets.
    pub fn stats(&self) -> super::proto::EndpointStats {
        self.shared.lock().ep.stats().clone()
    }

    fn new_stream(&self, inner: &mut Inner, h: ConnectionHandle, peer: SocketAddr) -> UtpStream {
        inner.handles += 1;
        inner.wakers.insert(h, Wakers::default());
        UtpStream {
            r: Arc::new(StreamRef {
                shared: self.shared.clone(),
                h,
                peer,
            }),
        }
    }

    async fn established(stream: UtpStream) -> io::Result<UtpStream> {
        let r = &stream.r;
        poll_fn(|cx| {
            let mut g = r.shared.lock();
            let inner = &mut *g;
            let Some(c) = inner.ep.connection(r.h) else {
                return Poll::Ready(Err(closed_error()));
            };
            if let Some(e) = c.error() {
                return Poll::Ready(Err(e.clone().into()));
            }
            if c.is_established() {
                return Poll::Ready(Ok(()));
            }
            if !inner.driver_alive {
                return Poll::Ready(Err(closed_error()));
            }
            if let Some(w) = inner.wakers.get_mut(&r.h) {
                w.write = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await?;
        Ok(stream)
    }

    /// Opens a uTP connection to `remote`. Fails with `TimedOut` after the
    /// SYN retransmissions ([`super::proto::Config::syn_retransmissions`])
    /// or `ConnectionRefused` if the peer answers with RESET.
    pub async fn connect(&self, remote: SocketAddr) -> io::Result<UtpStream> {
        let stream = {
            let mut g = self.shared.lock();
            let h = g.ep.connect(Instant::now(), remote)?;
            self.new_stream(&mut g, h, remote)
        };
        self.shared.notify.notify_one();
        Self::established(stream).await
    }

    /// Rendezvous over a socket that can already reach `remote` (a
    /// punched hole): both sides call this with the same `nonce`; the one
    /// with `initiator == true` (the lower public key) sends the SYN, the
    /// other accepts only that SYN from `remote`. The responder gives up
    /// after [`super::proto::Config::rendezvous_timeout`].
    pub async fn rendezvous_connect(
        &self,
        remote: SocketAddr,
        nonce: &[u8],
        initiator: bool,
    ) -> io::Result<UtpStream> {
        let stream = {
            let mut g = self.shared.lock();
            let h = g.ep.rendezvous(Instant::now(), remote, nonce, initiator)?;
            self.new_stream(&mut g, h, remote)
        };
        self.shared.notify.notify_one();
        Self::established(stream).await
    }

    /// Waits for the next incoming connection.
    pub async fn accept(&self) -> io::Result<(UtpStream, SocketAddr)> {
        poll_fn(|cx| {
            let mut g = self.shared.lock();
            if let Some((h, peer)) = g.ep.accept() {
                let s = self.new_stream(&mut g, h, peer);
                return Poll::Ready(Ok((s, peer)));
            }
            if !g.driver_alive {
                return Poll::Ready(Err(closed_error()));
            }
            g.accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl UtpSocket {
    /// A reference that does not keep the socket (nor its driver) alive.
    pub(crate) fn downgrade(&self) -> WeakUtpSocket {
        WeakUtpSocket(Arc::downgrade(&self.shared))
    }
}

/// A [`UtpSocket`] that may be gone: see [`UtpSocket::downgrade`].
pub(crate) struct WeakUtpSocket(std::sync::Weak<Shared>);

impl WeakUtpSocket {
    /// The socket again, if something still holds it and its driver runs.
    pub(crate) fn upgrade(&self) -> Option<UtpSocket> {
        let shared = self.0.upgrade()?;
        {
            let mut g = shared.lock();
            // With no handle left the driver is only lingering to finish
            // its closes: do not revive it.
            if !g.driver_alive || g.handles == 0 {
                return None;
            }
            g.handles += 1;
        }
        Some(UtpSocket { shared })
    }
}

impl Drop for UtpSocket {
    fn drop(&mut self) {
        self.shared.lock().handles -= 1;
        self.shared.notify.notify_one();
    }
}

fn config() -> EndpointConfig {
    EndpointConfig {
        seed: rand::random(),
        ..EndpointConfig::default()
    }
}

/// One raw uTP connection: `AsyncRead + AsyncWrite`. `shutdown` sends FIN
/// after the bytes written; reading returns 0 after the peer's FIN.
/// Dropping it closes it gracefully.
pub struct UtpStream {
    r: Arc<StreamRef>,
}

/// The reading half of a [`UtpStream`] ([`UtpStream::split`]).
pub struct UtpReadStream {
    r: Arc<StreamRef>,
}

/// The writing half of a [`UtpStream`] ([`UtpStream::split`]).
/// Dropping it sends FIN (like `shutdown`).
pub struct UtpWriteStream {
    r: Arc<StreamRef>,
}

/// What the stream and its halves share; dropping the last one releases
/// the connection.
struct StreamRef {
    shared: Arc<Shared>,
    h: ConnectionHandle,
    peer: SocketAddr,
}

impl std::fmt::Debug for UtpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtpStream")
            .field("local", &self.r.shared.local)
            .field("peer", &self.r.peer)
            .finish()
    }
}

impl std::fmt::Debug for UtpReadStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtpReadStream")
            .field("peer", &self.r.peer)
            .finish()
    }
}

impl std::fmt::Debug for UtpWriteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtpWriteStream")
            .field("peer", &self.r.peer)
            .finish()
    }
}

/// The former name of [`UtpReadStream`] (the halves are named as
/// transport's [`ReadStream`](crate::ReadStream) and
/// [`WriteStream`](crate::WriteStream)).
#[deprecated(note = "renamed UtpReadStream")]
pub type UtpReadHalf = UtpReadStream;
/// The former name of [`UtpWriteStream`].
#[deprecated(note = "renamed UtpWriteStream")]
pub type UtpWriteHalf = UtpWriteStream;

/// Ends a uTP connection from anywhere, while its halves are in use
/// elsewhere ([`UtpStream::abort_handle`]).
#[derive(Clone)]
pub(crate) struct UtpAbort {
    r: Arc<StreamRef>,
}

impl UtpAbort {
    /// As [`UtpStream::abort`].
    pub(crate) fn abort(&self) {
        self.r.abort()
    }
}

impl UtpStream {
    /// A handle that aborts this connection, kept apart from its halves.
    pub(crate) fn abort_handle(&self) -> UtpAbort {
        UtpAbort { r: self.r.clone() }
    }

    /// Splits the stream into halves that can be used from two tasks (or
    /// threads) at once, without a lock around the stream.
    pub fn split(self) -> (UtpReadStream, UtpWriteStream) {
        (
            UtpReadStream { r: self.r.clone() },
            UtpWriteStream { r: self.r },
        )
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.r.peer
    }

    /// The local address of the UDP socket carrying this stream.
    pub fn local_addr(&self) -> SocketAddr {
        self.r.shared.local
    }

    /// Ends the connection at once with a RESET (unsent data is dropped).
    pub fn abort(&self) {
        self.r.abort()
    }

    /// The connection's counters (packets, retransmits, timeouts, ...).
    pub fn stats(&self) -> super::proto::Stats {
        self.r.stats()
    }

    /// The connection's congestion window in bytes.
    pub fn congestion_window(&self) -> usize {
        self.r.congestion_window()
    }

    /// Round-trip time estimate, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.r.rtt()
    }
}

impl UtpReadStream {
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.r.peer
    }
}

impl UtpWriteStream {
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.r.peer
    }

    /// Ends the connection at once with a RESET (unsent data is dropped).
    pub fn abort(&self) {
        self.r.abort()
    }
}

impl Drop for UtpWriteStream {
    fn drop(&mut self) {
        self.r.close_write();
    }
}

impl AsyncRead for UtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.r.poll_read(cx, buf)
    }
}

impl AsyncRead for UtpReadStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.r.poll_read(cx, buf)
    }
}

impl AsyncWrite for UtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.r.poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already with the connection machine, which
        // sends them as soon as the windows allow (no Nagle).
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.r.poll_shutdown(cx)
    }
}

impl AsyncWrite for UtpWriteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.r.poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.r.poll_shutdown(cx)
    }
}

impl StreamRef {
    fn abort(&self) {
        if let Some(c) = self.shared.lock().ep.connection_mut(self.h) {
            c.abort();
        }
        self.shared.notify.notify_one();
    }

    fn stats(&self) -> super::proto::Stats {
        self.shared
            .lock()
            .ep
            .connection(self.h)
            .map(|c| c.stats().clone())
            .unwrap_or_default()
    }

    fn congestion_window(&self) -> usize {
        self.shared
            .lock()
            .ep
            .connection(self.h)
            .map_or(0, |c| c.congestion_window())
    }

    fn rtt(&self) -> Option<Duration> {
        self.shared
            .lock()
            .ep
            .connection(self.h)
            .and_then(|c| c.rtt())
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self;
        let mut g = this.shared.lock();
        let inner = &mut *g;
        if inner
            .ep
            .connection(this.h)
            .is_some_and(|c| c.readable_bytes() == 0)
        {
            // Nothing buffered: read the socket here rather than wait for
            // the driver to do it and wake us (one thread hop less).
            let mut wake = Vec::new();
            let now = Instant::now();
            inner.receive(&this.shared.socket, this.shared.local, now, &mut wake);
            let blocked = inner.flush(&this.shared.socket, this.shared.local, now);
            if inner.driver_needed(blocked) {
                this.shared.notify.notify_one();
            }
            for w in wake {
                w.wake();
            }
        }
        let Some(c) = inner.ep.connection_mut(this.h) else {
            return Poll::Ready(Err(closed_error()));
        };
        let dst = buf.initialize_unfilled();
        match c.read(dst) {
            Some(0) if !dst.is_empty() => match c.error() {
                Some(e) => Poll::Ready(Err(e.clone().into())),
                None => Poll::Ready(Ok(())),
            },
            Some(n) => {
                let send = c.wants_transmit();
                buf.advance(n);
                if send {
                    this.shared.flush_from_stream(g);
                }
                Poll::Ready(Ok(()))
            }
            None => {
                if !inner.driver_alive {
                    return Poll::Ready(Err(closed_error()));
                }
                if let Some(w) = inner.wakers.get_mut(&this.h) {
                    w.read = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl StreamRef {
    fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self;
        let mut g = this.shared.lock();
        let inner = &mut *g;
        let Some(c) = inner.ep.connection_mut(this.h) else {
            return Poll::Ready(Err(closed_error()));
        };
        if let Some(e) = c.error() {
            return Poll::Ready(Err(e.clone().into()));
        }
        let n = c.write(data);
        if n > 0 {
            this.shared.flush_from_stream(g);
            return Poll::Ready(Ok(n));
        }
        if c.writable_bytes() == 0 && c.is_done_sending() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "uTP stream already shut down for writing",
            )));
        }
        if !inner.driver_alive {
            return Poll::Ready(Err(closed_error()));
        }
        if let Some(w) = inner.wakers.get_mut(&this.h) {
            w.write = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Asks for our FIN after the data, without waiting.
    fn close_write(&self) {
        if let Some(c) = self.shared.lock().ep.connection_mut(self.h) {
            c.close();
        }
        self.shared.notify.notify_one();
    }

    /// Sends our FIN after the data, then waits until the peer acked it
    /// (or the connection failed): with uTP in user space, nothing resends
    /// once the process is gone, so a shutdown that returned at once would
    /// let a process exit with its last bytes unsent. Callers that must not
    /// wait bound it (crust lingers a few seconds; `Drop` only polls once).
    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self;
        let mut g = this.shared.lock();
        let inner = &mut *g;
        let Some(c) = inner.ep.connection_mut(this.h) else {
            return Poll::Ready(Ok(()));
        };
        c.close();
        if c.is_done_sending() {
            let failed = c.state() == super::proto::State::Failed;
            let result = match c.error() {
                Some(e) if failed => Err(e.clone().into()),
                _ => Ok(()),
            };
            return Poll::Ready(result);
        }
        if !inner.driver_alive {
            return Poll::Ready(Err(closed_error()));
        }
        if let Some(w) = inner.wakers.get_mut(&this.h) {
            w.write = Some(cx.waker().clone());
        }
        drop(g);
        this.shared.notify.notify_one();
        Poll::Pending
    }
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        {
            let mut g = self.shared.lock();
            g.ep.release(self.h);
            g.wakers.remove(&self.h);
            g.handles -= 1;
        }
        self.shared.notify.notify_one();
    }
}

/// The driver: one task per UDP socket.
async fn drive(shared: Arc<Shared>) {
    let socket = &shared.socket;
    let mut orphaned_at: Option<Instant> = None;
    let mut wake = Vec::new();
    loop {
        let deadline;
        let blocked;
        {
            let mut g = shared.lock();
            let inner = &mut *g;
            let now = Instant::now();
            inner.receive(socket, shared.local, now, &mut wake);
            inner.ep.handle_timeout(now);
            blocked = inner.flush(socket, shared.local, now);
            for h in inner.ep.take_touched() {
                if let Some(w) = inner.wakers.get_mut(&h) {
                    wake.extend(w.read.take());
                    wake.extend(w.write.take());
                }
            }
            if inner.handles == 0 {
                let t = *orphaned_at.get_or_insert(now);
                if inner.ep.all_done_sending() || now.saturating_duration_since(t) >= CLOSE_LINGER {
                    inner.driver_alive = false;
                    break;
                }
            }
            deadline = match (inner.ep.poll_timeout(), orphaned_at) {
                (Some(d), Some(o)) => Some(d.min(o + CLOSE_LINGER)),
                (d, o) => d.or(o.map(|o| o + CLOSE_LINGER)),
            };
            inner.driver_deadline = deadline;
        }
        for w in wake.drain(..) {
            w.wake();
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // ERROR: an ICMP report in the error queue wakes no reader.
            _ = socket.ready(tokio::io::Interest::READABLE | tokio::io::Interest::ERROR) => {}
            _ = shared.notify.notified() => {}
            _ = sleep => {}
            _ = socket.writable(), if blocked => {}
        }
    }
    log::debug!("uTP socket {} driver stopped", shared.local);
}
