//! The endpoint machine: many uTP connections over one UDP socket.
//!
//! Method families:
//! - input: [`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`];
//! - commands: [`Endpoint::connect`], [`Endpoint::rendezvous`],
//!   [`Endpoint::accept`], [`Endpoint::connection_mut`] (then the
//!   connection's own commands), [`Endpoint::release`];
//! - output: [`Endpoint::poll_transmit`] until `None`, then
//!   [`Endpoint::poll_timeout`]; [`Endpoint::take_touched`] names the
//!   connections whose state may have changed (to wake their readers and
//!   writers).
//!
//! Routing: a packet belongs to the connection keyed by (source address,
//! connection id = that connection's `recv_id`). A SYN with id `i` opens the
//! key (source, `i + 1`). A packet that belongs to nothing is answered with
//! a RESET (never a RESET to a RESET); SYNs beyond the accept backlog are
//! refused the same way. All of it is counted in [`EndpointStats`].
//!
//! No amplification, no orphan buffers: a connection accepted from a SYN
//! but never heard from again (no packet after the SYN: a spoofed source,
//! say) has sent exactly one reply, our STATE; when its owner releases it,
//! it is forgotten at once, with no FIN and no retries. When the accept
//! backlog is full, a new SYN displaces the oldest waiting connection never
//! heard from, instead of being refused.
//!
//! SYN cookies ([`SynCookies`]): under pressure (many connections accepted
//! but not heard from since their SYN) a SYN from an unknown peer creates no
//! state at all. We answer with the same STATE a connection would send, its
//! `seq_nr` (our initial sequence number) being a *cookie*: the first 16
//! bits of HMAC-SHA256(secret, time bucket ‖ source address ‖ SYN's
//! connection id ‖ SYN's `seq_nr`). The connection is created only when the
//! peer's next packet (any type but SYN and RESET, with id SYN id + 1) acks
//! `cookie - 1`, for the current or the previous bucket; its own `seq_nr`
//! minus 1 to 8 gives the SYN's (the first data packets may be lost).
//! Cookie failures are counted per source and past a limit a source's
//! packets are no longer checked for a while. A rendezvous responder never
//! uses cookies (its SYN matches a waiting connection first). A released
//! connection keeps no received data (nothing will read it).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::connection::{Config, Connection, State};
use super::packet::{HEADER_LEN, Header, Packet, PacketType};

/// When SYNs are answered statelessly (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynCookies {
    /// Never: every accepted SYN creates a connection.
    Off,
    /// When at least this many accepted connections have not been heard
    /// from since their SYN.
    UnderPressure(usize),
    /// For every SYN from an unknown peer (for tests).
    Always,
}

/// How far back a proving packet's `seq_nr` may be from the SYN's plus one
/// (data packets lost before it).
const COOKIE_WINDOW: u16 = 8;
/// The time bucket of a cookie; the current and the previous are accepted.
const COOKIE_BUCKET: Duration = Duration::from_secs(30);
/// Cookie failures a source may have per bucket before its packets are no
/// longer checked until the next bucket.
const COOKIE_FAILURES_PER_SOURCE: u32 = 32;
/// Sources whose failures are tracked; the table is cleared when full.
const COOKIE_FAILURE_SOURCES: usize = 4096;

