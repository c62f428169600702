//! The rendezvous token table, sans IO: which pending rendezvous a stream
//! that reached one of our listeners belongs to.
//!
//! A rendezvous prepared by a [`ListenerSet`](crate::ListenerSet) registers
//! a random 16-byte [`Token`] here and publishes it in its rendezvous info
//! (`docs/wire.md` §5); the peer that dials one of our listeners carries it
//! in the encrypted handshake payload (§2.2). A token is good for one
//! stream: [`lookup`](TokenTable::lookup) consumes it, so a replay is
//! refused, and so is an expired or unknown one. The table holds at most
//! its bound of live tokens; a registration beyond it is refused
//! ([`TokenTableFull`]), never a live one evicted. Refusals are counted and
//! reported at most once per [`REPORT_EVERY`].
//!
//! Every call takes the time, so the table runs on virtual time in tests.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use transport::rendezvous::tokens::{Refusal, TokenTable};
//!
//! let t0 = Instant::now();
//! let mut table = TokenTable::new(4);
//! let bytes: [u8; 16] = rand::random();
//! let token = table.register(bytes, t0 + Duration::from_secs(12), "race 1").unwrap();
//! assert_eq!(table.lookup(&token, None, t0), Ok("race 1"));
//! assert_eq!(table.lookup(&token, None, t0), Err(Refusal::Replayed));
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::admission::RateLimited;

/// Length of a token.
pub const TOKEN_LEN: usize = 16;

/// The default bound on live tokens (pending rendezvous) of one
/// [`ListenerSet`](crate::ListenerSet).
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// How often refusals are reported (one log line covers them all).
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// A rendezvous token: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub [u8; TOKEN_LEN]);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell tokens apart in a log, not enough to forge one.
        write!(f, "Token({}…)", hex::encode(&self.0[..3]))
    }
}

impl From<[u8; TOKEN_LEN]> for Token {
    fn from(b: [u8; TOKEN_LEN]) -> Token {
        Token(b)
    }
}

/// A registration refused: the table holds its bound of live tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many pending rendezvous: {bound} tokens are live")]
pub struct TokenTableFull {
    /// The bound.
    pub bound: usize,
}

/// Why a stream's token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// No pending rendezvous has it (forged, or removed long ago).
    Unknown,
    /// Its rendezvous has expired.
    Expired,
    /// It was used already (or its rendezvous ended).
    Replayed,
    /// The stream proved another key than the one the rendezvous expects
    /// (the token stays good for the right peer).
    WrongKey,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Unknown => "unknown token",
            Refusal::Expired => "expired token",
            Refusal::Replayed => "token used already",
            Refusal::WrongKey => "token presented by another key than expected",
        })
    }
}

struct Entry<T> {
    expires: Instant,
    expected: Option<[u8; 32]>,
    value: T,
}

/// Refusal counts, by reason, since the table was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusalCounts {
    /// [`Refusal::Unknown`].
    pub unknown: u64,
    /// [`Refusal::Expired`].
    pub expired: u64,
    /// [`Refusal::Replayed`].
    pub replayed: u64,
    /// [`Refusal::WrongKey`].
    pub wrong_key: u64,
    /// Registrations refused ([`TokenTableFull`]).
    pub full: u64,
}

/// The token table (see the [module docs](self)). `T` is what a lookup
/// hands back: the way to the pending rendezvous.
pub struct TokenTable<T> {
    bound: usize,
    live: HashMap<Token, Entry<T>>,
    /// Tokens used, removed or expired, until their expiry, so a replay is
    /// told from a forgery; at most `bound` of them (the oldest go first:
    /// they are refused either way).
    spent: HashMap<Token, (Instant, Refusal)>,
    spent_order: VecDeque<Token>,
    counts: RefusalCounts,
    limiter: RateLimited,
}

