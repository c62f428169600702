//! The sans-IO admission core of a listener: who gets a handshake slot, who
//! is dropped to make room, who gets a place in the accept queue. No
//! sockets, no tasks, no clock: every time-dependent call takes `now`.
//!
//! # Model
//!
//! Every accepted carrier (TCP connection, uTP connection) takes one of
//! `slots` handshake slots, shared by all the listener's sockets, and moves
//! through two stages: [`Stage::Connected`] (nothing proven yet) and
//! [`Stage::Answered`] (its first message decrypted and was answered; now
//! waiting for the admission record). Once the admission record decrypts
//! the connection is *proven*: it leaves the slot pool for the accept queue
//! (`accept_queue` places), where it waits for the application's `accept`.
//!
//! - **Never refuse the newcomer.** When every slot is taken, the pending
//!   connection that made the least progress for the longest is dropped: the
//!   lowest stage first, then the one that entered its stage first. A flood
//!   of silent connections therefore only ever displaces itself.
//! - **Two deadlines.** A connection must deliver its whole first message
//!   within `first_message_timeout` of arriving, and prove itself within
//!   `handshake_timeout`.
//! - **Per-source fairness under pressure only.** A source is an IPv4
//!   address (/32) or an IPv6 /64. Once the pool is at least `pressure`
//!   full, a newcomer from a source that holds `source_share` of the slots
//!   or more displaces one of that source's own connections; otherwise the
//!   victim comes from the sources over their share, if any. With room to
//!   spare one source may open as many connections as it likes.
//! - **The accept queue** is bounded and shared the same way: a good first
//!   message is answered with the busy rejection when the queue is full, or
//!   when it is under pressure and the source already holds its share.
//!
//! # Calls
//!
//! Input: [`handle_arrival`](Admission::handle_arrival),
//! [`handle_first_message`](Admission::handle_first_message),
//! [`handle_proven`](Admission::handle_proven),
//! [`handle_closed`](Admission::handle_closed),
//! [`handle_accepted`](Admission::handle_accepted),
//! [`handle_timeout`](Admission::handle_timeout). Output:
//! [`poll_event`](Admission::poll_event) (connections the driver must drop;
//! poll after every input until `None`),
//! [`poll_timeout`](Admission::poll_timeout) (when to call
//! `handle_timeout` next), [`poll_report`](Admission::poll_report) (a
//! rate-limited summary of refusals, for the log).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Identifies a connection to the core; the driver maps it to its task.
pub(crate) type ConnId = u64;

/// The settings of the core (from [`ListenerOptions`](crate::ListenerOptions)).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Handshake slots (at least 1).
    pub(crate) slots: usize,
    /// Accept-queue places (at least 1).
    pub(crate) accept_queue: usize,
    /// How long a connection may take to deliver its first message.
    pub(crate) first_message_timeout: Duration,
    /// How long a connection may take to prove itself.
    pub(crate) handshake_timeout: Duration,
    /// The fill fraction (0..=1) from which per-source shares apply.
    pub(crate) pressure: f64,
    /// The share (0..=1) of slots or queue places one source may hold
    /// under pressure.
    pub(crate) source_share: f64,
    /// How often a summary of refusals is logged at most.
    pub(crate) report_every: Duration,
}

/// A source: an IPv4 address, or the /64 of an IPv6 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// An IPv4 address (an IPv4-mapped IPv6 address counts as one).
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// How far a pending connection got. Ordered: later stages are more
/// progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Accepted; its first message has not arrived whole.
    Connected,
    /// Its first message decrypted and was answered; the admission record
    /// has not arrived.
    Answered,
}

/// Why the core asks the driver to drop a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The slots were full and it had made the least progress for longest.
    Evicted,
    /// Its first message did not arrive in time.
    FirstMessageTimeout,
    /// It did not prove itself in time.
    HandshakeTimeout,
}

/// Output of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Drop (abort) this pending connection; the core already forgot it.
    Drop(ConnId, DropReason),
}

/// The answer to a good first message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Answer it; the connection moves to [`Stage::Answered`].
    Proceed,
    /// Refuse it with the busy rejection: no accept-queue place for it.
    Busy,
}