/// Tunables of an endpoint; change them with the chainable setters of the
/// same names.
///
/// ```
/// use transport::utp::proto::{Config, EndpointConfig, SynCookies};
/// let c = EndpointConfig::default()
///     .backlog(16)
///     .syn_cookies(SynCookies::Always)
///     .connection(Config::default().recv_buffer(2 << 20));
/// assert_eq!(c.backlog, 16);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Configuration of every connection.
    pub connection: Config,
    /// Accepted connections not yet taken by [`Endpoint::accept`] beyond
    /// which new SYNs are refused with RESET.
    pub backlog: usize,
    /// Most connections alive at once (all states).
    pub max_connections: usize,
    /// Most RESETs to strays queued at once; more are dropped.
    pub max_pending_resets: usize,
    /// Seed of the RNG for connection ids and initial sequence numbers.
    pub seed: u64,
    /// How long a released connection whose data and FIN were all acked
    /// waits for the peer's FIN before it is reset and forgotten (TCP's
    /// FIN-WAIT-2 timeout).
    pub fin_wait: Duration,
    /// When SYNs are answered statelessly. Default: under pressure, from
    /// 64 connections not heard from since their SYN.
    pub syn_cookies: SynCookies,
    /// Most received bytes held across all connections of the socket (read
    /// buffers plus out-of-order data); while it is reached, data packets
    /// for connections holding more than two packets' worth are dropped
    /// unacknowledged (the peers send them again), except the next packet
    /// in order while the reader keeps up, which lets held out-of-order
    /// data through to it. Default 64 MiB. Keep it well above
    /// `connection.recv_buffer`: a cap below one receive window was measured
    /// to stall a loopback bulk transfer (the sender's retransmissions kept
    /// meeting a full socket until it gave up).
    pub max_buffered: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            connection: Config::default(),
            backlog: 128,
            max_connections: 16384,
            max_pending_resets: 256,
            seed: 0x5eed,
            fin_wait: Duration::from_secs(60),
            syn_cookies: SynCookies::UnderPressure(64),
            max_buffered: 64 << 20,
        }
    }
}

super::connection::setters!(EndpointConfig {
    connection: Config,
    backlog: usize,
    max_connections: usize,
    max_pending_resets: usize,
    seed: u64,
    fin_wait: Duration,
    syn_cookies: SynCookies,
    max_buffered: usize,
});

/// Identifies a connection of an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle(pub u64);

/// A datagram to send: its bytes are in the buffer given to
/// [`Endpoint::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Its length at the start of the buffer.
    pub len: usize,
}

/// Why a connect or rendezvous could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// [`EndpointConfig::max_connections`] reached.
    TooManyConnections,
    /// A connection with this peer and connection id already exists
    /// (rendezvous with the same nonce twice).
    IdInUse(SocketAddr),
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyConnections => write!(f, "too many uTP connections on this socket"),
            Self::IdInUse(a) => write!(f, "a uTP connection to {a} with this id already exists"),
        }
    }
}

impl std::error::Error for EndpointError {}

impl From<EndpointError> for std::io::Error {
    fn from(e: EndpointError) -> Self {
        let kind = match e {
            EndpointError::TooManyConnections => std::io::ErrorKind::OutOfMemory,
            EndpointError::IdInUse(_) => std::io::ErrorKind::AddrInUse,
        };
        std::io::Error::new(kind, e)
    }
}

/// Counters of what the endpoint dropped or refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams that did not decode as uTP.
    pub malformed: u64,
    /// Packets for no known connection (answered with RESET when not a
    /// RESET themselves).
    pub strays: u64,
    /// SYNs refused (not listening, backlog or connection limit).
    pub syns_refused: u64,
    /// RESETs queued to strays and refused SYNs.
    pub resets_sent: u64,
    /// RESETs not sent because too many were queued.
    pub resets_dropped: u64,
    /// Connections waiting in a full backlog, never heard from since their
    /// SYN, forgotten to make room for a newer SYN.
    pub syns_evicted: u64,
    /// Data packets dropped because [`EndpointConfig::max_buffered`] was
    /// reached.
    pub dropped_buffer_full: u64,
    /// SYNs answered with a cookie, creating no state.
    pub cookies_sent: u64,
    /// Connections created from a packet that proved a cookie.
    pub cookies_proven: u64,
    /// Packets for no connection that failed a cookie check.
    pub cookie_failures: u64,
    /// Accepted connections released before the peer sent anything after
    /// its SYN: forgotten at once, without a FIN.
    pub unheard_released: u64,
}

struct Entry {
    conn: Connection,
    /// Accepted from a SYN, and nothing heard from the peer since.
    unheard: bool,
    /// Its received bytes as last counted into `Endpoint::buffered`.
    counted: usize,
    released: bool,
    released_at: Option<Instant>,
    scheduled: Option<Instant>,
}

