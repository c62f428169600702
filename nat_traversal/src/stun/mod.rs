//! STUN Binding (RFC 8489) as sans-IO state machines: a client transaction
//! with a retransmission schedule and a bounded total wait, and a stateless
//! responder (with the RFC 5780 CHANGE-REQUEST / OTHER-ADDRESS behaviour
//! when the server has an alternate address).
//!
//! No sockets and no clock here: every call takes `now`. The tokio drivers
//! are in [`crate::aio`].

pub mod codec;
pub mod responder;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use codec::{Class, DecodeError, Message, TransactionId};
pub use responder::{RateLimitConfig, Reply, Responder, ResponderConfig, ResponderStats};

/// Timing of a STUN transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StunConfig {
    /// The first retransmission timeout; it doubles after every send
    /// (RFC 8489 §6.2.1) up to [`max_rto`](Self::max_rto).
    pub rto: Duration,
    /// The largest interval between two sends.
    pub max_rto: Duration,
    /// The most requests sent in one transaction.
    pub max_transmits: u32,
    /// The bound on the whole transaction: it fails with
    /// [`StunError::TimedOut`] when this has passed without an answer.
    pub timeout: Duration,
}

/// Chainable setters, one per field: start from `StunConfig::default()`.
///
/// ```
/// let cfg = nat_traversal::stun::StunConfig::default().max_transmits(3);
/// assert_eq!(cfg.max_transmits, 3);
/// ```
impl StunConfig {
    /// Sets [`rto`](StunConfig::rto).
    pub fn rto(mut self, rto: Duration) -> Self {
        self.rto = rto;
        self
    }

    /// Sets [`max_rto`](StunConfig::max_rto).
    pub fn max_rto(mut self, max_rto: Duration) -> Self {
        self.max_rto = max_rto;
        self
    }

    /// Sets [`max_transmits`](StunConfig::max_transmits).
    pub fn max_transmits(mut self, max_transmits: u32) -> Self {
        self.max_transmits = max_transmits;
        self
    }

    /// Sets [`timeout`](StunConfig::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Default for StunConfig {
    /// 250 ms first RTO doubling up to 1 s, at most 7 sends (at 0, 0.25,
    /// 0.75, 1.75, 2.75, 3.75 and 4.75 s), 5 s in all: under 20% loss on
    /// each way a transaction still fails less than once in 1000.
    fn default() -> StunConfig {
        StunConfig {
            rto: Duration::from_millis(250),
            max_rto: Duration::from_secs(1),
            max_transmits: 7,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a Binding transaction learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingResponse {
    /// Our address as the server saw it (XOR-MAPPED-ADDRESS, else
    /// MAPPED-ADDRESS).
    pub mapped: SocketAddr,
    /// Where the response came from.
    pub from: SocketAddr,
    /// RESPONSE-ORIGIN, if the server sent one.
    pub response_origin: Option<SocketAddr>,
    /// OTHER-ADDRESS (the server's alternate address, RFC 5780), if any.
    pub other_address: Option<SocketAddr>,
}

/// Why a Binding transaction failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StunError {
    /// No answer within the configured time.
    TimedOut {
        /// How many requests were sent.
        sent: u32,
    },
    /// The server answered with an error response.
    ErrorResponse {
        /// The STUN error code (e.g. 420).
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// A success response without a mapped address.
    NoMappedAddress,
    /// The request could not be sent (no route, another address family).
    Unreachable {
        /// The socket's error.
        reason: String,
    },
}

impl fmt::Display for StunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StunError::TimedOut { sent } => {
                write!(f, "no STUN answer after {sent} request(s)")
            }
            StunError::ErrorResponse { code, reason } => {
                write!(f, "STUN server answered error {code} ({reason})")
            }
            StunError::NoMappedAddress => {
                write!(f, "STUN success response carries no mapped address")
            }
            StunError::Unreachable { reason } => {
                write!(f, "cannot send to the STUN server: {reason}")
            }
        }
    }
}

