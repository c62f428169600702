//! The async (tokio) face of the transport: the same streams and listeners
//! as the blocking API, as futures.
//!
//! The blocking [`Listener`](crate::Listener) is built on this one; the
//! blocking [`Stream`](crate::Stream) shares its sans-IO core
//! ([`proto`](crate::proto)).
//!
//! Runtime: a [`Listener`]'s accept loop and handshakes, and every uTP
//! socket's driver, run as tasks on the shared runtime (`crust-runtime`),
//! whichever runtime the caller awaits from, and their sockets are
//! registered with it; so they go on between calls and after the caller's
//! runtime ends. A [`Stream`]'s reads and writes run in the task that polls
//! them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use transport::{aio, Identity};
//!
//! let listener = aio::Listener::bind(&Identity::generate(), "tcp://127.0.0.1:0").await?;
//! let ep = listener.endpoints()[0];
//! tokio::spawn(async move {
//!     let mut s = listener.accept().await.unwrap();
//!     let mut buf = [0u8; 5];
//!     s.read_exact(&mut buf).await.unwrap();
//!     s.write_all(&buf).await.unwrap();
//! });
//! let mut s = aio::Stream::direct_connect(&Identity::generate(), &ep, Duration::from_secs(5)).await?;
//! s.write_all(b"hello").await?;
//! let mut buf = [0u8; 5];
//! s.read_exact(&mut buf).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::admission::{self, Admission, Answer, ConnId, Event};

use crate::endpoint::{Endpoint, ListenEndpoint, Protocol, ToEndpoints, ToListenEndpoints};
use crate::error::{Error, Result};
use crate::handshake::{self, FirstMessage, Responded};
use crate::identity::{Identity, PublicKey};
use crate::proto::{Opener, RecvBuf, Sealer, Session};
use crate::utp::aio::{UtpSocket, UtpStream, WeakUtpSocket};

pub use crate::listener_set::ListenerSet;

/// How many plaintext bytes one write seals at most before handing them to
/// the socket.
pub(crate) const WRITE_BATCH: usize = 128 * 1024;

/// Send buffers between writes: a stream takes one to seal records into and
/// gives it back once they are all on the wire, so an idle stream holds
/// none. Kept up to the size one batch grows to.
pub(crate) static TX_POOL: crate::pool::Pool = crate::pool::Pool::growable(2 * WRITE_BATCH, 8);

/// The byte stream under the encryption: a TCP socket or a uTP connection.
pub(crate) enum Carrier {
    Tcp(TcpStream),
    Utp(UtpStream),
}

impl Carrier {
    pub(crate) fn protocol(&self) -> Protocol {
        match self {
            Carrier::Tcp(_) => Protocol::Tcp,
            Carrier::Utp(_) => Protocol::Utp,
        }
    }

    fn addrs(&self) -> io::Result<(SocketAddr, SocketAddr)> {
        match self {
            Carrier::Tcp(s) => Ok((s.peer_addr()?, s.local_addr()?)),
            Carrier::Utp(s) => Ok((s.peer_addr(), s.local_addr())),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Carrier::Tcp($s) => $e,
            Carrier::Utp($s) => $e,
        }
    };
}

impl AsyncRead for Carrier {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Carrier {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// An encrypted stream, async. See [`crate::Stream`] for the blocking one.
pub struct Stream {
    io: Carrier,
    rx: RecvBuf,
    opener: Opener,
    sealer: Sealer,
    tx: Vec<u8>,
    tx_pos: usize,
    peer_key: PublicKey,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    path: crate::Path,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("aio::Stream")
            .field("peer_addr", &self.peer_addr)
            .field("peer_key", &self.peer_key)
            .finish_non_exhaustive()
    }
}

impl Stream {
    pub(crate) fn new(io: Carrier, session: Session) -> io::Result<Stream> {
        let peer_key = session.peer();
        let (peer_addr, local_addr) = io.addrs()?;
        let (opener, sealer) = session.split();
        let io_protocol = io.protocol();
        Ok(Stream {
            io,
            rx: RecvBuf::new(),
            opener,
            sealer,
            tx: Vec::new(),
            tx_pos: 0,
            peer_key,
            peer_addr,
            local_addr,
            path: crate::Path::Direct(io_protocol),
        })
    }

    /// The same stream, saying it is carried by `path`.
    pub(crate) fn with_path(mut self, path: crate::Path) -> Stream {
        self.path = path;
        self
    }

    /// Connects to the first of `endpoints` that answers and completes the
    /// encrypted handshake as `identity`. `timeout` bounds each attempt
    /// (TCP connect plus handshake).
    ///
    /// # Errors
    ///
    /// The last attempt's error: [`Error::PeerKeyMismatch`] when the listener
    /// does not hold the endpoint's key, [`Error::TimedOut`],
    /// [`Error::Io`] when the connection is refused, and so on.
    pub async fn direct_connect(
        identity: &Identity,
        endpoints: impl ToEndpoints,
        timeout: Duration,
    ) -> Result<Stream> {
        let mut last = None;
        for ep in endpoints.to_endpoints()? {
            match connect_one(identity, &ep, timeout).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    log::debug!("connect to {ep} failed: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidEndpoint {
            input: String::new(),
            reason: "no endpoints given".into(),
        }))
    }

