//! One uTP connection as a sans-IO state machine.
//!
//! Method families (quinn style):
//! - input: [`Connection::handle_packet`], [`Connection::handle_timeout`];
//! - commands: [`Connection::write`], [`Connection::read`],
//!   [`Connection::close`] (send FIN after the queued bytes),
//!   [`Connection::abort`] (send RESET);
//! - output: [`Connection::poll_transmit`] (call until `None` after every
//!   input or command), then [`Connection::poll_timeout`] for when to call
//!   `handle_timeout` next;
//! - getters: [`Connection::state`], [`Connection::error`], ...
//!
//! Every call that depends on time takes `now`; the machine never reads a
//! clock. Timestamps on the wire are microseconds since `epoch`, an instant
//! the owner picks once (all connections of an endpoint share it).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::packet::{
    HEADER_LEN, Header, MAX_DATAGRAM, MAX_PAYLOAD, MAX_SACK_LEN, Packet, PacketType, seq_diff,
};

/// Largest number of packets in flight (and of out-of-order packets held):
/// keeps both ends far from the half-circle of the 16-bit sequence space.
const MAX_INFLIGHT_PACKETS: usize = 2048;
/// libutp's cap on window growth per round trip (bytes).
const MAX_CWND_INCREASE_BYTES_PER_RTT: f64 = 3000.0;
/// The smallest congestion window: one full packet.
const MIN_WINDOW: f64 = MAX_PAYLOAD as f64;
/// Selective-ACKed packets past a hole that make us resend the hole.
const SACK_RESEND_THRESHOLD: u32 = 3;
/// Duplicate acks that trigger a fast retransmit.
const DUP_ACK_THRESHOLD: u32 = 3;
/// How long the base-delay history buckets are (two buckets: a sliding
/// minimum over the last one to two minutes).
const BASE_DELAY_BUCKET: Duration = Duration::from_secs(60);

/// Tunables of a connection. `Default` gives BEP 29 / libutp values; change
/// them with the chainable setters of the same names.
///
/// ```
/// use std::time::Duration;
/// let c = transport::utp::proto::Config::default()
///     .min_rto(Duration::from_millis(100))
///     .recv_buffer(4 << 20);
/// assert_eq!(c.recv_buffer, 4 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// LEDBAT target queuing delay (BEP 29: 100 ms).
    pub target_delay: Duration,
    /// Retransmission timeout before the first RTT sample (BEP 29: 1 s).
    pub initial_rto: Duration,
    /// Floor of the retransmission timeout (BEP 29: 500 ms).
    pub min_rto: Duration,
    /// Ceiling of the backed-off retransmission timeout.
    pub max_rto: Duration,
    /// Consecutive timeouts, without hearing from the peer, after which an
    /// established connection is dropped.
    pub max_retransmissions: u32,
    /// SYN retransmissions before a connect fails.
    pub syn_retransmissions: u32,
    /// How long a rendezvous responder waits for the initiator's SYN.
    pub rendezvous_timeout: Duration,
    /// Bytes the application may queue for sending (unsent plus unacked).
    pub send_buffer: usize,
    /// Receive buffer: bytes held for the application plus out-of-order
    /// data; what we advertise as `wnd_size` is what is left of it.
    pub recv_buffer: usize,
    /// A STATE packet is sent after this long without sending anything.
    pub keepalive: Duration,
    /// How long a closed connection keeps answering retransmitted FINs.
    pub linger: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            target_delay: Duration::from_millis(100),
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(500),
            max_rto: Duration::from_secs(16),
            max_retransmissions: 8,
            syn_retransmissions: 5,
            rendezvous_timeout: Duration::from_secs(30),
            send_buffer: 1 << 20,
            recv_buffer: 1 << 20,
            keepalive: Duration::from_secs(29),
            linger: Duration::from_secs(5),
        }
    }
}

/// Chainable setters, one per field, each documented as its field.
macro_rules! setters {
    ($t:ty { $($field:ident: $ty:ty),* $(,)? }) => {
        impl $t {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
                pub fn $field(mut self, $field: $ty) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}
pub(crate) use setters;

setters!(Config {
    target_delay: Duration,
    initial_rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
    max_retransmissions: u32,
    syn_retransmissions: u32,
    rendezvous_timeout: Duration,
    send_buffer: usize,
    recv_buffer: usize,
    keepalive: Duration,
    linger: Duration,
});

/// Why a connection ended without a clean close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionError {
    /// No answer after `retransmissions` timeouts in a row.
    TimedOut {
        /// The peer.
        remote: SocketAddr,
        /// Timeouts counted.
        retransmissions: u32,
        /// Whether we were still waiting for the handshake.
        connecting: bool,
    },
    /// The peer sent RESET (or refused our SYN).
    Reset {
        /// The peer.
        remote: SocketAddr,
        /// Whether we were still waiting for the handshake.
        connecting: bool,
    },
    /// A rendezvous responder never got the initiator's SYN.
    RendezvousTimedOut {
        /// The peer.
        remote: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// We aborted the connection (RESET sent).
    Aborted,
    /// The peer's host said nothing listens there (ICMP port unreachable)
    /// while we were connecting.
    Unreachable {
        /// The peer.
        remote: SocketAddr,
    },
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut {
                remote,
                retransmissions,
                connecting,
            } => write!(
                f,
                "uTP {} to {remote} timed out after {retransmissions} retransmissions",
                if *connecting { "connect" } else { "connection" }
            ),
            Self::Reset {
                remote,
                connecting: true,
            } => write!(f, "uTP connect to {remote} refused (reset by peer)"),
            Self::Reset { remote, .. } => {
                write!(f, "uTP connection to {remote} reset by peer")
            }
            Self::RendezvousTimedOut { remote, after } => write!(
                f,
                "uTP rendezvous with {remote} timed out after {after:?} without the peer's SYN"
            ),
            Self::Aborted => write!(f, "uTP connection aborted locally"),
            Self::Unreachable { remote } => write!(
                f,
                "uTP connect to {remote} refused (port unreachable: nothing listens there)"
            ),
        }
    }
}

impl std::error::Error for ConnectionError {}

impl From<ConnectionError> for io::Error {
    fn from(e: ConnectionError) -> io::Error {
        let kind = match &e {
            ConnectionError::TimedOut { .. } | ConnectionError::RendezvousTimedOut { .. } => {
                io::ErrorKind::TimedOut
            }
            ConnectionError::Reset {
                connecting: true, ..
            } => io::ErrorKind::ConnectionRefused,
            ConnectionError::Reset { .. } => io::ErrorKind::ConnectionReset,
            ConnectionError::Aborted => io::ErrorKind::ConnectionAborted,
            ConnectionError::Unreachable { .. } => io::ErrorKind::ConnectionRefused,
        };
        io::Error::new(kind, e)
    }
}

/// The phase of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// We sent a SYN and wait for its STATE.
    SynSent,
    /// Rendezvous responder: waiting for the initiator's SYN.
    AwaitSyn,
    /// Established (possibly half-closed).
    Connected,
    /// Both FINs exchanged and acknowledged: lingering to answer
    /// retransmissions, then done.
    Closed,
    /// Ended by an error (see [`Connection::error`]).
    Failed,
}

