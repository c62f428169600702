//! The error type of the crust crate.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use transport::wire::RejectCode;

/// A `Result` whose error is crust's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a crust call. Every message says what failed and
/// where, fit for a log line; [`kind`](Error::kind) gives an
/// [`io::ErrorKind`] a program can match, and the error converts into an
/// [`io::Error`] that keeps it (`get_ref().downcast_ref::<crust::Error>()`).
///
/// ```
/// let e = crust::Error::MessageTooLarge { len: 10, max: 4 };
/// assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
/// let io: std::io::Error = e.into();
/// assert!(io.get_ref().unwrap().downcast_ref::<crust::Error>().is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A transport call (connect, listen, the encrypted stream) failed.
    #[error("{context}: {source}")]
    Transport {
        /// What we were doing.
        context: String,
        /// The transport's error.
        #[source]
        source: transport::Error,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A configuration file or value is invalid.
    #[error("{}", config_message(.file, .field, .line, .reason))]
    Config {
        /// The file, if the config came from one.
        file: Option<PathBuf>,
        /// The field's full path (e.g. `limits.max_inbound`), if known.
        field: Option<String>,
        /// The line in the file, if known.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// The peer refused the connection, with the code it sent.
    #[error("{peer} refused the connection ({code}): {reason}")]
    Rejected {
        /// Whom we talked to.
        peer: String,
        /// Why, as a code from the wire registry.
        code: RejectCode,
        /// The peer's (or our) words.
        reason: String,
    },
    /// The peer belongs to another crust network.
    #[error("{peer} is on network {theirs:?}, we are on network {ours:?}")]
    OtherNetwork {
        /// Whom we talked to.
        peer: String,
        /// Our network name.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// The peer fell silent for longer than the inactivity timeout.
    #[error("lost {peer}: nothing heard for {silent_for:?} (inactivity timeout)")]
    PeerLost {
        /// The peer.
        peer: String,
        /// How long it was silent.
        silent_for: Duration,
    },
    /// Our local address of the stream left the host (a network change:
    /// the address was removed, or its interface went down), so the stream
    /// is dead; it was ended without waiting for the inactivity timeout.
    /// Reconnect (for example by [`bootstrap`](crate::ServiceController::bootstrap)).
    #[error("lost {peer}: our address {local} left the host (network change)")]
    AddressLost {
        /// The peer.
        peer: String,
        /// Our local socket address of the stream.
        local: std::net::SocketAddr,
    },
    /// The peer closed the stream (or the stream was closed here).
    #[error("{0}")]
    Closed(String),
    /// A message over the configured maximum (refused before anything was
    /// sent, or announced by the peer, which ends that stream).
    #[error("a {len}-byte message is over the maximum message size of {max} bytes")]
    MessageTooLarge {
        /// The message's length.
        len: u64,
        /// The maximum.
        max: usize,
    },
    /// The peer broke the crust protocol; the stream was closed.
    #[error("protocol error from {peer}: {reason}")]
    Protocol {
        /// The peer.
        peer: String,
        /// What it did.
        reason: String,
    },
    /// A wait ran past its limit.
    #[error("{what} timed out after {after:?}")]
    TimedOut {
        /// What we waited for.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// Bootstrapping reached no peer: every attempt, with why it failed.
    #[error("{}", bootstrap_message(.attempts))]
    Bootstrap {
        /// Each endpoint tried (or not reached before the deadline) and why.
        attempts: Vec<(transport::Endpoint, String)>,
    },
    /// Not built yet in this version.
    #[error("{0} is not yet implemented")]
    Unsupported(String),
}

fn bootstrap_message(attempts: &[(transport::Endpoint, String)]) -> String {
    if attempts.is_empty() {
        return "bootstrap found nobody to try: no hard-coded contacts, cache entries or \
                beacon-found peers"
            .into();
    }
    let mut s = format!("bootstrap reached none of {} endpoints:", attempts.len());
    for (ep, why) in attempts {
        s.push_str(&format!(" [{ep}: {why}]"));
    }
    s
}

fn config_message(
    file: &Option<PathBuf>,
    field: &Option<String>,
    line: &Option<usize>,
    reason: &str,
) -> String {
    let mut s = String::from("invalid config");
    if let Some(f) = file {
        s.push_str(&format!(" in {}", f.display()));
    }
    if let Some(l) = line {
        s.push_str(&format!(" at line {l}"));
    }
    if let Some(f) = field {
        s.push_str(&format!(", field `{f}`"));
    }
    s.push_str(": ");
    s.push_str(reason);
    s
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn transport(context: impl Into<String>, source: transport::Error) -> Error {
        Error::Transport {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Error {
        Error::Config {
            file: None,
            field: None,
            line: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn config_field(field: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            file: None,
            field: Some(field.into()),
            line: None,
            reason: reason.into(),
        }
    }

    /// The [`io::ErrorKind`] this error maps to.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Transport { source, .. } => source.kind(),
            Error::Io { source, .. } => source.kind(),
            Error::Config { .. } => io::ErrorKind::InvalidInput,
            Error::Rejected { code, .. } => match code {
                RejectCode::Busy | RejectCode::Limit => io::ErrorKind::ConnectionRefused,
                RejectCode::Key => io::ErrorKind::PermissionDenied,
                _ => io::ErrorKind::InvalidData,
            },
            Error::OtherNetwork { .. } => io::ErrorKind::ConnectionRefused,
            Error::PeerLost { .. } => io::ErrorKind::TimedOut,
            Error::AddressLost { .. } => io::ErrorKind::ConnectionAborted,
            Error::Closed(_) => io::ErrorKind::NotConnected,
            Error::MessageTooLarge { .. } => io::ErrorKind::InvalidInput,
            Error::Protocol { .. } => io::ErrorKind::InvalidData,
            Error::TimedOut { .. } => io::ErrorKind::TimedOut,
            Error::Bootstrap { .. } => io::ErrorKind::NotConnected,
            Error::Unsupported(_) => io::ErrorKind::Unsupported,
        }
    }

    /// The rejection code, when the peer refused us (or we refused it).
    pub fn reject_code(&self) -> Option<RejectCode> {
        match self {
            Error::Rejected { code, .. } => Some(*code),
            Error::OtherNetwork { .. } => Some(RejectCode::OtherNetwork),
            Error::MessageTooLarge { .. } => None,
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}
