//! UDP hole punching as a sans-IO state machine ([`PunchCore`]).
//!
//! The protocol (the seed's UDP hole-punching RFC, modernised and
//! authenticated; `docs/wire.md` §4):
//! - every [`PunchConfig::probe_interval`] each side sends a probe to every
//!   endpoint the peer listed. A probe carries a sequence number, an `ack`
//!   flag (set once the sender has heard from the peer), the sender's
//!   [`Side`], and a MAC over them keyed by the punch key both sides derive
//!   from their two secrets (`docs/wire.md` §4): the secrets never travel in
//!   a probe, so a third party that sees probes cannot make one;
//! - a probe that does not verify (another attempt's key, a forgery, our
//!   own probe reflected back) is ignored and remembered, to explain a
//!   failure; a replayed sequence number is ignored;
//! - an authenticated, fresh probe from an address the peer did not list
//!   re-targets us to that address (the peer is behind an
//!   endpoint-dependent-mapping NAT), unless we already hear the peer at an
//!   address it listed;
//! - we succeed once we received a probe and either it carried `ack` or we
//!   sent [`PunchConfig::acks`] acks; we fail with a typed
//!   [`PunchFailure`] when [`PunchConfig::timeout`] passes.
//!
//! Polling order after every input: [`PunchCore::poll_transmit`] until
//! `None`, then [`PunchCore::outcome`], then [`PunchCore::poll_timeout`].
//! A driver that shares its socket with data decides with
//! [`PunchCore::classify`] whether a datagram is the punch's.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use crate::auth::{MAC_LEN, Side};
use crate::auth::{PunchKey, ReplayWindow};
use crate::rendezvous::{Filtering, Mapping, NatBehaviour, PrivRendezvousInfo, PubRendezvousInfo};

#[cfg(test)]
mod sim_tests;

#[cfg(test)]
mod wire_tests {
    use super::*;

    #[test]
    fn huge_durations_do_not_panic() {
        let (ours, _) = crate::gen_rendezvous_info(vec![]);
        let (_, theirs) = crate::gen_rendezvous_info(vec!["192.0.2.1:1".parse().unwrap()]);
        let cfg = PunchConfig {
            probe_interval: Duration::MAX,
            timeout: Duration::MAX,
            acks: 1,
        };
        let now = Instant::now();
        let mut core = PunchCore::new(ours, theirs, cfg, now);
        assert!(core.poll_transmit(now).is_some());
        assert!(core.poll_timeout().is_some_and(|t| t > now));
    }

    #[test]
    fn wire_md_example() {
        const WIRE_MD: &str = include_str!("../../../docs/wire.md");
        let (sender, receiver) = wire_example_infos();
        let probe = encode_probe(&sender.0, &receiver.1, true, 7, 3).unwrap();
        netlab::wire_doc::assert_hex(WIRE_MD, "punch-probe", &probe);
        let doc = netlab::wire_doc::hex(WIRE_MD, "punch-probe");
        assert_eq!(doc, probe);
        // The receiver accepts it, once: an ack from a listed address ends
        // the punch after our own ack.
        let now = Instant::now();
        let from: SocketAddr = "203.0.113.5:4000".parse().unwrap();
        let mut core = PunchCore::new(receiver.0, sender.1, PunchConfig::default(), now);
        assert_eq!(core.classify(&doc), Classified::Probe);
        assert!(core.handle_datagram(&doc, from, now));
        assert!(core.outcome().is_none());
        let (to, ack) = core.poll_transmit(now).unwrap();
        assert_eq!((to, ack.len()), (from, PROBE_LEN));
        assert!(core.outcome().is_some());
        assert!(core.handle_datagram(&doc, from, now));
    }