/// Many uTP connections over one UDP socket. See the module docs.
pub struct Endpoint {
    config: EndpointConfig,
    rng: StdRng,
    epoch: Instant,
    next_handle: u64,
    conns: HashMap<ConnectionHandle, Entry>,
    routes: HashMap<(SocketAddr, u16), ConnectionHandle>,
    accept_queue: VecDeque<ConnectionHandle>,
    listening: bool,
    resets: VecDeque<(SocketAddr, [u8; HEADER_LEN])>,
    dirty: VecDeque<ConnectionHandle>,
    dirty_set: HashSet<ConnectionHandle>,
    timers: BinaryHeap<Reverse<(Instant, ConnectionHandle)>>,
    touched: Vec<ConnectionHandle>,
    stats: EndpointStats,
    /// Connections with `unheard` set.
    unheard: usize,
    /// Received bytes held across connections (sum of `Entry::counted`).
    buffered: usize,
    cookie_key: ring::hmac::Key,
    /// Cookie failures per source IP in the current bucket.
    cookie_failures: HashMap<std::net::IpAddr, (u64, u32)>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("connections", &self.conns.len())
            .field("listening", &self.listening)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The connection id (the initiator's `recv_id`) both sides of a
/// rendezvous derive from their shared nonce (FNV-1a folded to 16 bits).
pub fn rendezvous_id(nonce: &[u8]) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in nonce {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h >> 16) ^ (h & 0xffff)) as u16
}