    /// The peer's proven public key.
    pub fn peer_public_key(&self) -> PublicKey {
        self.peer_key
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Our socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The carrier protocol.
    pub fn protocol(&self) -> Protocol {
        self.io.protocol()
    }

    /// How the stream is carried: [`Path::Direct`](crate::Path::Direct)
    /// when dialled or accepted, [`Path::HolePunched`](crate::Path::HolePunched)
    /// or [`Path::Mapped`](crate::Path::Mapped) from a rendezvous.
    pub fn path(&self) -> crate::Path {
        self.path
    }

    pub(crate) fn into_parts(self) -> (Carrier, RecvBuf, Opener, Sealer, PublicKey, crate::Path) {
        (
            self.io,
            self.rx,
            self.opener,
            self.sealer,
            self.peer_key,
            self.path,
        )
    }

    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tx_pos < self.tx.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.tx[self.tx_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tx_pos += n;
        }
        // All on the wire: the buffer goes back to the pool.
        TX_POOL.give(std::mem::take(&mut self.tx));
        self.tx_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads what has arrived, waiting until at least one byte of plaintext
    /// is there, and appends it to `out`, which grows by exactly that much
    /// (all the whole records buffered). Returns how many bytes it appended;
    /// `0` means the peer closed the stream cleanly.
    ///
    /// Unlike [`AsyncReadExt::read`](tokio::io::AsyncReadExt::read), the
    /// caller lends no buffer while it waits, and the stream gives its own
    /// receive buffer back to a shared pool whenever the socket has nothing
    /// more: a task that waits here on an idle stream holds no buffer at
    /// all. Cancel-safe: bytes are appended only when it returns.
    ///
    /// # Errors
    ///
    /// As [`AsyncRead::poll_read`]: the socket's error, `InvalidData` for a
    /// record that fails authentication, `UnexpectedEof` when the peer
    /// closed in the middle of a record.
    ///
    /// ```no_run
    /// # async fn demo(s: &mut transport::aio::Stream) -> std::io::Result<()> {
    /// let mut got = Vec::new();
    /// while s.read_append(&mut got).await? > 0 {}
    /// # Ok(()) }
    /// ```
    pub async fn read_append(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_append(cx, out)).await
    }

    /// The poll form of [`read_append`](Stream::read_append).
    ///
    /// # Errors
    ///
    /// As [`read_append`](Stream::read_append).
    pub fn poll_read_append(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let avail = self.rx.buffered_len();
            if avail > 0 {
                // The plaintext of what is buffered is at most `avail`
                // bytes: every whole record decrypts straight into `out`.
                let old = out.len();
                out.resize(old + avail, 0);
                match self.rx.read_plain(&mut self.opener, &mut out[old..]) {
                    Ok(Some(n)) => {
                        out.truncate(old + n);
                        return Poll::Ready(Ok(n));
                    }
                    Ok(None) => out.truncate(old),
                    Err(e) => {
                        out.truncate(old);
                        return Poll::Ready(Err(e.into()));
                    }
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(if self.rx.at_frame_boundary() {
                    Ok(0)
                } else {
                    Err(mid_record_eof(self.peer_addr))
                });
            }
        }
    }

    /// Reads ciphertext from the socket into the receive buffer. When the
    /// socket has nothing, the buffer goes back to the pool if it holds
    /// nothing either.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let spare = self.rx.spare();
        let mut rb = ReadBuf::new(spare);
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Pending => {
                self.rx.release_idle();
                Poll::Pending
            }
            Poll::Ready(r) => {
                r?;
                let n = rb.filled().len();
                self.rx.filled(n);
                Poll::Ready(Ok(n))
            }
        }
    }
}

/// The UDP sockets that outgoing uTP connections share, one per address
/// family, so 1,000 connections cost one socket, one driver task and one
/// datagram buffer, not 1,000. Held weakly: a socket (and its driver task)
/// ends once its last stream is dropped and its FINs are acked, and the
/// next connect binds a new one.
static UTP_DIAL: std::sync::Mutex<[Option<WeakUtpSocket>; 2]> = std::sync::Mutex::new([None, None]);

