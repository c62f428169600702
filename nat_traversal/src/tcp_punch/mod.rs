//! TCP hole punching: simultaneous open from the mapped port plus accepting
//! on it, then a handshake in which both sides prove they hold the punch
//! key, and a deterministic, authenticated tie-break that leaves exactly one
//! stream (`docs/wire.md` §4).
//!
//! The decisions are sans IO: [`TcpHandshake`] (one candidate stream's
//! messages) and [`TcpPunchCore`] (which endpoints to dial and when, how
//! many candidates to check at once, which verified stream to keep, the
//! deadline and the typed failure). The tokio driver is [`crate::aio::tcp_punch_hole`].
//!
//! Handshake on every candidate stream, the same from both ends:
//! 1. each side writes a hello: `"CRTP" ‖ version 2 ‖ side ‖ nonce (16)`;
//! 2. on the peer's hello, each side writes its proof:
//!    `MAC(K, side ‖ "proof" ‖ own nonce ‖ peer's nonce)`, [`MAC_LEN`]
//!    bytes, where `K` is the TCP punch key of both secrets
//!    (`docs/wire.md` §4);
//! 3. the low side ("the chooser") then writes on each verified stream a
//!    choice: `keep (1 or 0) ‖ MAC(K, low ‖ "choice" ‖ keep ‖ its nonce ‖
//!    the peer's nonce)`: 1 on the first verified stream, 0 on later ones.
//!    The high side keeps the stream whose authenticated choice is 1.
//!
//! Fresh nonces from both sides make every proof and choice valid on one
//! stream only: a recorded handshake replayed on another connection fails.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::auth::{MAC_LEN, PunchKey, Side};
use crate::punch::{PunchConfig, PunchFailure, PunchFailureKind, classify_failure};
use crate::rendezvous::{MAX_ENDPOINTS, NatBehaviour, PrivRendezvousInfo, PubRendezvousInfo};

pub(crate) mod aio;

const MAGIC: [u8; 4] = *b"CRTP";
/// The TCP punch handshake version.
pub const TCP_PUNCH_VERSION: u8 = 2;
/// Length of a nonce.
pub const NONCE_LEN: usize = 16;
/// Length of a hello.
pub const HELLO_LEN: usize = 4 + 1 + 1 + NONCE_LEN;
/// Length of a proof.
pub const PROOF_LEN: usize = MAC_LEN;
/// Length of a choice.
pub const CHOICE_LEN: usize = 1 + MAC_LEN;
const LABEL: &[u8] = b"crust tcp punch v2";

/// Pause between two connect attempts to one endpoint.
pub const RETRY: Duration = Duration::from_millis(200);
/// The bound on one connect attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The most candidate streams checked at once (accepted ones included):
/// more are closed unread.
pub const MAX_CHECKS: usize = 32;

/// Why a candidate stream failed its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not a TCP punch hello (magic, version, flags).
    NotAHello,
    /// The hello claims our own side (our own hello reflected, or the same
    /// secret on both sides).
    SameSide,
    /// The proof or the choice does not verify with our key: another
    /// rendezvous, or a forgery.
    BadProof,
    /// The chooser refused this stream (it kept another).
    NotChosen,
}

/// One candidate stream's handshake, sans IO (see the module docs). The
/// driver writes [`hello`](Self::hello), reads [`HELLO_LEN`] bytes into
/// [`handle_hello`](Self::handle_hello) and writes the proof it returns,
/// reads [`PROOF_LEN`] bytes into [`handle_proof`](Self::handle_proof);
/// then the chooser writes [`choice`](Self::choice) and the other reads
/// [`CHOICE_LEN`] bytes into [`handle_choice`](Self::handle_choice).
#[derive(Debug)]
pub struct TcpHandshake {
    key: PunchKey,
    nonce: [u8; NONCE_LEN],
    theirs: Option<[u8; NONCE_LEN]>,
    verified: bool,
}

impl TcpHandshake {
    /// A handshake with our fresh `nonce` (the caller draws it, so a
    /// simulation replays). `None` when both secrets are equal.
    pub fn new(
        ours: &PrivRendezvousInfo,
        theirs: &PubRendezvousInfo,
        nonce: [u8; NONCE_LEN],
    ) -> Option<TcpHandshake> {
        Some(TcpHandshake {
            key: PunchKey::new(&ours.secret, &theirs.secret, LABEL)?,
            nonce,
            theirs: None,
            verified: false,
        })
    }

