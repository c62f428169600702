//! The STUN server's responder, sans IO: which answer (if any) a Binding
//! request gets, trimmed to what RFC 8489 and RFC 5780 need, and a rate
//! limit per source prefix so that a spoofed flood cannot turn the server
//! into an amplifier.
//!
//! # Answers
//!
//! - Every Binding success response carries XOR-MAPPED-ADDRESS and
//!   FINGERPRINT, nothing more, unless below says so (no MAPPED-ADDRESS, no
//!   SOFTWARE unless [`ResponderConfig::software`] is set).
//! - With an RFC 5780 address pair: OTHER-ADDRESS in the answer to every
//!   Binding request when [`ResponderConfig::other_address_always`] is on
//!   (the default: RFC 5780 §7.2, a client learns the alternate address from
//!   its plain "test I" request, ours in [`crate::discovery`] and coturn's
//!   `turnutils_stunclient` alike), else only when the request carries
//!   CHANGE-REQUEST. RESPONSE-ORIGIN only when the request carries
//!   CHANGE-REQUEST or RESPONSE-PORT (it tells the client which of the four
//!   sockets answered).
//! - Without a pair, a CHANGE-REQUEST that asks to change anything is
//!   answered with error 420; CHANGE-REQUEST (no change) gets a plain answer.
//!
//! Sizes (IPv4 client, from the unit tests): a 20-byte request gets 40 bytes
//! (ratio 2.0), 52 with OTHER-ADDRESS (2.6); a 28-byte request with
//! CHANGE-REQUEST gets 64 (2.29). The answer used to be 88 bytes (4.4) and
//! 100 with a pair (5.0).
//!
//! # Rate limit
//!
//! A token bucket per source prefix (/24 for IPv4, /56 for IPv6 by
//! default) in a table of fixed capacity (the least recently used prefix is
//! evicted for a new one), and one global bucket behind it: a request is
//! answered only when its prefix's bucket has a token, and then only when
//! the global bucket has one. A flood from one prefix empties its own bucket
//! and no other; a flood from many prefixes is bounded by the global bucket
//! (bytes out ≤ (global burst + global rate × time) × the largest answer).
//! Loopback sources are exempt by default (they cannot come from the
//! network). All on the caller's clock (`now`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::codec::{self, Class, Message};
use super::{AddressPair, ReplyFrom};

/// The rate limit of a [`Responder`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// How many prefixes the table tracks at most (the least recently seen
    /// one is forgotten for a new one). At least 1.
    pub table_capacity: usize,
    /// The answers one prefix may get in a burst.
    pub prefix_burst: u32,
    /// The answers per second one prefix gets in the long run.
    pub prefix_rate: f64,
    /// The answers the whole server may give in a burst.
    pub global_burst: u32,
    /// The answers per second of the whole server in the long run.
    pub global_rate: f64,
    /// The IPv4 prefix length a bucket covers (0 to 32).
    pub ipv4_prefix_len: u8,
    /// The IPv6 prefix length a bucket covers (0 to 128; 56 or 64 are usual
    /// for one customer).
    pub ipv6_prefix_len: u8,
    /// Whether loopback sources (127.0.0.0/8, ::1) are answered without a
    /// limit: the kernel drops loopback sources arriving from outside, so
    /// they cannot be spoofed from the network, and tests and local peers
    /// on one host share a single /24.
    pub exempt_loopback: bool,
}

/// Chainable setters, one per field: start from `RateLimitConfig::default()`.
///
/// ```
/// let cfg = nat_traversal::stun::RateLimitConfig::default().prefix_burst(5);
/// assert_eq!(cfg.prefix_burst, 5);
/// ```
impl RateLimitConfig {
    /// Sets [`table_capacity`](RateLimitConfig::table_capacity).
    pub fn table_capacity(mut self, table_capacity: usize) -> Self {
        self.table_capacity = table_capacity;
        self
    }

