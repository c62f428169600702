//! The tokio driver of the TCP punch: dials and accepts as
//! [`TcpPunchCore`] says, runs each candidate's [`TcpHandshake`], and
//! returns the stream the core keeps.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{
    CHOICE_LEN, CONNECT_TIMEOUT, Choice, HELLO_LEN, PROOF_LEN, RETRY, Rejected, TcpHandshake,
    TcpPunchCore,
};
use crate::punch::{PunchConfig, PunchFailure, PunchFailureKind};
use crate::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use crate::{Error, Result};

/// A candidate after its handshake.
enum Checked {
    /// Verified (and, on the chooser's side, waiting for its choice).
    Verified(TcpStream, SocketAddr, Box<TcpHandshake>),
    Rejected(Option<Rejected>),
}

/// Runs the handshake up to verification (both sides) and, on the other
/// side, reads the choice.
async fn check(mut s: TcpStream, peer: SocketAddr, mut hs: TcpHandshake) -> io::Result<Checked> {
    s.set_nodelay(true)?;
    s.write_all(&hs.hello()).await?;
    let mut h = [0u8; HELLO_LEN];
    s.read_exact(&mut h).await?;
    let proof = match hs.handle_hello(&h) {
        Ok(p) => p,
        Err(r) => return Ok(Checked::Rejected(Some(r))),
    };
    s.write_all(&proof).await?;
    let mut p = [0u8; PROOF_LEN];
    s.read_exact(&mut p).await?;
    if let Err(r) = hs.handle_proof(&p) {
        return Ok(Checked::Rejected(Some(r)));
    }
    if !hs.is_chooser() {
        let mut c = [0u8; CHOICE_LEN];
        s.read_exact(&mut c).await?;
        if let Err(r) = hs.handle_choice(&c) {
            return Ok(Checked::Rejected(Some(r)));
        }
    }
    Ok(Checked::Verified(s, peer, Box::new(hs)))
}

/// Punches a TCP connection from `listener`'s port (bound with
/// `SO_REUSEADDR` and `SO_REUSEPORT`, as [`crate::MappedTcpSocket`] is):
/// accepts on it while dialling from it every endpoint the peer listed
/// (as [`TcpPunchCore`] schedules), until one stream passes the handshake
/// or `cfg.timeout` passes. Every task it starts ends with it.
pub async fn tcp_punch_hole(
    listener: TcpListener,
    ours: &PrivRendezvousInfo,
    theirs: &PubRendezvousInfo,
    cfg: &PunchConfig,
) -> Result<(TcpStream, SocketAddr)> {
    let local = listener
        .local_addr()
        .map_err(Error::io("TCP hole punching"))?;
    if TcpHandshake::new(ours, theirs, [0; 16]).is_none() {
        return Err(Error::CannotPunch(PunchFailure {
            kind: PunchFailureKind::WrongSecret,
            elapsed: std::time::Duration::ZERO,
            probes_sent: 0,
            ours: ours.nat,
            theirs: theirs.nat,
        }));
    }
    let mut core = TcpPunchCore::new(ours, theirs, local, cfg, Instant::now());
    // Candidates from the accept loop; the dials report through `dials`.
    let (tx, mut accepted) = mpsc::channel::<(TcpStream, SocketAddr)>(8);
    let mut background = JoinSet::new();
    background.spawn(async move {
        loop {
            match listener.accept().await {
                Ok(c) => {
                    if tx.send(c).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    log::debug!("tcp punch: accept: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    });
    let mut dials: JoinSet<(SocketAddr, io::Result<TcpStream>)> = JoinSet::new();
    let mut checks: JoinSet<io::Result<Checked>> = JoinSet::new();
    let new_check = |checks: &mut JoinSet<_>, s, peer| {
        let hs = TcpHandshake::new(ours, theirs, rand::random()).expect("secrets differ");
        let timeout = cfg.timeout;
        checks.spawn(async move {
            tokio::time::timeout(timeout, check(s, peer, hs))
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
        });
    };
    let result = loop {
        let now = Instant::now();
        while let Some(ep) = core.poll_dial(now) {
            dials.spawn(async move {
                let r = async {
                    let sock = crate::driver::stun::reusable_tcp_socket(local)?;
                    tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(ep))
                        .await
                        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
                }
                .await;
                (ep, r)
            });
        }
        core.handle_timeout(now);
        if let Some(Err(f)) = core.outcome() {
            break Err(Error::CannotPunch(f.clone()));
        }
        let wake = core.poll_timeout().unwrap_or(now);
        tokio::select! {
            Some(c) = accepted.recv() => {
                let (s, peer) = c;
                if core.handle_candidate() {
                    log::debug!("tcp punch: candidate stream from {peer}");
                    new_check(&mut checks, s, peer);
                }
            }
            Some(r) = dials.join_next(), if !dials.is_empty() => {
                let Ok((ep, r)) = r else { continue };
                match r {
                    Ok(s) => {
                        core.handle_dial_connected(ep);
                        if core.handle_candidate() {
                            log::debug!("tcp punch: candidate stream to {ep}");
                            new_check(&mut checks, s, ep);
                        }
                    }
                    Err(e) => {
                        log::trace!("tcp punch: connect to {ep}: {e}");
                        core.handle_dial_failed(ep, Instant::now());
                    }
                }
            }
            Some(r) = checks.join_next(), if !checks.is_empty() => {
                match r {
                    Ok(Ok(Checked::Verified(mut s, peer, hs))) => {
                        match core.handle_verified(peer) {
                            Choice::Keep => {
                                if hs.is_chooser() && s.write_all(&hs.choice(true)).await.is_err() {
                                    // Lost before the choice left: not a winner after all.
                                    log::debug!("tcp punch: stream to {peer} broke before the choice");
                                    core.handle_winner_lost();
                                    continue;
                                }
                                break Ok((s, peer, hs.is_chooser()));
                            }
                            Choice::Refuse => {
                                if hs.is_chooser() {
                                    let _ = s.write_all(&hs.choice(false)).await;
                                }
                            }
                        }
                    }
                    Ok(Ok(Checked::Rejected(why))) => {
                        log::debug!("tcp punch: candidate refused: {why:?}");
                        core.handle_rejected(why);
                    }
                    _ => core.handle_rejected(None),
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    };
    background.abort_all();
    dials.abort_all();
    match result {
        Ok((s, peer, chooser)) => {
            if chooser && !checks.is_empty() {
                // Refuse the streams still being checked, as they finish,
                // bounded by their own timeouts.
                tokio::spawn(async move {
                    while let Some(r) = checks.join_next().await {
                        if let Ok(Ok(Checked::Verified(mut o, _, hs))) = r {
                            let _ = o.write_all(&hs.choice(false)).await;
                        }
                    }
                });
            }
            Ok((s, peer))
        }
        Err(e) => Err(e),
    }
}
