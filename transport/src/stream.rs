//! The blocking encrypted stream.

use std::io::{self, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::aio::{self, TX_POOL, WRITE_BATCH};
use crate::carrier::{BlockingCarrier, lock};
use crate::endpoint::{Endpoint, Protocol, ToEndpoints};
use crate::error::{Error, Result};
use crate::identity::{Identity, PublicKey};
use crate::path::Path;
use crate::proto::{Opener, RecvBuf, Sealer};

/// An encrypted, key-authenticated byte stream, used like
/// [`std::net::TcpStream`].
///
/// Every byte is encrypted (ChaCha20-Poly1305 records after a Noise `IK`
/// handshake) and the peer has proven it holds
/// [`peer_public_key`](Stream::peer_public_key).
///
/// `Read` and `Write` run on the calling thread: the crypto and the system
/// call happen right there and the kernel wakes the thread when data
/// arrives; no buffer is passed to another thread. `&Stream` is `Read` and
/// `Write` too, and [`split`](Stream::split) gives halves that two threads
/// can use at once.
///
/// ```no_run
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use transport::{Endpoint, Identity, Stream};
///
/// let endpoint: Endpoint = std::env::args().nth(1).unwrap().parse()?;
/// let mut stream = Stream::direct_connect(&Identity::generate(), &endpoint, Duration::from_secs(10))?;
/// stream.write_all(b"ping")?;
/// let mut reply = [0u8; 4];
/// stream.read_exact(&mut reply)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Stream {
    inner: Arc<Inner>,
}

/// The reading half of a [`Stream`], from [`Stream::split`].
pub struct ReadStream {
    inner: Arc<Inner>,
}

/// The writing half of a [`Stream`], from [`Stream::split`]. Dropping it
/// shuts down the sending direction (the peer reads end of stream).
pub struct WriteStream {
    inner: Arc<Inner>,
}

struct Inner {
    sock: BlockingCarrier,
    peer_key: PublicKey,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    path: Path,
    reader: Mutex<ReadState>,
    writer: Mutex<WriteState>,
}

/// Whether a call may wait for the socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Yes,
    /// Never block: not on the socket, not on the other user of a lock.
    No,
}

fn try_lock<T>(m: &Mutex<T>) -> io::Result<std::sync::MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        Err(std::sync::TryLockError::Poisoned(e)) => Ok(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
    }
}

struct ReadState {
    rx: RecvBuf,
    opener: Opener,
}

struct WriteState {
    sealer: Sealer,
    /// Sealed records; `tx[sent..]` is not yet on the wire.
    tx: Vec<u8>,
    sent: usize,
    /// Set when a write failed part way through a record: the stream cannot
    /// be used for writing again.
    broken: Option<io::ErrorKind>,
}

impl Stream {
    fn from_parts(
        sock: BlockingCarrier,
        rx: RecvBuf,
        opener: Opener,
        sealer: Sealer,
        peer_key: PublicKey,
        path: Path,
    ) -> io::Result<Stream> {
        let (peer_addr, local_addr) = sock.addrs()?;
        Ok(Stream {
            inner: Arc::new(Inner {
                sock,
                peer_key,
                peer_addr,
                local_addr,
                path,
                reader: Mutex::new(ReadState { rx, opener }),
                writer: Mutex::new(WriteState {
                    sealer,
                    tx: Vec::new(),
                    sent: 0,
                    broken: None,
                }),
            }),
        })
    }

    /// Takes over an async stream (its socket leaves the runtime and becomes
    /// a blocking socket).
    ///
    /// # Errors
    ///
    /// The OS error if the socket cannot be switched to blocking mode.
    pub fn from_aio(stream: aio::Stream) -> io::Result<Stream> {
        let (io, rx, opener, sealer, peer_key, path) = stream.into_parts();
        let sock = BlockingCarrier::from_aio(io)?;
        Stream::from_parts(sock, rx, opener, sealer, peer_key, path)
    }

