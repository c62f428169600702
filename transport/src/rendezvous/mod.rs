//! Rendezvous connections: an encrypted stream to a peer behind a NAT.
//!
//! ```text
//! let prep = Rendezvous::prepare(&mapping_context, &identity)?;  // maps one UDP and one TCP socket
//! send(prep.info());                                             // to the peer, by any means
//! let stream = prep.connect(&their_info, timeout)?;             // punches, races, proves keys
//! ```
//!
//! [`Rendezvous::connect`] runs two attempts at once: a UDP hole punch
//! followed by a uTP connection in rendezvous mode over the punched socket,
//! and a TCP hole punch. One side is the **initiator**: the one whose
//! rendezvous secret is the lower (both infos carry both secrets, so the
//! roles agree even when a key in an info is forged; ordering by static
//! key would let a forged key give both sides the same role and stall). It
//! sends the uTP SYN and the Noise IK message 1, and must prove the key in
//! the peer's info; the other side checks the initiator's key is the one
//! the info named: a peer presenting any other key fails that attempt. The
//! initiator then **selects** the first
//! attempt to finish its handshake by writing one encrypted byte `1` on it
//! (`0` on an attempt finished later); the other side keeps the stream on
//! which it reads `1`. So both ends keep the same stream; the others are
//! closed and their sockets released.
//!
//! A rendezvous prepared by a [`ListenerSet`](crate::ListenerSet) also
//! publishes the set's listener endpoints with a one-use token
//! ([`tokens`]); a peer whose info lists them dials them directly as a
//! third attempt ([`Attempt::TheirListener`]), carrying the token in its
//! encrypted handshake, and the set hands that stream to the pending
//! rendezvous ([`Attempt::OurListener`]), never to `accept`. The stream
//! must prove the key in the info like any other; its path is
//! [`Path::Mapped`]. The selection works as on the punched carriers; when
//! the dialler selects, the listener's side first writes one encrypted
//! byte `1` ("taken"), so a stream whose token was refused is never
//! selected.
//!
//! When no attempt works, [`Error::RendezvousFailed`](crate::Error::RendezvousFailed) lists each attempt
//! with why ([`AttemptFailure`]), so a caller can decide to relay.
//!
//! The decisions (who initiates, which attempt wins, when to give up) are
//! the sans-IO [`RaceCore`]; [`aio`] drives it.

use std::fmt;
use std::time::{Duration, Instant};

use crate::identity::PublicKey;
use crate::path::Path;

pub mod aio;
mod blocking;
pub mod tokens;

pub use blocking::Rendezvous;

/// The default bound on [`Rendezvous::connect`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a passive attempt ([`Attempt::OurListener`]) still waits once
/// every active attempt has failed: the peer's dial to our listener may be
/// under way (bounded by the deadline as well).
pub const PASSIVE_GRACE: Duration = Duration::from_secs(2);

/// One of the attempts a rendezvous races.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Attempt {
    /// UDP hole punch, then uTP in rendezvous mode.
    UdpPunch,
    /// TCP hole punch (simultaneous open).
    TcpPunch,
    /// We dial one of the peer's listener endpoints (its info lists them,
    /// with a token), carrying the token in the handshake.
    TheirListener,
    /// The peer dials one of our listeners (a rendezvous prepared by a
    /// [`ListenerSet`](crate::ListenerSet)); the listener hands the stream
    /// over by its token. Passive: see [`RaceCore`].
    OurListener,
}

impl Attempt {
    /// The path a stream of this attempt takes over `protocol` (the
    /// punches' protocol is fixed: uTP for [`UdpPunch`](Self::UdpPunch),
    /// TCP for [`TcpPunch`](Self::TcpPunch)).
    pub fn path(self, protocol: crate::Protocol) -> Path {
        match self {
            Attempt::UdpPunch => Path::HolePunched(crate::Protocol::Utp),
            Attempt::TcpPunch => Path::HolePunched(crate::Protocol::Tcp),
            Attempt::TheirListener | Attempt::OurListener => Path::Mapped(protocol),
        }
    }

    /// Whether the attempt only waits for the peer (nothing of ours can
    /// make it fail early): [`OurListener`](Self::OurListener).
    pub fn is_passive(self) -> bool {
        matches!(self, Attempt::OurListener)
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attempt::UdpPunch => "UDP punch + uTP",
            Attempt::TcpPunch => "TCP punch",
            Attempt::TheirListener => "dial to the peer's listener",
            Attempt::OurListener => "the peer's dial to our listener",
        })
    }
}

