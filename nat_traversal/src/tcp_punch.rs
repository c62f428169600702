//! TCP hole punching: simultaneous open from the mapped port plus accepting
//! on it, then a handshake in which both sides prove they hold the shared
//! secrets, and a deterministic tie-break that leaves exactly one stream.
//!
//! Handshake on every candidate stream: each side writes
//! `"CRTP" | version | own secret | peer's secret` (38 bytes) and checks the
//! peer's. The side whose secret is lower ("the chooser") then writes one
//! byte on each verified stream: `1` on the first, `0` on the others; the
//! other side keeps the stream on which it reads `1`.

use std::time::Duration;

use crate::punch::PunchConfig;
use crate::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo, SECRET_LEN};

const MAGIC: [u8; 4] = *b"CRTP";
const VERSION: u8 = 1;
const HELLO_LEN: usize = 4 + 1 + 2 * SECRET_LEN;
/// Pause between two connect attempts to one endpoint.
const RETRY: Duration = Duration::from_millis(200);
/// The bound on one connect attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn hello(from: &[u8; SECRET_LEN], to: &[u8; SECRET_LEN]) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5..5 + SECRET_LEN].copy_from_slice(from);
    h[5 + SECRET_LEN..].copy_from_slice(to);
    h
}

/// The async TCP punch.
pub(crate) mod aio {
    use super::*;
    use std::io;
    use std::net::SocketAddr;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio::task::JoinSet;

    use crate::aio::reusable_tcp_socket;
    use crate::punch::{PunchFailure, PunchFailureKind, classify_failure};
    use crate::{Error, Result};

    enum Verified {
        Ok(TcpStream, SocketAddr),
        WrongSecret,
    }

    async fn verify(
        mut s: TcpStream,
        peer: SocketAddr,
        ours: [u8; SECRET_LEN],
        theirs: [u8; SECRET_LEN],
        chooser: bool,
    ) -> io::Result<Verified> {
        s.set_nodelay(true)?;
        s.write_all(&hello(&ours, &theirs)).await?;
        let mut h = [0u8; HELLO_LEN];
        s.read_exact(&mut h).await?;
        if h != hello(&theirs, &ours) {
            return Ok(Verified::WrongSecret);
        }
        if chooser {
            return Ok(Verified::Ok(s, peer));
        }
        let mut d = [0u8; 1];
        s.read_exact(&mut d).await?;
        if d[0] == 1 {
            Ok(Verified::Ok(s, peer))
        } else {
            Err(io::Error::other("not chosen"))
        }
    }

    /// Punches a TCP connection from `local` (bound with `SO_REUSEADDR` and
    /// `SO_REUSEPORT`, as [`crate::MappedTcpSocket`] is): accepts on it
    /// (through `listener`, made from the same port) while connecting from
    /// it to every endpoint the peer listed, until one stream passes the
    /// handshake or `cfg.timeout` passes.
    pub async fn tcp_punch_hole(
        listener: TcpListener,
        ours: &PrivRendezvousInfo,
        theirs: &PubRendezvousInfo,
        cfg: &PunchConfig,
    ) -> Result<(TcpStream, SocketAddr)> {
        let local = listener
            .local_addr()
            .map_err(Error::io("TCP hole punching"))?;
        let start = Instant::now();
        let (our_s, their_s) = (ours.secret, theirs.secret);
        let chooser = our_s < their_s;
        let (tx, mut rx) = mpsc::channel::<(TcpStream, SocketAddr)>(16);
        let mut tasks = JoinSet::new();
        {
            let tx = tx.clone();
            tasks.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((s, peer)) => {
                            if tx.send((s, peer)).await.is_err() {
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
        }
        for ep in theirs.endpoints.iter().copied() {
            if ep.is_ipv4() != local.is_ipv4() {
                continue;
            }
            let tx = tx.clone();
            tasks.spawn(async move {
                loop {
                    let attempt = async {
                        let sock = reusable_tcp_socket(local)?;
                        tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(ep))
                            .await
                            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
                    };
                    match attempt.await {
                        Ok(s) => {
                            let _ = tx.send((s, ep)).await;
                            return;
                        }
                        Err(e) => {
                            log::trace!("tcp punch: connect to {ep}: {e}");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
            });
        }
        drop(tx);
        let mut checks = JoinSet::new();
        let mut wrong_secret = false;
        let deadline = tokio::time::sleep(cfg.timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                Some((s, peer)) = rx.recv() => {
                    log::debug!("tcp punch: candidate stream with {peer}");
                    checks.spawn(tokio::time::timeout(cfg.timeout, verify(s, peer, our_s, their_s, chooser)));
                }
                Some(r) = checks.join_next(), if !checks.is_empty() => {
                    match r {
                        Ok(Ok(Ok(Verified::Ok(mut s, peer)))) => {
                            if chooser {
                                if s.write_all(&[1]).await.is_err() {
                                    continue;
                                }
                                // Refuse the others as they finish.
                                tasks.abort_all();
                                let rest = std::mem::take(&mut checks);
                                tokio::spawn(async move {
                                    let mut rest = rest;
                                    while let Some(r) = rest.join_next().await {
                                        if let Ok(Ok(Ok(Verified::Ok(mut o, _)))) = r {
                                            let _ = o.write_all(&[0]).await;
                                        }
                                    }
                                });
                            }
                            return Ok((s, peer));
                        }
                        Ok(Ok(Ok(Verified::WrongSecret))) => wrong_secret = true,
                        _ => {}
                    }
                }
                _ = &mut deadline => {
                    let kind = if wrong_secret {
                        PunchFailureKind::WrongSecret
                    } else {
                        classify_failure(ours.nat, theirs.nat)
                    };
                    return Err(Error::CannotPunch(PunchFailure {
                        kind,
                        elapsed: start.elapsed(),
                        probes_sent: 0,
                        ours: ours.nat,
                        theirs: theirs.nat,
                    }));
                }
            }
        }
    }
}