    /// Connects to the first of `endpoints` that answers and completes the
    /// encrypted handshake as `identity`.
    ///
    /// `timeout` bounds each attempt: TCP or uTP connect plus handshake. The
    /// handshake runs on the shared runtime (the same code as
    /// [`aio::Stream::direct_connect`]); the stream it returns is then a
    /// plain blocking socket read and written from the calling thread.
    ///
    /// # Errors
    ///
    /// The last attempt's error: [`Error::PeerKeyMismatch`] when the listener
    /// does not hold the endpoint's key (it never hangs),
    /// [`Error::VersionMismatch`], [`Error::TimedOut`], [`Error::Io`] (e.g.
    /// connection refused; for uTP, refused by a RESET), and an [`Error::Io`] naming the `aio` alternative when called from a
    /// current-thread tokio runtime.
    pub fn direct_connect(
        identity: &Identity,
        endpoints: impl ToEndpoints,
        timeout: Duration,
    ) -> Result<Stream> {
        let endpoints = endpoints.to_endpoints()?;
        let stream =
            crust_runtime::block_on(aio::Stream::direct_connect(identity, endpoints, timeout))
                .map_err(|e| Error::io("transport::Stream::direct_connect", e))??;
        Stream::from_aio(stream).map_err(|e| Error::io("taking over a connected stream", e))
    }

    /// Splits the stream into halves that two threads can use at once.
    pub fn split(self) -> (ReadStream, WriteStream) {
        (
            ReadStream {
                inner: self.inner.clone(),
            },
            WriteStream { inner: self.inner },
        )
    }

    /// The peer's proven public key.
    pub fn peer_public_key(&self) -> PublicKey {
        self.inner.peer_key
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr
    }

    /// Our socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The carrier protocol.
    pub fn protocol(&self) -> Protocol {
        self.inner.sock.protocol()
    }

    /// The endpoint of the peer: its protocol, address and key.
    pub fn peer_endpoint(&self) -> Endpoint {
        Endpoint::new(self.protocol(), self.peer_addr(), self.peer_public_key())
    }

    /// Limits how long a read waits; `None` waits forever. A read that times
    /// out returns [`io::ErrorKind::TimedOut`] and the stream stays usable.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as for `TcpStream`.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.sock.set_read_timeout(t)
    }

    /// Limits how long a write waits; `None` waits forever. See
    /// [`Write for Stream`](#impl-Write-for-Stream) for what a timed-out
    /// write leaves behind.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as for `TcpStream`.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.sock.set_write_timeout(t)
    }

    /// The read timeout.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        self.inner.sock.read_timeout()
    }

    /// The write timeout.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        self.inner.sock.write_timeout()
    }

    /// How the stream is carried: [`Path::Direct`] when dialled or
    /// accepted, [`Path::HolePunched`] from a rendezvous.
    pub fn path(&self) -> Path {
        self.inner.path
    }

    /// Reads what has arrived without waiting, for a caller that must never
    /// block (a timer task on a runtime, say). Like [`Read::read`], except
    /// that it returns [`io::ErrorKind::WouldBlock`] when no plaintext is
    /// ready or another thread is reading right now.
    ///
    /// # Errors
    ///
    /// `WouldBlock` as above; otherwise as [`Read::read`].
    pub fn read_nonblocking(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_in(buf, Wait::No)
    }

    /// Writes without waiting, for a caller that must never block. Like
    /// [`Write::write`], except that it returns [`io::ErrorKind::WouldBlock`]
    /// (having taken nothing) when the socket takes nothing now or another
    /// thread is writing right now. Records it sealed but could only send in
    /// part go out with the next write or flush.
    ///
    /// # Errors
    ///
    /// `WouldBlock` as above; otherwise as [`Write::write`].
    pub fn write_nonblocking(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_in(buf, Wait::No)
    }

    /// Shuts down reading, writing or both, as `TcpStream::shutdown`. Records
    /// still queued after a timed-out write are sent first.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    /// Ends the connection at once without flushing and without blocking:
    /// threads blocked in a read or write on it return (TCP: the socket is
    /// shut down both ways; uTP: the connection is reset). For a connection
    /// known to be dead, such as one whose local address left the host.
    ///
    /// ```no_run
    /// # fn f(stream: &transport::Stream) {
    /// stream.abort();
    /// # }
    /// ```
    pub fn abort(&self) {
        self.inner.sock.abort();
    }
}