/// Why one attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptFailure {
    /// The hole punch failed: the typed reason from `nat_traversal`.
    Punch(nat_traversal::PunchFailure),
    /// The peer on this path holds another key than its info named.
    WrongKey {
        /// The key the info named.
        expected: PublicKey,
    },
    /// The path did not finish before the deadline.
    TimedOut,
    /// The other side selected another attempt.
    NotSelected,
    /// Anything else (a socket error, a broken handshake), in words.
    Other(String),
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptFailure::Punch(p) => write!(f, "{p}"),
            AttemptFailure::WrongKey { expected } => {
                write!(f, "the peer does not hold the key {expected}")
            }
            AttemptFailure::TimedOut => f.write_str("timed out"),
            AttemptFailure::NotSelected => f.write_str("the peer selected another path"),
            AttemptFailure::Other(s) => f.write_str(s),
        }
    }
}

/// A rendezvous in which no attempt gave a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendezvousFailure {
    /// Each attempt and why it failed.
    pub attempts: Vec<(Attempt, AttemptFailure)>,
    /// How long we tried.
    pub elapsed: Duration,
}

impl RendezvousFailure {
    /// Whether every attempt failed because the NAT pair cannot be punched
    /// (a relay is the way on).
    pub fn cannot_punch(&self) -> bool {
        !self.attempts.is_empty()
            && self
                .attempts
                .iter()
                .all(|(_, f)| matches!(f, AttemptFailure::Punch(_) | AttemptFailure::TimedOut))
    }
}

impl fmt::Display for RendezvousFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rendezvous failed after {:?}:", self.elapsed)?;
        for (i, (a, why)) in self.attempts.iter().enumerate() {
            write!(f, "{} {a}: {why}", if i == 0 { "" } else { ";" })?;
        }
        Ok(())
    }
}

impl std::error::Error for RendezvousFailure {}

/// What the selecting side does with an attempt that finished its
/// handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Select it: write the selection byte 1 and keep it.
    Select,
    /// Refuse it: write 0 and close it (another was selected).
    Refuse,
}

/// The decisions of one rendezvous, sans IO: the roles from the two keys,
/// which attempt wins, and the typed failure (see the module docs).
///
/// Rules, for every attempt alike: the selecting side selects the first to
/// finish its handshake with the right key and refuses the later ones;
/// the other side keeps the one the selector selected; the deadline fails
/// what still runs. A passive attempt ([`Attempt::is_passive`]: the
/// peer's dial to our listener) cannot fail by itself, so once every
/// active attempt has failed it waits at most [`PASSIVE_GRACE`] more.
#[derive(Debug)]
pub struct RaceCore {
    selector: bool,
    start: Instant,
    deadline: Instant,
    /// Set once only passive attempts run: when they give up.
    passive_until: Option<Instant>,
    running: Vec<Attempt>,
    failures: Vec<(Attempt, AttemptFailure)>,
    winner: Option<Attempt>,
    done: bool,
}

impl RaceCore {
    /// A race of `attempts` between our rendezvous secret and theirs, from
    /// `now`, bounded by `timeout`.
    pub fn new(
        ours: &[u8],
        theirs: &[u8],
        attempts: &[Attempt],
        now: Instant,
        timeout: Duration,
    ) -> RaceCore {
        RaceCore {
            selector: Self::initiates(ours, theirs),
            start: now,
            deadline: now
                .checked_add(timeout)
                .unwrap_or(now + Duration::from_secs(86_400)),
            running: attempts.to_vec(),
            passive_until: None,
            failures: Vec::new(),
            winner: None,
            done: false,
        }
    }

    /// Whether the holder of the secret `ours` initiates (sends the uTP SYN
    /// and the Noise message 1) and selects: the lower secret.
    pub fn initiates(ours: &[u8], theirs: &[u8]) -> bool {
        ours < theirs
    }

    /// Whether we select the winner.
    pub fn is_selector(&self) -> bool {
        self.selector
    }

    /// An attempt finished its handshake with the right key. On the
    /// selecting side: select it if it is the first, else refuse it. On
    /// the other side the stream waits for the selection byte.
    pub fn handle_established(&mut self, a: Attempt) -> Selection {
        if self.selector && self.winner.is_none() && !self.done {
            self.winner = Some(a);
            self.done = true;
            Selection::Select
        } else {
            Selection::Refuse
        }
    }

    /// The other side selected attempt `a` (we read 1 on it).
    pub fn handle_selected(&mut self, a: Attempt) -> bool {
        if self.done {
            return false;
        }
        self.winner = Some(a);
        self.done = true;
        true
    }

    /// Attempt `a` failed (the selected one too: its selection could not
    /// be written; then the race goes on with the others), at `now`.
    pub fn handle_failed_at(&mut self, a: Attempt, why: AttemptFailure, now: Instant) {
        self.handle_failed(a, why);
        if !self.done && self.passive_until.is_none() && self.running.iter().all(|x| x.is_passive())
        {
            self.passive_until = Some(now + PASSIVE_GRACE);
        }
    }