    /// The two sides of the wire.md example: secrets 00..0f and 10..1f.
    pub(super) fn wire_example_infos() -> (
        (PrivRendezvousInfo, PubRendezvousInfo),
        (PrivRendezvousInfo, PubRendezvousInfo),
    ) {
        let mk = |base: u8, ep: &str| {
            let (mut p, mut q) = crate::gen_rendezvous_info(vec![ep.parse().unwrap()]);
            p.secret = std::array::from_fn(|i| base + i as u8);
            q.secret = p.secret;
            (p, q)
        };
        (mk(0, "203.0.113.5:4000"), mk(0x10, "198.51.100.7:5000"))
    }
}

/// The four bytes that start every probe.
pub const PROBE_MAGIC: [u8; 4] = *b"CRHP";
/// The probe format version.
pub const PROBE_VERSION: u8 = 2;
/// The length of a probe: magic, version, flags, sequence number, echo,
/// MAC.
pub const PROBE_LEN: usize = 4 + 1 + 1 + 8 + 8 + MAC_LEN;
/// Bytes of a probe the MAC covers (all before it).
const SIGNED_LEN: usize = PROBE_LEN - MAC_LEN;
/// Our recent probes (sequence number, destination), to check echoes.
const SENT_LOG: usize = 256;
/// The label the probe key is derived with (`docs/wire.md` §4).
const PROBE_LABEL: &[u8] = b"crust udp punch probe v2";
/// Flag bits of a probe.
const FLAG_ACK: u8 = 0x01;
const FLAG_HIGH: u8 = 0x02;

/// Timing of a hole punch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PunchConfig {
    /// Time between two rounds of probes.
    pub probe_interval: Duration,
    /// The bound on the whole attempt.
    pub timeout: Duration,
    /// Acks to send before succeeding without having seen the peer's ack.
    pub acks: u32,
}

/// Chainable setters, one per field: start from `PunchConfig::default()`.
///
/// ```
/// let cfg = nat_traversal::PunchConfig::default().timeout(std::time::Duration::from_secs(3));
/// assert_eq!(cfg.timeout, std::time::Duration::from_secs(3));
/// ```
impl PunchConfig {
    /// Sets [`probe_interval`](PunchConfig::probe_interval).
    pub fn probe_interval(mut self, probe_interval: Duration) -> Self {
        self.probe_interval = probe_interval;
        self
    }

    /// Sets [`timeout`](PunchConfig::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`acks`](PunchConfig::acks).
    pub fn acks(mut self, acks: u32) -> Self {
        self.acks = acks;
        self
    }
}

impl Default for PunchConfig {
    /// 100 ms between probes, 8 s in all, 10 acks.
    ///
    /// Ten acks: a side that finishes on its acks alone (it never saw the
    /// peer's ack) leaves the peer stranded only if every one of them is
    /// lost; with 5 acks that happened about once in 40 runs in the lab at
    /// 20% loss per router, with 10 it is below one in 10,000.
    fn default() -> PunchConfig {
        PunchConfig {
            probe_interval: Duration::from_millis(100),
            timeout: Duration::from_secs(8),
            acks: 10,
        }
    }
}

/// Why two NATs could not be punched through, as a program can match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PunchFailureKind {
    /// Both sides are behind endpoint-dependent-mapping ("hard", symmetric)
    /// NATs: neither can predict the other's port.
    EndpointDependentBothSides,
    /// One side maps per destination and the other filters by address and
    /// port: the first side's new port is never let in.
    EndpointDependentVsRestrictedFiltering,
    /// Nothing came back from any peer endpoint, for no reason we know of.
    NoResponse,
    /// Probes arrived, but none verified with our punch key (a stale or
    /// foreign rendezvous, or forged probes).
    WrongSecret,
}

impl fmt::Display for PunchFailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PunchFailureKind::EndpointDependentBothSides => {
                "both sides are behind NATs with endpoint-dependent mapping"
            }
            PunchFailureKind::EndpointDependentVsRestrictedFiltering => {
                "one side's NAT maps per destination and the other's filters by address and port"
            }
            PunchFailureKind::NoResponse => "no probe came back from the peer",
            PunchFailureKind::WrongSecret => {
                "probes arrived, but none was authenticated by our rendezvous key"
            }
        })
    }
}