impl Inner {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_in(buf, Wait::Yes)
    }

    fn read_in(&self, buf: &mut [u8], wait: Wait) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut guard = match wait {
            Wait::Yes => lock(&self.reader),
            Wait::No => try_lock(&self.reader)?,
        };
        let st = &mut *guard;
        loop {
            if wait == Wait::Yes
                && let BlockingCarrier::Tcp(sock) = &self.sock
                && let Some(len) = st.rx.direct_frame_len(buf.len())
            {
                match self.read_direct(sock, st, &mut buf[..len])? {
                    // An empty record: skip it and read on.
                    0 => continue,
                    n => return Ok(n),
                }
            }
            if let Some(n) = st.rx.read_plain(&mut st.opener, buf)? {
                return Ok(n);
            }
            let got = match wait {
                Wait::Yes => self.sock.read(st.rx.spare()),
                Wait::No => self.sock.read_now(st.rx.spare()),
            };
            match got {
                Ok(0) if st.rx.at_frame_boundary() => return Ok(0),
                Ok(0) => return Err(aio::mid_record_eof(self.peer_addr)),
                Ok(n) => st.rx.filled(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if wait == Wait::No && e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing more to read: an idle stream holds no buffer.
                    st.rx.release_idle();
                    return Err(e);
                }
                Err(e) => {
                    if Self::is_timeout(&e) {
                        st.rx.release_idle();
                    }
                    return Err(self.io_error("reading from", e, self.sock.read_timeout()));
                }
            }
        }
    }

    /// Reads one record's body from the socket straight into the caller's
    /// buffer, with the next record's header behind it, and decrypts it in
    /// place: no copy beyond the kernel's.
    fn read_direct(
        &self,
        mut sock: &TcpStream,
        st: &mut ReadState,
        body: &mut [u8],
    ) -> io::Result<usize> {
        let len = body.len();
        let mut got = 0;
        let mut next = [0u8; 2];
        let mut next_got = 0;
        while got < len {
            let mut iov = [
                IoSliceMut::new(&mut body[got..]),
                IoSliceMut::new(&mut next),
            ];
            match sock.read_vectored(&mut iov) {
                Ok(0) => {
                    st.rx.abort_direct(&body[..got]);
                    return Err(aio::mid_record_eof(self.peer_addr));
                }
                Ok(n) => {
                    let b = n.min(len - got);
                    got += b;
                    next_got = n - b;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    st.rx.abort_direct(&body[..got]);
                    return Err(self.io_error("reading from", e, self.sock.read_timeout()));
                }
            }
        }
        Ok(st
            .rx
            .finish_direct(&mut st.opener, body, &next[..next_got])?)
    }

    fn io_error(
        &self,
        what: &str,
        e: io::Error,
        timeout: io::Result<Option<Duration>>,
    ) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{what} {} timed out after {:?}",
                    self.peer_addr,
                    timeout.ok().flatten().unwrap_or_default()
                ),
            ),
            kind => io::Error::new(kind, format!("{what} {}: {e}", self.peer_addr)),
        }
    }

    /// Sends `tx[sent..]`. On error, `sent` says how far it got.
    fn send_pending(&self, st: &mut WriteState, wait: Wait) -> io::Result<()> {
        while st.sent < st.tx.len() {
            let put = match wait {
                Wait::Yes => self.sock.write(&st.tx[st.sent..]),
                Wait::No => self.sock.write_now(&st.tx[st.sent..]),
            };
            match put {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => st.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // All on the wire: the buffer goes back to the pool.
        TX_POOL.give(std::mem::take(&mut st.tx));
        st.sent = 0;
        Ok(())
    }

    fn is_timeout(e: &io::Error) -> bool {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
    }

    fn write(&self, data: &[u8]) -> io::Result<usize> {
        self.write_in(data, Wait::Yes)
    }

    fn write_in(&self, data: &[u8], wait: Wait) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut guard = match wait {
            Wait::Yes => lock(&self.writer),
            Wait::No => try_lock(&self.writer)?,
        };
        let st = &mut *guard;
        if let Some(kind) = st.broken {
            return Err(io::Error::new(
                kind,
                format!(
                    "the stream to {} failed earlier in the middle of a record",
                    self.peer_addr
                ),
            ));
        }
        // Records left over from a timed-out write go first.
        if let Err(e) = self.send_pending(st, wait) {
            if wait == Wait::No && e.kind() == io::ErrorKind::WouldBlock {
                return Err(e);
            }
            return Err(self.write_failed(st, e));
        }
        let nonce = st.sealer.nonce();
        if st.tx.capacity() == 0 {
            st.tx = TX_POOL.take();
        }
        let taken = st.sealer.seal(data, &mut st.tx, WRITE_BATCH);
        match self.send_pending(st, wait) {
            Ok(()) => Ok(taken),
            // Nothing reached the wire: take the records back and report the
            // timeout; the caller may retry the same bytes.
            Err(e) if Self::is_timeout(&e) && st.sent == 0 => {
                st.sealer.rewind_to(nonce);
                TX_POOL.give(std::mem::take(&mut st.tx));
                if wait == Wait::No {
                    return Err(e);
                }
                Err(self.io_error("writing to", e, self.sock.write_timeout()))
            }
            // Part of the records went out: the bytes are accepted, the rest
            // is sent by the next write, flush or shutdown.
            Err(e) if Self::is_timeout(&e) => Ok(taken),
            Err(e) => Err(self.write_failed(st, e)),
        }
    }

    fn write_failed(&self, st: &mut WriteState, e: io::Error) -> io::Error {
        if !Self::is_timeout(&e) {
            st.broken = Some(e.kind());
        }
        self.io_error("writing to", e, self.sock.write_timeout())
    }

    fn flush(&self) -> io::Result<()> {
        let mut guard = lock(&self.writer);
        let st = &mut *guard;
        self.send_pending(st, Wait::Yes)
            .map_err(|e| self.write_failed(st, e))
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            self.flush()?;
        }
        self.sock.shutdown(how)
    }
}