    /// Sets [`prefix_burst`](RateLimitConfig::prefix_burst).
    pub fn prefix_burst(mut self, prefix_burst: u32) -> Self {
        self.prefix_burst = prefix_burst;
        self
    }

    /// Sets [`prefix_rate`](RateLimitConfig::prefix_rate).
    pub fn prefix_rate(mut self, prefix_rate: f64) -> Self {
        self.prefix_rate = prefix_rate;
        self
    }

    /// Sets [`global_burst`](RateLimitConfig::global_burst).
    pub fn global_burst(mut self, global_burst: u32) -> Self {
        self.global_burst = global_burst;
        self
    }

    /// Sets [`global_rate`](RateLimitConfig::global_rate).
    pub fn global_rate(mut self, global_rate: f64) -> Self {
        self.global_rate = global_rate;
        self
    }

    /// Sets [`ipv4_prefix_len`](RateLimitConfig::ipv4_prefix_len).
    pub fn ipv4_prefix_len(mut self, ipv4_prefix_len: u8) -> Self {
        self.ipv4_prefix_len = ipv4_prefix_len;
        self
    }

    /// Sets [`ipv6_prefix_len`](RateLimitConfig::ipv6_prefix_len).
    pub fn ipv6_prefix_len(mut self, ipv6_prefix_len: u8) -> Self {
        self.ipv6_prefix_len = ipv6_prefix_len;
        self
    }

    /// Sets [`exempt_loopback`](RateLimitConfig::exempt_loopback).
    pub fn exempt_loopback(mut self, exempt_loopback: bool) -> Self {
        self.exempt_loopback = exempt_loopback;
        self
    }
}

impl Default for RateLimitConfig {
    /// 4096 prefixes; per prefix a burst of 32 and 16 answers/s (a NAT
    /// discovery needs about 6 requests, a few hosts behind one NAT many
    /// times that); 2000 answers/s in all with a burst of 4000 (at most
    /// 128 kB/s of answers); /24 and /56; loopback exempt.
    fn default() -> RateLimitConfig {
        RateLimitConfig {
            table_capacity: 4096,
            prefix_burst: 32,
            prefix_rate: 16.0,
            global_burst: 4000,
            global_rate: 2000.0,
            ipv4_prefix_len: 24,
            ipv6_prefix_len: 56,
            exempt_loopback: true,
        }
    }
}

/// What a [`Responder`] answers and how often.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResponderConfig {
    /// A SOFTWARE attribute for every answer (none by default: it only
    /// makes answers larger).
    pub software: Option<String>,
    /// With an RFC 5780 address pair, put OTHER-ADDRESS in the answer to
    /// every Binding request (RFC 5780 clients learn the alternate address
    /// from a plain request); off: only when the request carries
    /// CHANGE-REQUEST.
    pub other_address_always: bool,
    /// The rate limit (`None`: answer everything, e.g. over TCP, where the
    /// source cannot be spoofed).
    pub rate_limit: Option<RateLimitConfig>,
}

/// Chainable setters, one per field: start from `ResponderConfig::default()`.
///
/// ```
/// let cfg = nat_traversal::stun::ResponderConfig::default().rate_limit(None);
/// assert!(cfg.rate_limit.is_none());
/// ```
impl ResponderConfig {
    /// Sets [`software`](ResponderConfig::software).
    pub fn software(mut self, software: Option<String>) -> Self {
        self.software = software;
        self
    }

    /// Sets [`other_address_always`](ResponderConfig::other_address_always).
    pub fn other_address_always(mut self, other_address_always: bool) -> Self {
        self.other_address_always = other_address_always;
        self
    }

    /// Sets [`rate_limit`](ResponderConfig::rate_limit).
    pub fn rate_limit(mut self, rate_limit: Option<RateLimitConfig>) -> Self {
        self.rate_limit = rate_limit;
        self
    }
}

impl Default for ResponderConfig {
    /// No SOFTWARE, OTHER-ADDRESS always (with a pair), the default rate
    /// limit.
    fn default() -> ResponderConfig {
        ResponderConfig {
            software: None,
            other_address_always: true,
            rate_limit: Some(RateLimitConfig::default()),
        }
    }
}