/// The shared dialling socket of the family, bound now if none is alive.
fn utp_dial_socket(v4: bool) -> io::Result<UtpSocket> {
    let mut slots = UTP_DIAL.lock().unwrap_or_else(|e| e.into_inner());
    let slot = &mut slots[usize::from(!v4)];
    if let Some(s) = slot.as_ref().and_then(WeakUtpSocket::upgrade) {
        return Ok(s);
    }
    let unspecified: SocketAddr = if v4 {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UtpSocket::from_std(std::net::UdpSocket::bind(unspecified)?)?;
    *slot = Some(sock.downgrade());
    Ok(sock)
}

/// Opens the carrier to `ep` (TCP connect, or uTP from the shared dialling
/// socket), no handshake yet. The caller bounds it.
pub(crate) async fn dial_carrier(ep: &Endpoint) -> Result<Carrier> {
    Ok(match ep.protocol {
        Protocol::Tcp => {
            let io = TcpStream::connect(ep.addr)
                .await
                .map_err(|e| Error::io(format!("connecting to {ep}"), e))?;
            io.set_nodelay(true)
                .map_err(|e| Error::io(format!("setting TCP_NODELAY on {ep}"), e))?;
            Carrier::Tcp(io)
        }
        Protocol::Utp => {
            let fail = |e| Error::io(format!("connecting to {ep}"), e);
            let sock = utp_dial_socket(ep.addr.is_ipv4()).map_err(fail)?;
            Carrier::Utp(sock.connect(ep.addr).await.map_err(fail)?)
        }
    })
}

async fn connect_one(identity: &Identity, ep: &Endpoint, timeout: Duration) -> Result<Stream> {
    let attempt = async {
        let mut io = dial_carrier(ep).await?;
        let session = handshake::initiate_async(&mut io, identity, ep, &[], timeout).await?;
        Stream::new(io, session).map_err(|e| Error::io(format!("connected to {ep}"), e))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::TimedOut {
            what: format!("connecting to {ep}"),
            after: timeout,
        })?
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let out = buf.initialize_unfilled();
            if let Some(n) = this.rx.read_plain(&mut this.opener, out)? {
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            if ready!(this.poll_fill(cx))? == 0 {
                return Poll::Ready(if this.rx.at_frame_boundary() {
                    Ok(())
                } else {
                    Err(mid_record_eof(this.peer_addr))
                });
            }
        }
    }
}

pub(crate) fn mid_record_eof(peer: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{peer} closed the connection in the middle of a record"),
    )
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_send_pending(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.tx.capacity() == 0 {
            this.tx = TX_POOL.take();
        }
        let n = this.sealer.seal(buf, &mut this.tx, WRITE_BATCH);
        // Send what the socket takes now; the rest goes out on the next
        // write, flush or shutdown.
        if let Poll::Ready(Err(e)) = this.poll_send_pending(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Settings of a listener: its handshake slots, deadlines and accept queue.
///
/// A connection holds a handshake slot (shared by all the listener's
/// sockets) until it proves itself with its admission record, then waits in
/// the accept queue. When the slots are full, the pending connection that
/// made the least progress for the longest is dropped, never the newcomer.
/// Once the slots (or the queue) are [`pressure`](ListenerOptions::pressure)
/// full, one source (an IPv4 address, an IPv6 /64) holds at most
/// [`source_share`](ListenerOptions::source_share) of them; with room to
/// spare a source may open as many as it likes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ListenerOptions {
    /// How long an accepted connection may take to prove itself (first
    /// message, answer, admission record) before it is dropped. Default 10 s.
    pub handshake_timeout: Duration,
    /// How long an accepted connection may take to deliver its whole first
    /// message (silent and trickling peers). Default 3 s.
    pub first_message_timeout: Duration,
    /// How many handshakes may be in progress at once; when all are taken, a
    /// newcomer displaces the one that made the least progress for the
    /// longest. Default 256.
    pub max_pending_handshakes: usize,
    /// How many proven streams may wait for `accept`; when it is full, a
    /// dialler gets the busy rejection ([`Error::Busy`]) at once. Default 128.
    pub accept_queue: usize,
    /// The fill fraction of the slots or the queue from which per-source
    /// shares apply. Default 0.75.
    pub pressure: f64,
    /// The share of the slots or the queue one source may hold under
    /// pressure. Default 0.25.
    pub source_share: f64,
    /// When set, each bound socket is also mapped through this context: its
    /// STUN-learned addresses (NAT-restricted) and its UPnP port mapping
    /// (not restricted) join the listener's endpoints. The UPnP mappings
    /// live as long as the listener, renewed at half their lease, and are
    /// removed when it is dropped. Default none.
    pub mapping: Option<Arc<nat_traversal::MappingContext>>,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            handshake_timeout: Duration::from_secs(10),
            first_message_timeout: Duration::from_secs(3),
            max_pending_handshakes: 256,
            accept_queue: 128,
            pressure: 0.75,
            source_share: 0.25,
            mapping: None,
        }
    }
}

impl ListenerOptions {
    /// Sets [`first_message_timeout`](ListenerOptions::first_message_timeout).
    pub fn first_message_timeout(mut self, t: Duration) -> Self {
        self.first_message_timeout = t;
        self
    }

    /// Sets [`pressure`](ListenerOptions::pressure) (clamped to 0..=1).
    pub fn pressure(mut self, fraction: f64) -> Self {
        self.pressure = fraction.clamp(0.0, 1.0);
        self
    }

    /// Sets [`source_share`](ListenerOptions::source_share) (clamped to
    /// 0..=1).
    pub fn source_share(mut self, fraction: f64) -> Self {
        self.source_share = fraction.clamp(0.0, 1.0);
        self
    }