/// Counters, for tests and logs.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Datagrams produced by `poll_transmit`.
    pub packets_sent: u64,
    /// Packets given to `handle_packet`.
    pub packets_received: u64,
    /// Packets sent again (any reason).
    pub retransmits: u64,
    /// Retransmits triggered by duplicate or selective acks.
    pub fast_retransmits: u64,
    /// Retransmission timeouts that fired.
    pub timeouts: u64,
    /// Packets ignored as invalid (ack for unsent data, out of window, ...).
    pub invalid: u64,
    /// Duplicate data packets received.
    pub duplicates: u64,
}

struct Sent {
    seq: u16,
    kind: PacketType,
    payload: Vec<u8>,
    sent_at: Instant,
    sent_order: u64,
    transmissions: u32,
    need_resend: bool,
    acked: bool,
}

/// Base delay history and recent samples (LEDBAT).
struct DelayHist {
    cur_min: Option<u32>,
    prev_min: Option<u32>,
    bucket_start: Option<Instant>,
    recent: [u32; 3],
    recent_len: usize,
    recent_pos: usize,
}

/// The round-trip sample an ack gives: the shortest of the packets it
/// newly acks, that is the one sent last. An ack acking older packets too
/// (their own acks were lost) measures their wait for a later ack, not the
/// path.
fn min_sample(cur: Option<Duration>, sample: Duration) -> Option<Duration> {
    Some(cur.map_or(sample, |c| c.min(sample)))
}

/// `a < b` on the 32-bit microsecond circle.
fn ts_less(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl DelayHist {
    fn new() -> Self {
        DelayHist {
            cur_min: None,
            prev_min: None,
            bucket_start: None,
            recent: [0; 3],
            recent_len: 0,
            recent_pos: 0,
        }
    }

    fn add(&mut self, sample: u32, now: Instant) {
        match self.bucket_start {
            Some(start) if now.saturating_duration_since(start) >= BASE_DELAY_BUCKET => {
                self.prev_min = self.cur_min;
                self.cur_min = Some(sample);
                self.bucket_start = Some(now);
            }
            None => {
                self.cur_min = Some(sample);
                self.bucket_start = Some(now);
            }
            _ => {
                if self.cur_min.is_none_or(|m| ts_less(sample, m)) {
                    self.cur_min = Some(sample);
                }
            }
        }
        self.recent[self.recent_pos] = sample;
        self.recent_pos = (self.recent_pos + 1) % self.recent.len();
        self.recent_len = (self.recent_len + 1).min(self.recent.len());
    }

    fn base(&self) -> Option<u32> {
        match (self.cur_min, self.prev_min) {
            (Some(c), Some(p)) => Some(if ts_less(p, c) { p } else { c }),
            (c, p) => c.or(p),
        }
    }

    /// Queuing delay estimate in microseconds: the lowest of the last few
    /// samples above the base delay.
    fn queuing_delay(&self) -> Option<u32> {
        let base = self.base()?;
        (0..self.recent_len)
            .map(|i| {
                let s = self.recent[i];
                if ts_less(s, base) {
                    0
                } else {
                    s.wrapping_sub(base)
                }
            })
            .min()
    }
}

/// One uTP connection. See the module docs for the calling convention.
pub struct Connection {
    config: Config,
    remote: SocketAddr,
    epoch: Instant,
    state: State,
    established: bool,
    error: Option<ConnectionError>,
    recv_id: u16,
    send_id: u16,
    /// Next sequence number to send.
    seq_nr: u16,
    /// Last sequence number received in order.
    ack_nr: u16,
    created: Instant,

    // Sending.
    send_buf: VecDeque<u8>,
    inflight: VecDeque<Sent>,
    inflight_bytes: usize,
    /// Bytes of packets in flight that are neither acked nor waiting for
    /// a resend: what the congestion window limits.
    cur_window: usize,
    need_resend: usize,
    max_window: f64,
    slow_start: bool,
    peer_wnd: usize,
    window_limited: bool,
    close_requested: bool,
    fin_sent: bool,
    fin_acked: bool,
    dup_acks: u32,
    /// Loss reactions wait until the ack passes this sequence number.
    recovery_until: Option<u16>,
    /// Packets below this were fast-resent already in this recovery.
    /// Counts transmissions, to order them.
    send_counter: u64,
    reset_pending: bool,
    /// A rendezvous initiator: a RESET before the handshake is not final.
    pub(super) rendezvous: bool,
    /// Accepted connections: (the SYN's seq_nr, our initial seq_nr), to
    /// answer a retransmitted SYN with the same SYN-ACK.
    syn_ack: Option<(u16, u16)>,
    resend_syn_ack: bool,

    // Receiving.
    read_buf: VecDeque<u8>,
    /// `reorder[i]` holds the packet `ack_nr + 1 + i` if it arrived early.
    reorder: VecDeque<Option<Vec<u8>>>,
    reorder_bytes: usize,
    eof_pkt: Option<u16>,
    got_eof: bool,
    ack_pending: bool,
    last_wnd_advertised: usize,

    // Timing.
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    rto_deadline: Option<Instant>,
    timeouts: u32,
    heard_since_timeout: bool,
    /// Timeouts since the last ack progress, heard from the peer or not.
    stalled_timeouts: u32,
    last_send: Instant,
    closed_at: Option<Instant>,
    lingered: bool,
    reply_micro: u32,
    delay: DelayHist,
    stats: Stats,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.remote)
            .field("state", &self.state)
            .field("recv_id", &self.recv_id)
            .field("send_id", &self.send_id)
            .field("seq_nr", &self.seq_nr)
            .field("ack_nr", &self.ack_nr)
            .finish_non_exhaustive()
    }
}