impl std::error::Error for StunError {}

/// One Binding request/response exchange, sans IO.
///
/// Drive it like this: call [`poll_transmit`](Self::poll_transmit) and send
/// what it gives to the server; feed every datagram from the socket to
/// [`handle_input`](Self::handle_input); when nothing arrives before
/// [`poll_timeout`](Self::poll_timeout), call
/// [`handle_timeout`](Self::handle_timeout); stop when
/// [`result`](Self::result) is `Some`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use nat_traversal::stun::{BindingTransaction, StunConfig, StunError};
/// let t0 = Instant::now();
/// let mut t = BindingTransaction::new([9; 12], None, StunConfig::default(), t0);
/// assert!(t.poll_transmit(t0).is_some()); // first request at once
/// assert!(t.poll_transmit(t0).is_none()); // then nothing until the RTO
/// t.handle_timeout(t0 + Duration::from_secs(10));
/// assert!(matches!(t.result(), Some(Err(StunError::TimedOut { .. }))));
/// ```
#[derive(Debug)]
pub struct BindingTransaction {
    request: Vec<u8>,
    tid: TransactionId,
    cfg: StunConfig,
    next_send: Option<Instant>,
    interval: Duration,
    sent: u32,
    deadline: Instant,
    result: Option<Result<BindingResponse, StunError>>,
}

impl BindingTransaction {
    /// A new transaction with id `tid`, optionally carrying an RFC 5780
    /// CHANGE-REQUEST (change IP, change port).
    pub fn new(
        tid: TransactionId,
        change: Option<(bool, bool)>,
        cfg: StunConfig,
        now: Instant,
    ) -> BindingTransaction {
        let mut m = Message::binding_request(tid);
        m.change_request = change;
        BindingTransaction {
            request: m.encode(),
            tid,
            next_send: Some(now),
            interval: cfg.rto,
            sent: 0,
            deadline: crate::deadline_after(now, cfg.timeout),
            cfg,
            result: None,
        }
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// The request to send now, if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.result.is_some() {
            return None;
        }
        let due = self.next_send.filter(|t| *t <= now)?;
        self.sent += 1;
        self.next_send = if self.sent < self.cfg.max_transmits {
            let next = crate::deadline_after(due.max(now), self.interval);
            self.interval = self.interval.saturating_mul(2).min(self.cfg.max_rto);
            Some(next)
        } else {
            None
        };
        Some(self.request.clone())
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next (`None`
    /// once finished).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        Some(match self.next_send {
            Some(t) => t.min(self.deadline),
            None => self.deadline,
        })
    }

    /// Time passes: fails the transaction once its deadline is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_none() && now >= self.deadline {
            self.result = Some(Err(StunError::TimedOut { sent: self.sent }));
        }
    }

    /// A datagram arrived from `from`. Returns whether it was the answer to
    /// this transaction (anything else is left for the caller).
    pub fn handle_input(&mut self, bytes: &[u8], from: SocketAddr) -> bool {
        if self.result.is_some() || !codec::is_stun(bytes) {
            return false;
        }
        let Ok(m) = Message::decode(bytes) else {
            return false;
        };
        if m.transaction_id != self.tid || m.method != codec::BINDING {
            return false;
        }
        self.result = Some(match m.class {
            Some(Class::Success) => match m.reflexive_address() {
                Some(mapped) => Ok(BindingResponse {
                    mapped,
                    from,
                    response_origin: m.response_origin,
                    other_address: m.other_address,
                }),
                None => Err(StunError::NoMappedAddress),
            },
            Some(Class::Error) => {
                let (code, reason) = m.error_code.unwrap_or((0, String::new()));
                Err(StunError::ErrorResponse { code, reason })
            }
            _ => return false,
        });
        true
    }

    /// Ends the transaction with `error` (e.g. the driver cannot send:
    /// [`StunError::Unreachable`]); no effect once it has a result.
    pub fn fail(&mut self, error: StunError) {
        if self.result.is_none() {
            self.result = Some(Err(error));
        }
    }

    /// The outcome, once there is one.
    pub fn result(&self) -> Option<&Result<BindingResponse, StunError>> {
        self.result.as_ref()
    }

    /// How many requests were sent so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }
}