    fn admission_config(&self) -> admission::Config {
        admission::Config {
            slots: self.max_pending_handshakes,
            accept_queue: self.accept_queue,
            first_message_timeout: self.first_message_timeout,
            handshake_timeout: self.handshake_timeout,
            pressure: self.pressure,
            source_share: self.source_share,
            report_every: Duration::from_secs(10),
        }
    }

    /// Sets [`handshake_timeout`](ListenerOptions::handshake_timeout).
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// Sets [`max_pending_handshakes`](ListenerOptions::max_pending_handshakes).
    pub fn max_pending_handshakes(mut self, n: usize) -> Self {
        self.max_pending_handshakes = n.max(1);
        self
    }

    /// Sets [`accept_queue`](ListenerOptions::accept_queue).
    pub fn accept_queue(mut self, n: usize) -> Self {
        self.accept_queue = n.max(1);
        self
    }

    /// Sets [`mapping`](ListenerOptions::mapping).
    pub fn mapping(mut self, mc: Arc<nat_traversal::MappingContext>) -> Self {
        self.mapping = Some(mc);
        self
    }
}

/// One of a listener's endpoints and whether only a peer we punch a hole
/// with can reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PublishedEndpoint {
    /// The endpoint, with our public key.
    pub endpoint: Endpoint,
    /// `true` for an address a NAT mapping gave (seen by STUN): it lets in
    /// only peers we sent to; `false` for a local address, a UPnP port
    /// mapping, or an address with no NAT in front.
    pub nat_restricted: bool,
}

/// A connection that proved itself, waiting for `accept`.
pub(crate) struct Incoming {
    pub(crate) id: ConnId,
    pub(crate) io: Carrier,
    pub(crate) session: Session,
    /// The initiator's handshake payload (a rendezvous token, `docs/wire.md`
    /// §2.2).
    pub(crate) payload: Vec<u8>,
}

impl Incoming {
    /// The async stream, its TCP socket moved to the caller's runtime (the
    /// accept task runs on the shared one) so its I/O is not woken across
    /// runtimes.
    pub(crate) fn into_local_stream(self) -> io::Result<Stream> {
        let io = match self.io {
            Carrier::Tcp(s) => Carrier::Tcp(s.into_std().and_then(TcpStream::from_std)?),
            utp => utp,
        };
        Stream::new(io, self.session)
    }

    /// The peer's address, for the log.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        self.io.addrs().ok().map(|(p, _)| p)
    }
}

/// Accepts encrypted connections, async. See [`crate::Listener`] for the
/// blocking one.
///
/// Each bound socket has one accept task on the shared runtime, and one
/// admission task drives the sans-IO admission core for all of them: each
/// connection's handshake is a task that the core may end (see
/// [`ListenerOptions`]), so a slow or malicious peer never holds up the
/// others. A connection reaches `accept` only once its admission record
/// decrypts. Dropping the listener stops the tasks and closes the sockets
/// (from an ordinary thread, before the drop returns).
pub struct Listener {
    identity: Identity,
    endpoints: Vec<Endpoint>,
    published: Vec<PublishedEndpoint>,
    /// UPnP port mappings, removed when the listener is dropped.
    _mappings: Vec<nat_traversal::IgdMapping>,
    local_addrs: Vec<SocketAddr>,
    admission: Arc<std::sync::Mutex<Admission>>,
    rx: Mutex<mpsc::Receiver<Incoming>>,
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("aio::Listener")
            .field("local_addrs", &self.local_addrs)
            .field("public_key", &self.identity.public_key())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds every listen endpoint and starts accepting, with default
    /// [`ListenerOptions`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the endpoint that could not be bound,
    /// [`Error::InvalidEndpoint`] when none is given.
    pub async fn bind(identity: &Identity, endpoints: impl ToListenEndpoints) -> Result<Listener> {
        Listener::bind_with(identity, endpoints, ListenerOptions::default()).await
    }