impl Endpoint {
    /// A new endpoint; `now` becomes the epoch of its timestamps.
    pub fn new(config: EndpointConfig, now: Instant) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let secret: [u8; 32] = rng.random();
        Endpoint {
            rng,
            unheard: 0,
            buffered: 0,
            cookie_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            cookie_failures: HashMap::new(),
            config,
            epoch: now,
            next_handle: 0,
            conns: HashMap::new(),
            routes: HashMap::new(),
            accept_queue: VecDeque::new(),
            listening: false,
            resets: VecDeque::new(),
            dirty: VecDeque::new(),
            dirty_set: HashSet::new(),
            timers: BinaryHeap::new(),
            touched: Vec::new(),
            stats: EndpointStats::default(),
        }
    }

    /// Whether SYNs from unknown peers are accepted (into the backlog).
    pub fn set_listening(&mut self, listening: bool) {
        self.listening = listening;
    }

    /// Counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// Received bytes held across all connections, as last counted (reads
    /// are counted at the next `poll_transmit`).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Number of connections held (any state, including lingering ones).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether every connection is done sending (see
    /// [`Connection::is_done_sending`]): a driver whose owner is gone may
    /// stop then.
    pub fn all_done_sending(&self) -> bool {
        self.conns.values().all(|e| e.conn.is_done_sending()) && self.resets.is_empty()
    }

    /// The connection behind `h`, if it still exists.
    pub fn connection(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.conns.get(&h).map(|e| &e.conn)
    }

    /// The connection behind `h`, for commands (`write`, `read`, `close`,
    /// `abort`). Marks it for `poll_transmit`.
    pub fn connection_mut(&mut self, h: ConnectionHandle) -> Option<&mut Connection> {
        if self.conns.contains_key(&h) {
            self.mark_dirty(h);
        }
        self.conns.get_mut(&h).map(|e| &mut e.conn)
    }

    /// Handles whose state may have changed since the last call.
    pub fn take_touched(&mut self) -> Vec<ConnectionHandle> {
        std::mem::take(&mut self.touched)
    }

    fn mark_dirty(&mut self, h: ConnectionHandle) {
        if self.dirty_set.insert(h) {
            self.dirty.push_back(h);
        }
    }

    fn insert(&mut self, conn: Connection, key: (SocketAddr, u16)) -> ConnectionHandle {
        let h = ConnectionHandle(self.next_handle);
        self.next_handle += 1;
        self.routes.insert(key, h);
        self.conns.insert(
            h,
            Entry {
                conn,
                unheard: false,
                counted: 0,
                released: false,
                released_at: None,
                scheduled: None,
            },
        );
        self.mark_dirty(h);
        h
    }

    /// Opens a connection to `remote` (sends a SYN at the next
    /// `poll_transmit`). Watch [`Connection::is_established`] and
    /// [`Connection::error`] for the outcome.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
    ) -> Result<ConnectionHandle, EndpointError> {
        if self.conns.len() >= self.config.max_connections {
            return Err(EndpointError::TooManyConnections);
        }
        let mut id = self.rng.random::<u16>();
        for _ in 0..1024 {
            if !self.routes.contains_key(&(remote, id))
                && !self.routes.contains_key(&(remote, id.wrapping_add(1)))
            {
                break;
            }
            id = self.rng.random();
        }
        if self.routes.contains_key(&(remote, id)) {
            return Err(EndpointError::TooManyConnections);
        }
        let isn = self.rng.random();
        let conn = Connection::connect(
            self.config.connection.clone(),
            now,
            self.epoch,
            remote,
            id,
            isn,
        );
        Ok(self.insert(conn, (remote, id)))
    }

    /// Rendezvous with `remote`, which knows the same `nonce`: the side
    /// with `initiator == true` (by convention the one with the lower
    /// public key) sends the SYN with the id [`rendezvous_id`]`(nonce)`; the
    /// other waits for exactly that SYN from `remote` and for no other.
    /// The initiator ignores RESETs before the handshake (the peer may not
    /// have started yet) and gives up after its SYN retries.
    pub fn rendezvous(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        nonce: &[u8],
        initiator: bool,
    ) -> Result<ConnectionHandle, EndpointError> {
        if self.conns.len() >= self.config.max_connections {
            return Err(EndpointError::TooManyConnections);
        }
        let id = rendezvous_id(nonce);
        let isn = self.rng.random();
        let (conn, key) = if initiator {
            let mut c = Connection::connect(
                self.config.connection.clone(),
                now,
                self.epoch,
                remote,
                id,
                isn,
            );
            c.rendezvous = true;
            (c, (remote, id))
        } else {
            (
                Connection::await_syn(
                    self.config.connection.clone(),
                    now,
                    self.epoch,
                    remote,
                    id,
                    isn,
                ),
                (remote, id.wrapping_add(1)),
            )
        };
        if self.routes.contains_key(&key) {
            return Err(EndpointError::IdInUse(remote));
        }
        Ok(self.insert(conn, key))
    }

    /// The next connection accepted from the backlog, with its peer.
    pub fn accept(&mut self) -> Option<(ConnectionHandle, SocketAddr)> {
        while let Some(h) = self.accept_queue.pop_front() {
            if let Some(e) = self.conns.get(&h) {
                if e.conn.state() == State::Failed {
                    self.remove(h);
                    continue;
                }
                return Some((h, e.conn.remote()));
            }
        }
        None
    }

    /// Number of accepted connections waiting for [`Endpoint::accept`].
    pub fn backlog_len(&self) -> usize {
        self.accept_queue.len()
    }

    /// The application is done with `h`: the connection closes gracefully
    /// (FIN after queued data) and is forgotten once closed and lingered,
    /// or failed.
    pub fn release(&mut self, h: ConnectionHandle) {
        self.release_at(h, None);
    }

    /// Like [`Endpoint::release`], starting the FIN-wait bound
    /// ([`EndpointConfig::fin_wait`]) at `now`.
    pub fn release_at(&mut self, h: ConnectionHandle, now: Option<Instant>) {
        if self.conns.get(&h).is_some_and(|e| e.unheard) {
            // Never heard from after its SYN: one reply was all it got.
            self.stats.unheard_released += 1;
            self.remove(h);
            return;
        }
        if let Some(e) = self.conns.get_mut(&h) {
            e.released = true;
            e.released_at = e.released_at.or(now);
            e.conn.close();
            self.mark_dirty(h);
        }
    }

    fn remove(&mut self, h: ConnectionHandle) {
        if let Some(e) = self.conns.remove(&h) {
            if e.unheard {
                self.unheard -= 1;
            }
            self.buffered -= e.counted;
            let c = &e.conn;
            self.routes.remove(&(c.remote(), c.recv_id()));
            self.dirty_set.remove(&h);
        }
    }

    fn reschedule(&mut self, h: ConnectionHandle, now: Instant) {
        let Some(e) = self.conns.get_mut(&h) else {
            return;
        };
        if e.released && e.released_at.is_none() {
            e.released_at = Some(now);
        }
        if e.released && e.conn.is_drained(now) {
            self.remove(h);
            return;
        }
        let fin_wait_end = e.released_at.map(|t| t + self.config.fin_wait);
        if fin_wait_end.is_some_and(|t| now >= t)
            && e.conn.is_done_sending()
            && matches!(e.conn.state(), State::Connected)
        {
            // The peer never closed its half: give up on it.
            e.conn.abort();
            self.mark_dirty(h);
            return;
        }
        let t = match (e.conn.poll_timeout(), fin_wait_end) {
            (Some(a), Some(b)) if e.conn.is_done_sending() => Some(a.min(b)),
            (a, _) => a,
        };
        if let Some(t) = t
            && e.scheduled.is_none_or(|s| t < s)
        {
            e.scheduled = Some(t);
            self.timers.push(Reverse((t, h)));
        }
    }

    fn queue_reset(&mut self, to: SocketAddr, connection_id: u16, ack_nr: u16, now: Instant) {
        if self.resets.len() >= self.config.max_pending_resets {
            self.stats.resets_dropped += 1;
            return;
        }
        let h = Header {
            packet_type: PacketType::Reset,
            connection_id,
            timestamp: now.saturating_duration_since(self.epoch).as_micros() as u32,
            timestamp_difference: 0,
            wnd_size: 0,
            seq_nr: self.rng.random(),
            ack_nr,
        };
        let mut buf = [0u8; HEADER_LEN];
        h.encode(None, &[], &mut buf);
        self.resets.push_back((to, buf));
        self.stats.resets_sent += 1;
    }

    fn cookies_on(&self) -> bool {
        match self.config.syn_cookies {
            SynCookies::Off => false,
            SynCookies::UnderPressure(n) => self.unheard >= n,
            SynCookies::Always => true,
        }
    }

    fn bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / COOKIE_BUCKET.as_secs()
    }

    /// The cookie: our initial `seq_nr` for a SYN from `from` with
    /// connection id `id` and sequence number `seq` in time bucket `bucket`.
    pub fn cookie(&self, bucket: u64, from: SocketAddr, id: u16, seq: u16) -> u16 {
        let mut msg = Vec::with_capacity(8 + 18 + 2 + 2 + 2);
        msg.extend_from_slice(&bucket.to_be_bytes());
        match from {
            SocketAddr::V4(a) => msg.extend_from_slice(&a.ip().to_ipv6_mapped().octets()),
            SocketAddr::V6(a) => msg.extend_from_slice(&a.ip().octets()),
        }
        msg.extend_from_slice(&from.port().to_be_bytes());
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(&seq.to_be_bytes());
        let tag = ring::hmac::sign(&self.cookie_key, &msg);
        let t = tag.as_ref();
        u16::from_be_bytes([t[0], t[1]])
    }

    /// Answers `syn` statelessly: the STATE a new connection would send,
    /// with the cookie as its `seq_nr`.
    fn send_cookie(&mut self, now: Instant, from: SocketAddr, syn: &Packet<'_>) {
        if self.resets.len() >= self.config.max_pending_resets {
            self.stats.resets_dropped += 1;
            return;
        }
        let h = Header {
            packet_type: PacketType::State,
            connection_id: syn.header.connection_id,
            timestamp: now.saturating_duration_since(self.epoch).as_micros() as u32,
            timestamp_difference: 0,
            wnd_size: self.config.connection.recv_buffer as u32,
            seq_nr: self.cookie(
                self.bucket(now),
                from,
                syn.header.connection_id,
                syn.header.seq_nr,
            ),
            ack_nr: syn.header.seq_nr,
        };
        let mut buf = [0u8; HEADER_LEN];
        h.encode(None, &[], &mut buf);
        self.resets.push_back((from, buf));
        self.stats.cookies_sent += 1;
    }

    /// A packet for no connection: if it proves a cookie, creates the
    /// connection (as if from the SYN) and hands it the packet.
    fn accept_cookie(&mut self, now: Instant, from: SocketAddr, pkt: &Packet<'_>) -> bool {
        let bucket = self.bucket(now);
        let ip = from.ip();
        if let Some(&(b, n)) = self.cookie_failures.get(&ip)
            && b == bucket
            && n >= COOKIE_FAILURES_PER_SOURCE
        {
            return false;
        }
        let syn_id = pkt.header.connection_id.wrapping_sub(1);
        let cookie = pkt.header.ack_nr.wrapping_add(1);
        let found = (1..=COOKIE_WINDOW).find_map(|back| {
            let syn_seq = pkt.header.seq_nr.wrapping_sub(back);
            [bucket, bucket.wrapping_sub(1)]
                .into_iter()
                .any(|b| self.cookie(b, from, syn_id, syn_seq) == cookie)
                .then_some(syn_seq)
        });
        let Some(syn_seq) = found else {
            self.stats.cookie_failures += 1;
            if self.cookie_failures.len() >= COOKIE_FAILURE_SOURCES {
                self.cookie_failures.clear();
            }
            let e = self.cookie_failures.entry(ip).or_insert((bucket, 0));
            if e.0 != bucket {
                *e = (bucket, 0);
            }
            e.1 += 1;
            return false;
        };
        if self.conns.len() >= self.config.max_connections
            || (self.accept_queue.len() >= self.config.backlog
                && !self.evict_unheard_from_backlog())
        {
            return false;
        }
        let syn = Header {
            packet_type: PacketType::Syn,
            connection_id: syn_id,
            timestamp: 0,
            timestamp_difference: 0,
            wnd_size: pkt.header.wnd_size,
            seq_nr: syn_seq,
            ack_nr: 0,
        };
        let mut buf = [0u8; HEADER_LEN];
        syn.encode(None, &[], &mut buf);
        let Ok(syn) = Packet::decode(&buf) else {
            return false;
        };
        let mut conn = Connection::accept(
            self.config.connection.clone(),
            now,
            self.epoch,
            from,
            &syn,
            cookie,
        );
        conn.handle_packet(now, pkt);
        let h = self.insert(conn, (from, pkt.header.connection_id));
        self.accept_queue.push_back(h);
        self.touched.push(h);
        self.stats.cookies_proven += 1;
        true
    }

    /// The backlog is full: forgets its oldest connection never heard from
    /// since its SYN, to make room for a newcomer (a flood of SYNs only
    /// displaces itself). `false` when every waiting connection was heard.
    fn evict_unheard_from_backlog(&mut self) -> bool {
        let Some(pos) = self
            .accept_queue
            .iter()
            .position(|h| self.conns.get(h).is_some_and(|e| e.unheard))
        else {
            return false;
        };
        if let Some(h) = self.accept_queue.remove(pos) {
            self.remove(h);
            self.stats.syns_evicted += 1;
        }
        true
    }

    /// Handles one datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Ok(pkt) = Packet::decode(data) else {
            self.stats.malformed += 1;
            return;
        };
        let id = pkt.header.connection_id;
        let target = match pkt.header.packet_type {
            PacketType::Syn => {
                if let Some(h) = self.routes.get(&(from, id.wrapping_add(1))) {
                    Some(*h)
                } else if self.listening && self.cookies_on() {
                    self.send_cookie(now, from, &pkt);
                    return;
                } else if self.listening
                    && (self.accept_queue.len() < self.config.backlog
                        || self.evict_unheard_from_backlog())
                    && self.conns.len() < self.config.max_connections
                {
                    let isn = self.rng.random();
                    let conn = Connection::accept(
                        self.config.connection.clone(),
                        now,
                        self.epoch,
                        from,
                        &pkt,
                        isn,
                    );
                    let h = self.insert(conn, (from, id.wrapping_add(1)));
                    if let Some(e) = self.conns.get_mut(&h) {
                        e.unheard = true;
                        self.unheard += 1;
                    }
                    self.accept_queue.push_back(h);
                    self.touched.push(h);
                    self.reschedule(h, now);
                    return;
                } else {
                    self.stats.syns_refused += 1;
                    self.queue_reset(from, id, pkt.header.seq_nr, now);
                    return;
                }
            }
            PacketType::Reset => {
                // libutp: the id is our recv id or our send id.
                let by_recv = self.routes.get(&(from, id)).copied();
                let by_send = [id.wrapping_add(1), id.wrapping_sub(1)]
                    .into_iter()
                    .filter_map(|r| self.routes.get(&(from, r)).copied())
                    .find(|h| self.conns.get(h).is_some_and(|e| e.conn.send_id() == id));
                by_recv.or(by_send)
            }
            _ => self.routes.get(&(from, id)).copied(),
        };
        match target {
            Some(h) => {
                if let Some(e) = self.conns.get_mut(&h) {
                    // Count what the application read since, then apply the
                    // cap; a connection holding almost nothing may always
                    // take a packet, so none starves.
                    let held = e.conn.buffered_bytes();
                    self.buffered = self.buffered - e.counted + held;
                    e.counted = held;
                    if pkt.header.packet_type == PacketType::Data
                        && !pkt.payload.is_empty()
                        && !e.released
                        && held >= 2 * super::packet::MAX_PAYLOAD
                        && !(e.conn.is_next_in_order(pkt.header.seq_nr)
                            && e.conn.readable_bytes() < 2 * super::packet::MAX_PAYLOAD)
                        && self.buffered >= self.config.max_buffered
                    {
                        self.stats.dropped_buffer_full += 1;
                        return;
                    }
                    e.conn.handle_packet(now, &pkt);
                    if pkt.header.packet_type != PacketType::Syn && e.unheard {
                        e.unheard = false;
                        self.unheard -= 1;
                    }
                    if e.released {
                        e.conn.discard_received();
                    }
                    let held = e.conn.buffered_bytes();
                    self.buffered = self.buffered - e.counted + held;
                    e.counted = held;
                }
                self.touched.push(h);
                self.mark_dirty(h);
            }
            None if self.listening
                && !matches!(pkt.header.packet_type, PacketType::Syn | PacketType::Reset)
                && self.config.syn_cookies != SynCookies::Off
                && self.accept_cookie(now, from, &pkt) => {}
            None => {
                self.stats.strays += 1;
                if pkt.header.packet_type != PacketType::Reset {
                    self.queue_reset(from, id, pkt.header.seq_nr, now);
                }
            }
        }
    }

    /// The OS reported `to` unreachable (ICMP port unreachable, read from
    /// the socket's error queue): connects to it still waiting for their
    /// SYN's answer fail at once (see [`Connection::handle_unreachable`]).
    /// Every other connection, and listening, carry on.
    pub fn handle_unreachable(&mut self, _now: Instant, to: SocketAddr) {
        let hit: Vec<ConnectionHandle> = self
            .conns
            .iter()
            .filter(|(_, e)| e.conn.remote() == to && e.conn.state() == State::SynSent)
            .map(|(h, _)| *h)
            .collect();
        for h in hit {
            if let Some(e) = self.conns.get_mut(&h) {
                e.conn.handle_unreachable();
            }
            self.touched.push(h);
            self.mark_dirty(h);
        }
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((t, h))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.conns.get_mut(&h) else {
                continue;
            };
            if e.scheduled != Some(t) {
                continue;
            }
            e.scheduled = None;
            e.conn.handle_timeout(now);
            if e.released
                && e.conn.is_done_sending()
                && e.conn.state() == State::Connected
                && e.released_at
                    .is_some_and(|r| now >= r + self.config.fin_wait)
            {
                e.conn.abort();
            }
            self.touched.push(h);
            // Rescheduled by poll_transmit once its output is drained (a
            // keep-alive deadline only moves when the packet is sent).
            self.mark_dirty(h);
        }
    }

    /// When [`Endpoint::handle_timeout`] should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((t, h))) = self.timers.peek().copied() {
            if self.conns.get(&h).is_some_and(|e| e.scheduled == Some(t)) {
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    /// Writes the next datagram to send into `buf` (at least
    /// [`super::MAX_DATAGRAM`] bytes). Connections take turns.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some((to, bytes)) = self.resets.pop_front() {
            buf[..HEADER_LEN].copy_from_slice(&bytes);
            return Some(Transmit {
                destination: to,
                len: HEADER_LEN,
            });
        }
        while let Some(h) = self.dirty.pop_front() {
            let Some(e) = self.conns.get_mut(&h) else {
                self.dirty_set.remove(&h);
                continue;
            };
            let held = e.conn.buffered_bytes();
            self.buffered = self.buffered - e.counted + held;
            e.counted = held;
            if let Some(len) = e.conn.poll_transmit(now, buf) {
                let destination = e.conn.remote();
                self.dirty.push_back(h);
                return Some(Transmit { destination, len });
            }
            self.dirty_set.remove(&h);
            self.reschedule(h, now);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of `docs/wire.md` §9.
    #[test]
    fn cookie_test_vector() {
        let mut ep = Endpoint::new(EndpointConfig::default(), Instant::now());
        let secret: Vec<u8> = (0..32).collect();
        ep.cookie_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let from: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        assert_eq!(ep.cookie(1000, from, 0x1234, 0x5678), 0xb077);
    }
}