macro_rules! impl_read {
    ($t:ty) => {
        impl Read for $t {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.inner.read(buf)
            }
        }
    };
}

macro_rules! impl_write {
    ($t:ty) => {
        /// A write seals up to 128 KiB of `buf` as records and sends them
        /// before it returns. If the write timeout strikes before any of
        /// them is sent, the write returns `TimedOut` and nothing was
        /// written; if it strikes part way, the write returns the bytes it
        /// took and the rest of their records goes out with the next write,
        /// `flush` or `shutdown`.
        impl Write for $t {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.inner.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.inner.flush()
            }
        }
    };
}

impl_read!(Stream);
impl_read!(&Stream);
impl_read!(ReadStream);
impl_write!(Stream);
impl_write!(&Stream);
impl_write!(WriteStream);

impl ReadStream {
    /// The peer's proven public key.
    pub fn peer_public_key(&self) -> PublicKey {
        self.inner.peer_key
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr
    }

    /// Limits how long a read waits; see [`Stream::set_read_timeout`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.sock.set_read_timeout(t)
    }
}

impl WriteStream {
    /// The peer's proven public key.
    pub fn peer_public_key(&self) -> PublicKey {
        self.inner.peer_key
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr
    }

    /// Limits how long a write waits; see [`Stream::set_write_timeout`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.sock.set_write_timeout(t)
    }

    /// Sends queued records and shuts down the sending direction.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn shutdown(&self) -> io::Result<()> {
        self.inner.shutdown(Shutdown::Write)
    }
}

impl Drop for WriteStream {
    fn drop(&mut self) {
        self.inner.sock.shutdown_write_now();
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("peer_addr", &self.inner.peer_addr)
            .field("peer_key", &self.inner.peer_key)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ReadStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadStream")
            .field("peer_addr", &self.inner.peer_addr)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WriteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteStream")
            .field("peer_addr", &self.inner.peer_addr)
            .finish_non_exhaustive()
    }
}
