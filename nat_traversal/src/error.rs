//! The error type of the nat_traversal crate.

use std::io;
use std::net::SocketAddr;

use crate::punch::{PunchFailure, PunchFailureKind};
use crate::rendezvous::RendezvousDecodeError;
use crate::stun::StunError;

/// A `Result` whose error is the nat_traversal crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a nat_traversal call. Every message says what failed
/// and why, fit for a log line; [`kind`](Error::kind) is what a program
/// matches, [`failure_kind`](Error::failure_kind) says why a NAT pair could
/// not be punched.
///
/// Converts into [`io::Error`] keeping the kind, and
/// `io_err.get_ref().and_then(|e| e.downcast_ref::<nat_traversal::Error>())`
/// gives it back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// "cannot punch this NAT pair", with a typed reason.
    #[error(transparent)]
    CannotPunch(PunchFailure),
    /// A STUN server did not give us our address.
    #[error("STUN server {server}: {error}")]
    Stun {
        /// The server.
        server: SocketAddr,
        /// What went wrong.
        #[source]
        error: StunError,
    },
    /// Bytes are not a valid rendezvous info.
    #[error(transparent)]
    Rendezvous(#[from] RendezvousDecodeError),
    /// An argument is not usable; the text says which and why.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A socket or runtime error; `context` says what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The former name of [`Error`], from when only hole punching had one.
pub type PunchError = Error;

impl Error {
    /// The [`io::ErrorKind`] this error maps to: `TimedOut` for a punch that
    /// ran out of time or a silent STUN server, `InvalidData` for bad
    /// answers or rendezvous bytes, or the OS error's kind.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::CannotPunch(_) => io::ErrorKind::TimedOut,
            Error::Stun {
                error: StunError::TimedOut { .. },
                ..
            } => io::ErrorKind::TimedOut,
            Error::Stun { .. } | Error::Rendezvous(_) => io::ErrorKind::InvalidData,
            Error::InvalidArgument(_) => io::ErrorKind::InvalidInput,
            Error::Io { source, .. } => source.kind(),
        }
    }

    /// The typed reason, when the NAT pair could not be punched.
    pub fn failure_kind(&self) -> Option<PunchFailureKind> {
        match self {
            Error::CannotPunch(f) => Some(f.kind),
            _ => None,
        }
    }

    /// A closure wrapping an I/O error with `context`.
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }
}

/// An I/O error met without more context (the OS error's own message says
/// what failed).
impl From<io::Error> for Error {
    fn from(source: io::Error) -> Error {
        Error::Io {
            context: "nat_traversal",
            source,
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
        let e = Error::Stun {
            server: "192.0.2.1:3478".parse().unwrap(),
            error: StunError::TimedOut { sent: 3 },
        };
        assert_eq!(
            e.to_string(),
            "STUN server 192.0.2.1:3478: no STUN answer after 3 request(s)"
        );
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(
            io.get_ref().and_then(|e| e.downcast_ref::<Error>()),
            Some(Error::Stun { .. })
        ));
        let e = Error::io("binding")(io::ErrorKind::AddrInUse.into());
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(std::error::Error::source(&e).is_some());
    }
}