    /// Whether we choose the stream (the low side).
    pub fn is_chooser(&self) -> bool {
        self.key.side() == Side::Low
    }

    /// Our hello.
    pub fn hello(&self) -> [u8; HELLO_LEN] {
        let mut h = [0u8; HELLO_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = TCP_PUNCH_VERSION;
        h[5] = self.key.side().code();
        h[6..].copy_from_slice(&self.nonce);
        h
    }

    /// The peer's hello: our proof to write, or why the stream is not the
    /// peer's.
    pub fn handle_hello(&mut self, h: &[u8; HELLO_LEN]) -> Result<[u8; PROOF_LEN], Rejected> {
        if h[..4] != MAGIC || h[4] != TCP_PUNCH_VERSION || h[5] > 1 {
            return Err(Rejected::NotAHello);
        }
        if h[5] != self.key.side().other().code() {
            return Err(Rejected::SameSide);
        }
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&h[6..]);
        self.theirs = Some(n);
        Ok(self.key.mac(self.key.side(), &[b"proof", &self.nonce, &n]))
    }

    /// The peer's proof (after its hello).
    pub fn handle_proof(&mut self, p: &[u8; PROOF_LEN]) -> Result<(), Rejected> {
        let theirs = self.theirs.ok_or(Rejected::NotAHello)?;
        let side = self.key.side().other();
        if !self.key.verify(side, &[b"proof", &theirs, &self.nonce], p) {
            return Err(Rejected::BadProof);
        }
        self.verified = true;
        Ok(())
    }

    /// The chooser's choice for this (verified) stream.
    pub fn choice(&self, keep: bool) -> [u8; CHOICE_LEN] {
        let theirs = self.theirs.unwrap_or_default();
        let k = [u8::from(keep)];
        let mac = self
            .key
            .mac(Side::Low, &[b"choice", &k, &self.nonce, &theirs]);
        let mut c = [0u8; CHOICE_LEN];
        c[0] = k[0];
        c[1..].copy_from_slice(&mac);
        c
    }

    /// The chooser's choice, read by the other side: `Ok(())` when this is
    /// the stream to keep.
    pub fn handle_choice(&self, c: &[u8; CHOICE_LEN]) -> Result<(), Rejected> {
        let theirs = self.theirs.ok_or(Rejected::NotAHello)?;
        if !self.verified || c[0] > 1 {
            return Err(Rejected::BadProof);
        }
        if !self.key.verify(
            Side::Low,
            &[b"choice", &c[..1], &theirs, &self.nonce],
            &c[1..],
        ) {
            return Err(Rejected::BadProof);
        }
        if c[0] == 1 {
            Ok(())
        } else {
            Err(Rejected::NotChosen)
        }
    }
}

#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    next_try: Instant,
    dialling: bool,
    done: bool,
}

/// What the chooser does with a verified stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Keep it: the punch succeeded with this stream.
    Keep,
    /// Refuse it: another was kept.
    Refuse,
}

/// A TCP punch attempt's decisions, sans IO: which of the peer's endpoints
/// to dial and when (at most one dial per endpoint at a time, retried
/// every [`RETRY`], each bounded by [`CONNECT_TIMEOUT`]; at most
/// [`MAX_ENDPOINTS`] endpoints, of our family, whatever the peer lists), how
/// many candidates are checked at once ([`MAX_CHECKS`]), which verified
/// stream wins, and the typed failure at the deadline.
#[derive(Debug)]
pub struct TcpPunchCore {
    ours: NatBehaviour,
    theirs: NatBehaviour,
    start: Instant,
    deadline: Instant,
    targets: Vec<Target>,
    checks: usize,
    wrong_secret: bool,
    won: bool,
    outcome: Option<Result<SocketAddr, PunchFailure>>,
}

