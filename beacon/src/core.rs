//! The sans-IO beacon: what to send when, and what to make of a datagram.
//!
//! [`BeaconCore`] owns no socket and never reads the clock: every call that
//! depends on time takes `now`. A driver (this crate's is a tokio task) runs
//! it like this:
//!
//! 1. sleep until [`BeaconCore::poll_timeout`] or until a datagram arrives;
//! 2. for each datagram, call [`BeaconCore::handle_datagram`] and hand a
//!    [`Outcome::Message`] to the user;
//! 3. call [`BeaconCore::poll_transmit`] and send what it returns to every
//!    target (broadcast addresses, multicast groups), until it returns `None`;
//! 4. go back to 1.
//!
//! Commands ([`BeaconCore::set_data`], [`BeaconCore::set_period`],
//! [`BeaconCore::restart_burst`]) may come at any point; poll again after them.
//!
//! # The send schedule
//!
//! - At start, a **burst**: one send at once, then [`BURST_GAPS`] later
//!   (50, 100 and 200 ms after the previous send, each at most one `period`),
//!   so a lost datagram does not cost a whole period. Then one send per
//!   `period`.
//! - **Answers**: on hearing an id it has not seen recently, the beacon sends
//!   within [`ANSWER_JITTER`] (random, from the seeded generator) instead of
//!   waiting for its next periodic send, so a newcomer finds beacons that were
//!   already running in about a round trip rather than in up to one `period`.
//!   Answers are rate-limited to one per [`ANSWER_MIN_GAP`]: a newcomer heard
//!   sooner after the last answer is answered at the end of that gap.
//! - The driver calls [`BeaconCore::restart_burst`] when a new interface comes
//!   up, so peers on it are found quickly too.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use beacon::core::{BeaconCore, CoreConfig, Outcome};
//!
//! let t0 = Instant::now();
//! let cfg = CoreConfig::new(Duration::from_secs(1));
//! let mut a = BeaconCore::new(cfg.clone(), vec![1; 8], b"a", t0).unwrap();
//! let mut b = BeaconCore::new(cfg.seeded(2), vec![2; 8], b"b", t0).unwrap();
//!
//! // `a` sends at once; `b` hears it; `a` ignores its own echo.
//! let wire = a.poll_transmit(t0).unwrap().to_vec();
//! assert_eq!(b.handle_datagram(t0, &wire).data(), Some(&b"a"[..]));
//! assert_eq!(a.handle_datagram(t0, &wire), Outcome::OwnEcho);
//! // Nothing more is due until the next burst send.
//! assert!(a.poll_transmit(t0).is_none());
//! assert!(a.poll_timeout() > t0);
//! ```

use std::time::{Duration, Instant};

use crate::packet::{self, DecodeError, EncodeError, Packet};

/// Gaps between the sends of the start-up burst, after the first send.
pub const BURST_GAPS: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
];

/// The longest random delay before answering a newly heard beacon.
pub const ANSWER_JITTER: Duration = Duration::from_millis(20);

/// The shortest time between two answers.
pub const ANSWER_MIN_GAP: Duration = Duration::from_millis(100);

/// How many recently heard ids a core remembers (to answer only new ones).
pub const SEEN_CAPACITY: usize = 128;

/// The longest period: longer ones are treated as this (a day).
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// `t + d`, with `d` capped at [`MAX_PERIOD`] so it cannot overflow.
fn later(t: Instant, d: Duration) -> Instant {
    let d = d.min(MAX_PERIOD);
    t.checked_add(d).unwrap_or(t)
}

/// Settings of a [`BeaconCore`].
///
/// ```
/// use std::time::Duration;
/// let cfg = beacon::core::CoreConfig::new(Duration::from_millis(500)).seeded(7);
/// assert_eq!(cfg.period, Duration::from_millis(500));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CoreConfig {
    /// Time between periodic sends. Must not be zero.
    pub period: Duration,
    /// Seed of the generator for answer jitter (the core has no other
    /// randomness: ids are chosen by the caller).
    pub seed: u64,
    /// Whether to answer newly heard beacons early (see the module docs).
    pub answer_new_peers: bool,
}

impl CoreConfig {
    /// A configuration with the given period, seed 0 and answers on.
    ///
    /// ```
    /// let cfg = beacon::core::CoreConfig::new(std::time::Duration::from_secs(1));
    /// assert!(cfg.answer_new_peers);
    /// ```
    pub fn new(period: Duration) -> Self {
        CoreConfig {
            period,
            seed: 0,
            answer_new_peers: true,
        }
    }