/// An answer to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The server socket to send from (one of the pair's four with RFC
    /// 5780, else the one the request came in on).
    pub from: SocketAddr,
    /// Where to send it (the request's source, or its RESPONSE-PORT).
    pub to: SocketAddr,
}

/// What a [`Responder`] did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponderStats {
    /// Datagrams seen.
    pub requests: u64,
    /// Bytes seen.
    pub bytes_in: u64,
    /// Answers given (success and error responses).
    pub answered: u64,
    /// Bytes of answers given.
    pub bytes_out: u64,
    /// Valid requests not answered because of the rate limit.
    pub limited: u64,
    /// Datagrams that are not Binding requests (dropped).
    pub ignored: u64,
}

/// A source prefix: the address family and the masked address bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Prefix {
    V4(u32),
    V6(u128),
}

fn prefix_of(ip: IpAddr, v4_len: u8, v6_len: u8) -> Prefix {
    match ip {
        IpAddr::V4(a) => {
            let len = u32::from(v4_len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Prefix::V4(u32::from(a) & mask)
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => prefix_of(IpAddr::V4(v4), v4_len, v6_len),
            None => {
                let len = u32::from(v6_len.min(128));
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                Prefix::V6(u128::from(a) & mask)
            }
        },
    }
}

/// A token bucket on the caller's clock.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, burst: u32, rate: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
        self.tokens = (self.tokens + dt * rate).min(f64::from(burst));
        self.at = self.at.max(now);
    }

    fn has_token(&self) -> bool {
        self.tokens >= 1.0
    }
}

struct Entry {
    bucket: Bucket,
    /// Its key in the recency index.
    seq: u64,
}

/// The per-prefix and global token buckets, in a table of fixed capacity.
struct RateLimiter {
    cfg: RateLimitConfig,
    table: HashMap<Prefix, Entry>,
    /// Recency index: sequence number of the last use → prefix; the first
    /// entry is the least recently used.
    recency: BTreeMap<u64, Prefix>,
    seq: u64,
    global: Bucket,
}

impl RateLimiter {
    fn new(cfg: RateLimitConfig, now: Instant) -> RateLimiter {
        RateLimiter {
            global: Bucket::full(cfg.global_burst, now),
            table: HashMap::new(),
            recency: BTreeMap::new(),
            seq: 0,
            cfg,
        }
    }

    /// Whether `ip` may get one more answer now (and if so, the tokens are
    /// taken).
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let cfg = &self.cfg;
        let ip = ip.to_canonical();
        if cfg.exempt_loopback && ip.is_loopback() {
            return true;
        }
        let p = prefix_of(ip, cfg.ipv4_prefix_len, cfg.ipv6_prefix_len);
        self.seq += 1;
        let seq = self.seq;
        let entry = match self.table.get_mut(&p) {
            Some(e) => {
                self.recency.remove(&e.seq);
                e.seq = seq;
                e
            }
            None => {
                if self.table.len() >= cfg.table_capacity.max(1)
                    && let Some((_, old)) = self.recency.pop_first()
                {
                    self.table.remove(&old);
                }
                self.table.entry(p).or_insert(Entry {
                    bucket: Bucket::full(cfg.prefix_burst, now),
                    seq,
                })
            }
        };
        self.recency.insert(seq, p);
        entry.bucket.refill(cfg.prefix_burst, cfg.prefix_rate, now);
        if !entry.bucket.has_token() {
            return false;
        }
        self.global.refill(cfg.global_burst, cfg.global_rate, now);
        if !self.global.has_token() {
            return false;
        }
        entry.bucket.tokens -= 1.0;
        self.global.tokens -= 1.0;
        true
    }
}

