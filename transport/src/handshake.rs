//! Handshake drivers: the [`proto`](crate::proto) core over blocking and
//! async byte streams.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::endpoint::{Endpoint, Protocol};
use crate::error::Error;
use crate::identity::Identity;
use crate::proto::{self, HandshakeError, Initiator, Responder, Session};

/// What a responder learned from a completed handshake.
pub(crate) struct Responded {
    pub(crate) session: Session,
    pub(crate) payload: Vec<u8>,
}

/// Maps a core handshake error met while dialling `ep` to the public error.
pub(crate) fn initiator_error(ep: &Endpoint, e: HandshakeError) -> Error {
    match e {
        HandshakeError::KeyMismatch => Error::PeerKeyMismatch {
            addr: ep.addr,
            expected: ep.public_key,
        },
        HandshakeError::Busy => Error::Busy { addr: ep.addr },
        HandshakeError::VersionMismatch { theirs } => Error::VersionMismatch {
            addr: ep.addr,
            ours: proto::VERSION,
            theirs,
        },
        HandshakeError::Rejected { code } => Error::Rejected {
            addr: ep.addr,
            code,
        },
        other => Error::Handshake {
            addr: ep.addr,
            reason: other.to_string(),
        },
    }
}

/// Maps an I/O error met during the handshake with `ep`.
pub(crate) fn handshake_io_error(ep: &Endpoint, e: io::Error, timeout: Duration) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::TimedOut {
            what: format!("handshake with {ep}"),
            after: timeout,
        },
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Error::Handshake {
            addr: ep.addr,
            reason: format!(
                "the connection closed before the handshake completed ({e}); \
                 is it a crust listener?"
            ),
        },
        _ => Error::io(format!("handshake with {ep}"), e),
    }
}

fn frame_len(header: [u8; 2]) -> io::Result<usize> {
    proto::check_handshake_frame_len(header)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Runs the initiator's side over an async stream. The caller bounds it
/// with a timeout.
pub(crate) async fn initiate_async<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    local: &Identity,
    ep: &Endpoint,
    payload: &[u8],
    timeout: Duration,
) -> Result<Session, Error> {
    let (initiator, msg1) = Initiator::start(local, &ep.public_key, ep.protocol, payload)
        .map_err(|e| initiator_error(ep, e))?;
    let io_err = |e| handshake_io_error(ep, e, timeout);
    io.write_all(&msg1).await.map_err(io_err)?;
    let mut header = [0u8; 2];
    io.read_exact(&mut header).await.map_err(io_err)?;
    let len = frame_len(header)
        .map_err(|e| initiator_error(ep, HandshakeError::Malformed(e.to_string())))?;
    let mut body = [0u8; proto::MAX_HANDSHAKE_FRAME];
    io.read_exact(&mut body[..len]).await.map_err(io_err)?;
    let mut session = initiator
        .finish(&body[..len])
        .map_err(|e| initiator_error(ep, e))?;
    // The admission record, at once: the listener admits us only once it
    // decrypts.
    let mut admit = Vec::with_capacity(proto::ADMISSION_FRAME);
    session.seal_admission(&mut admit);
    io.write_all(&admit).await.map_err(io_err)?;
    io.flush().await.map_err(io_err)?;
    Ok(session)
}

/// What the responder does with a good first message.
pub(crate) enum FirstMessage {
    /// Answer it and wait for the admission record.
    Answer,
    /// Refuse it with the busy rejection (the accept queue is full).
    Busy,
}

/// Runs the responder's side over an async stream: reads the first message,
/// asks `on_first_message` whether to answer it, answers, then reads and
/// checks the admission record. The caller bounds it with a timeout. Errors
/// are for the log: the listener never returns them.
pub(crate) async fn respond_async<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    local: &Identity,
    protocol: Protocol,
    peer: SocketAddr,
    on_first_message: impl FnOnce() -> FirstMessage,
) -> io::Result<Responded> {
    let mut header = [0u8; 2];
    io.read_exact(&mut header).await?;
    let len = frame_len(header)?;
    let mut body = [0u8; proto::MAX_HANDSHAKE_FRAME];
    io.read_exact(&mut body[..len]).await?;
    match Responder::respond(local, protocol, &body[..len]) {
        Ok(mut accepted) => {
            if let FirstMessage::Busy = on_first_message() {
                let _ = io.write_all(&Responder::busy_reply()).await;
                let _ = io.flush().await;
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("refused {peer}: busy (accept queue full)"),
                ));
            }
            io.write_all(&accepted.reply).await?;
            io.flush().await?;
            let mut admit = [0u8; proto::ADMISSION_FRAME];
            io.read_exact(&mut admit).await?;
            accepted
                .session
                .open_admission(&admit)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Ok(Responded {
                session: accepted.session,
                payload: accepted.payload,
            })
        }
        Err(rejection) => {
            if let Some(reply) = rejection.reply {
                // Best effort: the peer learns why before we close.
                let _ = io.write_all(&reply).await;
                let _ = io.flush().await;
            }
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("handshake from {peer} refused: {}", rejection.error),
            ))
        }
    }
}