    /// Binds with explicit options.
    ///
    /// # Errors
    ///
    /// As [`bind`](Listener::bind).
    pub async fn bind_with(
        identity: &Identity,
        endpoints: impl ToListenEndpoints,
        options: ListenerOptions,
    ) -> Result<Listener> {
        let listen = endpoints.to_listen_endpoints()?;
        if listen.is_empty() {
            return Err(Error::InvalidEndpoint {
                input: String::new(),
                reason: "no listen endpoints given".into(),
            });
        }
        let mut sockets = Vec::with_capacity(listen.len());
        let mut mapped = Vec::new();
        let mut mappings = Vec::new();
        for le in &listen {
            let bound = Acceptor::bind(le, options.mapping.is_some())?;
            let bound = match &options.mapping {
                Some(mc) => {
                    let (bound, report) = bound.map(le, mc).await?;
                    if let Some(r) = report {
                        let protocol = bound.protocol();
                        mapped.extend(r.endpoints.iter().map(|m| (protocol, *m)));
                        mappings.extend(r.igd_mapping);
                    }
                    bound
                }
                None => bound,
            };
            sockets.push(bound.start(le)?);
        }
        // The core admits at most `accept_queue` streams to the queue, so a
        // send into this channel never waits.
        let (tx, rx) = mpsc::channel(options.accept_queue.max(1));
        let (shutdown, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut local_addrs = Vec::new();
        let admission = Arc::new(std::sync::Mutex::new(Admission::new(
            options.admission_config(),
        )));
        let (arrivals_tx, arrivals_rx) = mpsc::channel(64);
        let mut bound = Vec::new();
        for sock in sockets {
            let local = sock.local_addr();
            local_addrs.push(local);
            bound.push(ListenEndpoint::new(sock.protocol(), local));
            log::info!(
                "listening on {}://{local} as {}",
                sock.protocol(),
                identity.public_key()
            );
            tasks.spawn_on(
                accept_loop(sock, arrivals_tx.clone(), shutdown.subscribe()),
                crust_runtime::handle(),
            );
        }
        drop(arrivals_tx);
        tasks.spawn_on(
            admission_driver(
                admission.clone(),
                identity.clone(),
                options.handshake_timeout,
                arrivals_rx,
                tx,
                shutdown.subscribe(),
            ),
            crust_runtime::handle(),
        );
        let key = identity.public_key();
        let mut published: Vec<PublishedEndpoint> = listen_addrs_to_endpoints(&bound, key)
            .into_iter()
            .map(|endpoint| PublishedEndpoint {
                endpoint,
                nat_restricted: false,
            })
            .collect();
        for (protocol, m) in mapped {
            if let Some(p) = published
                .iter_mut()
                .find(|p| p.endpoint.protocol == protocol && p.endpoint.addr == m.addr)
            {
                // STUN saw the address a UPnP mapping also gives (the NAT
                // kept the port): anyone can reach it.
                p.nat_restricted &= m.nat_restricted;
            } else {
                log::info!(
                    "listening on {protocol}://{} too ({})",
                    m.addr,
                    if m.nat_restricted {
                        "NAT-restricted"
                    } else {
                        "reachable"
                    }
                );
                published.push(PublishedEndpoint {
                    endpoint: Endpoint::new(protocol, m.addr, key),
                    nat_restricted: m.nat_restricted,
                });
            }
        }
        let endpoints = published.iter().map(|p| p.endpoint).collect();
        Ok(Listener {
            identity: identity.clone(),
            endpoints,
            published,
            _mappings: mappings,
            local_addrs,
            admission,
            rx: Mutex::new(rx),
            shutdown,
            tasks: std::sync::Mutex::new(tasks),
        })
    }

    pub(crate) async fn accept_incoming(&self) -> Result<Incoming> {
        let inc = self
            .rx
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| Error::Closed("listener".into()))?;
        lock_core(&self.admission).handle_accepted(inc.id);
        Ok(inc)
    }

    /// Waits for the next connection whose handshake completed.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the accept tasks ended.
    pub async fn accept(&self) -> Result<Stream> {
        loop {
            let inc = self.accept_incoming().await?;
            match inc.into_local_stream() {
                Ok(s) => return Ok(s),
                // The peer left between handshake and accept: take the next.
                Err(e) => log::debug!("dropping a connection that closed before accept: {e}"),
            }
        }
    }

    /// The endpoints peers can dial: one per local address (an unspecified
    /// bind address is expanded to the interfaces' addresses), then, with a
    /// [`mapping`](ListenerOptions::mapping) context, the mapped ones, each
    /// with our public key.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The same endpoints, each saying whether it is NAT-restricted.
    pub fn published_endpoints(&self) -> &[PublishedEndpoint] {
        &self.published
    }

    /// The bound local socket addresses.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The identity this listener proves.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The endpoints anyone may dial (not NAT-restricted).
    pub(crate) fn reachable_endpoints(&self) -> Vec<Endpoint> {
        self.published
            .iter()
            .filter(|p| !p.nat_restricted)
            .map(|p| p.endpoint)
            .collect()
    }

    /// How many connections hold a handshake slot right now (they have not
    /// proven themselves yet).
    pub fn pending_handshakes(&self) -> usize {
        lock_core(&self.admission).pending()
    }

    /// How many proven streams wait for [`accept`](Listener::accept).
    pub fn queued_streams(&self) -> usize {
        lock_core(&self.admission).queued()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        // The tasks have the signal; wait for them to close their sockets
        // (or, on a runtime thread, let them finish right after).
        crust_runtime::finish_in_drop("closing a transport listener", None, async move {
            while tasks.join_next().await.is_some() {}
        });
    }
}

/// A bound listening socket: TCP, or a UDP socket carrying uTP.
enum Acceptor {
    Tcp(TcpListener, SocketAddr),
    Utp(UtpSocket),
}

/// A bound socket not yet accepting (a UDP one is still plain, so STUN can
/// run over it before uTP takes it).
enum Bound {
    Tcp(socket2::Socket),
    Udp(socket2::Socket),
}