    /// The same configuration with another seed.
    ///
    /// ```
    /// let cfg = beacon::core::CoreConfig::new(std::time::Duration::from_secs(1)).seeded(42);
    /// assert_eq!(cfg.seed, 42);
    /// ```
    pub fn seeded(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The same configuration with early answers on or off.
    ///
    /// ```
    /// let cfg = beacon::core::CoreConfig::new(std::time::Duration::from_secs(1)).answering(false);
    /// assert!(!cfg.answer_new_peers);
    /// ```
    pub fn answering(mut self, on: bool) -> Self {
        self.answer_new_peers = on;
        self
    }
}

/// What a received datagram was.
///
/// ```
/// use beacon::core::Outcome;
/// use beacon::packet::DecodeError;
/// let o: Outcome<'_> = Outcome::Dropped(DecodeError::ForeignMagic);
/// assert!(matches!(o, Outcome::Dropped(_)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Another beacon's message: its id and data.
    Message(Packet<'a>),
    /// Our own message, heard back: ignore.
    OwnEcho,
    /// Not a beacon message (counted in [`Stats::dropped`]).
    Dropped(DecodeError),
}

impl<'a> Outcome<'a> {
    /// The data of a [`Outcome::Message`], else `None`.
    ///
    /// ```
    /// use beacon::core::Outcome;
    /// use beacon::packet::Packet;
    /// let o = Outcome::Message(Packet { id: b"i", data: b"d" });
    /// assert_eq!(o.data(), Some(&b"d"[..]));
    /// assert_eq!(Outcome::OwnEcho.data(), None);
    /// ```
    pub fn data(&self) -> Option<&'a [u8]> {
        match self {
            Outcome::Message(p) => Some(p.data),
            _ => None,
        }
    }
}

/// Counters of a beacon.
///
/// ```
/// let s = beacon::Stats::default();
/// assert_eq!(s.dropped, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams handed to the core.
    pub received: u64,
    /// Other beacons' messages accepted.
    pub delivered: u64,
    /// Our own messages heard back.
    pub own_echoes: u64,
    /// Malformed, truncated, oversized or foreign datagrams dropped.
    pub dropped: u64,
    /// Messages sent (one count per scheduled send, whatever the number of
    /// targets).
    pub sends: u64,
    /// Early answers to newly heard beacons among the sends.
    pub answers: u64,
    /// Datagrams from outside the interfaces a restricted beacon uses,
    /// ignored (counted by the driver; the core never sees them).
    pub ignored: u64,
    /// Messages lost because the receive queue was full: the user did not
    /// read them fast enough (counted by the driver).
    pub overflowed: u64,
    /// Sends the operating system refused, one per target (counted by the
    /// driver).
    pub send_errors: u64,
}

/// The sans-IO beacon state machine. See the [module docs](self).
#[derive(Debug)]
pub struct BeaconCore {
    id: Vec<u8>,
    data_len: usize,
    wire: Vec<u8>,
    period: Duration,
    next_send: Instant,
    burst_next: usize,
    periodic_pending: bool,
    last_send: Option<Instant>,
    answer_pending: bool,
    last_answer: Option<Instant>,
    answer_new_peers: bool,
    seen: Vec<(Vec<u8>, Instant)>,
    rng: u64,
    stats: Stats,
}

impl BeaconCore {
    /// A core that will send `id || data` every `config.period`, starting at
    /// `now` with a burst.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if `id` or `data` is over its limit.
    ///
    /// # Panics
    ///
    /// If `config.period` is zero (a programming error; the public
    /// constructors refuse it with an error first).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// assert_eq!(core.poll_timeout(), t0); // the first send is due at once
    /// ```
    pub fn new(
        config: CoreConfig,
        id: Vec<u8>,
        data: &[u8],
        now: Instant,
    ) -> Result<Self, crate::Error> {
        if config.period.is_zero() {
            return Err(crate::Error::PeriodOutOfRange {
                what: "period",
                value: config.period,
            });
        }
        let mut wire = Vec::new();
        packet::encode(&id, data, &mut wire)?;
        Ok(BeaconCore {
            id,
            data_len: data.len(),
            wire,
            period: config.period,
            next_send: now,
            burst_next: 0,
            periodic_pending: false,
            last_send: None,
            answer_pending: false,
            last_answer: None,
            answer_new_peers: config.answer_new_peers,
            seen: Vec::new(),
            // splitmix64 state; never left at a fixed point.
            rng: config.seed ^ 0x9e37_79b9_7f4a_7c15,
            stats: Stats::default(),
        })
    }