/// A failed hole punch: "cannot punch this NAT pair" and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PunchFailure {
    /// The reason.
    pub kind: PunchFailureKind,
    /// How long we tried.
    pub elapsed: Duration,
    /// Probes we sent.
    pub probes_sent: u32,
    /// Our NAT, as we learned it.
    pub ours: NatBehaviour,
    /// Their NAT, as they told us.
    pub theirs: NatBehaviour,
}

impl fmt::Display for PunchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot punch this NAT pair: {} (tried {:?}, {} probes sent; our NAT {:?}/{:?}, theirs {:?}/{:?})",
            self.kind,
            self.elapsed,
            self.probes_sent,
            self.ours.mapping,
            self.ours.filtering,
            self.theirs.mapping,
            self.theirs.filtering
        )
    }
}

impl std::error::Error for PunchFailure {}

impl From<PunchFailure> for std::io::Error {
    fn from(e: PunchFailure) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// A successful punch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Punched {
    /// The peer's address, as it reaches us.
    pub peer_addr: SocketAddr,
    /// How long it took.
    pub elapsed: Duration,
    /// Probes we sent.
    pub probes_sent: u32,
}

/// Encodes a probe from the holder of `sender` to the owner of
/// `receiver`: sequence number `seq` (from 1), `echo` (the receiver's
/// latest sequence number we received, 0 for none), with or without `ack`.
/// `None` when the two secrets are equal (no key can be derived).
pub fn encode_probe(
    sender: &PrivRendezvousInfo,
    receiver: &PubRendezvousInfo,
    ack: bool,
    seq: u64,
    echo: u64,
) -> Option<[u8; PROBE_LEN]> {
    let key = PunchKey::new(&sender.secret, &receiver.secret, PROBE_LABEL)?;
    Some(probe_bytes(&key, ack, seq, echo))
}

fn probe_bytes(key: &PunchKey, ack: bool, seq: u64, echo: u64) -> [u8; PROBE_LEN] {
    let mut p = [0u8; PROBE_LEN];
    p[..4].copy_from_slice(&PROBE_MAGIC);
    p[4] = PROBE_VERSION;
    p[5] = if ack { FLAG_ACK } else { 0 }
        | if key.side() == Side::High {
            FLAG_HIGH
        } else {
            0
        };
    p[6..14].copy_from_slice(&seq.to_be_bytes());
    p[14..22].copy_from_slice(&echo.to_be_bytes());
    let mac = key.mac(key.side(), &[&p[..SIGNED_LEN]]);
    p[SIGNED_LEN..].copy_from_slice(&mac);
    p
}

/// What a datagram is to a punch (see [`PunchCore::classify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classified {
    /// A probe of this protocol (authentic or not: the punch consumes it).
    Probe,
    /// Anything else: not the punch's.
    Other,
}

/// Whether `bytes` have a probe's shape: length, magic, version, no unknown
/// flag. Says nothing of its authenticity.
pub fn looks_like_probe(bytes: &[u8]) -> bool {
    bytes.len() == PROBE_LEN
        && bytes[..4] == PROBE_MAGIC
        && bytes[4] == PROBE_VERSION
        && bytes[5] & !(FLAG_ACK | FLAG_HIGH) == 0
}

/// A verified probe's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Probe {
    ack: bool,
    seq: u64,
    echo: u64,
}

/// Verifies a probe from the peer: its shape, the sender's side (the
/// peer's, so our own probe reflected back fails) and its MAC.
fn verify_probe(key: &PunchKey, bytes: &[u8]) -> Option<Probe> {
    if !looks_like_probe(bytes) {
        return None;
    }
    let side = if bytes[5] & FLAG_HIGH != 0 {
        Side::High
    } else {
        Side::Low
    };
    if side != key.side().other()
        || !key.verify(side, &[&bytes[..SIGNED_LEN]], &bytes[SIGNED_LEN..])
    {
        return None;
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(w)
    };
    Some(Probe {
        ack: bytes[5] & FLAG_ACK != 0,
        seq: word(6),
        echo: word(14),
    })
}

