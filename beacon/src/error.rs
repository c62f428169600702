//! The error type of the beacon crate.

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::MAX_PERIOD;
use crate::packet::{EncodeError, MAX_DATA_LEN, MAX_ID_BYTES};

/// A `Result` whose error is the beacon crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a beacon call. Every message says what failed and
/// why, fit for a log line; [`kind`](Error::kind) is what a program matches.
///
/// Converts into [`io::Error`] keeping the kind, and
/// `io_err.get_ref().and_then(|e| e.downcast_ref::<beacon::Error>())` gives
/// it back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder option is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data is longer than [`MAX_DATA_LEN`].
    #[error("beacon data is {len} bytes; the limit is {MAX_DATA_LEN} bytes")]
    DataTooLong {
        /// The data's length.
        len: usize,
    },
    /// A period is zero or over [`MAX_PERIOD`].
    #[error("beacon {what} is {value:?}; it must be above zero and at most {MAX_PERIOD:?}")]
    PeriodOutOfRange {
        /// Which setting: `period` or `interface_refresh`.
        what: &'static str,
        /// The value given.
        value: Duration,
    },
    /// A socket could not be made, configured or bound.
    #[error("beacon: cannot {what} UDP socket on {addr}: {source}")]
    Bind {
        /// What failed ("create", "bind", ...).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The beacon was dropped: its controller can no longer change it.
    #[error("the beacon on port {port} has been dropped: its controller can no longer change it")]
    Closed {
        /// The beacon's port.
        port: u16,
    },
    /// The beacon's background task ended: no more messages come.
    #[error("the beacon on port {port} has stopped: its background task ended")]
    Stopped {
        /// The beacon's port.
        port: u16,
    },
    /// No message arrived in time.
    #[error("waiting for a beacon message timed out after {after:?}")]
    TimedOut {
        /// The limit that ran out.
        after: Duration,
    },
    /// Another I/O failure; `context` says what we were doing (for
    /// instance a blocking call made from a current-thread runtime).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Which builder option is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Port 0: every beacon must use the same known port.
    #[error("beacon port must not be 0: every beacon must use the same known port")]
    PortZero,
    /// `id_bytes` over [`MAX_ID_BYTES`].
    #[error("beacon id_bytes is {0}; the limit is {MAX_ID_BYTES} bytes")]
    IdTooLong(usize),
    /// `queue_len` of zero.
    #[error("beacon queue_len must be at least 1")]
    QueueLenZero,
    /// Neither IPv4 nor IPv6 is on.
    #[error("beacon needs IPv4 or IPv6 on")]
    NoFamily,
    /// An empty interface list.
    #[error("beacon interface list is empty: it could not send anywhere")]
    NoInterfaces,
    /// The IPv6 group is not a multicast address.
    #[error("beacon group {0} is not a multicast address")]
    NotMulticast(Ipv6Addr),
}

impl Error {
    /// The [`io::ErrorKind`] this error maps to: `InvalidInput` for bad
    /// arguments, `NotConnected` after a drop, `TimedOut`, or the OS error's
    /// kind.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Config(_) | Error::DataTooLong { .. } | Error::PeriodOutOfRange { .. } => {
                io::ErrorKind::InvalidInput
            }
            Error::Bind { source, .. } | Error::Io { source, .. } => source.kind(),
            Error::Closed { .. } => io::ErrorKind::NotConnected,
            Error::Stopped { .. } => io::ErrorKind::BrokenPipe,
            Error::TimedOut { .. } => io::ErrorKind::TimedOut,
        }
    }

    pub(crate) fn runtime(source: io::Error) -> Error {
        Error::Io {
            context: "beacon call",
            source,
        }
    }
}

impl From<EncodeError> for Error {
    fn from(e: EncodeError) -> Error {
        match e {
            EncodeError::IdTooLong { len } => Error::Config(ConfigError::IdTooLong(len)),
            EncodeError::DataTooLong { len } => Error::DataTooLong { len },
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_keeps_kind_and_error() {
        let io: io::Error = Error::DataTooLong { len: 2000 }.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        assert!(matches!(
            io.get_ref().and_then(|e| e.downcast_ref::<Error>()),
            Some(Error::DataTooLong { len: 2000 })
        ));
        let e = Error::Bind {
            what: "bind",
            addr: "0.0.0.0:1".parse().unwrap(),
            source: io::ErrorKind::AddrInUse.into(),
        };
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(std::error::Error::source(&e).is_some());
    }
}