/// A rate-limited summary of what the core refused, for one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Report {
    /// Pending connections dropped to make room.
    pub(crate) evicted: u64,
    /// Connections dropped for a missed deadline.
    pub(crate) timed_out: u64,
    /// Good first messages refused as busy.
    pub(crate) busy: u64,
    /// The window the counts cover.
    pub(crate) window: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.window.as_secs().max(1);
        let mut parts = Vec::new();
        if self.evicted > 0 {
            parts.push(format!(
                "dropped {} pending connections: handshake slots full",
                thousands(self.evicted)
            ));
        }
        if self.timed_out > 0 {
            parts.push(format!(
                "dropped {} connections: handshake too slow",
                thousands(self.timed_out)
            ));
        }
        if self.busy > 0 {
            parts.push(format!(
                "refused {} connections as busy: accept queue full",
                thousands(self.busy)
            ));
        }
        write!(f, "in the last {secs} s: {}", parts.join("; "))
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Counts a repeated condition and says when to log it: the first time at
/// once, then at most once per window, with the count since the last line.
#[derive(Clone, Debug)]
pub(crate) struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    count: u64,
}

impl RateLimited {
    /// Logs at most once per `every`.
    pub(crate) fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            last: None,
            count: 0,
        }
    }

    /// Counts one occurrence; `Some(n)` when a line is due, `n` being the
    /// occurrences it covers.
    pub(crate) fn record(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Pending {
    source: Source,
    stage: Stage,
    arrived: Instant,
    /// When it entered its stage.
    since: Instant,
}

/// The admission core. See the module docs.
#[derive(Debug)]
pub(crate) struct Admission {
    config: Config,
    next_id: ConnId,
    pending: HashMap<ConnId, Pending>,
    pending_by_source: HashMap<Source, usize>,
    queued: HashMap<ConnId, Source>,
    queued_by_source: HashMap<Source, usize>,
    events: VecDeque<Event>,
    counts: Report,
    window_start: Option<Instant>,
}

fn bump(map: &mut HashMap<Source, usize>, s: Source) {
    *map.entry(s).or_insert(0) += 1;
}

fn unbump(map: &mut HashMap<Source, usize>, s: Source) {
    if let Some(n) = map.get_mut(&s) {
        *n -= 1;
        if *n == 0 {
            map.remove(&s);
        }
    }
}

/// `fraction` of `total`, rounded up, at least 1.
fn part(total: usize, fraction: f64) -> usize {
    ((total as f64 * fraction.clamp(0.0, 1.0)).ceil() as usize).max(1)
}

impl Admission {
    /// A core with no connections.
    pub(crate) fn new(mut config: Config) -> Admission {
        config.slots = config.slots.max(1);
        config.accept_queue = config.accept_queue.max(1);
        Admission {
            config,
            next_id: 0,
            pending: HashMap::new(),
            pending_by_source: HashMap::new(),
            queued: HashMap::new(),
            queued_by_source: HashMap::new(),
            events: VecDeque::new(),
            counts: Report {
                evicted: 0,
                timed_out: 0,
                busy: 0,
                window: Duration::ZERO,
            },
            window_start: None,
        }
    }

    /// How many connections hold a handshake slot.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// How many proven connections wait for `accept`.
    pub(crate) fn queued(&self) -> usize {
        self.queued.len()
    }

    /// The stage of a pending connection, `None` if it holds no slot.
    #[cfg(test)]
    pub(crate) fn stage(&self, id: ConnId) -> Option<Stage> {
        self.pending.get(&id).map(|p| p.stage)
    }

    fn slots_share(&self) -> usize {
        part(self.config.slots, self.config.source_share)
    }

    /// A new connection from `source`. It always gets a slot; when none was
    /// free, the connection that made the least progress for the longest is
    /// dropped (see [`poll_event`](Admission::poll_event)).
    pub(crate) fn handle_arrival(&mut self, source: IpAddr, now: Instant) -> ConnId {
        let source = Source::from(source);
        if self.pending.len() >= self.config.slots {
            self.evict_for(source);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(
            id,
            Pending {
                source,
                stage: Stage::Connected,
                arrived: now,
                since: now,
            },
        );
        bump(&mut self.pending_by_source, source);
        id
    }

    fn evict_for(&mut self, newcomer: Source) {
        let share = self.slots_share();
        let under_pressure = self.pending.len() >= part(self.config.slots, self.config.pressure);
        let own = self.pending_by_source.get(&newcomer).copied().unwrap_or(0);
        let heavy = |s: &Source| self.pending_by_source.get(s).copied().unwrap_or(0) > share;
        let pick = |filter: &dyn Fn(&Pending) -> bool| {
            self.pending
                .iter()
                .filter(|(_, p)| filter(p))
                .min_by_key(|(id, p)| (p.stage, p.since, **id))
                .map(|(id, _)| *id)
        };
        let victim = if under_pressure && own >= share {
            pick(&|p| p.source == newcomer)
        } else if under_pressure {
            pick(&|p| heavy(&p.source)).or_else(|| pick(&|_| true))
        } else {
            pick(&|_| true)
        };
        if let Some(id) = victim {
            self.forget_pending(id);
            self.counts.evicted += 1;
            self.events.push_back(Event::Drop(id, DropReason::Evicted));
        }
    }

    fn forget_pending(&mut self, id: ConnId) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        unbump(&mut self.pending_by_source, p.source);
        Some(p)
    }

    fn queue_has_room(&self, source: Source) -> bool {
        let cap = self.config.accept_queue;
        if self.queued.len() >= cap {
            return false;
        }
        let under_pressure = self.queued.len() >= part(cap, self.config.pressure);
        let held = self.queued_by_source.get(&source).copied().unwrap_or(0);
        !(under_pressure && held >= part(cap, self.config.source_share))
    }

    /// The first message of `id` decrypted: answer it, or refuse it as busy
    /// when the accept queue has no place for its source (the connection is
    /// then forgotten).
    pub(crate) fn handle_first_message(&mut self, id: ConnId, now: Instant) -> Answer {
        let Some(p) = self.pending.get(&id) else {
            // Already dropped: the driver is aborting it.
            return Answer::Busy;
        };
        if !self.queue_has_room(p.source) {
            self.forget_pending(id);
            self.counts.busy += 1;
            return Answer::Busy;
        }
        if let Some(p) = self.pending.get_mut(&id) {
            p.stage = Stage::Answered;
            p.since = now;
        }
        Answer::Proceed
    }

    /// The admission record of `id` decrypted: it leaves the slot pool for
    /// the accept queue. `false` when it holds no slot any more or the queue
    /// filled up since its first message: the driver then closes it.
    pub(crate) fn handle_proven(&mut self, id: ConnId, _now: Instant) -> bool {
        let Some(p) = self.pending.get(&id) else {
            return false;
        };
        let source = p.source;
        if !self.queue_has_room(source) {
            self.forget_pending(id);
            self.counts.busy += 1;
            return false;
        }
        self.forget_pending(id);
        self.queued.insert(id, source);
        bump(&mut self.queued_by_source, source);
        true
    }

    /// A pending connection ended (failed, or its task finished). Harmless
    /// for a connection the core already forgot or queued.
    pub(crate) fn handle_closed(&mut self, id: ConnId) {
        self.forget_pending(id);
    }

    /// The application took queued connection `id` (or it was discarded).
    pub(crate) fn handle_accepted(&mut self, id: ConnId) {
        if let Some(s) = self.queued.remove(&id) {
            unbump(&mut self.queued_by_source, s);
        }
    }

    fn deadline(&self, p: &Pending) -> Instant {
        let whole = p.arrived + self.config.handshake_timeout;
        match p.stage {
            Stage::Connected => whole.min(p.arrived + self.config.first_message_timeout),
            Stage::Answered => whole,
        }
    }

    /// Drops every pending connection past its deadline.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<(ConnId, DropReason)> = self
            .pending
            .iter()
            .filter(|(_, p)| self.deadline(p) <= now)
            .map(|(id, p)| {
                let why = match p.stage {
                    Stage::Connected
                        if self.config.first_message_timeout < self.config.handshake_timeout =>
                    {
                        DropReason::FirstMessageTimeout
                    }
                    _ => DropReason::HandshakeTimeout,
                };
                (*id, why)
            })
            .collect();
        let mut late = late;
        late.sort_unstable_by_key(|(id, _)| *id);
        for (id, why) in late {
            self.forget_pending(id);
            self.counts.timed_out += 1;
            self.events.push_back(Event::Drop(id, why));
        }
    }

    /// The next connection to drop, if any.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Admission::handle_timeout) has work next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| self.deadline(p)).min()
    }

    /// A summary of the refusals since the last report, at most once per
    /// `report_every`; `None` when nothing was refused or the window is
    /// still open.
    pub(crate) fn poll_report(&mut self, now: Instant) -> Option<Report> {
        let start = *self.window_start.get_or_insert(now);
        let window = now.saturating_duration_since(start);
        if window < self.config.report_every {
            return None;
        }
        self.window_start = Some(now);
        let c = &mut self.counts;
        if c.evicted == 0 && c.timed_out == 0 && c.busy == 0 {
            return None;
        }
        let report = Report {
            window,
            ..c.clone()
        };
        c.evicted = 0;
        c.timed_out = 0;
        c.busy = 0;
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn config(slots: usize, queue: usize) -> Config {
        Config {
            slots,
            accept_queue: queue,
            first_message_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(10),
            pressure: 0.75,
            source_share: 0.25,
            report_every: Duration::from_secs(10),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn drops(core: &mut Admission) -> Vec<Event> {
        std::iter::from_fn(|| core.poll_event()).collect()
    }

    #[test]
    fn a_full_pool_drops_the_oldest_silent_connection_not_the_newcomer() {
        let t0 = Instant::now();
        let mut core = Admission::new(config(4, 4));
        let ids: Vec<_> = (0..4)
            .map(|i| core.handle_arrival(ip(1), t0 + Duration::from_millis(i)))
            .collect();
        // One of them is mid-handshake.
        assert_eq!(core.handle_first_message(ids[0], t0), Answer::Proceed);
        let new = core.handle_arrival(ip(1), t0 + Duration::from_millis(10));
        assert_eq!(drops(&mut core), [Event::Drop(ids[1], DropReason::Evicted)]);
        assert_eq!(core.stage(new), Some(Stage::Connected));
        assert_eq!(core.stage(ids[0]), Some(Stage::Answered));
        assert_eq!(core.pending(), 4);
    }

    #[test]
    fn mid_handshake_connections_go_only_after_every_silent_one() {
        let t0 = Instant::now();
        let mut core = Admission::new(config(3, 4));
        let a = core.handle_arrival(ip(1), t0);
        let b = core.handle_arrival(ip(1), t0);
        let c = core.handle_arrival(ip(1), t0);
        core.handle_first_message(a, t0);
        core.handle_first_message(b, t0 + Duration::from_millis(1));
        core.handle_first_message(c, t0 + Duration::from_millis(2));
        core.handle_arrival(ip(1), t0 + Duration::from_millis(3));
        assert_eq!(drops(&mut core), [Event::Drop(a, DropReason::Evicted)]);
    }

    #[test]
    fn first_message_deadline_is_shorter_than_the_handshake_timeout() {
        let t0 = Instant::now();
        let mut core = Admission::new(config(8, 8));
        let silent = core.handle_arrival(ip(1), t0);
        let talker = core.handle_arrival(ip(1), t0);
        core.handle_first_message(talker, t0 + Duration::from_secs(1));
        assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        core.handle_timeout(t0 + Duration::from_secs(3));
        assert_eq!(
            drops(&mut core),
            [Event::Drop(silent, DropReason::FirstMessageTimeout)]
        );
        assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        core.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(
            drops(&mut core),
            [Event::Drop(talker, DropReason::HandshakeTimeout)]
        );
        assert_eq!(core.poll_timeout(), None);
    }

    #[test]
    fn one_source_may_fill_the_pool_when_no_one_else_wants_it() {
        let t0 = Instant::now();
        let mut core = Admission::new(config(100, 100));
        for _ in 0..100 {
            core.handle_arrival(ip(1), t0);
        }
        assert_eq!(core.pending(), 100);
        assert!(drops(&mut core).is_empty());
    }

    #[test]
    fn under_pressure_a_heavy_source_displaces_only_itself() {
        let t0 = Instant::now();
        let mut core = Admission::new(config(8, 8));
        // A good client from another source, silent so far (the worst
        // progress), arrived first.
        let good = core.handle_arrival(ip(2), t0);
        let attackers: Vec<_> = (0..7)
            .map(|i| core.handle_arrival(ip(1), t0 + Duration::from_millis(1 + i)))
            .collect();
        for i in 0..50 {
            core.handle_arrival(ip(1), t0 + Duration::from_millis(10 + i));
        }
        let dropped = drops(&mut core);
        assert_eq!(dropped.len(), 50);
        assert!(!dropped.contains(&Event::Drop(good, DropReason::Evicted)));
        assert!(dropped.contains(&Event::Drop(attackers[0], DropReason::Evicted)));
        assert_eq!(core.stage(good), Some(Stage::Connected));
    }

    #[test]
    fn a_light_newcomer_displaces_a_heavy_source() {
        let t0 = Instant::now();
        let mut core = Admission::new(config(4, 4));
        let good = core.handle_arrival(ip(2), t0);
        let bad: Vec<_> = (1..4)
            .map(|i| core.handle_arrival(ip(1), t0 + Duration::from_millis(i)))
            .collect();
        core.handle_arrival(ip(3), t0 + Duration::from_millis(9));
        assert_eq!(drops(&mut core), [Event::Drop(bad[0], DropReason::Evicted)]);
        assert!(core.stage(good).is_some());
    }

    #[test]
    fn ipv6_sources_are_64_bit_prefixes() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::from(a), Source::from(b));
        assert_ne!(Source::from(a), Source::from(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(Source::from(mapped), Source::from(ip(1)));
        assert_ne!(
            Source::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Source::from(ip(1))
        );

        // Fairness by /64: one /64 that floods displaces only itself.
        let t0 = Instant::now();
        let mut core = Admission::new(config(8, 8));
        let good = core.handle_arrival(c, t0);
        for i in 0..40u16 {
            let host = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i));
            core.handle_arrival(host, t0 + Duration::from_millis(1 + u64::from(i)));
        }
        assert!(core.stage(good).is_some());
    }

    #[test]
    fn proven_connections_leave_the_pool_for_the_queue() {
        let t0 = Instant::now();
        let mut core = Admission::new(config(2, 2));
        let a = core.handle_arrival(ip(1), t0);
        assert_eq!(core.handle_first_message(a, t0), Answer::Proceed);
        assert!(core.handle_proven(a, t0));
        assert_eq!((core.pending(), core.queued()), (0, 1));
        // Its slot is free: two more fit without a drop.
        core.handle_arrival(ip(1), t0);
        core.handle_arrival(ip(1), t0);
        assert!(drops(&mut core).is_empty());
        // A late close of the queued one does not touch the queue.
        core.handle_closed(a);
        assert_eq!(core.queued(), 1);
        core.handle_accepted(a);
        assert_eq!(core.queued(), 0);
    }

    #[test]
    fn a_full_queue_answers_busy_at_once() {
        let t0 = Instant::now();
        let mut core = Admission::new(config(8, 2));
        for _ in 0..2 {
            let id = core.handle_arrival(ip(1), t0);
            core.handle_first_message(id, t0);
            assert!(core.handle_proven(id, t0));
        }
        let late = core.handle_arrival(ip(2), t0);
        assert_eq!(core.handle_first_message(late, t0), Answer::Busy);
        assert_eq!(core.pending(), 0, "a busy connection leaves its slot");
        let r = core.poll_report(t0);
        assert_eq!(r, None, "the report window just opened");
        let r = core.poll_report(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(r.busy, 1);
        assert_eq!(
            r.to_string(),
            "in the last 10 s: refused 1 connections as busy: accept queue full"
        );
    }

    #[test]
    fn the_queue_is_shared_per_source_under_pressure() {
        let t0 = Instant::now();
        let mut core = Admission::new(config(64, 8));
        let mut admitted = 0;
        for _ in 0..8 {
            let id = core.handle_arrival(ip(1), t0);
            if core.handle_first_message(id, t0) == Answer::Proceed && core.handle_proven(id, t0) {
                admitted += 1;
            }
        }
        // 6 (pressure at 75%) fill freely, then the source holds more than
        // its share (2 of 8) and is refused.
        assert_eq!(admitted, 6);
        let other = core.handle_arrival(ip(2), t0);
        assert_eq!(core.handle_first_message(other, t0), Answer::Proceed);
        assert!(core.handle_proven(other, t0));
    }

    #[test]
    fn repeated_warnings_are_rate_limited_with_a_count() {
        let t0 = Instant::now();
        let mut r = RateLimited::new(Duration::from_secs(10));
        assert_eq!(r.record(t0), Some(1));
        for i in 1..1234 {
            assert_eq!(r.record(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.record(t0 + Duration::from_secs(10)), Some(1234));
    }

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234), "1,234");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    mod property {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Who {
            /// A silent attacker from source 1.
            Silent,
            /// An attacker from source 1 that sends a (replayed) first message
            /// and never proves itself.
            Replayer,
            /// A good client from source 2 (or from source 1 when `same`).
            Good,
        }

        fn who() -> impl Strategy<Value = Who> {
            prop_oneof![3 => Just(Who::Silent), 2 => Just(Who::Replayer), 1 => Just(Who::Good)]
        }

        proptest! {
            /// For any arrival order of attackers and good clients within the
            /// budget (at most `slots / 2` arrivals within a good client's
            /// handshake time), a good client from another source that
            /// completes its handshake promptly is admitted.
            #[test]
            fn a_prompt_good_client_is_admitted(
                arrivals in proptest::collection::vec((who(), 0u64..20), 1..400),
                slots in 8usize..64,
            ) {
                let mut core = Admission::new(config(slots, 1024));
                let t0 = Instant::now();
                let mut now = t0;
                // A good client proves itself `rtt` after arriving; the budget
                // keeps arrivals to at most slots/2 per handshake time.
                let rtt = Duration::from_millis(10);
                let spacing = rtt * 2 / (slots as u32 / 2);
                let mut goods: Vec<(ConnId, Instant)> = Vec::new();
                let mut replayers: Vec<(ConnId, Instant)> = Vec::new();
                let mut dropped = std::collections::HashSet::new();
                let mut admitted = 0usize;
                let mut good_total = 0usize;
                for (w, jitter) in arrivals {
                    now += spacing + Duration::from_micros(jitter);
                    // Finish whatever is due before this arrival.
                    for &(id, at) in &goods {
                        if at + rtt / 2 <= now && core.stage(id) == Some(Stage::Connected) {
                            prop_assert_eq!(core.handle_first_message(id, at + rtt / 2), Answer::Proceed);
                        }
                    }
                    goods.retain(|&(id, at)| {
                        if at + rtt <= now && core.stage(id) == Some(Stage::Answered) {
                            if core.handle_proven(id, at + rtt) {
                                admitted += 1;
                            }
                            return false;
                        }
                        true
                    });
                    for &(id, at) in &replayers {
                        if at + rtt / 2 <= now && core.stage(id) == Some(Stage::Connected) {
                            core.handle_first_message(id, at + rtt / 2);
                        }
                    }
                    core.handle_timeout(now);
                    while let Some(Event::Drop(id, _)) = core.poll_event() {
                        dropped.insert(id);
                    }
                    match w {
                        Who::Silent => { core.handle_arrival(ip(1), now); }
                        Who::Replayer => replayers.push((core.handle_arrival(ip(1), now), now)),
                        Who::Good => {
                            good_total += 1;
                            goods.push((core.handle_arrival(ip(2), now), now));
                        }
                    }
                    while let Some(Event::Drop(id, _)) = core.poll_event() {
                        dropped.insert(id);
                    }
                }
                // Let the last good clients finish.
                now += rtt;
                for (id, _) in goods {
                    prop_assert!(!dropped.contains(&id), "good client {} was dropped", id);
                    if core.stage(id) == Some(Stage::Connected) {
                        prop_assert_eq!(core.handle_first_message(id, now), Answer::Proceed);
                    }
                    if core.handle_proven(id, now) {
                        admitted += 1;
                    }
                }
                prop_assert_eq!(admitted, good_total);
            }
        }
    }
}
