//! The blocking, message-oriented crust stream.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use transport::{Endpoint, Path, PublicKey};

use crate::error::{Error, Result};
use crate::proto::{self, Frame, Liveness, LivenessAction};
use crate::service::ConnGuard;

/// Bytes the runtime reads ahead for a user who is not reading: enough to
/// see heartbeats and the end of the stream, never more than about one
/// record.
const BACKGROUND_HOLD: usize = 64 * 1024;
/// The smallest free space a read offers the transport.
const MIN_READ: usize = 16 * 1024;
/// What a background read takes at a time, on the stack: an idle stream's
/// heartbeats pass through it, so it holds no buffer between them.
const TICK_READ: usize = 2 * 1024;
/// Messages up to this size are copied behind their header and sent in one
/// write (one record); larger ones go out in place after it.
const COALESCE: usize = 16 * 1024;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half-updated that
    // matters more than the panic itself.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A message stream to a peer whose key the transport proved: the blocking
/// face, used from ordinary threads like [`std::net::TcpStream`].
///
/// [`send`](Stream::send) and [`recv`](Stream::recv) run on the calling
/// thread, straight on the encrypted socket; heartbeats and the detection of
/// a silent peer run on the shared runtime while the stream is idle, so no
/// thread is needed per stream. [`split`](Stream::split) gives a cloneable
/// [`Sender`] and a [`Receiver`] for two threads.
///
/// Dropping every handle closes the stream (a close frame, when the socket
/// takes it at once, then the socket).
///
/// ```no_run
/// # fn demo(service: &crust::Service, endpoint: transport::Endpoint) -> crust::Result<()> {
/// let stream = service.controller.connect(&endpoint)?;
/// stream.send(b"hello")?;
/// let reply: Vec<u8> = stream.recv()?;
/// # Ok(()) }
/// ```
pub struct Stream {
    inner: Arc<Inner>,
}

/// The sending half of a [`Stream`]: clone it for as many threads as you
/// like. Messages from one sender arrive in order; messages from several are
/// never interleaved inside one another.
///
/// ```
/// # let config = crust::Config::loopback().beacon_enabled(false);
/// # let a = crust::Service::new_from_config(config.clone())?;
/// # let b = crust::Service::new_from_config(config)?;
/// # let ep = b.controller.accepting_endpoints()[0].known_endpoints()[0].endpoint;
/// let (tx, rx) = a.controller.connect(&ep)?.split();
/// let t = b.acceptor.accept()?;
/// let tx2 = tx.clone();
/// std::thread::spawn(move || tx2.send(b"from a thread"));
/// assert_eq!(t.recv()?, b"from a thread");
/// t.send(b"back")?;
/// assert_eq!(rx.recv()?, b"back");
/// # Ok::<(), crust::Error>(())
/// ```
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

/// The receiving half of a [`Stream`], from [`Stream::split`] (see
/// [`Sender`] for an example).
pub struct Receiver {
    inner: Arc<Inner>,
}

/// Why a stream can no longer be used (kept so every later call says the
/// same).
#[derive(Clone, Debug)]
enum Failure {
    Lost(Duration),
    AddressLost(SocketAddr),
    Closed(String),
    Protocol(String),
    TooLarge(u64, usize),
    Io(io::ErrorKind, String),
}

pub(crate) struct Inner {
    t: transport::Stream,
    peer: Endpoint,
    peer_listeners: Vec<Endpoint>,
    max_message: usize,
    heartbeat_period: Duration,
    inactivity_timeout: Duration,
    /// Times are nanoseconds after `base`.
    base: Instant,
    last_received: AtomicU64,
    last_sent: AtomicU64,
    failure: Mutex<Option<Failure>>,
    rd: Mutex<ReadState>,
    wr: Mutex<Vec<u8>>,
    _guard: ConnGuard,
}

struct ReadState {
    /// Plaintext from the transport: frames in `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// The read timeout set on the transport.
    timeout: Option<Duration>,
}

/// The settings a stream runs with (from the service's config).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamSettings {
    pub(crate) max_message: usize,
    pub(crate) heartbeat_period: Duration,
    pub(crate) inactivity_timeout: Duration,
}