impl TcpPunchCore {
    /// An attempt at `now` from a socket bound to `local`.
    pub fn new(
        ours: &PrivRendezvousInfo,
        theirs: &PubRendezvousInfo,
        local: SocketAddr,
        cfg: &PunchConfig,
        now: Instant,
    ) -> TcpPunchCore {
        let mut targets: Vec<Target> = Vec::new();
        for ep in theirs.tcp_punch_endpoints() {
            if ep.is_ipv4() != local.is_ipv4() || targets.iter().any(|t| t.addr == *ep) {
                continue;
            }
            if targets.len() == MAX_ENDPOINTS {
                break;
            }
            targets.push(Target {
                addr: *ep,
                next_try: now,
                dialling: false,
                done: false,
            });
        }
        TcpPunchCore {
            ours: ours.nat,
            theirs: theirs.nat,
            start: now,
            deadline: crate::deadline_after(now, cfg.timeout),
            targets,
            checks: 0,
            wrong_secret: false,
            won: false,
            outcome: None,
        }
    }

    /// The next endpoint to dial now, if one is due.
    pub fn poll_dial(&mut self, now: Instant) -> Option<SocketAddr> {
        if self.outcome.is_some() || self.won {
            return None;
        }
        let t = self
            .targets
            .iter_mut()
            .find(|t| !t.dialling && !t.done && t.next_try <= now)?;
        t.dialling = true;
        Some(t.addr)
    }

    /// A dial to `addr` failed (refused, timed out): it is retried after
    /// [`RETRY`].
    pub fn handle_dial_failed(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(t) = self.targets.iter_mut().find(|t| t.addr == addr) {
            t.dialling = false;
            t.next_try = crate::deadline_after(now, RETRY);
        }
    }

    /// A dial to `addr` connected: the stream becomes a candidate (see
    /// [`handle_candidate`](Self::handle_candidate)); that endpoint is not
    /// dialled again.
    pub fn handle_dial_connected(&mut self, addr: SocketAddr) {
        if let Some(t) = self.targets.iter_mut().find(|t| t.addr == addr) {
            t.dialling = false;
            t.done = true;
        }
    }

    /// A candidate stream (dialled or accepted): whether to check it
    /// (true) or close it unread (false: the attempt is over, or
    /// [`MAX_CHECKS`] are running).
    pub fn handle_candidate(&mut self) -> bool {
        if self.outcome.is_some() || self.checks >= MAX_CHECKS {
            return false;
        }
        self.checks += 1;
        true
    }

    /// A candidate's handshake failed.
    pub fn handle_rejected(&mut self, why: Option<Rejected>) {
        self.checks = self.checks.saturating_sub(1);
        if matches!(why, Some(Rejected::BadProof | Rejected::SameSide)) {
            self.wrong_secret = true;
        }
    }

    /// A candidate from `peer` passed the handshake. The chooser learns
    /// whether to keep it; the other side calls this only for the stream
    /// whose choice was to keep it, and keeps it.
    pub fn handle_verified(&mut self, peer: SocketAddr) -> Choice {
        self.checks = self.checks.saturating_sub(1);
        if self.won || self.outcome.is_some() {
            return Choice::Refuse;
        }
        self.won = true;
        self.outcome = Some(Ok(peer));
        Choice::Keep
    }

    /// The kept stream broke before the chooser's choice left: the attempt
    /// goes on (dials already done stay done; accepts still come).
    pub fn handle_winner_lost(&mut self) {
        if matches!(self.outcome, Some(Ok(_))) {
            self.outcome = None;
            self.won = false;
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        let retry = self
            .targets
            .iter()
            .filter(|t| !t.dialling && !t.done)
            .map(|t| t.next_try)
            .min();
        Some(retry.map_or(self.deadline, |r| r.min(self.deadline)))
    }

    /// Time passes: fails the attempt at its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_none() && now >= self.deadline {
            let kind = if self.wrong_secret {
                PunchFailureKind::WrongSecret
            } else {
                classify_failure(self.ours, self.theirs)
            };
            self.outcome = Some(Err(PunchFailure {
                kind,
                elapsed: now - self.start,
                probes_sent: 0,
                ours: self.ours,
                theirs: self.theirs,
            }));
        }
    }

    /// The outcome: the winning stream's peer address, or the failure.
    pub fn outcome(&self) -> Option<&Result<SocketAddr, PunchFailure>> {
        self.outcome.as_ref()
    }

    /// Dials in progress (the driver's connect tasks), never more than the
    /// endpoints kept.
    pub fn dials_in_flight(&self) -> usize {
        self.targets.iter().filter(|t| t.dialling).count()
    }
}

#[cfg(test)]
mod tests;