/// Why nothing came through between NATs `a` and `b` (when no wrong
/// secret was seen): both endpoint-dependent; one endpoint-dependent against
/// restricted filtering (an endpoint-independent mapping whose filtering was
/// not measured counts as restricted, as home routers filter); else no
/// response.
pub fn classify_failure(a: NatBehaviour, b: NatBehaviour) -> PunchFailureKind {
    let edm = |n: NatBehaviour| n.mapping == Mapping::EndpointDependent;
    let restricted = |n: NatBehaviour| {
        matches!(
            n.filtering,
            Filtering::AddressAndPortDependent | Filtering::AddressDependent
        ) || (n.mapping == Mapping::EndpointIndependent && n.filtering == Filtering::Unknown)
    };
    if edm(a) && edm(b) {
        PunchFailureKind::EndpointDependentBothSides
    } else if (edm(a) && restricted(b)) || (edm(b) && restricted(a)) {
        PunchFailureKind::EndpointDependentVsRestrictedFiltering
    } else {
        PunchFailureKind::NoResponse
    }
}

/// The most addresses we probe (the peer's list plus re-targets).
const MAX_TARGETS: usize = 24;

/// A source that sent us authentic probes.
#[derive(Debug)]
struct Candidate {
    addr: SocketAddr,
    /// Among the endpoints the peer listed.
    listed: bool,
    /// It echoed a probe we sent to this very address: a round trip that a
    /// third party copying the peer's probes from elsewhere cannot fake.
    proven: bool,
    /// It said it heard us (the ack flag).
    acked: bool,
    /// Replays are refused per source, so a copy raced ahead from another
    /// address does not use up the original's sequence number.
    seen: ReplayWindow,
    acks_sent: u32,
}

impl Candidate {
    /// Order of preference: proven, then listed.
    fn rank(&self) -> (bool, bool) {
        (self.proven, self.listed)
    }
}

/// One hole-punching attempt, sans IO.
#[derive(Debug)]
pub struct PunchCore {
    ours: PrivRendezvousInfo,
    theirs: PubRendezvousInfo,
    /// `None` when both secrets are equal: then nothing verifies.
    key: Option<PunchKey>,
    cfg: PunchConfig,
    start: Instant,
    deadline: Instant,
    targets: Vec<SocketAddr>,
    next_round: Instant,
    queue: Vec<(SocketAddr, bool)>,
    /// Sources of authentic probes, first seen first; at most MAX_TARGETS.
    cands: Vec<Candidate>,
    /// Index in `cands` of the one we answer as the peer.
    best: Option<usize>,
    next_seq: u64,
    /// The peer's latest sequence number we received (our echo).
    echo: u64,
    /// Our recent probes: (sequence number, destination).
    sent: std::collections::VecDeque<(u64, SocketAddr)>,
    probes_sent: u32,
    wrong_secret: bool,
    replays: u32,
    outcome: Option<Result<Punched, PunchFailure>>,
}

impl PunchCore {
    /// Starts an attempt at `now`.
    pub fn new(
        ours: PrivRendezvousInfo,
        theirs: PubRendezvousInfo,
        cfg: PunchConfig,
        now: Instant,
    ) -> PunchCore {
        let mut targets = theirs.endpoints.clone();
        targets.dedup();
        targets.truncate(MAX_TARGETS);
        let key = PunchKey::new(&ours.secret, &theirs.secret, PROBE_LABEL);
        if key.is_none() {
            log::warn!(
                "punch: the peer's rendezvous info carries our own secret; no probe can verify"
            );
        }
        PunchCore {
            deadline: crate::deadline_after(now, cfg.timeout),
            start: now,
            next_round: now,
            cfg,
            targets,
            key,
            queue: Vec::new(),
            cands: Vec::new(),
            best: None,
            next_seq: 1,
            echo: 0,
            sent: std::collections::VecDeque::new(),
            probes_sent: 0,
            wrong_secret: false,
            replays: 0,
            outcome: None,
            ours,
            theirs,
        }
    }