impl StreamSettings {
    /// The settings towards a peer that sent `hello`: heartbeat often
    /// enough for its inactivity timeout.
    pub(crate) fn towards(self, hello: &proto::Hello) -> StreamSettings {
        StreamSettings {
            heartbeat_period: proto::heartbeat_period_for(
                self.heartbeat_period,
                hello.inactivity_timeout,
            ),
            ..self
        }
    }
}

impl ReadState {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // Give back a large buffer once it drained (a big message
            // passed); idle streams keep only a small one.
            if self.buf.len() > 4 * MIN_READ {
                self.buf = Vec::new();
            }
        }
    }

    /// Makes room for at least `want` more bytes after `end`.
    fn reserve(&mut self, want: usize) {
        if self.start > 0 && self.buf.len() - self.end < want {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
    }

    /// How many more bytes the frame at the head needs, at least
    /// [`MIN_READ`] (so the transport can read a whole record straight
    /// into the buffer).
    fn want(&self) -> usize {
        let p = self.pending();
        let need = if p.first() == Some(&transport::wire::crust_frame::MESSAGE) && p.len() >= 5 {
            let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
            (proto::MESSAGE_HEADER_LEN + len).saturating_sub(p.len())
        } else {
            0
        };
        need.clamp(MIN_READ, 1 << 20)
    }
}

impl Inner {
    pub(crate) fn new(
        t: transport::Stream,
        peer: Endpoint,
        peer_listeners: Vec<Endpoint>,
        settings: StreamSettings,
        guard: ConnGuard,
    ) -> Inner {
        Inner {
            t,
            peer,
            peer_listeners,
            max_message: settings.max_message,
            heartbeat_period: settings.heartbeat_period,
            inactivity_timeout: settings.inactivity_timeout,
            base: Instant::now(),
            last_received: AtomicU64::new(0),
            last_sent: AtomicU64::new(0),
            failure: Mutex::new(None),
            rd: Mutex::new(ReadState {
                buf: Vec::new(),
                start: 0,
                end: 0,
                eof: false,
                timeout: None,
            }),
            wr: Mutex::new(Vec::new()),
            _guard: guard,
        }
    }