impl Bound {
    fn protocol(&self) -> Protocol {
        match self {
            Bound::Tcp(_) => Protocol::Tcp,
            Bound::Udp(_) => Protocol::Utp,
        }
    }

    /// Maps the socket through `mc` (STUN, UPnP). A mapping that fails
    /// leaves the listener with its local endpoints (logged), it does not
    /// fail the bind.
    async fn map(
        self,
        le: &ListenEndpoint,
        mc: &nat_traversal::MappingContext,
    ) -> Result<(Bound, Option<nat_traversal::MappingReport>)> {
        let fail = |e| Error::io(format!("mapping {le}"), e);
        let (bound, report) = match self {
            Bound::Tcp(s) => {
                let local = s
                    .local_addr()
                    .map_err(fail)?
                    .as_socket()
                    .ok_or_else(|| fail(io::ErrorKind::InvalidInput.into()))?;
                let r = nat_traversal::aio::map_tcp(local, mc).await;
                (Bound::Tcp(s), r)
            }
            Bound::Udp(s) => {
                let udp = tokio::net::UdpSocket::from_std(s.into()).map_err(fail)?;
                let r = nat_traversal::aio::map_udp(&udp, mc).await;
                let std = udp.into_std().map_err(fail)?;
                (Bound::Udp(std.into()), r)
            }
        };
        match report {
            Ok(r) => Ok((bound, Some(r))),
            Err(e) => {
                log::warn!("cannot map the listener socket {le}: {e}");
                Ok((bound, None))
            }
        }
    }

    /// Starts listening (TCP) or carrying uTP (UDP).
    fn start(self, le: &ListenEndpoint) -> Result<Acceptor> {
        let fail = |e| Error::io(format!("binding {le}"), e);
        match self {
            Bound::Tcp(sock) => {
                sock.listen(1024).map_err(fail)?;
                let _guard = crust_runtime::handle().enter();
                let l = TcpListener::from_std(sock.into()).map_err(fail)?;
                let local = l.local_addr().map_err(fail)?;
                Ok(Acceptor::Tcp(l, local))
            }
            Bound::Udp(sock) => {
                let utp = UtpSocket::from_std(sock.into()).map_err(fail)?;
                utp.set_listening(true);
                Ok(Acceptor::Utp(utp))
            }
        }
    }
}

impl Acceptor {
    /// Binds `le`; `reuse_port` so STUN over TCP can run from the same
    /// port (mapped listeners).
    fn bind(le: &ListenEndpoint, reuse_port: bool) -> Result<Bound> {
        let fail = |e| Error::io(format!("binding {le}"), e);
        let domain = socket2::Domain::for_address(le.addr);
        let ty = match le.protocol {
            Protocol::Tcp => socket2::Type::STREAM,
            Protocol::Utp => socket2::Type::DGRAM,
        };
        let sock = socket2::Socket::new(domain, ty, None).map_err(fail)?;
        if le.addr.is_ipv6() {
            sock.set_only_v6(true).map_err(fail)?;
        }
        sock.set_reuse_address(true).map_err(fail)?;
        #[cfg(unix)]
        if reuse_port && le.protocol == Protocol::Tcp {
            sock.set_reuse_port(true).map_err(fail)?;
        }
        #[cfg(not(unix))]
        let _ = reuse_port;
        sock.set_nonblocking(true).map_err(fail)?;
        sock.bind(&le.addr.into()).map_err(fail)?;
        Ok(match le.protocol {
            Protocol::Tcp => Bound::Tcp(sock),
            Protocol::Utp => Bound::Udp(sock),
        })
    }

    fn protocol(&self) -> Protocol {
        match self {
            Acceptor::Tcp(..) => Protocol::Tcp,
            Acceptor::Utp(_) => Protocol::Utp,
        }
    }

    fn local_addr(&self) -> SocketAddr {
        match self {
            Acceptor::Tcp(_, local) => *local,
            Acceptor::Utp(u) => u.local_addr(),
        }
    }

    async fn accept(&self) -> io::Result<(Carrier, SocketAddr)> {
        match self {
            Acceptor::Tcp(l, _) => {
                let (io, peer) = l.accept().await?;
                let _ = io.set_nodelay(true);
                Ok((Carrier::Tcp(io), peer))
            }
            Acceptor::Utp(u) => {
                let (io, peer) = u.accept().await?;
                Ok((Carrier::Utp(io), peer))
            }
        }
    }
}

/// Expands unspecified addresses to the interfaces' addresses of the same
/// family; see [`expand_listen_addrs`] for the order.
pub(crate) fn listen_addrs_to_endpoints(bound: &[ListenEndpoint], key: PublicKey) -> Vec<Endpoint> {
    let mut ifs = Vec::new();
    if bound.iter().any(|le| le.addr.ip().is_unspecified()) {
        match if_addrs::get_if_addrs() {
            Ok(list) => ifs.extend(list.iter().map(|i| (i.ip(), i.index))),
            Err(e) => log::warn!("cannot list interfaces to expand unspecified addresses: {e}"),
        }
    }
    expand_listen_addrs(bound, &ifs, key)
}