/// The Binding responder of a STUN server, with its rate limit.
///
/// Feed each datagram to [`handle_request`](Self::handle_request) with the
/// address of the socket it came in on; send the [`Reply`] it returns, if
/// any, from the socket it names. There is no timer: buckets refill from the
/// `now` of each call.
///
/// ```
/// use std::time::Instant;
/// use nat_traversal::stun::{Message, Responder, ResponderConfig};
/// let mut r = Responder::new(None, ResponderConfig::default(), Instant::now());
/// let req = Message::binding_request([3; 12]).encode();
/// let from = "192.0.2.7:5000".parse().unwrap();
/// let local = "203.0.113.1:3478".parse().unwrap();
/// let reply = r.handle_request(&req, from, local, Instant::now()).unwrap();
/// assert_eq!((reply.from, reply.to), (local, from));
/// let m = Message::decode(&reply.bytes).unwrap();
/// assert_eq!(m.xor_mapped_address, Some(from));
/// assert_eq!(reply.bytes.len(), 40); // header, XOR-MAPPED-ADDRESS, FINGERPRINT
/// ```
pub struct Responder {
    pair: Option<AddressPair>,
    cfg: ResponderConfig,
    limiter: Option<RateLimiter>,
    stats: ResponderStats,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("pair", &self.pair)
            .field("cfg", &self.cfg)
            .field("tracked_prefixes", &self.tracked_prefixes())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Responder {
    /// A responder for a server with the RFC 5780 address `pair`, if any.
    pub fn new(pair: Option<AddressPair>, cfg: ResponderConfig, now: Instant) -> Responder {
        Responder {
            pair,
            limiter: cfg.rate_limit.clone().map(|c| RateLimiter::new(c, now)),
            cfg,
            stats: ResponderStats::default(),
        }
    }

    /// A datagram `bytes` from `from` arrived on the server socket `local`:
    /// the answer to send, or `None` (not a Binding request, or over the
    /// rate limit).
    pub fn handle_request(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        local: SocketAddr,
        now: Instant,
    ) -> Option<Reply> {
        self.stats.requests += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let Some(req) = binding_request(bytes) else {
            self.stats.ignored += 1;
            return None;
        };
        if let Some(l) = &mut self.limiter
            && !l.allow(from.ip(), now)
        {
            self.stats.limited += 1;
            log::trace!("STUN server: rate limit, no answer to {from}");
            return None;
        }
        let (bytes, origin) = answer(
            &req,
            from,
            local,
            self.pair,
            self.cfg.software.as_deref(),
            self.cfg.other_address_always,
        );
        let to = match (self.pair, req.response_port) {
            (Some(_), Some(p)) if p != 0 => SocketAddr::new(from.ip(), p),
            _ => from,
        };
        self.stats.answered += 1;
        self.stats.bytes_out += bytes.len() as u64;
        Some(Reply {
            bytes,
            from: origin,
            to,
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> ResponderStats {
        self.stats
    }

    /// How many prefixes the rate limiter tracks now (at most
    /// [`RateLimitConfig::table_capacity`]).
    pub fn tracked_prefixes(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.table.len())
    }
}

/// `bytes` decoded, if they are a Binding request.
fn binding_request(bytes: &[u8]) -> Option<Message> {
    if !codec::is_stun(bytes) {
        return None;
    }
    let req = Message::decode(bytes).ok()?;
    (req.class == Some(Class::Request) && req.method == codec::BINDING).then_some(req)
}

/// The answer to the Binding request `req` (no rate limit): the bytes and
/// the server socket to send them from.
pub(crate) fn answer(
    req: &Message,
    from: SocketAddr,
    local: SocketAddr,
    pair: Option<AddressPair>,
    software: Option<&str>,
    other_address_always: bool,
) -> (Vec<u8>, SocketAddr) {
    let change = req.change_request.unwrap_or((false, false));
    let mut resp = Message {
        class: Some(Class::Success),
        method: codec::BINDING,
        transaction_id: req.transaction_id,
        xor_mapped_address: Some(from),
        software: software.map(str::to_string),
        ..Message::default()
    };
    let origin = match pair {
        Some(pair) => {
            let r = ReplyFrom {
                change_ip: change.0,
                change_port: change.1,
            };
            let origin = pair.reply_origin(local, r);
            if other_address_always || req.change_request.is_some() {
                resp.other_address = Some(pair.other_address(local));
            }
            if req.change_request.is_some() || req.response_port.is_some() {
                resp.response_origin = Some(origin);
            }
            origin
        }
        None if change != (false, false) => {
            let err = Message {
                class: Some(Class::Error),
                method: codec::BINDING,
                transaction_id: req.transaction_id,
                error_code: Some((420, "no alternate address".into())),
                software: software.map(str::to_string),
                ..Message::default()
            };
            return (err.encode(), local);
        }
        None => local,
    };
    (resp.encode(), origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn pair() -> AddressPair {
        AddressPair {
            primary: a("203.0.113.1:3478"),
            alternate: a("203.0.113.2:3479"),
        }
    }

    fn unlimited() -> ResponderConfig {
        ResponderConfig::default().rate_limit(None)
    }

    /// The smallest Binding request: a bare 20-byte header, as a spoofer
    /// sends it.
    fn bare_request(tid: u8) -> Vec<u8> {
        let mut r = Message::binding_request([tid; 12]).encode();
        r.truncate(codec::HEADER_LEN);
        r[2..4].copy_from_slice(&[0, 0]);
        r
    }

    #[test]
    fn answer_sizes_and_amplification() {
        let t0 = Instant::now();
        let from4 = a("192.0.2.7:5000");
        let from6 = a("[2001:db8::7]:5000");
        let srv = pair().primary;
        let bare = bare_request(1);
        assert_eq!(bare.len(), 20);
        assert!(Message::decode(&bare).is_ok());
        let mut change = Message::binding_request([2; 12]);
        change.change_request = Some((false, false));
        let mut change = change.encode();
        change.truncate(28); // without the FINGERPRINT: 20 + 8
        change[2..4].copy_from_slice(&8u16.to_be_bytes());
        assert!(Message::decode(&change).unwrap().change_request.is_some());

        let mut plain = Responder::new(None, unlimited(), t0);
        let mut rfc5780 = Responder::new(Some(pair()), unlimited(), t0);
        let mut strict = Responder::new(Some(pair()), unlimited().other_address_always(false), t0);
        let len = |r: &mut Responder, req: &[u8], from| {
            r.handle_request(req, from, srv, t0).unwrap().bytes.len()
        };
        // IPv4: header + XOR-MAPPED-ADDRESS (12) + FINGERPRINT (8).
        assert_eq!(len(&mut plain, &bare, from4), 40);
        assert_eq!(len(&mut plain, &bare, from6), 52);
        // + OTHER-ADDRESS (12).
        assert_eq!(len(&mut rfc5780, &bare, from4), 52);
        assert_eq!(len(&mut strict, &bare, from4), 40);
        // + OTHER-ADDRESS and RESPONSE-ORIGIN (24).
        assert_eq!(len(&mut rfc5780, &change, from4), 64);
        assert_eq!(len(&mut strict, &change, from4), 64);
        // What the server answered before this module (MAPPED-ADDRESS,
        // RESPONSE-ORIGIN and a 19-byte SOFTWARE on every answer): 88 bytes,
        // 100 with OTHER-ADDRESS, for the same 20-byte request.
        let old = answer_before(&Message::decode(&bare).unwrap(), from4, srv, None);
        assert_eq!(old.len(), 88);
        let old = answer_before(&Message::decode(&bare).unwrap(), from4, srv, Some(pair()));
        assert_eq!(old.len(), 100);
        let s = rfc5780.stats();
        assert_eq!((s.bytes_in, s.bytes_out), (20 + 28, 52 + 64));
    }

    /// The answer the server gave before this module, for the size
    /// comparison.
    fn answer_before(
        req: &Message,
        from: SocketAddr,
        local: SocketAddr,
        pair: Option<AddressPair>,
    ) -> Vec<u8> {
        Message {
            class: Some(Class::Success),
            method: codec::BINDING,
            transaction_id: req.transaction_id,
            xor_mapped_address: Some(from),
            mapped_address: Some(from),
            software: Some("crust nat_traversal".into()),
            response_origin: Some(local),
            other_address: pair.map(|p| p.other_address(local)),
            ..Message::default()
        }
        .encode()
    }

    #[test]
    fn rfc5780_attributes_only_when_asked() {
        let t0 = Instant::now();
        let from = a("192.0.2.7:5000");
        let mut r = Responder::new(Some(pair()), unlimited(), t0);
        let plain = Message::binding_request([1; 12]).encode();
        let m = Message::decode(
            &r.handle_request(&plain, from, pair().primary, t0)
                .unwrap()
                .bytes,
        )
        .unwrap();
        assert_eq!(m.other_address, Some(pair().alternate));
        assert_eq!(m.response_origin, None);
        assert_eq!(m.mapped_address, None);
        assert_eq!(m.software, None);
        assert!(m.fingerprint);
        let mut req = Message::binding_request([2; 12]);
        req.change_request = Some((true, false));
        let reply = r
            .handle_request(&req.encode(), from, pair().primary, t0)
            .unwrap();
        assert_eq!(reply.from, a("203.0.113.2:3478"));
        let m = Message::decode(&reply.bytes).unwrap();
        assert_eq!(m.response_origin, Some(reply.from));
        assert_eq!(m.other_address, Some(pair().alternate));
        // RESPONSE-PORT: to the same IP, that port; RESPONSE-ORIGIN given.
        let mut req = Message::binding_request([3; 12]);
        req.response_port = Some(7000);
        let reply = r
            .handle_request(&req.encode(), from, pair().primary, t0)
            .unwrap();
        assert_eq!(reply.to, a("192.0.2.7:7000"));
        assert!(
            Message::decode(&reply.bytes)
                .unwrap()
                .response_origin
                .is_some()
        );
        // Without a pair, RESPONSE-PORT is ignored and nothing RFC 5780 is
        // added; a change request gets 420.
        let mut r = Responder::new(None, unlimited(), t0);
        let reply = r
            .handle_request(&req.encode(), from, pair().primary, t0)
            .unwrap();
        assert_eq!(reply.to, from);
        let m = Message::decode(&reply.bytes).unwrap();
        assert_eq!((m.other_address, m.response_origin), (None, None));
        let mut req = Message::binding_request([4; 12]);
        req.change_request = Some((false, true));
        let m = Message::decode(
            &r.handle_request(&req.encode(), from, pair().primary, t0)
                .unwrap()
                .bytes,
        )
        .unwrap();
        assert_eq!(m.class, Some(Class::Error));
        assert_eq!(m.error_code.map(|e| e.0), Some(420));
        // SOFTWARE when configured.
        let mut r = Responder::new(None, unlimited().software(Some("x".into())), t0);
        let m = Message::decode(
            &r.handle_request(&plain, from, pair().primary, t0)
                .unwrap()
                .bytes,
        )
        .unwrap();
        assert_eq!(m.software.as_deref(), Some("x"));
    }

    #[test]
    fn non_requests_are_ignored_and_counted() {
        let t0 = Instant::now();
        let from = a("192.0.2.7:5000");
        let mut r = Responder::new(None, ResponderConfig::default(), t0);
        let mut m = Message::binding_request([5; 12]);
        m.class = Some(Class::Success);
        assert!(r.handle_request(&m.encode(), from, from, t0).is_none());
        assert!(r.handle_request(&[0u8; 19], from, from, t0).is_none());
        assert!(r.handle_request(&[0u8; 3000], from, from, t0).is_none());
        let s = r.stats();
        assert_eq!((s.requests, s.ignored, s.answered), (3, 3, 0));
        // Junk does not enter the rate-limit table.
        assert_eq!(r.tracked_prefixes(), 0);
    }

    fn limit() -> RateLimitConfig {
        RateLimitConfig::default()
            .table_capacity(4)
            .prefix_burst(3)
            .prefix_rate(2.0)
            .global_burst(10)
            .global_rate(5.0)
    }

    fn answered(r: &mut Responder, from: SocketAddr, now: Instant) -> bool {
        r.handle_request(&bare_request(9), from, a("203.0.113.1:3478"), now)
            .is_some()
    }

    #[test]
    fn a_prefix_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut r = Responder::new(
            None,
            ResponderConfig::default().rate_limit(Some(limit())),
            t0,
        );
        // Any host of 192.0.2.0/24 draws on one bucket of 3.
        for i in 0..3 {
            assert!(answered(&mut r, a(&format!("192.0.2.{}:1", 10 + i)), t0));
        }
        assert!(!answered(&mut r, a("192.0.2.99:1"), t0));
        // 2 per second: one more after 500 ms, not before.
        assert!(!answered(
            &mut r,
            a("192.0.2.10:1"),
            t0 + Duration::from_millis(499)
        ));
        assert!(answered(
            &mut r,
            a("192.0.2.10:1"),
            t0 + Duration::from_millis(999)
        ));
        assert!(!answered(
            &mut r,
            a("192.0.2.10:1"),
            t0 + Duration::from_millis(999)
        ));
        // Another /24 has its own bucket.
        assert!(answered(&mut r, a("192.0.3.1:1"), t0));
        // Clock going backwards does not add tokens.
        assert!(!answered(&mut r, a("192.0.2.10:1"), t0));
        assert_eq!(r.stats().limited, 4);
        // Loopback is exempt (by default), and not tracked.
        for _ in 0..10 {
            assert!(answered(&mut r, a("127.0.0.1:1"), t0));
            assert!(answered(&mut r, a("[::1]:1"), t0));
            assert!(answered(&mut r, a("[::ffff:127.0.0.1]:1"), t0));
        }
        assert_eq!(r.tracked_prefixes(), 2);
        let cfg = limit().exempt_loopback(false).prefix_burst(1);
        let mut r = Responder::new(None, ResponderConfig::default().rate_limit(Some(cfg)), t0);
        assert!(answered(&mut r, a("127.0.0.1:1"), t0));
        assert!(!answered(&mut r, a("127.0.0.2:1"), t0));
    }

    #[test]
    fn ipv6_prefixes_and_mapped_ipv4() {
        let t0 = Instant::now();
        let cfg = limit().prefix_burst(1).ipv6_prefix_len(56);
        let mut r = Responder::new(None, ResponderConfig::default().rate_limit(Some(cfg)), t0);
        assert!(answered(&mut r, a("[2001:db8:0:100::1]:1"), t0));
        // Same /56 (differs only in bits 56..64).
        assert!(!answered(&mut r, a("[2001:db8:0:1ff::2]:1"), t0));
        // Another /56.
        assert!(answered(&mut r, a("[2001:db8:0:200::1]:1"), t0));
        // An IPv4-mapped address counts as its IPv4 /24.
        assert!(answered(&mut r, a("192.0.2.1:1"), t0));
        assert!(!answered(&mut r, a("[::ffff:192.0.2.77]:1"), t0));
        // /64 and the extreme lengths do not panic.
        for len in [0u8, 64, 128, 200] {
            let cfg = limit().ipv6_prefix_len(len).ipv4_prefix_len(len);
            let mut r = Responder::new(None, ResponderConfig::default().rate_limit(Some(cfg)), t0);
            assert!(answered(&mut r, a("[2001:db8::1]:1"), t0));
            assert!(answered(&mut r, a("192.0.2.1:1"), t0));
        }
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recent() {
        let t0 = Instant::now();
        let cfg = limit().prefix_burst(1).global_burst(1000);
        let mut r = Responder::new(None, ResponderConfig::default().rate_limit(Some(cfg)), t0);
        for i in 0..4 {
            assert!(answered(&mut r, a(&format!("10.0.{i}.1:1")), t0));
        }
        assert_eq!(r.tracked_prefixes(), 4);
        // 10.0.0.0/24 used again (refused: its bucket is empty), so the
        // least recent is now 10.0.1.0/24.
        assert!(!answered(&mut r, a("10.0.0.1:1"), t0));
        assert!(answered(&mut r, a("10.0.9.1:1"), t0));
        assert_eq!(r.tracked_prefixes(), 4);
        // 10.0.0.0/24 is still tracked (still empty); 10.0.1.0/24 was
        // forgotten and starts afresh.
        assert!(!answered(&mut r, a("10.0.0.1:1"), t0));
        assert!(answered(&mut r, a("10.0.1.1:1"), t0));
        for i in 0..1000 {
            answered(&mut r, a(&format!("10.{}.{}.1:1", i / 256, i % 256)), t0);
            assert!(r.tracked_prefixes() <= 4);
        }
    }

    /// A spoofed flood on virtual time: 100 000 requests per second for 10
    /// s, from one prefix and then from random prefixes, with a client in
    /// another prefix asking once per second throughout.
    fn flood(many_prefixes: bool) -> (ResponderStats, u32) {
        let t0 = Instant::now();
        let cfg = RateLimitConfig::default();
        let mut r = Responder::new(None, ResponderConfig::default().rate_limit(Some(cfg)), t0);
        let srv = a("203.0.113.1:3478");
        let legit = a("198.51.100.20:40000");
        let req = bare_request(7);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut legit_answers = 0;
        for i in 0..1_000_000u64 {
            let now = t0 + Duration::from_micros(i * 10);
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let ip = if many_prefixes {
                // Anywhere in 10.0.0.0/8: 65 536 prefixes.
                std::net::Ipv4Addr::from(0x0a00_0000 | (rng as u32 & 0x00ff_ffff))
            } else {
                std::net::Ipv4Addr::from(0xc000_0200 | (rng as u32 & 0xff))
            };
            r.handle_request(&req, SocketAddr::new(ip.into(), 1234), srv, now);
            assert!(r.tracked_prefixes() <= 4096);
            if i % 100_000 == 50_000 && r.handle_request(&req, legit, srv, now).is_some() {
                legit_answers += 1;
            }
        }
        (r.stats(), legit_answers)
    }

    #[test]
    fn a_spoofed_flood_from_one_prefix_is_cut_to_its_rate() {
        let (s, legit) = flood(false);
        println!("one prefix: {s:?}, client answered {legit}/10");
        // 20 MB in; at most the prefix's burst (32) + 16/s × 10 s answers
        // of 40 bytes, plus the legitimate client's 10.
        assert_eq!(s.bytes_in, 20_000_000 + 200);
        assert!(s.answered <= 32 + 160 + 10, "{s:?}");
        assert!(s.bytes_out <= (32 + 160 + 10) * 40, "{s:?}");
        assert_eq!(
            legit, 10,
            "the client in another prefix is answered every time"
        );
    }

    #[test]
    fn a_spoofed_flood_from_many_prefixes_is_bounded_by_the_global_bucket() {
        let (s, legit) = flood(true);
        println!("many prefixes: {s:?}, client answered {legit}/10");
        // At most the global burst (4000) + 2000/s × 10 s answers.
        let bound = 4000 + 20_000;
        assert!(s.answered <= bound, "{s:?}");
        assert!(s.bytes_out <= bound * 40, "{s:?}");
        // The bound is reached (the limiter is not simply refusing all).
        assert!(s.answered >= 20_000, "{s:?}");
        // Bytes out per byte in: under 0.05 against 2.0 unlimited.
        assert!(s.bytes_out * 20 < s.bytes_in, "{s:?}");
        // The client competes with the flood for the global bucket, which
        // the flood keeps empty: a spoofer at 50 times the global rate from
        // random prefixes cannot be told from it (run printed: 0 of 10).
        // The one-prefix test shows the per-prefix isolation.
        let _ = legit;
    }
}