    fn stamp(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn instant(&self, stamp: &AtomicU64) -> Instant {
        self.base + Duration::from_nanos(stamp.load(Ordering::Relaxed))
    }

    fn liveness(&self) -> Liveness {
        let mut l = Liveness::new(self.base, self.heartbeat_period, self.inactivity_timeout);
        l.handle_received(self.instant(&self.last_received));
        l.handle_sent(self.instant(&self.last_sent));
        l
    }

    fn peer_name(&self) -> String {
        self.peer.to_string()
    }

    fn failure(&self) -> Option<Failure> {
        lock(&self.failure).clone()
    }

    /// Records the first failure (later ones are consequences) and returns
    /// the error for it.
    fn fail(&self, f: Failure) -> Error {
        let mut slot = lock(&self.failure);
        let f = slot.get_or_insert(f).clone();
        drop(slot);
        self.error(f)
    }

    fn error(&self, f: Failure) -> Error {
        let peer = self.peer_name();
        match f {
            Failure::Lost(silent_for) => Error::PeerLost { peer, silent_for },
            Failure::AddressLost(local) => Error::AddressLost { peer, local },
            Failure::Closed(why) => Error::Closed(why),
            Failure::Protocol(reason) => Error::Protocol { peer, reason },
            Failure::TooLarge(len, max) => Error::MessageTooLarge { len, max },
            Failure::Io(kind, msg) => {
                Error::io(format!("stream to {peer}"), io::Error::new(kind, msg))
            }
        }
    }

    /// Decodes the frame at the head of the buffer: `Ok(Some(range))` for a
    /// message (relative to `rd.buf`), `Ok(None)` when more bytes are
    /// needed; heartbeats are consumed on the way.
    fn next_message(&self, rd: &mut ReadState) -> Result<Option<(usize, usize, usize)>> {
        loop {
            match proto::decode_frame(rd.pending(), self.max_message) {
                Ok(None) => return Ok(None),
                Ok(Some((Frame::Message(r), used))) => {
                    return Ok(Some((rd.start + r.start, rd.start + r.end, used)));
                }
                Ok(Some((Frame::Heartbeat, used))) => rd.consume(used),
                Ok(Some((Frame::Close, _))) => {
                    return Err(self.fail(Failure::Closed(format!(
                        "{} closed the stream",
                        self.peer_name()
                    ))));
                }
                Ok(Some((Frame::Hello(_) | Frame::Reject { .. }, _))) => {
                    self.t.shutdown(Shutdown::Both).ok();
                    return Err(self.fail(Failure::Protocol(
                        "a hello or reject frame after the start of the stream".into(),
                    )));
                }
                Err(proto::FrameError::MessageTooLarge { len, max }) => {
                    log::info!(
                        "closing the stream to {}: it announced a {len}-byte message (max {max})",
                        self.peer
                    );
                    self.t.shutdown(Shutdown::Both).ok();
                    return Err(self.fail(Failure::TooLarge(len, max)));
                }
                Err(e) => {
                    log::info!("closing the stream to {}: {e}", self.peer);
                    self.t.shutdown(Shutdown::Both).ok();
                    return Err(self.fail(Failure::Protocol(e.to_string())));
                }
            }
        }
    }

    fn eof_failure(&self, rd: &ReadState) -> Failure {
        if rd.pending().is_empty() {
            Failure::Closed(format!("{} closed the connection", self.peer_name()))
        } else {
            Failure::Protocol("the connection closed in the middle of a frame".into())
        }
    }

    fn recv_into(&self, out: &mut Vec<u8>, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        let mut guard = lock(&self.rd);
        let rd = &mut *guard;
        loop {
            if let Some((a, b, used)) = self.next_message(rd)? {
                out.clear();
                out.extend_from_slice(&rd.buf[a..b]);
                rd.consume(used);
                return Ok(());
            }
            if let Some(f) = self.failure() {
                return Err(self.error(f));
            }
            if rd.eof {
                return Err(self.fail(self.eof_failure(rd)));
            }
            let now = Instant::now();
            let lost_at = self.liveness().lost_at();
            let Some(lost_in) = lost_at.map(|t| t.saturating_duration_since(now)) else {
                return Err(self.fail(Failure::Io(
                    io::ErrorKind::InvalidInput,
                    "inactivity timeout out of range".into(),
                )));
            };
            if lost_in.is_zero() {
                self.t.shutdown(Shutdown::Both).ok();
                let silent = now.saturating_duration_since(self.instant(&self.last_received));
                return Err(self.fail(Failure::Lost(silent)));
            }
            // Wait at most until the caller's deadline or the peer would be
            // lost. Without a caller's deadline the timeout stays the
            // inactivity timeout (no system call per read): a read that
            // starts right after the last bytes arrived ends exactly when
            // the peer is lost.
            let wait = match deadline {
                None => self.inactivity_timeout,
                Some(None) => lost_in,
                Some(Some(d)) => {
                    let left = d.saturating_duration_since(now);
                    if left.is_zero() {
                        return Err(Error::TimedOut {
                            what: format!("receiving from {}", self.peer),
                            after: timeout.unwrap_or_default(),
                        });
                    }
                    left.min(lost_in)
                }
            }
            .max(Duration::from_millis(1));
            if rd.timeout != Some(wait) {
                self.t.set_read_timeout(Some(wait)).map_err(|e| {
                    Error::io(format!("setting a read timeout on {}", self.peer), e)
                })?;
                rd.timeout = Some(wait);
            }
            let want = rd.want();
            rd.reserve(want);
            let end = rd.end;
            match io::Read::read(&mut &self.t, &mut rd.buf[end..]) {
                Ok(0) => rd.eof = true,
                Ok(n) => {
                    rd.end += n;
                    self.last_received
                        .store(self.stamp(Instant::now()), Ordering::Relaxed);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut
                        || e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(self.fail(Failure::Io(e.kind(), e.to_string())));
                }
            }
        }
    }

    fn send(&self, data: &[u8]) -> Result<()> {
        if data.len() > self.max_message {
            return Err(Error::MessageTooLarge {
                len: data.len() as u64,
                max: self.max_message,
            });
        }
        if let Some(f) = self.failure() {
            return Err(self.error(f));
        }
        let mut buf = lock(&self.wr);
        buf.clear();
        buf.extend_from_slice(&proto::encode_message_header(data.len() as u32));
        let (first, rest) = data.split_at(data.len().min(COALESCE));
        buf.extend_from_slice(first);
        let mut t = &self.t;
        let result = t.write_all(&buf).and_then(|()| t.write_all(rest));
        if buf.capacity() > 4 * COALESCE {
            *buf = Vec::new();
        }
        drop(buf);
        match result {
            Ok(()) => {
                self.last_sent
                    .store(self.stamp(Instant::now()), Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(self.fail(Failure::Io(e.kind(), format!("sending: {e}")))),
        }
    }

    fn close(&self) -> Result<()> {
        if let Some(f) = self.failure() {
            return Err(self.error(f));
        }
        let buf = lock(&self.wr);
        let mut t = &self.t;
        let result = t
            .write_all(&proto::CLOSE_FRAME)
            .and_then(|()| t.flush())
            .and_then(|()| self.t.shutdown(Shutdown::Write));
        drop(buf);
        self.fail(Failure::Closed("the stream was closed here".into()));
        result.map_err(|e| Error::io(format!("closing the stream to {}", self.peer), e))
    }

    /// One round of background work, from the service's timer task; never
    /// blocks. Returns `false` once the stream needs no more rounds.
    pub(crate) fn tick(&self, now: Instant) -> bool {
        if self.failure().is_some() {
            return false;
        }
        let live = self.liveness();
        if live.poll(now) == LivenessAction::SendHeartbeat {
            match self.t.write_nonblocking(&proto::HEARTBEAT_FRAME) {
                Ok(_) => self.last_sent.store(self.stamp(now), Ordering::Relaxed),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    log::debug!("heartbeat to {} failed: {e}", self.peer);
                    self.fail(Failure::Io(e.kind(), format!("sending a heartbeat: {e}")));
                    return false;
                }
            }
        }
        // Read ahead only while no user read is pending (a user read sees
        // heartbeats and losses itself).
        let Ok(mut guard) = self.rd.try_lock() else {
            return true;
        };
        let rd = &mut *guard;
        let mut holding = false;
        while !rd.eof {
            match self.next_message(rd) {
                Ok(Some(_)) => {
                    holding = true;
                    break;
                }
                Ok(None) => {}
                Err(_) => return false,
            }
            if rd.pending().len() >= BACKGROUND_HOLD {
                holding = true;
                break;
            }
            let mut scratch = [0u8; TICK_READ];
            match self.t.read_nonblocking(&mut scratch) {
                Ok(0) => rd.eof = true,
                Ok(n) => {
                    rd.reserve(n);
                    let end = rd.end;
                    rd.buf[end..end + n].copy_from_slice(&scratch[..n]);
                    rd.end += n;
                    self.last_received.store(self.stamp(now), Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(Failure::Io(e.kind(), e.to_string()));
                    return false;
                }
            }
        }
        if rd.pending().is_empty() && !rd.eof && !rd.buf.is_empty() {
            rd.buf = Vec::new();
            rd.start = 0;
            rd.end = 0;
        }
        if rd.eof {
            // The user learns it at the next recv; nothing more to watch.
            return false;
        }
        if !holding && self.liveness().poll(now) == LivenessAction::Lost {
            let silent = now.saturating_duration_since(self.instant(&self.last_received));
            log::info!("lost {}: nothing heard for {silent:?}", self.peer);
            self.fail(Failure::Lost(silent));
            self.t.shutdown(Shutdown::Both).ok();
            return false;
        }
        true
    }
}

impl crate::netwatch::LocalLoss for Inner {
    fn local_addr(&self) -> SocketAddr {
        self.t.local_addr()
    }

    /// Records the loss and aborts the socket, so a thread blocked in
    /// `recv` or `send` returns at once with [`Error::AddressLost`].
    fn local_address_lost(&self) {
        self.fail(Failure::AddressLost(self.t.local_addr()));
        self.t.abort();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.failure().is_none() {
            // Best effort, never blocking: the peer learns it was a clean
            // close rather than a lost connection.
            let _ = self.t.write_nonblocking(&proto::CLOSE_FRAME);
        }
        log::debug!("stream to {} dropped", self.peer);
    }
}

macro_rules! recv_methods {
    () => {
        /// Blocks until the next message arrives and returns it.
        ///
        /// # Errors
        ///
        /// [`Error::PeerLost`] when the peer was silent for the inactivity
        /// timeout, [`Error::AddressLost`] at once when our local address
        /// left the host (a network change), [`Error::Closed`] when it
        /// closed the stream,
        /// [`Error::MessageTooLarge`] or [`Error::Protocol`] when it broke
        /// the protocol (the stream is then closed), [`Error::Io`] on a
        /// socket error. Once a stream failed, every call says why.
        pub fn recv(&self) -> Result<Vec<u8>> {
            let mut out = Vec::new();
            self.inner.recv_into(&mut out, None)?;
            Ok(out)
        }

        /// Like [`recv`](Self::recv), but gives up after `timeout` with
        /// [`Error::TimedOut`] (the stream stays usable).
        ///
        /// # Errors
        ///
        /// As [`recv`](Self::recv), plus [`Error::TimedOut`].
        pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
            let mut out = Vec::new();
            self.inner.recv_into(&mut out, Some(timeout))?;
            Ok(out)
        }

        /// Like [`recv`](Self::recv), into `out` (replacing its contents):
        /// no allocation once `out` has grown to the message size.
        ///
        /// # Errors
        ///
        /// As [`recv`](Self::recv).
        pub fn recv_into(&self, out: &mut Vec<u8>) -> Result<()> {
            self.inner.recv_into(out, None)
        }

        /// Like [`recv_into`](Self::recv_into) with a timeout.
        ///
        /// # Errors
        ///
        /// As [`recv_timeout`](Self::recv_timeout).
        pub fn recv_into_timeout(&self, out: &mut Vec<u8>, timeout: Duration) -> Result<()> {
            self.inner.recv_into(out, Some(timeout))
        }
    };
}

macro_rules! send_methods {
    () => {
        /// Sends one message. Blocks until the socket took all of it.
        ///
        /// # Errors
        ///
        /// [`Error::MessageTooLarge`] (nothing is sent) when `data` is over
        /// the configured maximum; the stream's failure if it failed
        /// earlier; [`Error::Io`] on a socket error.
        pub fn send(&self, data: &[u8]) -> Result<()> {
            self.inner.send(data)
        }
    };
}

macro_rules! info_methods {
    () => {
        /// The peer's endpoint: the one we dialled, or for an accepted
        /// stream the peer's address, protocol and proven key.
        pub fn peer_endpoint(&self) -> Endpoint {
            self.inner.peer
        }

        /// The peer's proven public key.
        pub fn peer_public_key(&self) -> PublicKey {
            self.inner.peer.public_key
        }

        /// The endpoints the peer said (in its hello) it accepts connections
        /// on, with its proven key. Not yet verified by a dial.
        pub fn peer_listeners(&self) -> &[Endpoint] {
            &self.inner.peer_listeners
        }

        /// How the stream is carried.
        pub fn path(&self) -> Path {
            self.inner.t.path()
        }

        /// Our local socket address.
        pub fn local_addr(&self) -> SocketAddr {
            self.inner.t.local_addr()
        }
    };
}

impl Stream {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Stream {
        Stream { inner }
    }

    recv_methods!();
    send_methods!();
    info_methods!();

    /// Splits the stream into a cloneable [`Sender`] and a [`Receiver`], for
    /// two (or more) threads.
    pub fn split(self) -> (Sender, Receiver) {
        (
            Sender {
                inner: self.inner.clone(),
            },
            Receiver { inner: self.inner },
        )
    }

    /// Sends a close frame, flushes and shuts the sending direction: the
    /// peer's `recv` then returns [`Error::Closed`]. Reports what failed.
    ///
    /// # Errors
    ///
    /// The stream's failure if it failed earlier, or the socket error.
    pub fn close(self) -> Result<()> {
        self.inner.close()
    }
}

impl Sender {
    send_methods!();
    info_methods!();

    /// Closes the stream as [`Stream::close`] does (for every handle).
    ///
    /// # Errors
    ///
    /// As [`Stream::close`].
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

impl Receiver {
    recv_methods!();
    info_methods!();
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("crust::Stream")
            .field("peer", &self.inner.peer)
            .field("path", &self.inner.t.path())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("crust::Sender")
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("crust::Receiver")
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}