/// The endpoints a listener bound to `bound` publishes, given the host's
/// interface addresses (with their interface index), by the rules of
/// [`Listener::endpoints`]: an unspecified address becomes every interface
/// address of its family (IPv6 link-local ones with their scope), routable
/// addresses first, loopback last. A listener computes them once, at bind
/// time; call this again with a new address list when the host's addresses
/// change.
///
/// ```
/// use transport::{Identity, ListenEndpoint};
/// let key = Identity::generate().public_key();
/// let bound = [ListenEndpoint::new(transport::Protocol::Tcp, "0.0.0.0:5483".parse().unwrap())];
/// let ifs = ["127.0.0.1".parse().unwrap(), "198.51.100.7".parse().unwrap()].map(|ip| (ip, Some(1)));
/// let eps = transport::aio::expand_listen_endpoints(&bound, &ifs, key);
/// assert_eq!(eps[0].addr, "198.51.100.7:5483".parse().unwrap());
/// assert_eq!(eps[1].addr, "127.0.0.1:5483".parse().unwrap());
/// ```
pub fn expand_listen_endpoints(
    bound: &[ListenEndpoint],
    ifs: &[(std::net::IpAddr, Option<u32>)],
    key: PublicKey,
) -> Vec<Endpoint> {
    expand_listen_addrs(bound, ifs, key)
}

/// The endpoints to publish for `bound`, given the interfaces' addresses
/// (with their interface index): an unspecified address becomes every
/// interface address of its family; IPv6 link-local addresses only with
/// their scope (the interface index), since without it they cannot be
/// dialled. Routable addresses come first, then link-local ones, loopback
/// last, so a peer trying them in order tries the useful ones first.
fn expand_listen_addrs(
    bound: &[ListenEndpoint],
    ifs: &[(std::net::IpAddr, Option<u32>)],
    key: PublicKey,
) -> Vec<Endpoint> {
    use std::net::{IpAddr, SocketAddrV6};
    let mut out = Vec::new();
    for ListenEndpoint { protocol, addr } in bound {
        if !addr.ip().is_unspecified() {
            out.push(Endpoint::new(*protocol, *addr, key));
            continue;
        }
        for &(ip, index) in ifs {
            if ip.is_ipv4() != addr.is_ipv4() {
                continue;
            }
            let sa = match ip {
                IpAddr::V6(v6) if v6.is_unicast_link_local() => match index.filter(|&i| i != 0) {
                    Some(scope) => SocketAddr::V6(SocketAddrV6::new(v6, addr.port(), 0, scope)),
                    None => continue,
                },
                _ => SocketAddr::new(ip, addr.port()),
            };
            out.push(Endpoint::new(*protocol, sa, key));
        }
    }
    let rank = |a: &SocketAddr| match a.ip() {
        ip if ip.is_loopback() => 2,
        IpAddr::V4(v4) if v4.is_link_local() => 1,
        IpAddr::V6(v6) if v6.is_unicast_link_local() => 1,
        _ => 0,
    };
    out.sort_by_key(|e| (rank(&e.addr), e.protocol, e.addr));
    out.dedup();
    out
}

fn lock_core(core: &std::sync::Mutex<Admission>) -> std::sync::MutexGuard<'_, Admission> {
    // A panic while holding the lock would be a bug in the core; its state
    // is still consistent enough to keep counting.
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection accepted by one of the listener's sockets.
struct Arrival {
    io: Carrier,
    peer: SocketAddr,
    protocol: Protocol,
}

