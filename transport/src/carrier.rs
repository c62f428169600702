//! The byte stream under a blocking [`Stream`](crate::Stream): a blocking
//! TCP socket used straight from the calling thread, or a uTP connection
//! whose driver is a task on the shared runtime.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::aio::Carrier;
use crate::endpoint::Protocol;
use crate::utp::aio::{UtpAbort, UtpStream};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the state inconsistent in
    // a way that matters more than the panic itself.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) enum BlockingCarrier {
    /// A TCP socket in blocking mode: the kernel wakes the calling thread.
    Tcp(TcpStream),
    /// A uTP connection: each call waits on the shared runtime.
    Utp(Utp),
}

pub(crate) struct Utp {
    read: Mutex<ReadHalf<UtpStream>>,
    write: Mutex<WriteHalf<UtpStream>>,
    read_timeout: Mutex<Option<Duration>>,
    write_timeout: Mutex<Option<Duration>>,
    peer: SocketAddr,
    local: SocketAddr,
    abort: UtpAbort,
}

fn check_timeout(t: Option<Duration>) -> io::Result<()> {
    if t == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a zero duration timeout",
        ));
    }
    Ok(())
}

/// Waits for `f` on the shared runtime, for at most `timeout`.
/// How long a blocking uTP shutdown with no write timeout waits for the
/// peer to ack our FIN.
pub(crate) const UTP_SHUTDOWN_LINGER: Duration = Duration::from_secs(10);

fn wait<T>(timeout: Option<Duration>, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    crust_runtime::block_on(async move {
        match timeout {
            None => f.await,
            Some(t) => tokio::time::timeout(t, f)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        }
    })?
}

/// Polls `f` once without blocking.
fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

impl BlockingCarrier {
    /// Takes a carrier out of the async world.
    pub(crate) fn from_aio(c: Carrier) -> io::Result<BlockingCarrier> {
        match c {
            Carrier::Tcp(s) => {
                let s = s.into_std()?;
                s.set_nonblocking(false)?;
                Ok(BlockingCarrier::Tcp(s))
            }
            Carrier::Utp(s) => {
                let (peer, local) = (s.peer_addr(), s.local_addr());
                let abort = s.abort_handle();
                let (r, w) = tokio::io::split(s);
                Ok(BlockingCarrier::Utp(Utp {
                    read: Mutex::new(r),
                    write: Mutex::new(w),
                    read_timeout: Mutex::new(None),
                    write_timeout: Mutex::new(None),
                    peer,
                    local,
                    abort,
                }))
            }
        }
    }

    pub(crate) fn protocol(&self) -> Protocol {
        match self {
            BlockingCarrier::Tcp(_) => Protocol::Tcp,
            BlockingCarrier::Utp(_) => Protocol::Utp,
        }
    }

    pub(crate) fn addrs(&self) -> io::Result<(SocketAddr, SocketAddr)> {
        match self {
            BlockingCarrier::Tcp(s) => Ok((s.peer_addr()?, s.local_addr()?)),
            BlockingCarrier::Utp(u) => Ok((u.peer, u.local)),
        }
    }

    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingCarrier::Tcp(s) => (&*s).read(buf),
            BlockingCarrier::Utp(u) => {
                let t = *lock(&u.read_timeout);
                let mut r = lock(&u.read);
                wait(t, r.read(buf))
            }
        }
    }

    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlockingCarrier::Tcp(s) => (&*s).write(buf),
            BlockingCarrier::Utp(u) => {
                let t = *lock(&u.write_timeout);
                let mut w = lock(&u.write);
                wait(t, w.write(buf))
            }
        }
    }

    /// Reads what is there without waiting: `WouldBlock` when nothing is.
    pub(crate) fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingCarrier::Tcp(s) => {
                // SAFETY: `buf` is valid for writes of `buf.len()` bytes for
                // the duration of the call, and `s` owns an open socket.
                let n = unsafe {
                    libc::recv(
                        s.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }
            BlockingCarrier::Utp(u) => {
                let Ok(mut r) = u.read.try_lock() else {
                    return Err(io::ErrorKind::WouldBlock.into());
                };
                poll_once(r.read(buf)).unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
            }
        }
    }

    /// Writes what the socket takes now without waiting: `WouldBlock` when
    /// it takes nothing.
    pub(crate) fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlockingCarrier::Tcp(s) => {
                // SAFETY: `buf` is valid for reads of `buf.len()` bytes for
                // the duration of the call, and `s` owns an open socket.
                let n = unsafe {
                    libc::send(
                        s.as_raw_fd(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }
            BlockingCarrier::Utp(u) => {
                let Ok(mut w) = u.write.try_lock() else {
                    return Err(io::ErrorKind::WouldBlock.into());
                };
                poll_once(w.write(buf)).unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
            }
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            BlockingCarrier::Tcp(s) => s.shutdown(how),
            BlockingCarrier::Utp(u) => {
                if how != Shutdown::Read {
                    // uTP's shutdown waits for the FIN's ack (see
                    // `UtpStream`'s `poll_shutdown`): bounded by the write
                    // timeout, or without one by a linger after which the
                    // FIN stays queued, resent while the process lives.
                    let t = *lock(&u.write_timeout);
                    let mut w = lock(&u.write);
                    match wait(Some(t.unwrap_or(UTP_SHUTDOWN_LINGER)), w.shutdown()) {
                        Err(e) if e.kind() == io::ErrorKind::TimedOut && t.is_none() => {
                            log::debug!(
                                "uTP FIN not acked within {UTP_SHUTDOWN_LINGER:?}; still resending"
                            );
                        }
                        other => other?,
                    }
                }
                Ok(())
            }
        }
    }

    /// Ends the connection at once, never blocking: a thread blocked in a
    /// read or write returns (TCP: shut down both ways, unsent data stays
    /// unsent; uTP: a RESET).
    pub(crate) fn abort(&self) {
        match self {
            BlockingCarrier::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            BlockingCarrier::Utp(u) => u.abort.abort(),
        }
    }

    /// Shuts down the sending direction without ever blocking (for `Drop`).
    pub(crate) fn shutdown_write_now(&self) {
        match self {
            BlockingCarrier::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            BlockingCarrier::Utp(u) => {
                if let Ok(mut w) = u.write.try_lock() {
                    let _ = poll_once(w.shutdown());
                }
            }
        }
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            BlockingCarrier::Tcp(s) => s.set_read_timeout(t),
            BlockingCarrier::Utp(u) => {
                check_timeout(t)?;
                *lock(&u.read_timeout) = t;
                Ok(())
            }
        }
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            BlockingCarrier::Tcp(s) => s.set_write_timeout(t),
            BlockingCarrier::Utp(u) => {
                check_timeout(t)?;
                *lock(&u.write_timeout) = t;
                Ok(())
            }
        }
    }

    pub(crate) fn read_timeout(&self) -> io::Result<Option<Duration>> {
        match self {
            BlockingCarrier::Tcp(s) => s.read_timeout(),
            BlockingCarrier::Utp(u) => Ok(*lock(&u.read_timeout)),
        }
    }

    pub(crate) fn write_timeout(&self) -> io::Result<Option<Duration>> {
        match self {
            BlockingCarrier::Tcp(s) => s.write_timeout(),
            BlockingCarrier::Utp(u) => Ok(*lock(&u.write_timeout)),
        }
    }
}