impl<T> fmt::Debug for TokenTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTable")
            .field("bound", &self.bound)
            .field("live", &self.live.len())
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl<T> TokenTable<T> {
    /// A table of at most `bound` live tokens (at least 1).
    pub fn new(bound: usize) -> TokenTable<T> {
        TokenTable {
            bound: bound.max(1),
            live: HashMap::new(),
            spent: HashMap::new(),
            spent_order: VecDeque::new(),
            counts: RefusalCounts::default(),
            limiter: RateLimited::new(REPORT_EVERY),
        }
    }

    /// The bound on live tokens.
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// How many tokens are live (expired ones count until a call with a
    /// later time prunes them).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no token is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Refusals so far, by reason.
    pub fn refusals(&self) -> RefusalCounts {
        self.counts
    }

    /// Registers `token` (random bytes from the caller), live until
    /// `expires`, handing back `value` to the stream that presents it.
    ///
    /// # Errors
    ///
    /// [`TokenTableFull`] when `bound` tokens are live after pruning the
    /// expired ones (as of `expires`' registration time: call
    /// [`handle_timeout`](Self::handle_timeout) to prune).
    pub fn register(
        &mut self,
        token: impl Into<Token>,
        expires: Instant,
        value: T,
    ) -> Result<Token, TokenTableFull> {
        let token = token.into();
        if self.live.len() >= self.bound {
            self.counts.full += 1;
            return Err(TokenTableFull { bound: self.bound });
        }
        self.live.insert(
            token,
            Entry {
                expires,
                expected: None,
                value,
            },
        );
        Ok(token)
    }

    /// The rendezvous learned its peer's key (and its own deadline): from
    /// now on only a stream proving `key` may use `token`, until `expires`.
    /// `false` if the token is not live (used, removed, or expired by
    /// `now`: an expired token is not revived).
    pub fn expect(&mut self, token: &Token, key: [u8; 32], expires: Instant, now: Instant) -> bool {
        match self.live.get_mut(token) {
            Some(e) if now >= e.expires => {
                self.live.remove(token);
                self.remember(*token, now + REPORT_EVERY, Refusal::Expired);
                false
            }
            Some(e) => {
                e.expected = Some(key);
                e.expires = expires;
                true
            }
            None => false,
        }
    }

    /// A stream presented `token`, having proven `peer_key` (if known):
    /// hands back its rendezvous' value and consumes the token, or says
    /// why not (counted).
    ///
    /// # Errors
    ///
    /// [`Refusal`]: unknown, expired, used already, or the wrong key (then
    /// the token stays live).
    pub fn lookup(
        &mut self,
        token: &Token,
        peer_key: Option<&[u8; 32]>,
        now: Instant,
    ) -> Result<T, Refusal> {
        let state = self.live.get(token).map(|e| (e.expires, e.expected));
        let refusal = match state {
            Some((expires, _)) if now >= expires => {
                self.live.remove(token);
                self.remember(*token, now + REPORT_EVERY, Refusal::Expired);
                Refusal::Expired
            }
            Some((_, Some(k))) if Some(&k) != peer_key => Refusal::WrongKey,
            Some((expires, _)) => {
                self.remember(*token, expires.max(now + REPORT_EVERY), Refusal::Replayed);
                match self.live.remove(token) {
                    Some(e) => return Ok(e.value),
                    None => Refusal::Unknown,
                }
            }
            None => match self.spent.get(token) {
                Some((_, why)) => *why,
                None => Refusal::Unknown,
            },
        };
        match refusal {
            Refusal::Unknown => self.counts.unknown += 1,
            Refusal::Expired => self.counts.expired += 1,
            Refusal::Replayed => self.counts.replayed += 1,
            Refusal::WrongKey => self.counts.wrong_key += 1,
        }
        Err(refusal)
    }

    /// The rendezvous ended: its token is no longer good (a later stream
    /// with it is refused as used). Hands back its value if it was live.
    pub fn remove(&mut self, token: &Token, now: Instant) -> Option<T> {
        let e = self.live.remove(token)?;
        self.remember(*token, e.expires.max(now) + REPORT_EVERY, Refusal::Replayed);
        Some(e.value)
    }

    /// Counts one refusal for the log: `Some(line)` when a line is due (at
    /// most once per [`REPORT_EVERY`]), covering the refusals since the
    /// last line.
    pub fn report(
        &mut self,
        refusal: Refusal,
        peer: impl fmt::Display,
        now: Instant,
    ) -> Option<String> {
        self.limiter.record(now).map(|n| {
            format!(
                "refused a rendezvous stream from {peer}: {refusal} ({n} refused since the last report; \
                 totals {:?})",
                self.counts
            )
        })
    }

    /// When the next live token expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.live.values().map(|e| e.expires).min()
    }

    /// Time passes: expired tokens leave the table (a later stream with one
    /// is refused as used or unknown), and so do spent ones past their
    /// expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .live
            .iter()
            .filter(|(_, e)| now >= e.expires)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            self.live.remove(&t);
            self.remember(t, now + REPORT_EVERY, Refusal::Expired);
        }
        while let Some(t) = self.spent_order.front() {
            match self.spent.get(t) {
                Some((until, _)) if *until > now => break,
                _ => {
                    self.spent.remove(t);
                    self.spent_order.pop_front();
                }
            }
        }
    }

    fn remember(&mut self, token: Token, until: Instant, why: Refusal) {
        if self.spent.insert(token, (until, why)).is_none() {
            self.spent_order.push_back(token);
        }
        while self.spent_order.len() > self.bound {
            if let Some(old) = self.spent_order.pop_front() {
                self.spent.remove(&old);
            }
        }
    }
}