    /// Whether a datagram that arrived on the punched socket is the punch's
    /// (a probe, to give to [`handle_datagram`](Self::handle_datagram)) or
    /// not (the peer's data once it finished, or anything else: see
    /// [`handle_peer_data`](Self::handle_peer_data)).
    pub fn classify(&self, bytes: &[u8]) -> Classified {
        if looks_like_probe(bytes) {
            Classified::Probe
        } else {
            Classified::Other
        }
    }

    fn probe(&mut self, to: SocketAddr, ack: bool) -> Option<[u8; PROBE_LEN]> {
        let key = self.key.as_ref()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.sent.len() == SENT_LOG {
            self.sent.pop_front();
        }
        self.sent.push_back((seq, to));
        Some(probe_bytes(key, ack, seq, self.echo))
    }

    /// Whether the peer we answer can be trusted without a round trip: it
    /// is at an address it listed, or it is the only source that ever
    /// spoke for the peer (nobody copies its probes).
    fn best_uncontested(&self) -> bool {
        self.best
            .is_some_and(|b| self.cands[b].listed || self.cands.len() == 1)
    }

    /// The next datagram to send and where, if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.outcome.is_some() {
            return None;
        }
        if self.queue.is_empty() && now >= self.next_round {
            self.next_round = crate::deadline_after(now, self.cfg.probe_interval);
            match self.best {
                Some(b) => {
                    self.queue.push((self.cands[b].addr, true));
                    // Until the peer we answer is proven or uncontested,
                    // ack the other unlisted sources too, so the real peer
                    // among them can prove itself by echoing.
                    if !self.cands[b].proven && !self.best_uncontested() {
                        let others = self.cands.iter().enumerate();
                        let others = others.filter(|(i, c)| *i != b && !c.listed);
                        self.queue.extend(others.map(|(_, c)| (c.addr, true)));
                    }
                }
                None => self.queue.extend(self.targets.iter().map(|t| (*t, false))),
            }
            self.queue.reverse();
        }
        let (to, ack) = self.queue.pop()?;
        // With equal secrets nothing is sent: the attempt runs to its
        // deadline and fails as `WrongSecret`.
        let probe = self.probe(to, ack)?;
        self.probes_sent += 1;
        if ack {
            if let Some(c) = self.cands.iter_mut().find(|c| c.addr == to) {
                c.acks_sent += 1;
            }
            self.check_done(now);
        }
        Some((to, probe.to_vec()))
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        Some(self.next_round.min(self.deadline))
    }

    /// Time passes: fails the attempt at its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_none() && now >= self.deadline {
            self.outcome = Some(Err(self.failure(now)));
        }
    }

    /// A datagram from `from`. Returns whether it was a probe (authentic
    /// or not; see [`classify`](Self::classify)); anything else is left to
    /// the caller. Only an authenticated probe with a sequence number fresh
    /// from its source counts; others are ignored.
    pub fn handle_datagram(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) -> bool {
        if self.classify(bytes) != Classified::Probe {
            return false;
        }
        if self.outcome.is_some() {
            return true;
        }
        let Some(probe) = self.key.as_ref().and_then(|k| verify_probe(k, bytes)) else {
            log::debug!("punch: ignoring a probe from {from} that our key does not authenticate");
            self.wrong_secret = true;
            return true;
        };
        let i = match self.cands.iter().position(|c| c.addr == from) {
            Some(i) => i,
            None if self.cands.len() < MAX_TARGETS => {
                let listed = self.theirs.endpoints.contains(&from);
                if !listed {
                    log::debug!("punch: heard the peer at {from}, not among its endpoints");
                }
                self.cands.push(Candidate {
                    addr: from,
                    listed,
                    proven: false,
                    acked: false,
                    seen: ReplayWindow::default(),
                    acks_sent: 0,
                });
                self.cands.len() - 1
            }
            None => {
                log::debug!(
                    "punch: ignoring {from}: {MAX_TARGETS} sources already spoke for the peer"
                );
                return true;
            }
        };
        let c = &mut self.cands[i];
        if !c.seen.check_and_set(probe.seq) {
            self.replays += 1;
            log::debug!(
                "punch: ignoring a replayed probe (sequence {}) from {from}",
                probe.seq
            );
            return true;
        }
        if probe.echo != 0
            && self
                .sent
                .iter()
                .any(|&(s, to)| s == probe.echo && to == from)
        {
            c.proven = true;
        }
        c.acked |= probe.ack;
        self.echo = self.echo.max(probe.seq);
        let best = match self.best {
            Some(b) if self.cands[b].rank() >= self.cands[i].rank() => b,
            _ => i,
        };
        if self.best != Some(best) {
            // First contact, or a better source: answer it at once.
            log::debug!("punch: answering the peer at {from}");
            self.best = Some(best);
            self.queue.clear();
            self.queue.push((self.cands[best].addr, true));
        }
        self.check_done(now);
        true
    }

    /// Replayed probes ignored so far.
    pub fn replays(&self) -> u32 {
        self.replays
    }

    /// A datagram that is not a probe came from `from`. If `from` is the
    /// peer we answer (and no other source contests it), the peer has
    /// finished punching and sends its data: we are done too (the caller
    /// leaves that datagram for the user). Returns whether it was the peer.
    pub fn handle_peer_data(&mut self, from: SocketAddr, now: Instant) -> bool {
        let Some(b) = self.best else { return false };
        if self.outcome.is_some() || self.cands[b].addr != from {
            return false;
        }
        if !(self.cands[b].proven || self.best_uncontested()) {
            // Several unlisted sources spoke for the peer (someone copies
            // its probes): data proves nothing until a round trip does.
            return false;
        }
        self.finish(from, now);
        true
    }

    fn finish(&mut self, peer: SocketAddr, now: Instant) {
        self.outcome = Some(Ok(Punched {
            peer_addr: peer,
            elapsed: now - self.start,
            probes_sent: self.probes_sent,
        }));
        self.queue.clear();
    }

    fn check_done(&mut self, now: Instant) {
        let Some(b) = self.best else { return };
        if self.outcome.is_some() {
            return;
        }
        let c = &self.cands[b];
        // Done when the peer acked after a round trip with this address,
        // or, uncontested, after enough acks of ours (the peer may have
        // finished and gone quiet, its own acks lost).
        let acked = c.acked && c.acks_sent > 0 && (c.proven || self.best_uncontested());
        let fallback = self.best_uncontested() && c.acks_sent >= self.cfg.acks;
        if acked || fallback {
            self.finish(c.addr, now);
        }
    }

    fn failure(&self, now: Instant) -> PunchFailure {
        let (a, b) = (self.ours.nat, self.theirs.nat);
        let kind = if self.wrong_secret && self.cands.is_empty() {
            PunchFailureKind::WrongSecret
        } else {
            classify_failure(a, b)
        };
        PunchFailure {
            kind,
            elapsed: now - self.start,
            probes_sent: self.probes_sent,
            ours: a,
            theirs: b,
        }
    }

    /// The outcome, once there is one.
    pub fn outcome(&self) -> Option<&Result<Punched, PunchFailure>> {
        self.outcome.as_ref()
    }

    /// Probes sent so far.
    pub fn probes_sent(&self) -> u32 {
        self.probes_sent
    }
}