/// Which of the server's sockets a response must leave from (RFC 5780).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplyFrom {
    /// From the alternate IP address.
    pub change_ip: bool,
    /// From the alternate port.
    pub change_port: bool,
}

/// A STUN server's two addresses for RFC 5780: it listens on the four
/// combinations of their IPs and ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPair {
    /// The primary address.
    pub primary: SocketAddr,
    /// The alternate address (different IP and different port).
    pub alternate: SocketAddr,
}

impl AddressPair {
    /// The four (IP, port) combinations the server listens on.
    pub fn sockets(&self) -> [SocketAddr; 4] {
        let (p, a) = (self.primary, self.alternate);
        [
            p,
            SocketAddr::new(p.ip(), a.port()),
            SocketAddr::new(a.ip(), p.port()),
            a,
        ]
    }

    /// The other IP than `local`'s, and the other port than `local`'s.
    fn flip(&self, local: SocketAddr, ip: bool, port: bool) -> SocketAddr {
        let (p, a) = (self.primary, self.alternate);
        let new_ip = match (ip, local.ip() == p.ip()) {
            (false, _) => local.ip(),
            (true, true) => a.ip(),
            (true, false) => p.ip(),
        };
        let new_port = match (port, local.port() == p.port()) {
            (false, _) => local.port(),
            (true, true) => a.port(),
            (true, false) => p.port(),
        };
        SocketAddr::new(new_ip, new_port)
    }

    /// OTHER-ADDRESS as seen from the socket `local`.
    pub fn other_address(&self, local: SocketAddr) -> SocketAddr {
        self.flip(local, true, true)
    }

    /// The socket a reply leaves from, for a request that arrived on `local`.
    pub fn reply_origin(&self, local: SocketAddr, r: ReplyFrom) -> SocketAddr {
        self.flip(local, r.change_ip, r.change_port)
    }
}

/// Where a server with an RFC 5780 address pair sends the answer to
/// `request` from `from`: to the RESPONSE-PORT if the request carries one
/// (RFC 5780 §7.5), else back to `from`.
pub fn reply_to(request: &[u8], from: SocketAddr) -> SocketAddr {
    match Message::decode(request).ok().and_then(|m| m.response_port) {
        Some(p) if p != 0 => SocketAddr::new(from.ip(), p),
        _ => from,
    }
}