    /// Our id.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// assert_eq!(core.id(), [7; 8]);
    /// ```
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// The datagram we send now (header, id and data).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// assert_eq!(core.wire().len(), 6 + 8 + 2);
    /// ```
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The length of our current data.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// assert_eq!(core.data_len(), 2);
    /// ```
    pub fn data_len(&self) -> usize {
        self.data_len
    }

    /// The current period.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// assert_eq!(core.period(), Duration::from_secs(1));
    /// ```
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The counters.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// core.poll_transmit(t0);
    /// assert_eq!(core.stats().sends, 1);
    /// ```
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Replaces the data; the next send carries it.
    ///
    /// # Errors
    ///
    /// [`EncodeError::DataTooLong`] if `data` is over the limit; the old data
    /// stays.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// core.set_data(b"new data").unwrap();
    /// assert!(core.set_data(&[0; 5000]).is_err());
    /// assert_eq!(core.data_len(), 8);
    /// ```
    pub fn set_data(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let mut wire = Vec::new();
        packet::encode(&self.id, data, &mut wire)?;
        self.wire = wire;
        self.data_len = data.len();
        Ok(())
    }

    /// Replaces the period. After the burst, the next send is one new period
    /// after the last send (at once if that is already past).
    ///
    /// # Errors
    ///
    /// [`Error::PeriodOutOfRange`](crate::Error::PeriodOutOfRange) if
    /// `period` is zero; the period is then unchanged. Periods over
    /// [`MAX_PERIOD`] count as `MAX_PERIOD`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// core.set_period(Duration::from_secs(5), t0).unwrap();
    /// assert_eq!(core.period(), Duration::from_secs(5));
    /// assert!(core.set_period(Duration::ZERO, t0).is_err());
    /// ```
    pub fn set_period(&mut self, period: Duration, now: Instant) -> Result<(), crate::Error> {
        if period.is_zero() {
            return Err(crate::Error::PeriodOutOfRange {
                what: "period",
                value: period,
            });
        }
        self.period = period;
        if self.periodic_pending
            && !self.answer_pending
            && let Some(last) = self.last_send
        {
            self.next_send = later(last, period).max(now);
        }
        Ok(())
    }

    /// Starts a new burst: send at once, then at the [`BURST_GAPS`]. The driver
    /// calls this when a new interface comes up.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// let later = t0 + Duration::from_secs(10);
    /// core.restart_burst(later);
    /// assert_eq!(core.poll_timeout(), later);
    /// ```
    pub fn restart_burst(&mut self, now: Instant) {
        self.burst_next = 0;
        self.periodic_pending = false;
        self.answer_pending = false;
        self.next_send = now;
    }

    /// When [`poll_transmit`](Self::poll_transmit) next has something to send.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// core.poll_transmit(t0);
    /// assert_eq!(core.poll_timeout(), t0 + Duration::from_millis(50)); // burst
    /// ```
    pub fn poll_timeout(&self) -> Instant {
        self.next_send
    }