/// Accepts on one socket and hands each connection to the admission driver.
async fn accept_loop(
    listener: Acceptor,
    arrivals: mpsc::Sender<Arrival>,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr();
    let protocol = listener.protocol();
    let mut failures = crate::admission::RateLimited::new(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                match accepted {
                    Ok((io, peer)) => {
                        if arrivals.send(Arrival { io, peer, protocol }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        // Out of descriptors or similar: back off, keep going.
                        if let Some(n) = failures.record(Instant::now()) {
                            log::warn!(
                                "accepting on {protocol}://{local}: {e} ({} failures in the last 10 s)",
                                admission::thousands(n)
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }
    log::debug!("listener on {protocol}://{local} closed");
}

/// Drives the admission core: gives each arrival a handshake task, ends the
/// tasks the core drops, and queues proven streams for `accept`.
async fn admission_driver(
    core: Arc<std::sync::Mutex<Admission>>,
    identity: Identity,
    handshake_timeout: Duration,
    mut arrivals: mpsc::Receiver<Arrival>,
    tx: mpsc::Sender<Incoming>,
    mut shutdown: watch::Receiver<bool>,
) {
    let identity = Arc::new(identity);
    let mut handshakes: JoinSet<ConnId> = JoinSet::new();
    let mut aborts: HashMap<ConnId, AbortHandle> = HashMap::new();
    let mut task_ids: HashMap<tokio::task::Id, ConnId> = HashMap::new();
    loop {
        let deadline = lock_core(&core).poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            done = handshakes.join_next_with_id(), if !handshakes.is_empty() => {
                let task = match &done {
                    Some(Ok((task, _))) => Some(*task),
                    Some(Err(e)) => Some(e.id()),
                    None => None,
                };
                if let Some(id) = task.and_then(|t| task_ids.remove(&t)) {
                    aborts.remove(&id);
                    lock_core(&core).handle_closed(id);
                }
            }
            () = sleep => {
                lock_core(&core).handle_timeout(Instant::now());
            }
            arrival = arrivals.recv() => {
                let Some(Arrival { mut io, peer, protocol }) = arrival else { break };
                let id = lock_core(&core).handle_arrival(peer.ip(), Instant::now());
                let identity = identity.clone();
                let tx = tx.clone();
                let core2 = core.clone();
                let handle = handshakes.spawn(async move {
                    let first = || match lock_core(&core2).handle_first_message(id, Instant::now()) {
                        Answer::Proceed => FirstMessage::Answer,
                        Answer::Busy => FirstMessage::Busy,
                    };
                    // The core's deadlines end this task; the timeout is a
                    // hang guard only.
                    let result = tokio::time::timeout(
                        handshake_timeout,
                        handshake::respond_async(&mut io, &identity, protocol, peer, first),
                    )
                    .await;
                    match result {
                        Ok(Ok(Responded { session, payload })) => {
                            if lock_core(&core2).handle_proven(id, Instant::now()) {
                                log::debug!("admitted {} from {peer}", session.peer());
                                let incoming = Incoming { id, io, session, payload };
                                if tx.try_send(incoming).is_err() {
                                    // Invariant kept by the core: the queue has
                                    // room. The listener is closing otherwise.
                                    lock_core(&core2).handle_accepted(id);
                                }
                            } else {
                                log::debug!("no accept-queue place left for {peer}: closing");
                            }
                        }
                        Ok(Err(e)) => log::debug!("handshake from {peer} failed: {e}"),
                        Err(_) => log::debug!("handshake from {peer} timed out"),
                    }
                    id
                });
                task_ids.insert(handle.id(), id);
                aborts.insert(id, handle);
            }
        }
        let now = Instant::now();
        let mut core = lock_core(&core);
        while let Some(Event::Drop(id, why)) = core.poll_event() {
            log::debug!("dropping pending connection {id}: {why:?}");
            if let Some(h) = aborts.remove(&id) {
                h.abort();
            }
        }
        if let Some(report) = core.poll_report(now) {
            log::warn!("listener {report}");
        }
    }
    handshakes.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_append_appends_exactly_what_arrived_then_zero_at_the_end() {
        use tokio::io::AsyncWriteExt;
        let limit = Duration::from_secs(10);
        let listener = Listener::bind(&Identity::generate(), "tcp://127.0.0.1:0")
            .await
            .unwrap();
        let ep = listener.endpoints()[0];
        let client = tokio::spawn(async move {
            let mut s = Stream::direct_connect(&Identity::generate(), &ep, limit)
                .await
                .unwrap();
            s.write_all(b"hello ").await.unwrap();
            s.flush().await.unwrap();
            s.write_all(&vec![7u8; 200_000]).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let mut s = tokio::time::timeout(limit, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut got = Vec::new();
        loop {
            let before = got.len();
            let n = tokio::time::timeout(limit, s.read_append(&mut got))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.len(), before + n, "grows by exactly what it returns");
            if n == 0 {
                break;
            }
        }
        assert_eq!(got.len(), 6 + 200_000);
        assert_eq!(&got[..6], b"hello ");
        assert!(got[6..].iter().all(|&b| b == 7));
        assert_eq!(s.rx.buffered_len(), 0);
        client.await.unwrap();
    }

    #[test]
    fn published_endpoints_routable_first_loopback_last_scoped_link_local() {
        let key = Identity::from_secret_bytes([1; 32]).public_key();
        let bound: Vec<ListenEndpoint> = vec![
            "tcp://0.0.0.0:5000".parse().unwrap(),
            "utp://[::]:5001".parse().unwrap(),
        ];
        let ifs = [
            ("127.0.0.1".parse().unwrap(), Some(1)),
            ("::1".parse().unwrap(), Some(1)),
            ("fe80::1".parse().unwrap(), Some(2)),
            ("fe80::2".parse().unwrap(), None),
            ("192.0.2.7".parse().unwrap(), Some(2)),
            ("2001:db8::7".parse().unwrap(), Some(2)),
            ("169.254.1.1".parse().unwrap(), Some(3)),
        ];
        let got: Vec<String> = expand_listen_addrs(&bound, &ifs, key)
            .iter()
            .map(|e| format!("{}://{}", e.protocol, e.addr))
            .collect();
        assert_eq!(
            got,
            [
                "tcp://192.0.2.7:5000",
                "utp://[2001:db8::7]:5001",
                "tcp://169.254.1.1:5000",
                "utp://[fe80::1%2]:5001",
                "tcp://127.0.0.1:5000",
                "utp://[::1]:5001",
            ]
        );
    }
}