/// The stateless Binding responder of a STUN server, without a rate limit
/// (see [`Responder`] for the one with, and for what an answer carries).
///
/// `local` is the address the request arrived on; `pair` is the server's
/// RFC 5780 address pair if it has one. Returns the response and the
/// address of the socket to send it from, or `None` for anything that is
/// not a valid Binding request (ignored, never answered).
///
/// ```
/// use nat_traversal::stun::{respond, Message};
/// let req = Message::binding_request([3; 12]).encode();
/// let from = "192.0.2.7:5000".parse().unwrap();
/// let local = "203.0.113.1:3478".parse().unwrap();
/// let (resp, origin) = respond(&req, from, local, None, None).unwrap();
/// assert_eq!(origin, local);
/// assert_eq!(Message::decode(&resp).unwrap().xor_mapped_address, Some(from));
/// ```
pub fn respond(
    request: &[u8],
    from: SocketAddr,
    local: SocketAddr,
    pair: Option<AddressPair>,
    software: Option<&str>,
) -> Option<(Vec<u8>, SocketAddr)> {
    if !codec::is_stun(request) {
        return None;
    }
    let req = Message::decode(request).ok()?;
    if req.class != Some(Class::Request) || req.method != codec::BINDING {
        return None;
    }
    Some(responder::answer(&req, from, local, pair, software, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn huge_durations_do_not_panic() {
        let now = t0();
        let cfg = StunConfig {
            rto: Duration::MAX,
            max_rto: Duration::MAX,
            max_transmits: 3,
            timeout: Duration::MAX,
        };
        let mut t = BindingTransaction::new([7; 12], None, cfg, now);
        assert!(t.poll_transmit(now).is_some());
        t.handle_timeout(now);
        assert!(t.poll_timeout().is_some_and(|d| d > now));
    }

    #[test]
    fn retransmits_on_a_doubling_schedule_and_stops() {
        let now = t0();
        let cfg = StunConfig {
            rto: Duration::from_millis(100),
            max_rto: Duration::from_millis(300),
            max_transmits: 5,
            timeout: Duration::from_secs(2),
        };
        let mut t = BindingTransaction::new([1; 12], None, cfg, now);
        let mut sends = vec![];
        let mut clock = now;
        while t.result().is_none() {
            if t.poll_transmit(clock).is_some() {
                sends.push(clock - now);
            }
            clock = t.poll_timeout().unwrap();
            t.handle_timeout(clock);
        }
        let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 100, 300, 600, 900]);
        assert_eq!(clock - now, Duration::from_secs(2));
        assert_eq!(t.result(), Some(&Err(StunError::TimedOut { sent: 5 })));
    }

    #[test]
    fn matches_only_its_own_transaction() {
        let now = t0();
        let mut t = BindingTransaction::new([1; 12], None, StunConfig::default(), now);
        let req = t.poll_transmit(now).unwrap();
        let from: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let srv: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let other = Message::binding_request([2; 12]).encode();
        let (wrong, _) = respond(&other, from, srv, None, None).unwrap();
        assert!(!t.handle_input(&wrong, srv));
        assert!(!t.handle_input(b"junk", srv));
        let (resp, origin) = respond(&req, from, srv, None, Some("x")).unwrap();
        assert_eq!(origin, srv);
        assert!(t.handle_input(&resp, srv));
        let r = t.result().unwrap().as_ref().unwrap();
        assert_eq!(r.mapped, from);
        assert_eq!(r.response_origin, None);
        assert_eq!(r.other_address, None);
    }

    #[test]
    fn rfc5780_change_request_picks_the_right_socket() {
        let pair = AddressPair {
            primary: "203.0.113.1:3478".parse().unwrap(),
            alternate: "203.0.113.2:3479".parse().unwrap(),
        };
        let from: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let mut m = Message::binding_request([5; 12]);
        for (ip, port, want) in [
            (false, false, "203.0.113.1:3478"),
            (true, false, "203.0.113.2:3478"),
            (false, true, "203.0.113.1:3479"),
            (true, true, "203.0.113.2:3479"),
        ] {
            m.change_request = Some((ip, port));
            let (resp, origin) =
                respond(&m.encode(), from, pair.primary, Some(pair), None).unwrap();
            assert_eq!(origin.to_string(), want);
            let r = Message::decode(&resp).unwrap();
            assert_eq!(r.other_address, Some(pair.alternate));
            assert_eq!(r.response_origin, Some(origin));
        }
        // Without a pair, a change request is refused with 420.
        let now = t0();
        let mut t =
            BindingTransaction::new([6; 12], Some((true, true)), StunConfig::default(), now);
        let req = t.poll_transmit(now).unwrap();
        let (resp, _) = respond(&req, from, pair.primary, None, None).unwrap();
        assert!(t.handle_input(&resp, pair.primary));
        assert!(matches!(
            t.result(),
            Some(Err(StunError::ErrorResponse { code: 420, .. }))
        ));
        assert_eq!(pair.sockets().len(), 4);
    }

    #[test]
    fn responder_ignores_non_requests() {
        let from: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let mut m = Message::binding_request([5; 12]);
        m.class = Some(Class::Success);
        assert!(respond(&m.encode(), from, from, None, None).is_none());
        assert!(respond(&[0u8; 19], from, from, None, None).is_none());
    }
}
