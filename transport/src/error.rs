//! The error type of the transport crate.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::PublicKey;
use crate::wire::RejectCode;

/// A `Result` whose error is the transport crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a transport call. Every message says what failed and
/// where, fit for a log line.
///
/// Errors convert into [`io::Error`] (with a matching [`io::ErrorKind`]) so
/// they travel through `Read`/`Write` and `?` in `io::Result` code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed; `context` says which and on what.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing, e.g. "connecting to tcp://...".
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The peer at `addr` does not hold the private key for `expected`: the
    /// endpoint we dialled names a key the listener does not have.
    #[error("peer key mismatch: the listener at {addr} does not hold the key {expected}")]
    PeerKeyMismatch {
        /// The address we connected to.
        addr: SocketAddr,
        /// The key the endpoint named.
        expected: PublicKey,
    },
    /// The peer speaks another version of the crust transport protocol.
    #[error(
        "protocol version mismatch with {addr}: we speak crust transport v{ours}, they speak v{theirs}"
    )]
    VersionMismatch {
        /// The peer's address.
        addr: SocketAddr,
        /// Our version.
        ours: u8,
        /// Their version.
        theirs: u8,
    },
    /// The peer at `addr` refused the connection with a rejection code from
    /// the registry ([`crate::wire`]); a code this version does not know is
    /// [`RejectCode::Unknown`] ("unknown rejection N").
    #[error("the peer at {addr} refused the connection: {code}")]
    Rejected {
        /// The peer's address.
        addr: SocketAddr,
        /// Why, as the peer said.
        code: RejectCode,
    },
    /// The encrypted handshake with `addr` failed for `reason`.
    #[error("handshake with {addr} failed: {reason}")]
    Handshake {
        /// The peer's address.
        addr: SocketAddr,
        /// Why, in words.
        reason: String,
    },
    /// The listener at `addr` is busy (its accept queue is full) and refused
    /// us at once; trying again later may succeed.
    #[error("the listener at {addr} is busy (its accept queue is full); try again later")]
    Busy {
        /// The listener's address.
        addr: SocketAddr,
    },
    /// A network wait ran past its limit.
    #[error("{what} timed out after {after:?}")]
    TimedOut {
        /// What we were waiting for.
        what: String,
        /// The limit that ran out.
        after: Duration,
    },
    /// A string is not a valid endpoint.
    #[error("invalid endpoint {input:?}: {reason}")]
    InvalidEndpoint {
        /// The text that was parsed.
        input: String,
        /// Which part is wrong and why.
        reason: String,
    },
    /// A public key is not 64 hex digits.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    /// An identity file could not be read, written or parsed.
    #[error("identity file {path}: {reason}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The call needs something this version does not have yet.
    #[error("{0} is not yet supported")]
    Unsupported(String),
    /// The object was closed (its listener or stream was dropped).
    #[error("{0} is closed")]
    Closed(String),
    /// A peer's rendezvous info cannot be used; the text says why.
    #[error("invalid rendezvous info: {0}")]
    InvalidRendezvousInfo(String),
    /// No rendezvous attempt gave a stream: each attempt with why.
    #[error(transparent)]
    RendezvousFailed(crate::rendezvous::RendezvousFailure),
    /// A [`ListenerSet`](crate::ListenerSet) holds listeners of one key;
    /// this listener proves another.
    #[error("the listener set's listeners prove {set}; this listener proves {listener}")]
    ListenerKeyMismatch {
        /// The set's key.
        set: crate::identity::PublicKey,
        /// The listener's key.
        listener: crate::identity::PublicKey,
    },
    /// A [`ListenerSet`](crate::ListenerSet) has its bound of pending
    /// rendezvous.
    #[error(transparent)]
    TooManyPendingRendezvous(crate::rendezvous::tokens::TokenTableFull),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The [`io::ErrorKind`] this error maps to.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io { source, .. } => source.kind(),
            Error::PeerKeyMismatch { .. } => io::ErrorKind::PermissionDenied,
            Error::Rejected { .. } => io::ErrorKind::ConnectionRefused,
            Error::VersionMismatch { .. } | Error::Handshake { .. } => io::ErrorKind::InvalidData,
            Error::TimedOut { .. } => io::ErrorKind::TimedOut,
            Error::Busy { .. } => io::ErrorKind::ConnectionRefused,
            Error::InvalidEndpoint { .. } | Error::InvalidPublicKey(_) => {
                io::ErrorKind::InvalidInput
            }
            Error::Identity { .. } => io::ErrorKind::InvalidData,
            Error::Unsupported(_) => io::ErrorKind::Unsupported,
            Error::Closed(_) => io::ErrorKind::NotConnected,
            Error::InvalidRendezvousInfo(_) => io::ErrorKind::InvalidInput,
            Error::RendezvousFailed(_) => io::ErrorKind::TimedOut,
            Error::ListenerKeyMismatch { .. } => io::ErrorKind::InvalidInput,
            Error::TooManyPendingRendezvous(_) => io::ErrorKind::QuotaExceeded,
        }
    }
}

/// Keeps the [`kind`](Error::kind) and the error itself:
/// `io_err.get_ref().and_then(|e| e.downcast_ref::<transport::Error>())`
/// gives it back.
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
        let e = Error::Rejected {
            addr: "127.0.0.1:1".parse().unwrap(),
            code: RejectCode::Unknown(77),
        };
        assert_eq!(
            e.to_string(),
            "the peer at 127.0.0.1:1 refused the connection: unknown rejection 77"
        );
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        let back = io.get_ref().and_then(|e| e.downcast_ref::<Error>());
        assert!(matches!(
            back,
            Some(Error::Rejected {
                code: RejectCode::Unknown(77),
                ..
            })
        ));
        let io: io::Error = Error::io("x", io::ErrorKind::AddrInUse.into()).into();
        assert_eq!(io.kind(), io::ErrorKind::AddrInUse);
        assert!(std::error::Error::source(io.get_ref().unwrap()).is_some());
    }
}