    /// Attempt `a` failed, as [`handle_failed_at`](Self::handle_failed_at)
    /// without the time (then the passive grace does not start).
    pub fn handle_failed(&mut self, a: Attempt, why: AttemptFailure) {
        if let Some(i) = self.running.iter().position(|x| *x == a) {
            self.running.remove(i);
            self.failures.push((a, why));
        }
        if self.winner == Some(a) {
            self.winner = None;
            self.done = false;
        }
        if self.running.is_empty() && self.winner.is_none() {
            self.done = true;
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let end = match self.passive_until {
            Some(p) => p.min(self.deadline),
            None => self.deadline,
        };
        (!self.done).then_some(end)
    }

    /// Time passes: at the deadline every attempt still running fails as
    /// timed out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.done && self.poll_timeout().is_some_and(|t| now >= t) {
            for a in std::mem::take(&mut self.running) {
                self.failures.push((a, AttemptFailure::TimedOut));
            }
            self.done = true;
        }
    }

    /// The outcome once decided: the winning attempt, or the failure.
    pub fn outcome(&self, now: Instant) -> Option<Result<Attempt, RendezvousFailure>> {
        if !self.done {
            return None;
        }
        Some(self.winner.ok_or_else(|| RendezvousFailure {
            attempts: self.failures.clone(),
            elapsed: now.saturating_duration_since(self.start),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ([u8; 16], [u8; 16]) {
        ([1; 16], [2; 16])
    }

    const BOTH: [Attempt; 2] = [Attempt::UdpPunch, Attempt::TcpPunch];

    #[test]
    fn the_lower_key_selects_the_first_established() {
        let (lo, hi) = keys();
        let t = Instant::now();
        let mut s = RaceCore::new(&lo, &hi, &BOTH, t, DEFAULT_TIMEOUT);
        let mut o = RaceCore::new(&hi, &lo, &BOTH, t, DEFAULT_TIMEOUT);
        assert!(s.is_selector() && !o.is_selector());
        assert_eq!(s.handle_established(Attempt::TcpPunch), Selection::Select);
        assert_eq!(s.handle_established(Attempt::UdpPunch), Selection::Refuse);
        assert_eq!(s.outcome(t), Some(Ok(Attempt::TcpPunch)));
        // The other side established both, but keeps the selected one.
        assert_eq!(o.handle_established(Attempt::UdpPunch), Selection::Refuse);
        assert!(o.outcome(t).is_none());
        assert!(o.handle_selected(Attempt::TcpPunch));
        assert!(!o.handle_selected(Attempt::UdpPunch));
        assert_eq!(o.outcome(t), Some(Ok(Attempt::TcpPunch)));
    }

    #[test]
    fn failures_are_listed_per_attempt() {
        let (lo, hi) = keys();
        let t = Instant::now();
        let mut c = RaceCore::new(&lo, &hi, &BOTH, t, DEFAULT_TIMEOUT);
        c.handle_failed(
            Attempt::TcpPunch,
            AttemptFailure::WrongKey {
                expected: PublicKey::from_bytes([2; 32]),
            },
        );
        assert!(c.outcome(t).is_none());
        c.handle_failed(Attempt::UdpPunch, AttemptFailure::Other("x".into()));
        let f = c.outcome(t + Duration::from_secs(1)).unwrap().unwrap_err();
        assert_eq!(f.attempts.len(), 2);
        assert!(!f.cannot_punch());
        assert!(
            f.to_string()
                .contains("TCP punch: the peer does not hold the key"),
            "{f}"
        );
    }

    #[test]
    fn the_deadline_fails_what_still_runs() {
        let (lo, hi) = keys();
        let t = Instant::now();
        let mut c = RaceCore::new(&lo, &hi, &BOTH, t, Duration::from_secs(3));
        assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(3)));
        c.handle_timeout(t + Duration::from_secs(2));
        assert!(c.outcome(t).is_none());
        c.handle_timeout(t + Duration::from_secs(3));
        let f = c.outcome(t + Duration::from_secs(3)).unwrap().unwrap_err();
        assert_eq!(
            f.attempts,
            vec![
                (Attempt::UdpPunch, AttemptFailure::TimedOut),
                (Attempt::TcpPunch, AttemptFailure::TimedOut)
            ]
        );
        assert!(f.cannot_punch());
        assert_eq!(f.elapsed, Duration::from_secs(3));
        // Nothing is selected after the end.
        assert_eq!(c.handle_established(Attempt::UdpPunch), Selection::Refuse);
    }

    const ALL: [Attempt; 4] = [
        Attempt::UdpPunch,
        Attempt::TcpPunch,
        Attempt::TheirListener,
        Attempt::OurListener,
    ];

    #[test]
    fn a_listener_stream_wins_like_any_other() {
        let (lo, hi) = keys();
        let t = Instant::now();
        // We select: the peer's dial to our listener finished first.
        let mut s = RaceCore::new(&lo, &hi, &ALL, t, DEFAULT_TIMEOUT);
        assert_eq!(
            s.handle_established(Attempt::OurListener),
            Selection::Select
        );
        assert_eq!(s.handle_established(Attempt::TcpPunch), Selection::Refuse);
        assert_eq!(s.outcome(t), Some(Ok(Attempt::OurListener)));
        // The peer selects: our dial to its listener is the one it chose.
        let mut o = RaceCore::new(&hi, &lo, &ALL, t, DEFAULT_TIMEOUT);
        o.handle_failed_at(Attempt::UdpPunch, AttemptFailure::TimedOut, t);
        assert!(o.handle_selected(Attempt::TheirListener));
        assert_eq!(o.outcome(t), Some(Ok(Attempt::TheirListener)));
        assert_eq!(
            Attempt::TheirListener.path(crate::Protocol::Utp),
            Path::Mapped(crate::Protocol::Utp)
        );
    }

    #[test]
    fn a_passive_attempt_alone_waits_its_grace_not_the_deadline() {
        let (lo, hi) = keys();
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = RaceCore::new(&lo, &hi, &ALL, t, DEFAULT_TIMEOUT);
        assert!(!Attempt::TheirListener.is_passive() && Attempt::OurListener.is_passive());
        c.handle_failed_at(Attempt::UdpPunch, AttemptFailure::Other("u".into()), t + s);
        c.handle_failed_at(
            Attempt::TcpPunch,
            AttemptFailure::Other("t".into()),
            t + 2 * s,
        );
        assert_eq!(c.poll_timeout(), Some(t + DEFAULT_TIMEOUT));
        c.handle_failed_at(
            Attempt::TheirListener,
            AttemptFailure::Other("l".into()),
            t + 3 * s,
        );
        // Only the passive one is left: it has PASSIVE_GRACE.
        assert_eq!(c.poll_timeout(), Some(t + 3 * s + PASSIVE_GRACE));
        c.handle_timeout(t + 4 * s);
        assert!(c.outcome(t + 4 * s).is_none());
        // The peer's dial arrives within the grace: it still wins.
        let mut w = RaceCore::new(&lo, &hi, &ALL[..], t, DEFAULT_TIMEOUT);
        for a in &ALL[..3] {
            w.handle_failed_at(*a, AttemptFailure::TimedOut, t + s);
        }
        assert_eq!(
            w.handle_established(Attempt::OurListener),
            Selection::Select
        );
        assert_eq!(w.outcome(t + 2 * s), Some(Ok(Attempt::OurListener)));
        // Past the grace the race fails, listing every attempt.
        c.handle_timeout(t + 3 * s + PASSIVE_GRACE);
        let f = c.outcome(t + 5 * s).unwrap().unwrap_err();
        assert_eq!(f.attempts.len(), 4);
        assert_eq!(
            f.attempts[3],
            (Attempt::OurListener, AttemptFailure::TimedOut)
        );
        // The grace never outlasts the deadline.
        let mut d = RaceCore::new(&lo, &hi, &ALL, t, Duration::from_secs(3));
        for a in &ALL[..3] {
            d.handle_failed_at(*a, AttemptFailure::TimedOut, t + 2 * s);
        }
        assert_eq!(d.poll_timeout(), Some(t + 3 * s));
        // A race without a passive attempt ends when the last one fails.
        let mut p = RaceCore::new(&lo, &hi, &ALL[..3], t, DEFAULT_TIMEOUT);
        for a in &ALL[..3] {
            p.handle_failed_at(*a, AttemptFailure::TimedOut, t + s);
        }
        assert!(p.outcome(t + s).unwrap().is_err());
    }

    #[test]
    fn a_selection_that_cannot_be_written_lets_the_race_go_on() {
        let (lo, hi) = keys();
        let t = Instant::now();
        let mut c = RaceCore::new(&lo, &hi, &BOTH, t, DEFAULT_TIMEOUT);
        assert_eq!(c.handle_established(Attempt::UdpPunch), Selection::Select);
        c.handle_failed(
            Attempt::UdpPunch,
            AttemptFailure::Other("broken pipe".into()),
        );
        assert!(c.outcome(t).is_none());
        assert_eq!(c.handle_established(Attempt::TcpPunch), Selection::Select);
        assert_eq!(c.outcome(t), Some(Ok(Attempt::TcpPunch)));
    }
}