/// The handshake payload field type of a listener token (`docs/wire.md`
/// §2.2).
pub(crate) const PAYLOAD_TOKEN: u8 = 0x01;

/// The handshake payload that carries `token`: `01 10 ‖ token`.
pub(crate) fn token_payload(token: &Token) -> [u8; 2 + TOKEN_LEN] {
    let mut p = [0u8; 2 + TOKEN_LEN];
    p[0] = PAYLOAD_TOKEN;
    p[1] = TOKEN_LEN as u8;
    p[2..].copy_from_slice(&token.0);
    p
}

/// The token in a handshake payload, if it has a well-formed token field
/// (unknown fields are skipped; a malformed list counts as no token).
pub(crate) fn payload_token(mut p: &[u8]) -> Option<Token> {
    while let [t, len, rest @ ..] = p {
        let len = usize::from(*len);
        if rest.len() < len {
            return None;
        }
        let (v, next) = rest.split_at(len);
        if *t == PAYLOAD_TOKEN {
            return <[u8; TOKEN_LEN]>::try_from(v).ok().map(Token);
        }
        p = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(b: u8) -> [u8; TOKEN_LEN] {
        [b; TOKEN_LEN]
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn payload_token_round_trip_and_malformed_lists() {
        let t = Token(tok(5));
        assert_eq!(payload_token(&token_payload(&t)), Some(t));
        assert_eq!(payload_token(&[]), None);
        // An unknown field first is skipped.
        let mut p = vec![0x7f, 2, 9, 9];
        p.extend_from_slice(&token_payload(&t));
        assert_eq!(payload_token(&p), Some(t));
        // A short token, or a field longer than the rest: no token.
        assert_eq!(payload_token(&[0x01, 3, 1, 2, 3]), None);
        assert_eq!(payload_token(&[0x01, 16, 1, 2]), None);
        assert_eq!(payload_token(&[0x01]), None);
    }

    #[test]
    fn one_use_then_refused_as_replayed() {
        let t0 = Instant::now();
        let mut t = TokenTable::new(4);
        let a = t.register(tok(1), t0 + 12 * S, 'a').unwrap();
        assert_eq!(t.lookup(&a, None, t0 + S), Ok('a'));
        assert_eq!(t.lookup(&a, None, t0 + 2 * S), Err(Refusal::Replayed));
        assert_eq!(t.lookup(&Token(tok(9)), None, t0), Err(Refusal::Unknown));
        assert_eq!(t.refusals().replayed, 1);
        assert_eq!(t.refusals().unknown, 1);
        assert!(t.is_empty());
    }

    #[test]
    fn expired_tokens_are_refused_and_pruned() {
        let t0 = Instant::now();
        let mut t = TokenTable::new(4);
        let a = t.register(tok(1), t0 + 12 * S, ()).unwrap();
        let b = t.register(tok(2), t0 + 20 * S, ()).unwrap();
        assert_eq!(t.poll_timeout(), Some(t0 + 12 * S));
        assert_eq!(t.lookup(&a, None, t0 + 12 * S), Err(Refusal::Expired));
        t.handle_timeout(t0 + 20 * S);
        assert!(t.is_empty());
        // Pruned, but still remembered a while: told from a forgery.
        assert_eq!(t.lookup(&b, None, t0 + 21 * S), Err(Refusal::Expired));
        t.handle_timeout(t0 + 60 * S);
        assert_eq!(t.lookup(&b, None, t0 + 61 * S), Err(Refusal::Unknown));
        assert_eq!(t.refusals().expired, 2);
    }

    #[test]
    fn the_bound_refuses_newcomers_never_evicts_the_live() {
        let t0 = Instant::now();
        let mut t = TokenTable::new(2);
        let a = t.register(tok(1), t0 + 12 * S, 'a').unwrap();
        let b = t.register(tok(2), t0 + 12 * S, 'b').unwrap();
        assert_eq!(
            t.register(tok(3), t0 + 12 * S, 'c'),
            Err(TokenTableFull { bound: 2 })
        );
        assert_eq!(t.refusals().full, 1);
        assert_eq!(t.lookup(&a, None, t0), Ok('a'));
        assert_eq!(t.lookup(&b, None, t0), Ok('b'));
        // Room again once used, or once expired and pruned.
        t.register(tok(3), t0 + 12 * S, 'c').unwrap();
        t.register(tok(4), t0 + 13 * S, 'd').unwrap();
        assert!(t.register(tok(5), t0 + 20 * S, 'e').is_err());
        t.handle_timeout(t0 + 13 * S);
        t.register(tok(5), t0 + 20 * S, 'e').unwrap();
        // The memory of spent tokens is bounded too.
        for i in 10..100 {
            t.remember(Token(tok(i)), t0 + 100 * S, Refusal::Replayed);
        }
        assert!(t.spent.len() <= 2 && t.spent_order.len() <= 2);
    }

    #[test]
    fn a_wrong_key_does_not_consume_the_token() {
        let t0 = Instant::now();
        let mut t = TokenTable::new(4);
        let a = t.register(tok(1), t0 + 100 * S, 'a').unwrap();
        assert!(t.expect(&a, [7; 32], t0 + 12 * S, t0));
        assert_eq!(t.lookup(&a, Some(&[8; 32]), t0), Err(Refusal::WrongKey));
        assert_eq!(t.lookup(&a, None, t0), Err(Refusal::WrongKey));
        assert_eq!(t.lookup(&a, Some(&[7; 32]), t0), Ok('a'));
        // The deadline moved with expect().
        let b = t.register(tok(2), t0 + 100 * S, 'b').unwrap();
        t.expect(&b, [7; 32], t0 + 12 * S, t0);
        assert_eq!(
            t.lookup(&b, Some(&[7; 32]), t0 + 12 * S),
            Err(Refusal::Expired)
        );
        // An expired token is not revived by expect().
        let c = t.register(tok(3), t0 + S, 'c').unwrap();
        assert!(!t.expect(&c, [7; 32], t0 + 100 * S, t0 + 2 * S));
        assert_eq!(
            t.lookup(&c, Some(&[7; 32]), t0 + 3 * S),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn removed_tokens_are_refused_and_reports_are_rate_limited() {
        let t0 = Instant::now();
        let mut t = TokenTable::new(4);
        let a = t.register(tok(1), t0 + 12 * S, 'a').unwrap();
        assert_eq!(t.remove(&a, t0), Some('a'));
        assert_eq!(t.lookup(&a, None, t0 + S), Err(Refusal::Replayed));
        let first = t.report(Refusal::Replayed, "192.0.2.1:9", t0 + S);
        assert!(first.unwrap().contains("token used already (1 refused"));
        for i in 0..1000 {
            assert!(
                t.report(Refusal::Unknown, "x", t0 + S + Duration::from_millis(i))
                    .is_none()
            );
        }
        let next = t
            .report(Refusal::Unknown, "x", t0 + S + REPORT_EVERY)
            .unwrap();
        assert!(next.contains("(1001 refused"), "{next}");
    }
}