    /// The datagram to send now, if a send is due at `now`; it advances the
    /// schedule, so call it until it returns `None`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// while let Some(datagram) = core.poll_transmit(t0) {
    ///     // send `datagram` to every target
    ///     assert_eq!(datagram.len(), 16);
    /// }
    /// ```
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        if now < self.next_send {
            return None;
        }
        let in_burst = self.burst_next < BURST_GAPS.len();
        let gap = if in_burst {
            let g = BURST_GAPS[self.burst_next].min(self.period);
            self.burst_next += 1;
            g
        } else {
            self.period
        };
        if self.answer_pending {
            self.answer_pending = false;
            self.stats.answers += 1;
        }
        self.next_send = later(now, gap);
        self.periodic_pending = !in_burst;
        self.last_send = Some(now);
        self.stats.sends += 1;
        Some(&self.wire)
    }

    /// Reads one received datagram.
    ///
    /// A message from an id not heard recently schedules an early answer (see
    /// the module docs); poll afterwards.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use beacon::core::{BeaconCore, CoreConfig};
    /// let t0 = Instant::now();
    /// let mut core = BeaconCore::new(CoreConfig::new(Duration::from_secs(1)), vec![7; 8], b"hi", t0).unwrap();
    /// use beacon::core::Outcome;
    /// let mut datagram = Vec::new();
    /// beacon::packet::encode(&[9; 8], b"peer", &mut datagram).unwrap();
    /// assert_eq!(core.handle_datagram(t0, &datagram).data(), Some(&b"peer"[..]));
    /// assert!(matches!(core.handle_datagram(t0, b"junk"), Outcome::Dropped(_)));
    /// ```
    pub fn handle_datagram<'a>(&mut self, now: Instant, datagram: &'a [u8]) -> Outcome<'a> {
        self.stats.received += 1;
        let p = match packet::decode(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.stats.dropped += 1;
                return Outcome::Dropped(e);
            }
        };
        // With an empty id there is no way to tell our echo: the user filters.
        if !self.id.is_empty() && p.id == self.id.as_slice() {
            self.stats.own_echoes += 1;
            return Outcome::OwnEcho;
        }
        self.stats.delivered += 1;
        if self.note_seen(p.id, now) && self.answer_new_peers {
            self.schedule_answer(now);
        }
        Outcome::Message(p)
    }

    /// Records `id` as heard at `now`; true if it was not remembered.
    fn note_seen(&mut self, id: &[u8], now: Instant) -> bool {
        if id.is_empty() {
            return false;
        }
        if let Some(entry) = self.seen.iter_mut().find(|(k, _)| k.as_slice() == id) {
            entry.1 = now;
            return false;
        }
        if self.seen.len() >= SEEN_CAPACITY {
            // Forget the least recently heard id. `seen` is non-empty here.
            if let Some(oldest) = self
                .seen
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(i, _)| i)
            {
                self.seen.swap_remove(oldest);
            }
        }
        self.seen.push((id.to_vec(), now));
        true
    }

    fn schedule_answer(&mut self, now: Instant) {
        if self.answer_pending {
            // The answer already due also answers this newcomer.
            return;
        }
        // Within ANSWER_MIN_GAP of the last answer, answer at the end of the
        // gap: a newcomer is never left waiting a whole period, and a crowd of
        // newcomers costs at most one send per gap.
        let earliest = match self.last_answer {
            Some(last) => now.max(last + ANSWER_MIN_GAP),
            None => now,
        };
        let jitter_us = self.next_random() % (ANSWER_JITTER.as_micros() as u64 + 1);
        let at = earliest + Duration::from_micros(jitter_us);
        if at < self.next_send {
            self.next_send = at;
            self.answer_pending = true;
            self.last_answer = Some(at);
        }
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn core(id: u8, period: Duration, t0: Instant) -> BeaconCore {
        BeaconCore::new(
            CoreConfig::new(period).seeded(u64::from(id)),
            vec![id; 8],
            &[id],
            t0,
        )
        .unwrap()
    }

    /// Times of every send from `t0` to `until`, jumping the virtual clock to
    /// each deadline.
    fn send_times(c: &mut BeaconCore, t0: Instant, until: Instant) -> Vec<Duration> {
        let mut out = Vec::new();
        let mut now = t0;
        for _ in 0..10_000 {
            now = now.max(c.poll_timeout());
            if now > until {
                return out;
            }
            while c.poll_transmit(now).is_some() {
                out.push(now - t0);
            }
        }
        panic!("schedule did not advance");
    }

    #[test]
    fn burst_then_period() {
        let t0 = Instant::now();
        let mut c = core(1, SEC, t0);
        let times = send_times(&mut c, t0, t0 + 3 * SEC + Duration::from_millis(1));
        let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 50, 150, 350, 1350, 2350]);
        assert_eq!(c.stats().sends, 6);
    }

    #[test]
    fn burst_gaps_are_capped_by_short_period() {
        let t0 = Instant::now();
        let mut c = core(1, Duration::from_millis(60), t0);
        let times = send_times(&mut c, t0, t0 + Duration::from_millis(300));
        let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 50, 110, 170, 230, 290]);
    }

    #[test]
    fn set_period_takes_effect_from_last_send() {
        let t0 = Instant::now();
        let mut c = core(1, SEC, t0);
        send_times(&mut c, t0, t0 + Duration::from_millis(400)); // burst done at 350
        assert_eq!(c.poll_timeout(), t0 + Duration::from_millis(1350));
        c.set_period(Duration::from_millis(100), t0 + Duration::from_millis(400))
            .unwrap();
        assert_eq!(c.poll_timeout(), t0 + Duration::from_millis(450));
        c.set_period(10 * SEC, t0 + Duration::from_millis(400))
            .unwrap();
        assert_eq!(c.poll_timeout(), t0 + Duration::from_millis(10_350));
        // Already past: at once.
        c.set_period(Duration::from_millis(10), t0 + Duration::from_millis(400))
            .unwrap();
        assert_eq!(c.poll_timeout(), t0 + Duration::from_millis(400));
    }

    #[test]
    fn huge_period_does_not_overflow() {
        let t0 = Instant::now();
        let mut c = core(1, Duration::MAX, t0);
        send_times(&mut c, t0, t0 + SEC);
        assert_eq!(
            c.poll_timeout(),
            t0 + Duration::from_millis(350) + MAX_PERIOD
        );
        c.set_period(Duration::MAX, t0 + SEC).unwrap();
        assert!(c.set_period(Duration::ZERO, t0 + SEC).is_err());
        assert!(BeaconCore::new(CoreConfig::new(Duration::ZERO), vec![1], b"", t0).is_err());
    }

    #[test]
    fn set_data_changes_next_send_and_refuses_oversized() {
        let t0 = Instant::now();
        let mut c = core(1, SEC, t0);
        c.set_data(b"new").unwrap();
        let wire = c.poll_transmit(t0).unwrap().to_vec();
        assert_eq!(packet::decode(&wire).unwrap().data, b"new");
        let err = c.set_data(&vec![0; packet::MAX_DATA_LEN + 1]).unwrap_err();
        assert!(matches!(err, EncodeError::DataTooLong { .. }));
        assert_eq!(c.data_len(), 3);
    }

    #[test]
    fn own_echo_dropped_others_delivered_garbage_counted() {
        let t0 = Instant::now();
        let mut a = core(1, SEC, t0);
        let mut b = core(2, SEC, t0);
        let wa = a.poll_transmit(t0).unwrap().to_vec();
        let wb = b.poll_transmit(t0).unwrap().to_vec();
        assert_eq!(a.handle_datagram(t0, &wa), Outcome::OwnEcho);
        assert_eq!(a.handle_datagram(t0, &wb).data(), Some(&[2][..]));
        assert!(matches!(
            a.handle_datagram(t0, b"garbage!"),
            Outcome::Dropped(DecodeError::ForeignMagic)
        ));
        assert!(matches!(
            a.handle_datagram(t0, &wb[..7]),
            Outcome::Dropped(DecodeError::Truncated { .. })
        ));
        let s = a.stats();
        assert_eq!(
            (s.received, s.delivered, s.own_echoes, s.dropped),
            (4, 1, 1, 2)
        );
    }

    #[test]
    fn empty_id_filters_nothing() {
        let t0 = Instant::now();
        let mut a = BeaconCore::new(CoreConfig::new(SEC), vec![], b"x", t0).unwrap();
        let w = a.poll_transmit(t0).unwrap().to_vec();
        assert_eq!(a.handle_datagram(t0, &w).data(), Some(&b"x"[..]));
    }

    #[test]
    fn newcomer_is_answered_within_jitter_once() {
        let t0 = Instant::now();
        let mut old = core(1, 10 * SEC, t0);
        send_times(&mut old, t0, t0 + 5 * SEC); // burst long over
        let now = t0 + 5 * SEC;
        assert_eq!(old.poll_timeout(), t0 + Duration::from_millis(10_350));

        let mut new = core(2, 10 * SEC, now);
        let hello = new.poll_transmit(now).unwrap().to_vec();
        assert_eq!(old.handle_datagram(now, &hello).data(), Some(&[2][..]));
        let answer_at = old.poll_timeout();
        assert!(answer_at >= now && answer_at <= now + ANSWER_JITTER);
        let reply = old.poll_transmit(answer_at).unwrap().to_vec();
        assert_eq!(old.stats().answers, 1);
        // Back to the period after the answer.
        assert_eq!(old.poll_timeout(), answer_at + 10 * SEC);
        assert_eq!(
            new.handle_datagram(answer_at, &reply).data(),
            Some(&[1][..])
        );
        // A known id is not answered again.
        let later = answer_at + SEC;
        old.handle_datagram(later, &hello);
        assert_eq!(old.poll_timeout(), answer_at + 10 * SEC);
    }

    #[test]
    fn answers_are_rate_limited() {
        let t0 = Instant::now();
        let mut old = core(1, 10 * SEC, t0);
        send_times(&mut old, t0, t0 + 5 * SEC);
        let now = t0 + 5 * SEC;
        let mut answers = 0;
        let mut t = now;
        // 50 newcomers, one every 10 ms, for 500 ms: at most one answer per
        // ANSWER_MIN_GAP (100 ms), so at most 5 or 6.
        for i in 0..50u8 {
            let mut n = BeaconCore::new(CoreConfig::new(SEC), vec![100 + i; 4], b"", t).unwrap();
            let w = n.poll_transmit(t).unwrap().to_vec();
            old.handle_datagram(t, &w);
            while old.poll_transmit(t).is_some() {
                answers += 1;
            }
            t += Duration::from_millis(10);
            while old.poll_transmit(t).is_some() {
                answers += 1;
            }
        }
        assert!((4..=6).contains(&answers), "{answers} answers");
    }

    #[test]
    fn newcomer_within_the_gap_is_answered_at_its_end() {
        let t0 = Instant::now();
        let mut old = core(1, 10 * SEC, t0);
        send_times(&mut old, t0, t0 + 5 * SEC);
        let now = t0 + 5 * SEC;
        let hello = |id: u8, t: Instant| {
            let mut n = BeaconCore::new(CoreConfig::new(SEC), vec![id; 4], b"", t).unwrap();
            n.poll_transmit(t).unwrap().to_vec()
        };
        old.handle_datagram(now, &hello(50, now));
        let first = old.poll_timeout();
        assert!(first <= now + ANSWER_JITTER);
        assert!(old.poll_transmit(first).is_some());
        // A second newcomer 10 ms later: answered one gap after the first
        // answer, not a period later.
        let t2 = first + Duration::from_millis(10);
        old.handle_datagram(t2, &hello(51, t2));
        let second = old.poll_timeout();
        assert!(
            second >= first + ANSWER_MIN_GAP && second <= first + ANSWER_MIN_GAP + ANSWER_JITTER,
            "{:?}",
            second - first
        );
        assert!(old.poll_transmit(second).is_some());
        assert_eq!(old.stats().answers, 2);
    }

    #[test]
    fn seen_table_is_bounded() {
        let t0 = Instant::now();
        let mut c = core(1, SEC, t0);
        for i in 0..1000u32 {
            let mut w = Vec::new();
            packet::encode(&i.to_be_bytes(), b"", &mut w).unwrap();
            c.handle_datagram(t0 + Duration::from_millis(u64::from(i)), &w);
        }
        assert_eq!(c.seen.len(), SEEN_CAPACITY);
        assert_eq!(c.stats().delivered, 1000);
    }

    #[test]
    fn restart_burst_sends_at_once() {
        let t0 = Instant::now();
        let mut c = core(1, SEC, t0);
        send_times(&mut c, t0, t0 + 2 * SEC);
        let now = t0 + 2 * SEC;
        c.restart_burst(now);
        let times = send_times(&mut c, now, now + Duration::from_millis(400));
        let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 50, 150, 350]);
    }

    #[test]
    fn two_cores_find_each_other_in_a_virtual_lan() {
        // A simple lossless "LAN": every send reaches every core (including the
        // sender). The old core runs for a while; the new one finds it through
        // the answer, long before the old core's next periodic send.
        let t0 = Instant::now();
        let period = 5 * SEC;
        let mut cores = vec![core(1, period, t0)];
        let mut now = t0;
        let start_new = t0 + 7 * SEC;
        let mut found_at = None;
        for _ in 0..1000 {
            let next = cores.iter().map(|c| c.poll_timeout()).min().unwrap();
            if cores.len() == 1 && next > start_new {
                now = start_new;
                cores.push(core(2, period, now));
            } else {
                now = now.max(next);
            }
            let mut wires = Vec::new();
            for c in cores.iter_mut() {
                while let Some(w) = c.poll_transmit(now) {
                    wires.push(w.to_vec());
                }
            }
            for w in &wires {
                for (i, c) in cores.iter_mut().enumerate() {
                    if let Some(d) = c.handle_datagram(now, w).data()
                        && i == 1
                        && d == [1]
                        && found_at.is_none()
                    {
                        found_at = Some(now);
                    }
                }
            }
            if found_at.is_some() {
                break;
            }
        }
        let found = found_at.expect("new core never heard the old one") - start_new;
        assert!(found <= ANSWER_JITTER, "found after {found:?}");
    }
}
