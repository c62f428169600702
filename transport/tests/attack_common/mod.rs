//! Helpers shared by the attack tests (`attack_*.rs`): good clients that dial
//! from a chosen loopback source, an echoing acceptor, resource counters.
//!
//! Good clients speak the protocol through the sans-IO core exactly as the
//! transport's own dialler does (first message, answer, admission record),
//! because `Stream::direct_connect` cannot choose its source address.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::proto::{HandshakeError, Initiator, MAX_HANDSHAKE_FRAME, RecvBuf, Session};
use transport::utp::aio::UtpSocket;
use transport::{Endpoint, Identity, Listener, Protocol};

/// Hang guard for every wait.
pub const T: Duration = Duration::from_secs(10);

/// The attacker's source.
pub const ATTACKER: &str = "127.0.0.1";
/// A good client's source other than the attacker's.
pub const OTHER: &str = "127.0.0.2";

/// How a good client's attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// It connected, and the listener's acceptor echoed a record back.
    Served,
    /// The listener said busy.
    Busy,
    /// Anything else (closed, timed out, refused).
    Failed(String),
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident memory in KiB.
pub fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A TCP connection from `from` (port 0) to `to`.
pub fn tcp_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )?;
    sock.bind(&SocketAddr::new(from, 0).into())?;
    sock.connect_timeout(&to.into(), T)?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(T))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn finish_or_busy(init: Initiator, body: &[u8]) -> Result<Session, Outcome> {
    match init.finish(body) {
        Ok(s) => Ok(s),
        Err(HandshakeError::Busy) => Err(Outcome::Busy),
        Err(e) => Err(Outcome::Failed(e.to_string())),
    }
}

/// One good TCP client from `from`: handshake, admission record, one
/// record echoed back by the acceptor.
pub fn good_tcp(ep: &Endpoint, from: IpAddr) -> Outcome {
    let run = || -> Result<(), Outcome> {
        let fail = |e: io::Error| Outcome::Failed(e.to_string());
        let mut s = tcp_from(from, ep.addr).map_err(fail)?;
        let id = Identity::generate();
        let (init, msg1) = Initiator::start(&id, &ep.public_key, Protocol::Tcp, b"")
            .map_err(|e| Outcome::Failed(e.to_string()))?;
        s.write_all(&msg1).map_err(fail)?;
        let mut hdr = [0u8; 2];
        s.read_exact(&mut hdr).map_err(fail)?;
        let len = (u16::from_be_bytes(hdr) as usize).min(MAX_HANDSHAKE_FRAME);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).map_err(fail)?;
        let mut session = finish_or_busy(init, &body)?;
        let mut out = Vec::new();
        session.seal_admission(&mut out);
        let (mut opener, mut sealer) = session.split();
        sealer.seal(b"ping", &mut out, usize::MAX);
        s.write_all(&out).map_err(fail)?;
        let mut rx = RecvBuf::new();
        let mut got = [0u8; 4];
        loop {
            if let Some(n) = rx
                .read_plain(&mut opener, &mut got)
                .map_err(|e| Outcome::Failed(e.to_string()))?
            {
                return if &got[..n] == b"ping" {
                    Ok(())
                } else {
                    Err(Outcome::Failed("wrong echo".into()))
                };
            }
            let n = s.read(rx.spare()).map_err(fail)?;
            if n == 0 {
                return Err(Outcome::Failed("closed before the echo".into()));
            }
            rx.filled(n);
        }
    };
    match run() {
        Ok(()) => Outcome::Served,
        Err(o) => o,
    }
}

/// One good uTP client from `from`, as [`good_tcp`].
pub async fn good_utp(ep: &Endpoint, from: IpAddr) -> Outcome {
    let run = async {
        let fail = |e: io::Error| Outcome::Failed(e.to_string());
        let sock = UtpSocket::bind(SocketAddr::new(from, 0)).map_err(fail)?;
        let mut s = sock.connect(ep.addr).await.map_err(fail)?;
        let id = Identity::generate();
        let (init, msg1) = Initiator::start(&id, &ep.public_key, Protocol::Utp, b"")
            .map_err(|e| Outcome::Failed(e.to_string()))?;
        s.write_all(&msg1).await.map_err(fail)?;
        let mut hdr = [0u8; 2];
        s.read_exact(&mut hdr).await.map_err(fail)?;
        let len = (u16::from_be_bytes(hdr) as usize).min(MAX_HANDSHAKE_FRAME);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.map_err(fail)?;
        let mut session = finish_or_busy(init, &body)?;
        let mut out = Vec::new();
        session.seal_admission(&mut out);
        let (mut opener, mut sealer) = session.split();
        sealer.seal(b"ping", &mut out, usize::MAX);
        s.write_all(&out).await.map_err(fail)?;
        let mut rx = RecvBuf::new();
        let mut got = [0u8; 4];
        loop {
            if let Some(n) = rx
                .read_plain(&mut opener, &mut got)
                .map_err(|e| Outcome::Failed(e.to_string()))?
            {
                return if &got[..n] == b"ping" {
                    Ok(())
                } else {
                    Err(Outcome::Failed("wrong echo".into()))
                };
            }
            let n = s.read(rx.spare()).await.map_err(fail)?;
            if n == 0 {
                return Err(Outcome::Failed("closed before the echo".into()));
            }
            rx.filled(n);
        }
    };
    match tokio::time::timeout(T, run).await {
        Ok(Ok(())) => Outcome::Served,
        Ok(Err(o)) => o,
        Err(_) => Outcome::Failed("hang guard".into()),
    }
}

/// Accepts on `listener` in a thread and echoes each stream's first 4
/// bytes, one thread per stream. Counts accepted streams.
pub struct Echoer {
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echoer {
    pub fn start(listener: Arc<Listener>) -> Echoer {
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok(mut s) = listener.accept_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                a.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(T)).unwrap();
                    let mut b = [0u8; 4];
                    if s.read_exact(&mut b).is_ok() {
                        let _ = s.write_all(&b);
                    }
                });
            }
        });
        Echoer {
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echoer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits (hang guard `T`) until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < T, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Tallies outcomes and prints a figure line.
#[derive(Default, Debug)]
pub struct Tally {
    pub served: usize,
    pub busy: usize,
    pub failed: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Served => self.served += 1,
            Outcome::Busy => self.busy += 1,
            Outcome::Failed(e) => self.failed.push(e),
        }
    }

    pub fn total(&self) -> usize {
        self.served + self.busy + self.failed.len()
    }

    /// Prints `figure <name>: served N of M` for the figures script.
    pub fn print(&self, name: &str) {
        println!(
            "figure {name}: {} of {} good clients connected (busy {}, failed {}{})",
            self.served,
            self.total(),
            self.busy,
            self.failed.len(),
            self.failed
                .first()
                .map(|e| format!(", first: {e}"))
                .unwrap_or_default()
        );
    }

    /// At least 95% served.
    pub fn assert_95(&self, name: &str) {
        assert!(
            self.served * 100 >= self.total() * 95,
            "{name}: only {} of {} good clients connected: {:?}",
            self.served,
            self.total(),
            self
        );
    }
}