impl Connection {
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: Config,
        now: Instant,
        epoch: Instant,
        remote: SocketAddr,
        recv_id: u16,
        send_id: u16,
        isn: u16,
        state: State,
    ) -> Self {
        let rto = config.initial_rto;
        Connection {
            remote,
            epoch,
            state,
            established: false,
            error: None,
            recv_id,
            send_id,
            seq_nr: isn,
            ack_nr: 0,
            created: now,
            send_buf: VecDeque::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            cur_window: 0,
            need_resend: 0,
            max_window: 2.0 * MIN_WINDOW,
            slow_start: true,
            peer_wnd: MAX_PAYLOAD * 4,
            window_limited: false,
            close_requested: false,
            fin_sent: false,
            fin_acked: false,
            dup_acks: 0,
            recovery_until: None,
            send_counter: 0,
            reset_pending: false,
            rendezvous: false,
            syn_ack: None,
            resend_syn_ack: false,
            read_buf: VecDeque::new(),
            reorder: VecDeque::new(),
            reorder_bytes: 0,
            eof_pkt: None,
            got_eof: false,
            ack_pending: false,
            last_wnd_advertised: config.recv_buffer,
            srtt: None,
            rttvar: Duration::ZERO,
            rto,
            rto_deadline: None,
            timeouts: 0,
            heard_since_timeout: false,
            stalled_timeouts: 0,
            last_send: now,
            closed_at: None,
            lingered: false,
            reply_micro: 0,
            delay: DelayHist::new(),
            stats: Stats::default(),
            config,
        }
    }

    /// A connection we open: it sends a SYN carrying `recv_id`; the peer
    /// will send to us with `recv_id` and we to it with `recv_id + 1`.
    pub fn connect(
        config: Config,
        now: Instant,
        epoch: Instant,
        remote: SocketAddr,
        recv_id: u16,
        isn: u16,
    ) -> Self {
        let mut c = Connection::new(
            config,
            now,
            epoch,
            remote,
            recv_id,
            recv_id.wrapping_add(1),
            isn,
            State::SynSent,
        );
        c.push_packet(PacketType::Syn, Vec::new(), now);
        c
    }

    /// A connection accepted from `syn` (whose type must be SYN): we reply
    /// with a STATE; our packets carry the SYN's connection id, theirs
    /// that id plus one.
    pub fn accept(
        config: Config,
        now: Instant,
        epoch: Instant,
        remote: SocketAddr,
        syn: &Packet<'_>,
        isn: u16,
    ) -> Self {
        let id = syn.header.connection_id;
        let mut c = Connection::new(
            config,
            now,
            epoch,
            remote,
            id.wrapping_add(1),
            id,
            isn,
            State::AwaitSyn,
        );
        c.handle_packet(now, syn);
        c
    }

    /// A rendezvous responder: waits for a SYN whose connection id is
    /// `syn_id` (the initiator's `recv_id`), from `remote` only (the owner
    /// routes), for at most `config.rendezvous_timeout`.
    pub fn await_syn(
        config: Config,
        now: Instant,
        epoch: Instant,
        remote: SocketAddr,
        syn_id: u16,
        isn: u16,
    ) -> Self {
        Connection::new(
            config,
            now,
            epoch,
            remote,
            syn_id.wrapping_add(1),
            syn_id,
            isn,
            State::AwaitSyn,
        )
    }

    // ---- getters ----

    /// The peer's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
    /// The id the peer puts on packets to us.
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }
    /// The id we put on packets to the peer.
    pub fn send_id(&self) -> u16 {
        self.send_id
    }
    /// The current phase.
    pub fn state(&self) -> State {
        self.state
    }
    /// Whether the handshake completed (also true once closed or failed
    /// after it completed).
    pub fn is_established(&self) -> bool {
        self.established
    }
    /// Why the connection failed, if it did.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Whether a data packet with `seq_nr` is the next one in order (it
    /// lets buffered out-of-order data through to the reader).
    pub fn is_next_in_order(&self, seq_nr: u16) -> bool {
        seq_nr == self.ack_nr.wrapping_add(1)
    }
    /// Received bytes held: ready for [`Connection::read`] plus out of
    /// order.
    pub fn buffered_bytes(&self) -> usize {
        self.read_buf.len() + self.reorder_bytes
    }
    /// Bytes ready for [`Connection::read`].
    pub fn readable_bytes(&self) -> usize {
        self.read_buf.len()
    }
    /// Whether the peer's FIN arrived and all data before it was read.
    pub fn is_eof(&self) -> bool {
        self.got_eof && self.read_buf.is_empty()
    }
    /// Bytes [`Connection::write`] would accept now.
    pub fn writable_bytes(&self) -> usize {
        if self.close_requested || self.error.is_some() {
            return 0;
        }
        self.config
            .send_buffer
            .saturating_sub(self.send_buf.len() + self.inflight_bytes)
    }
    /// Bytes written but not yet acknowledged by the peer.
    pub fn unacked_bytes(&self) -> usize {
        self.send_buf.len() + self.inflight_bytes
    }
    /// Whether `poll_transmit` may have something to send (an ack, a window
    /// update, data, a FIN or a RESET): owners that batch commands use it
    /// to decide whether to wake their driver.
    pub fn wants_transmit(&self) -> bool {
        self.ack_pending
            || self.reset_pending
            || self.need_resend > 0
            || !self.send_buf.is_empty()
            || (self.close_requested && !self.fin_sent)
    }
    /// Whether nothing of ours is left to deliver: failed, closed, or our
    /// FIN (after all data) was acked.
    pub fn is_done_sending(&self) -> bool {
        matches!(self.state, State::Failed | State::Closed) || self.fin_acked
    }
    /// Whether everything written (and the FIN, if closing) was acked.
    pub fn is_flushed(&self) -> bool {
        self.send_buf.is_empty() && self.inflight.is_empty()
    }
    /// The congestion window in bytes.
    pub fn congestion_window(&self) -> usize {
        self.max_window as usize
    }
    /// Smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }
    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }
    /// The latest LEDBAT queuing-delay estimate.
    pub fn queuing_delay(&self) -> Option<Duration> {
        self.delay
            .queuing_delay()
            .map(|us| Duration::from_micros(us as u64))
    }
    /// Whether the machine has nothing left to do: closed (and lingered)
    /// or failed with nothing left to send.
    pub fn is_drained(&self, now: Instant) -> bool {
        match self.state {
            State::Failed => !self.reset_pending,
            State::Closed => self
                .closed_at
                .is_some_and(|t| now.saturating_duration_since(t) >= self.config.linger),
            _ => false,
        }
    }

    // ---- commands ----

    /// Queues bytes to send; returns how many were taken (0 when the send
    /// buffer is full or the connection is closing or failed). Data goes
    /// out at the next `poll_transmit`, without waiting to fill a packet.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.writable_bytes());
        self.send_buf.extend(&data[..n]);
        n
    }

    /// Reads received bytes: `Some(n)` with `n > 0` for data, `Some(0)` at
    /// the end of the peer's stream (after its FIN) or after a failure
    /// once buffered data is read (check [`Connection::error`]), `None` if
    /// nothing is available yet.
    pub fn read(&mut self, buf: &mut [u8]) -> Option<usize> {
        if !self.read_buf.is_empty() && !buf.is_empty() {
            let n = buf.len().min(self.read_buf.len());
            let (a, b) = self.read_buf.as_slices();
            if n <= a.len() {
                buf[..n].copy_from_slice(&a[..n]);
            } else {
                buf[..a.len()].copy_from_slice(a);
                buf[a.len()..n].copy_from_slice(&b[..n - a.len()]);
            }
            self.read_buf.drain(..n);
            if self.read_buf.is_empty() {
                // Read up: an idle connection holds no receive buffer.
                self.read_buf = VecDeque::new();
            }
            // Window update once the buffer opened up again.
            let wnd = self.recv_window();
            if self.last_wnd_advertised < 4 * MAX_PAYLOAD && wnd >= 4 * MAX_PAYLOAD {
                self.ack_pending = true;
            }
            return Some(n);
        }
        if self.got_eof || self.error.is_some() {
            return Some(0);
        }
        None
    }

    /// Drops every received byte not yet read (the owner is gone: nothing
    /// will read it), so no memory is held for a reader that does not
    /// exist. The window opens again, so the peer can finish its stream.
    pub fn discard_received(&mut self) {
        if !self.read_buf.is_empty() {
            self.read_buf = std::collections::VecDeque::new();
            self.ack_pending = true;
        }
    }

    /// Closes our sending half: a FIN follows the queued bytes. Reading
    /// goes on until the peer's FIN.
    pub fn close(&mut self) {
        self.close_requested = true;
    }

    /// The OS reported the peer's port unreachable (ICMP). A connect still
    /// waiting for its SYN's answer fails with
    /// [`ConnectionError::Unreachable`]; anything else (established, or
    /// rendezvous, where the peer may not have started yet) ignores it: its
    /// timers decide, since ICMP is unauthenticated.
    pub fn handle_unreachable(&mut self) {
        if self.state == State::SynSent && !self.rendezvous {
            self.fail(ConnectionError::Unreachable {
                remote: self.remote,
            });
        }
    }

    /// Ends the connection at once with a RESET.
    pub fn abort(&mut self) {
        if !matches!(self.state, State::Failed | State::Closed) {
            if self.state != State::AwaitSyn {
                self.reset_pending = true;
            }
            self.fail(ConnectionError::Aborted);
        }
    }

    fn fail(&mut self, e: ConnectionError) {
        self.state = State::Failed;
        self.error = Some(e);
        self.send_buf.clear();
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.cur_window = 0;
        self.need_resend = 0;
        self.reorder.clear();
        self.reorder_bytes = 0;
        self.rto_deadline = None;
    }

    fn recv_window(&self) -> usize {
        self.config
            .recv_buffer
            .saturating_sub(self.read_buf.len() + self.reorder_bytes)
    }

    fn micros(&self, now: Instant) -> u32 {
        // 0 means "no timestamp" to receivers: never send it.
        (now.saturating_duration_since(self.epoch).as_micros() as u32).max(1)
    }

    fn push_packet(&mut self, kind: PacketType, payload: Vec<u8>, now: Instant) {
        let seq = self.seq_nr;
        self.seq_nr = self.seq_nr.wrapping_add(1);
        self.inflight_bytes += payload.len();
        self.inflight.push_back(Sent {
            seq,
            kind,
            payload,
            sent_at: now,
            sent_order: 0,
            transmissions: 0,
            need_resend: true,
            acked: false,
        });
        self.need_resend += 1;
    }

    // ---- input ----

    /// Handles a packet the owner routed to this connection (by source
    /// address and connection id).
    pub fn handle_packet(&mut self, now: Instant, pkt: &Packet<'_>) {
        self.stats.packets_received += 1;
        let h = &pkt.header;
        match self.state {
            State::Failed => return,
            State::Closed => {
                // Lingering: answer retransmitted data/FIN so the peer can
                // finish too.
                if matches!(h.packet_type, PacketType::Data | PacketType::Fin)
                    && seq_diff(h.seq_nr, self.ack_nr) <= 0
                {
                    self.ack_pending = true;
                }
                return;
            }
            _ => {}
        }
        if h.packet_type == PacketType::Reset {
            if self.state == State::SynSent && self.rendezvous {
                // The peer may not have started its side of the
                // rendezvous yet: keep sending the SYN until it does or
                // the SYN retries run out.
                self.stats.invalid += 1;
                return;
            }
            if self.fin_sent
                && self.got_eof
                && self.inflight.iter().all(|p| p.kind == PacketType::Fin)
            {
                // The peer had our FIN's data and its own FIN was fully
                // received: it closed and forgot us before our FIN's ack
                // reached it. Nothing was lost.
                self.set_closed(now);
            } else {
                let connecting = matches!(self.state, State::SynSent | State::AwaitSyn);
                self.fail(ConnectionError::Reset {
                    remote: self.remote,
                    connecting,
                });
            }
            return;
        }
        if h.timestamp != 0 {
            self.reply_micro = self.micros(now).wrapping_sub(h.timestamp);
        }
        match self.state {
            State::AwaitSyn => {
                if h.packet_type != PacketType::Syn || h.connection_id != self.send_id {
                    self.stats.invalid += 1;
                    return;
                }
                self.ack_nr = h.seq_nr;
                self.syn_ack = Some((h.seq_nr, self.seq_nr));
                self.state = State::Connected;
                self.established = true;
                self.heard_since_timeout = true;
                self.ack_pending = true;
                self.peer_wnd = h.wnd_size as usize;
                return;
            }
            State::SynSent => {
                if h.packet_type != PacketType::State || h.ack_nr != self.seq_nr.wrapping_sub(1) {
                    self.stats.invalid += 1;
                    return;
                }
                // The STATE carries the next sequence number the peer will
                // use for data (libutp), so the last one "received" is the
                // one before.
                self.ack_nr = h.seq_nr.wrapping_sub(1);
                self.state = State::Connected;
                self.established = true;
            }
            _ => {}
        }
        if h.packet_type == PacketType::Syn {
            // A retransmitted SYN: our SYN-ACK was lost. Send it again
            // exactly (its seq_nr is our *initial* sequence number), even
            // if we sent data since: the initiator derives its ack_nr from
            // it, so data it dropped while waiting is not skipped.
            match self.syn_ack {
                Some((syn_seq, _)) if h.seq_nr == syn_seq && self.ack_nr == syn_seq => {
                    self.resend_syn_ack = true;
                }
                _ => self.stats.invalid += 1,
            }
            return;
        }

        // Acknowledgement part.
        let last_sent = self.seq_nr.wrapping_sub(1);
        if seq_diff(h.ack_nr, last_sent) > 0 {
            // Acks data we never sent.
            self.stats.invalid += 1;
            return;
        }
        self.heard_since_timeout = true;
        let base = self.inflight.front().map_or(self.seq_nr, |p| p.seq);
        let stale = seq_diff(h.ack_nr, base.wrapping_sub(1)) < 0;
        if !stale {
            self.peer_wnd = h.wnd_size as usize;
            self.process_ack(now, pkt, base);
        }

        // Data part.
        if matches!(h.packet_type, PacketType::Data | PacketType::Fin) {
            self.process_data(now, pkt);
        }
        self.check_closed(now);
    }

    fn process_ack(&mut self, now: Instant, pkt: &Packet<'_>, base: u16) {
        let h = &pkt.header;
        let mut bytes_acked = 0usize;
        let mut progress = false;
        let mut rtt_sample = None;
        // Cumulative ack.
        while let Some(p) = self.inflight.front() {
            if seq_diff(h.ack_nr, p.seq) < 0 {
                break;
            }
            // Invariant: front() was Some just above.
            let p = self.inflight.pop_front().expect("front exists");
            progress = true;
            self.inflight_bytes -= p.payload.len();
            if !p.acked {
                bytes_acked += p.payload.len();
                if p.need_resend {
                    self.need_resend -= 1;
                } else {
                    self.cur_window -= p.payload.len();
                    // Karn's rule, and no sample from a packet deemed lost
                    // (timeout, holes) but acked before its resend: its
                    // ack waited for a later one, so it measures the RTO.
                    if p.transmissions == 1 {
                        rtt_sample =
                            min_sample(rtt_sample, now.saturating_duration_since(p.sent_at));
                    }
                }
            }
            if p.kind == PacketType::Fin {
                self.fin_acked = true;
            }
        }
        // Selective ack.
        let mut sack_resend = false;
        if let Some(mask) = pkt.sack {
            let start = h.ack_nr.wrapping_add(2);
            let base_now = self.inflight.front().map_or(self.seq_nr, |p| p.seq);
            for (byte_i, byte) in mask.iter().take(MAX_SACK_LEN * 2).enumerate() {
                if *byte == 0 {
                    continue;
                }
                for bit in 0..8 {
                    if byte & (1 << bit) == 0 {
                        continue;
                    }
                    let seq = start.wrapping_add((byte_i * 8 + bit) as u16);
                    let idx = seq_diff(seq, base_now);
                    if idx < 0 || idx as usize >= self.inflight.len() {
                        continue;
                    }
                    let p = &mut self.inflight[idx as usize];
                    if p.acked {
                        continue;
                    }
                    p.acked = true;
                    bytes_acked += p.payload.len();
                    if p.need_resend {
                        p.need_resend = false;
                        self.need_resend -= 1;
                    } else {
                        self.cur_window -= p.payload.len();
                        if p.transmissions == 1 {
                            rtt_sample =
                                min_sample(rtt_sample, now.saturating_duration_since(p.sent_at));
                        }
                    }
                    progress = true;
                }
            }
            // A hole is lost once at least three packets sent after its
            // last transmission were selectively acked (libutp's rule of
            // three, made safe for holes that were already resent).
            let mut top = [0u64; SACK_RESEND_THRESHOLD as usize];
            let mut seen = 0usize;
            for i in (0..self.inflight.len()).rev() {
                let p = &self.inflight[i];
                if p.acked {
                    // Keep the three largest send orders seen, descending.
                    let mut o = p.sent_order;
                    for t in top.iter_mut() {
                        if o > *t {
                            std::mem::swap(&mut o, t);
                        }
                    }
                    seen += 1;
                    continue;
                }
                if seen >= top.len()
                    && top[top.len() - 1] > p.sent_order
                    && !p.need_resend
                    && p.transmissions > 0
                {
                    let p = &mut self.inflight[i];
                    p.need_resend = true;
                    self.need_resend += 1;
                    self.cur_window -= p.payload.len();
                    self.stats.fast_retransmits += 1;
                    sack_resend = true;
                }
            }
        }
        let _ = base;
        if let Some(rtt) = rtt_sample {
            self.update_rtt(rtt);
        }
        if progress {
            self.timeouts = 0;
            self.stalled_timeouts = 0;
            self.dup_acks = 0;
            self.rto = self.computed_rto();
            self.rto_deadline = if self.cur_window > 0 {
                Some(now + self.rto)
            } else {
                None
            };
            if let Some(r) = self.recovery_until
                && seq_diff(h.ack_nr, r) >= 0
            {
                self.recovery_until = None;
            }
        } else if h.packet_type == PacketType::State
            && pkt.payload.is_empty()
            && !self.inflight.is_empty()
            && h.ack_nr == self.inflight[0].seq.wrapping_sub(1)
        {
            self.dup_acks += 1;
            if self.dup_acks == DUP_ACK_THRESHOLD {
                let p = &mut self.inflight[0];
                if !p.acked && !p.need_resend && p.transmissions > 0 {
                    p.need_resend = true;
                    self.need_resend += 1;
                    self.cur_window -= p.payload.len();
                    self.stats.fast_retransmits += 1;
                    sack_resend = true;
                }
            }
        }
        if sack_resend {
            self.on_loss();
        }
        // LEDBAT.
        if h.timestamp_difference != 0 {
            self.delay.add(h.timestamp_difference, now);
        }
        if bytes_acked > 0 {
            self.ledbat(bytes_acked);
        }
    }

    fn on_loss(&mut self) {
        if self.recovery_until.is_none() {
            self.max_window = (self.max_window * 0.5).max(MIN_WINDOW);
            self.slow_start = false;
            self.recovery_until = Some(self.seq_nr.wrapping_sub(1));
        }
    }

    fn ledbat(&mut self, bytes_acked: usize) {
        let Some(delay) = self.delay.queuing_delay() else {
            return;
        };
        let target = self.config.target_delay.as_micros() as f64;
        // libutp: grow while under target (off_target > 0).
        let off_target = target - delay as f64;
        if self.slow_start {
            if off_target < target * 0.5 {
                self.slow_start = false;
            } else if self.window_limited {
                self.max_window += bytes_acked as f64;
                self.window_limited = false;
                return;
            } else {
                return;
            }
        }
        let acked = bytes_acked as f64;
        let window_factor = acked.min(self.max_window) / self.max_window.max(acked);
        let delay_factor = (off_target / target).max(-1.0);
        let mut gain = MAX_CWND_INCREASE_BYTES_PER_RTT * window_factor * delay_factor;
        if gain > 0.0 && !self.window_limited {
            // Do not grow a window the sender does not use.
            gain = 0.0;
        }
        self.window_limited = false;
        self.max_window = (self.max_window + gain).max(MIN_WINDOW);
    }

    fn update_rtt(&mut self, sample: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    fn computed_rto(&self) -> Duration {
        match self.srtt {
            None => self.config.initial_rto,
            Some(srtt) => (srtt + self.rttvar * 4).max(self.config.min_rto),
        }
    }

    fn process_data(&mut self, now: Instant, pkt: &Packet<'_>) {
        let h = &pkt.header;
        let dist = seq_diff(h.seq_nr, self.ack_nr.wrapping_add(1));
        if dist < 0 {
            self.stats.duplicates += 1;
            self.ack_pending = true;
            return;
        }
        let dist = dist as usize;
        if dist >= MAX_INFLIGHT_PACKETS {
            self.stats.invalid += 1;
            return;
        }
        if let Some(eof) = self.eof_pkt
            && seq_diff(h.seq_nr, eof) > 0
        {
            // Past the peer's FIN.
            self.stats.invalid += 1;
            return;
        }
        self.ack_pending = true;
        if h.packet_type == PacketType::Fin {
            self.eof_pkt = Some(h.seq_nr);
        }
        let payload = if h.packet_type == PacketType::Fin {
            &[][..]
        } else {
            pkt.payload
        };
        if self.read_buf.len() + self.reorder_bytes + payload.len()
            > self.config.recv_buffer + 2 * MAX_PAYLOAD
        {
            // The peer ignores our window: drop, it will resend.
            self.stats.invalid += 1;
            return;
        }
        if dist == 0 {
            self.read_buf.extend(payload);
            self.ack_nr = h.seq_nr;
            self.reorder.pop_front();
            while let Some(Some(_)) = self.reorder.front() {
                // Invariant: front() is Some(Some(_)) as just checked.
                let data = self.reorder.pop_front().flatten().expect("checked");
                self.reorder_bytes -= data.len();
                self.read_buf.extend(&data);
                self.ack_nr = self.ack_nr.wrapping_add(1);
            }
            if self.reorder.iter().all(Option::is_none) {
                self.reorder.clear();
            }
        } else {
            if self.reorder.len() <= dist {
                self.reorder.resize(dist + 1, None);
            }
            if self.reorder[dist].is_some() {
                self.stats.duplicates += 1;
                return;
            }
            self.reorder_bytes += payload.len();
            self.reorder[dist] = Some(payload.to_vec());
        }
        if self.eof_pkt == Some(self.ack_nr) {
            self.got_eof = true;
        }
        let _ = now;
    }

    fn check_closed(&mut self, now: Instant) {
        if self.state == State::Connected && self.fin_acked && self.got_eof {
            self.set_closed(now);
        }
    }

    fn set_closed(&mut self, now: Instant) {
        self.state = State::Closed;
        self.closed_at = Some(now);
        self.rto_deadline = None;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.cur_window = 0;
        self.need_resend = 0;
    }

    /// Handles expired timers; call when `now` reaches
    /// [`Connection::poll_timeout`] (calling earlier is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::AwaitSyn => {
                let after = now.saturating_duration_since(self.created);
                if after >= self.config.rendezvous_timeout {
                    self.fail(ConnectionError::RendezvousTimedOut {
                        remote: self.remote,
                        after,
                    });
                }
                return;
            }
            State::Closed => {
                if self
                    .closed_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.config.linger)
                {
                    self.lingered = true;
                }
                return;
            }
            State::Failed => return,
            _ => {}
        }
        if let Some(deadline) = self.rto_deadline
            && now >= deadline
        {
            self.stats.timeouts += 1;
            let connecting = self.state == State::SynSent;
            if self.heard_since_timeout && !connecting {
                self.heard_since_timeout = false;
            } else {
                self.timeouts += 1;
            }
            // A peer that answers but never acks our data (outside a zero
            // receive window, where waiting is right) is given up on too,
            // after four times as many timeouts.
            if self.peer_wnd >= MAX_PAYLOAD {
                self.stalled_timeouts += 1;
            }
            let limit = if connecting {
                self.config.syn_retransmissions
            } else {
                self.config.max_retransmissions
            };
            if self.stalled_timeouts > 4 * limit {
                self.timeouts = self.timeouts.max(limit + 1);
            }
            if self.timeouts > limit {
                self.fail(ConnectionError::TimedOut {
                    remote: self.remote,
                    retransmissions: self.timeouts - 1,
                    connecting,
                });
                return;
            }
            self.rto = (self.rto * 2).min(self.config.max_rto);
            // libutp: one packet, then slow start again.
            self.max_window = MIN_WINDOW;
            self.slow_start = true;
            self.recovery_until = Some(self.seq_nr.wrapping_sub(1));
            for p in self.inflight.iter_mut() {
                if !p.acked && !p.need_resend {
                    p.need_resend = true;
                    self.need_resend += 1;
                }
            }
            self.cur_window = 0;
            self.rto_deadline = Some(now + self.rto);
        }
        if self.state == State::Connected
            && now.saturating_duration_since(self.last_send) >= self.config.keepalive
        {
            self.ack_pending = true;
        }
    }

    /// When [`Connection::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitSyn => Some(self.created + self.config.rendezvous_timeout),
            State::Failed => None,
            State::Closed => self
                .closed_at
                .map(|t| t + self.config.linger)
                .filter(|_| !self.lingered),
            State::SynSent => self.rto_deadline,
            State::Connected => {
                let ka = (!self.ack_pending).then_some(self.last_send + self.config.keepalive);
                match (self.rto_deadline, ka) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    // ---- output ----

    /// Writes the next datagram to send into `buf` (at least
    /// [`MAX_DATAGRAM`] bytes) and returns its length, or `None` when there
    /// is nothing to send now.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.reset_pending {
            self.reset_pending = false;
            let n = self
                .header(PacketType::Reset, self.seq_nr, now)
                .encode(None, &[], buf);
            return self.sent(n, now);
        }
        match self.state {
            State::Failed | State::AwaitSyn => return None,
            State::Closed => {
                if self.ack_pending {
                    return self.send_state(now, buf);
                }
                return None;
            }
            _ => {}
        }
        if self.resend_syn_ack {
            self.resend_syn_ack = false;
            if let Some((syn_seq, isn)) = self.syn_ack {
                let mut h = self.header(PacketType::State, isn, now);
                h.ack_nr = syn_seq;
                let n = h.encode(None, &[], buf);
                return self.sent(n, now);
            }
        }
        let window = (self.max_window as usize).min(self.peer_wnd);
        // Retransmissions first.
        if self.need_resend > 0
            && let Some(i) = self.inflight.iter().position(|p| p.need_resend)
        {
            {
                let len = self.inflight[i].payload.len();
                if self.cur_window == 0 || self.cur_window + len <= window {
                    let p = &mut self.inflight[i];
                    p.need_resend = false;
                    if p.transmissions > 0 {
                        self.stats.retransmits += 1;
                    }
                    p.transmissions += 1;
                    p.sent_at = now;
                    self.send_counter += 1;
                    p.sent_order = self.send_counter;
                    self.need_resend -= 1;
                    self.cur_window += len;
                    if self.rto_deadline.is_none() {
                        self.rto_deadline = Some(now + self.rto);
                    }
                    return self.send_inflight(i, now, buf);
                }
                self.window_limited = (self.max_window as usize) <= self.peer_wnd;
                return self.ack_if_pending(now, buf);
            }
        }
        if self.state == State::SynSent {
            return None;
        }
        // New data.
        if !self.send_buf.is_empty() && self.inflight.len() < MAX_INFLIGHT_PACKETS {
            let len = self.send_buf.len().min(MAX_PAYLOAD);
            if self.cur_window == 0 || self.cur_window + len <= window {
                let payload: Vec<u8> = self.send_buf.drain(..len).collect();
                if self.send_buf.is_empty() {
                    // All packetized: an idle connection holds no send buffer.
                    self.send_buf = VecDeque::new();
                }
                self.push_packet(PacketType::Data, payload, now);
                return self.poll_transmit(now, buf);
            }
            // Only a congestion-limited sender may grow its window.
            self.window_limited = (self.max_window as usize) <= self.peer_wnd;
        }
        // FIN after the data.
        if self.close_requested
            && !self.fin_sent
            && self.send_buf.is_empty()
            && self.inflight.len() < MAX_INFLIGHT_PACKETS
        {
            self.fin_sent = true;
            self.push_packet(PacketType::Fin, Vec::new(), now);
            return self.poll_transmit(now, buf);
        }
        self.ack_if_pending(now, buf)
    }

    fn ack_if_pending(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.ack_pending {
            self.send_state(now, buf)
        } else {
            None
        }
    }

    fn header(&self, packet_type: PacketType, seq_nr: u16, now: Instant) -> Header {
        Header {
            packet_type,
            connection_id: if packet_type == PacketType::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            timestamp: self.micros(now),
            timestamp_difference: self.reply_micro,
            wnd_size: self.recv_window() as u32,
            seq_nr,
            ack_nr: self.ack_nr,
        }
    }

    /// The selective-ACK bitmask for what we hold out of order.
    fn sack(&self, out: &mut [u8; MAX_SACK_LEN]) -> Option<usize> {
        // reorder[0] is ack_nr + 1 (missing); bit i is reorder[i + 1].
        let mut highest = None;
        for (i, slot) in self
            .reorder
            .iter()
            .enumerate()
            .skip(1)
            .take(MAX_SACK_LEN * 8)
        {
            if slot.is_some() {
                let bit = i - 1;
                out[bit / 8] |= 1 << (bit % 8);
                highest = Some(bit);
            }
        }
        highest.map(|b| (b / 32 + 1) * 4)
    }

    fn send_state(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let mut mask = [0u8; MAX_SACK_LEN];
        let sack_len = self.sack(&mut mask);
        let h = self.header(PacketType::State, self.seq_nr, now);
        let n = h.encode(sack_len.map(|l| &mask[..l]), &[], buf);
        self.sent(n, now)
    }

    fn send_inflight(&mut self, i: usize, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let mut mask = [0u8; MAX_SACK_LEN];
        let sack_len = if self.inflight[i].kind == PacketType::Syn {
            None
        } else {
            self.sack(&mut mask)
        };
        let p = &self.inflight[i];
        let mut h = self.header(p.kind, p.seq, now);
        if p.kind == PacketType::Syn {
            h.ack_nr = 0;
        }
        let n = h.encode(sack_len.map(|l| &mask[..l]), &p.payload, buf);
        self.sent(n, now)
    }

    fn sent(&mut self, n: usize, now: Instant) -> Option<usize> {
        debug_assert!((HEADER_LEN..=MAX_DATAGRAM).contains(&n));
        self.ack_pending = false;
        self.last_send = now;
        self.last_wnd_advertised = self.recv_window();
        self.stats.packets_sent += 1;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two {
        a: Connection,
        b: Connection,
        now: Instant,
        buf: Vec<u8>,
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Collects every datagram `c` wants to send now.
    fn out(c: &mut Connection, now: Instant, buf: &mut [u8]) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        while let Some(n) = c.poll_transmit(now, buf) {
            v.push(buf[..n].to_vec());
        }
        v
    }

    fn feed(c: &mut Connection, now: Instant, pkts: &[Vec<u8>]) {
        for p in pkts {
            c.handle_packet(now, &Packet::decode(p).unwrap());
        }
    }

    /// A connected pair whose sequence numbers start just below the wrap.
    fn pair() -> Two {
        let now = Instant::now();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut a =
            Connection::connect(Config::default(), now, now, addr("192.0.2.2:2"), 100, 65530);
        let syn = out(&mut a, now, &mut buf);
        assert_eq!(syn.len(), 1);
        let p = Packet::decode(&syn[0]).unwrap();
        assert_eq!(p.header.packet_type, PacketType::Syn);
        assert_eq!(p.header.connection_id, 100);
        assert_eq!(p.header.seq_nr, 65530);
        let t = now + Duration::from_millis(1);
        let mut b = Connection::accept(Config::default(), t, now, addr("192.0.2.1:1"), &p, 65000);
        assert_eq!((b.recv_id(), b.send_id()), (101, 100));
        assert_eq!((a.recv_id(), a.send_id()), (100, 101));
        let st = out(&mut b, t, &mut buf);
        let h = Packet::decode(&st[0]).unwrap().header;
        assert_eq!(h.packet_type, PacketType::State);
        assert_eq!((h.connection_id, h.seq_nr, h.ack_nr), (100, 65000, 65530));
        assert_ne!(h.timestamp_difference, 0, "measured one-way delay echoed");
        let t = t + Duration::from_millis(1);
        feed(&mut a, t, &st);
        assert!(a.is_established() && b.is_established());
        Two { a, b, now: t, buf }
    }

    #[test]
    fn responder_data_right_after_handshake_is_in_order() {
        // libutp: the SYN-ACK carries the responder's next seq_nr, so the
        // initiator's ack_nr becomes seq_nr - 1 and the first data packet
        // (with that seq_nr) is in order.
        let mut t = pair();
        assert_eq!(t.b.write(b"first"), 5);
        let d = out(&mut t.b, t.now, &mut t.buf);
        assert_eq!(Packet::decode(&d[0]).unwrap().header.seq_nr, 65000);
        feed(&mut t.a, t.now, &d);
        let mut r = [0u8; 16];
        assert_eq!(t.a.read(&mut r), Some(5));
        assert_eq!(&r[..5], b"first");
    }

    #[test]
    fn lost_syn_ack_with_responder_data_already_sent() {
        // The SYN-ACK is lost and B sends data at once; A drops that data
        // (it has no ack_nr yet), retransmits its SYN, and must get the
        // original SYN-ACK back so the data is not skipped.
        let now = Instant::now();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut a = Connection::connect(Config::default(), now, now, addr("192.0.2.2:2"), 7, 1);
        let syn = out(&mut a, now, &mut buf);
        let p = Packet::decode(&syn[0]).unwrap();
        let mut b = Connection::accept(Config::default(), now, now, addr("192.0.2.1:1"), &p, 500);
        let _lost_syn_ack = out(&mut b, now, &mut buf);
        b.write(b"early");
        let data = out(&mut b, now, &mut buf);
        assert_eq!(Packet::decode(&data[0]).unwrap().header.seq_nr, 500);
        feed(&mut a, now, &data);
        assert!(!a.is_established());
        let t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        let syn2 = out(&mut a, t, &mut buf);
        feed(&mut b, t, &syn2);
        let reply = out(&mut b, t, &mut buf);
        let h = Packet::decode(&reply[0]).unwrap().header;
        assert_eq!(
            (h.packet_type, h.seq_nr, h.ack_nr),
            (PacketType::State, 500, 1)
        );
        feed(&mut a, t, &reply);
        assert!(a.is_established());
        // B's data comes again after its timeout and is read in order.
        let t2 = b.poll_timeout().unwrap();
        b.handle_timeout(t2);
        let again = out(&mut b, t2, &mut buf);
        feed(&mut a, t2, &again);
        let mut r = [0u8; 8];
        assert_eq!(a.read(&mut r), Some(5));
        assert_eq!(&r[..5], b"early");
    }

    #[test]
    fn fin_eof_waits_for_missing_data_and_sack_reports_holes() {
        let mut t = pair();
        // Three packets across the sequence wrap, then FIN.
        let chunk = vec![7u8; MAX_PAYLOAD];
        for _ in 0..3 {
            t.a.write(&chunk);
        }
        t.a.close();
        t.a.max_window = 10.0 * MIN_WINDOW;
        let pkts = out(&mut t.a, t.now, &mut t.buf);
        let seqs: Vec<u16> = pkts
            .iter()
            .map(|p| Packet::decode(p).unwrap().header.seq_nr)
            .collect();
        assert_eq!(seqs, vec![65531, 65532, 65533, 65534]);
        // Deliver 3rd data and FIN first: no EOF, SACK names them.
        feed(&mut t.b, t.now, &[pkts[2].clone(), pkts[3].clone()]);
        let mut r = vec![0u8; 8192];
        assert_eq!(t.b.read(&mut r), None);
        let ack = out(&mut t.b, t.now, &mut t.buf);
        let p = Packet::decode(&ack[0]).unwrap();
        assert_eq!(p.header.ack_nr, 65530);
        // bit 0 is ack_nr + 2 = 65532 (missing), bit 1 = 65533, bit 2 = FIN.
        assert_eq!(p.sack, Some(&[0b110u8, 0, 0, 0][..]));
        feed(&mut t.b, t.now, &[pkts[0].clone(), pkts[1].clone()]);
        let mut total = 0;
        while let Some(n) = t.b.read(&mut r) {
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 3 * MAX_PAYLOAD);
        assert!(t.b.is_eof());
        // B closes too; after both FINs are acked both are Closed.
        t.b.close();
        let b_out = out(&mut t.b, t.now, &mut t.buf);
        feed(&mut t.a, t.now, &b_out);
        let a_out = out(&mut t.a, t.now, &mut t.buf);
        feed(&mut t.b, t.now, &a_out);
        assert_eq!(t.a.state(), State::Closed);
        assert_eq!(t.b.state(), State::Closed);
    }

    #[test]
    fn rto_has_a_floor_backs_off_and_gives_up() {
        let mut t = pair();
        // A 2 ms RTT sample still gives the 500 ms floor.
        assert_eq!(t.a.rto(), Duration::from_millis(500));
        t.a.write(b"lost forever");
        let mut now = t.now;
        assert_eq!(out(&mut t.a, now, &mut t.buf).len(), 1);
        let mut rtos = Vec::new();
        while t.a.error().is_none() {
            now = t.a.poll_timeout().unwrap().max(now);
            t.a.handle_timeout(now);
            rtos.push(t.a.rto());
            let _ = out(&mut t.a, now, &mut t.buf);
            assert!(rtos.len() < 100);
        }
        assert_eq!(rtos[0], Duration::from_secs(1));
        assert_eq!(rtos[1], Duration::from_secs(2));
        assert!(rtos.iter().all(|r| *r <= Config::default().max_rto));
        let e = t.a.error().unwrap().to_string();
        assert_eq!(
            e,
            "uTP connection to 192.0.2.2:2 timed out after 8 retransmissions"
        );
        assert_eq!(t.a.state(), State::Failed);
        assert_eq!(t.a.read(&mut [0u8; 4]), Some(0));
    }

    #[test]
    fn packets_acked_after_a_timeout_give_no_rtt_sample_and_restart_slow_start() {
        // Issue 16: two packets go out, the first is lost, the ack of the
        // second is lost. After the RTO the first is resent and its ack
        // acks both: neither may be an RTT sample (the first was sent
        // twice, the second waited an RTO for a later ack), or the RTT
        // grows to the RTO and the RTO with it. The window restarts from
        // one packet in slow start (libutp).
        let mut t = pair();
        let rtt = t.a.rtt().unwrap();
        t.a.max_window = 10.0 * MIN_WINDOW;
        t.a.write(&vec![1u8; 2 * MAX_PAYLOAD]);
        let pkts = out(&mut t.a, t.now, &mut t.buf);
        assert_eq!(pkts.len(), 2);
        feed(&mut t.b, t.now, &pkts[1..]);
        let _lost_ack = out(&mut t.b, t.now, &mut t.buf);
        let at = t.a.poll_timeout().unwrap();
        t.a.handle_timeout(at);
        assert_eq!(t.a.congestion_window(), MAX_PAYLOAD);
        assert!(t.a.slow_start);
        let resent = out(&mut t.a, at, &mut t.buf);
        assert_eq!(resent.len(), 1, "one packet window");
        let later = at + Duration::from_millis(1);
        feed(&mut t.b, later, &resent);
        let ack = out(&mut t.b, later, &mut t.buf);
        feed(&mut t.a, later, &ack);
        assert!(t.a.is_flushed());
        assert_eq!(t.a.rtt(), Some(rtt), "no sample from this exchange");
        assert_eq!(t.a.rto(), Duration::from_millis(500));
    }

    #[test]
    fn fast_retransmit_on_three_duplicate_acks() {
        let mut t = pair();
        t.a.write(&vec![1u8; 5 * MAX_PAYLOAD]);
        // Let the window open.
        t.a.max_window = 10.0 * MIN_WINDOW;
        let pkts = out(&mut t.a, t.now, &mut t.buf);
        assert_eq!(pkts.len(), 5);
        // Packet 0 is lost; B acks the others without SACK (as a stack
        // without the extension would): three duplicate acks.
        let mut dups = Vec::new();
        for p in &pkts[1..4] {
            feed(&mut t.b, t.now, std::slice::from_ref(p));
            let mut a = out(&mut t.b, t.now, &mut t.buf);
            // Strip the SACK extension to test the duplicate-ack path.
            for d in &mut a {
                let h = Packet::decode(d).unwrap().header;
                let mut plain = vec![0u8; HEADER_LEN];
                h.encode(None, &[], &mut plain);
                *d = plain;
            }
            dups.extend(a);
        }
        feed(&mut t.a, t.now, &dups);
        let re = out(&mut t.a, t.now, &mut t.buf);
        assert_eq!(
            Packet::decode(&re[0]).unwrap().header.seq_nr,
            Packet::decode(&pkts[0]).unwrap().header.seq_nr
        );
        assert_eq!(t.a.stats().fast_retransmits, 1);
    }

    #[test]
    fn peer_that_answers_but_never_acks_is_given_up_on() {
        let mut t = pair();
        t.a.write(b"never acked");
        let mut now = t.now;
        let _ = out(&mut t.a, now, &mut t.buf);
        let mut rounds = 0;
        while t.a.error().is_none() {
            // B keeps talking (keep-alive STATEs acking nothing new).
            let ka = {
                t.b.ack_pending = true;
                out(&mut t.b, now, &mut t.buf)
            };
            feed(&mut t.a, now, &ka);
            now = t.a.poll_timeout().unwrap().max(now);
            t.a.handle_timeout(now);
            let _ = out(&mut t.a, now, &mut t.buf);
            rounds += 1;
            assert!(rounds < 1000);
        }
        assert!(t.a.error().unwrap().to_string().contains("timed out"));
        assert!(rounds > Config::default().max_retransmissions as usize);
    }

    #[test]
    fn idle_connection_sends_keepalive() {
        let mut t = pair();
        let _ = out(&mut t.a, t.now, &mut t.buf);
        let due = t.a.poll_timeout().unwrap();
        // A last sent its SYN 2 ms before `now`.
        assert_eq!(
            due - t.now + Duration::from_millis(2),
            Config::default().keepalive
        );
        t.a.handle_timeout(due - Duration::from_millis(1));
        assert!(out(&mut t.a, due, &mut t.buf).is_empty(), "not yet");
        t.a.handle_timeout(due);
        let ka = out(&mut t.a, due, &mut t.buf);
        assert_eq!(ka.len(), 1);
        assert_eq!(
            Packet::decode(&ka[0]).unwrap().header.packet_type,
            PacketType::State
        );
    }

    #[test]
    fn reset_from_peer_is_an_error() {
        let mut t = pair();
        t.b.abort();
        let r = out(&mut t.b, t.now, &mut t.buf);
        assert_eq!(
            Packet::decode(&r[0]).unwrap().header.packet_type,
            PacketType::Reset
        );
        feed(&mut t.a, t.now, &r);
        let e: io::Error = t.a.error().unwrap().clone().into();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(e.to_string(), "uTP connection to 192.0.2.2:2 reset by peer");
    }
}
