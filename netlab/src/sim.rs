//! A seeded, deterministic simulated network with a virtual clock.
//!
//! [`Network`] carries datagrams between socket addresses. Each directed
//! path between two IP addresses has a [`LinkConfig`]: fixed delay and
//! jitter, random loss and Gilbert-Elliott burst loss, duplication,
//! reordering, a bandwidth limit with a drop-tail queue, and an MTU. Hosts
//! can sit behind a simulated [`Nat`] (mapping and filtering behaviour) so
//! hole-punching cores can be tested without routers.
//!
//! Time is virtual: [`Network::now`] only moves when the test calls
//! [`Network::advance_to`], normally to the earlier of
//! [`Network::next_delivery`] and the protocol cores' own timers. All
//! randomness comes from the seed given to [`Network::new`], so a run is
//! reproduced exactly by its seed.
//!
//! ```
//! use netlab::sim::{LinkConfig, Network};
//! let mut net = Network::new(7, LinkConfig::default());
//! let a = "10.0.0.1:1000".parse().unwrap();
//! let b = "10.0.0.2:2000".parse().unwrap();
//! net.send(a, b, b"hello");
//! let t = net.next_delivery().unwrap();
//! net.advance_to(t);
//! let d = net.deliver().unwrap();
//! assert_eq!((d.from, d.to, &d.data[..]), (a, b, &b"hello"[..]));
//! ```

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Gilbert-Elliott burst loss: a two-state chain evaluated per datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstLoss {
    /// Probability of moving from the good to the bad state.
    pub p_enter: f64,
    /// Probability of moving from the bad back to the good state.
    pub p_exit: f64,
    /// Loss probability while in the bad state.
    pub loss: f64,
}

/// How one direction of a path behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way propagation delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]`, per datagram.
    pub jitter: Duration,
    /// Independent loss probability.
    pub loss: f64,
    /// Optional burst loss on top of `loss`.
    pub burst: Option<BurstLoss>,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by up to `reorder_delay`.
    pub reorder: f64,
    /// The most a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// Bottleneck rate in bits per second (`None`: unlimited).
    pub bandwidth_bps: Option<u64>,
    /// Drop-tail queue in front of the bottleneck, in bytes.
    pub queue_bytes: usize,
    /// Largest datagram payload carried; larger ones are dropped.
    pub mtu: usize,
}

impl Default for LinkConfig {
    /// 10 ms each way, nothing else.
    fn default() -> Self {
        LinkConfig {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            bandwidth_bps: None,
            queue_bytes: usize::MAX,
            mtu: 65507,
        }
    }
}

/// Counters of one directed path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to [`Network::send`].
    pub sent: u64,
    /// Datagrams scheduled for delivery (duplicates included).
    pub delivered: u64,
    /// Payload bytes scheduled for delivery.
    pub bytes_delivered: u64,
    /// Dropped by random or burst loss.
    pub lost: u64,
    /// Dropped because the bottleneck queue was full.
    pub queue_drops: u64,
    /// Dropped for exceeding the MTU.
    pub mtu_drops: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Sum of the time datagrams waited in the bottleneck queue, in µs.
    pub queue_delay_us_sum: u64,
    /// Largest queue wait seen, in µs.
    pub queue_delay_us_max: u64,
}

impl LinkStats {
    /// Mean time a datagram waited in the bottleneck queue.
    pub fn mean_queue_delay(&self) -> Duration {
        if self.delivered == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.queue_delay_us_sum / self.delivered)
    }
}

#[derive(Default)]
struct LinkState {
    busy_until: Option<Instant>,
    burst_bad: bool,
    stats: LinkStats,
}

/// How a NAT picks the public port of an outgoing flow (RFC 4787).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMapping {
    /// One public port per inside socket whatever the destination
    /// (port-preserving when free): "easy" NATs, `masquerade`.
    EndpointIndependent,
    /// A new public port per destination: symmetric NATs.
    AddressAndPortDependent,
}

/// Which inbound datagrams a NAT lets through to a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatFiltering {
    /// Anyone may send to a mapped port (full cone).
    EndpointIndependent,
    /// Only IPs the inside socket sent to.
    AddressDependent,
    /// Only IP:port pairs the inside socket sent to.
    AddressAndPortDependent,
}

/// A simulated NAT in front of some inside IPs.
#[derive(Debug, Clone)]
pub struct Nat {
    /// The NAT's public IP.
    pub public_ip: IpAddr,
    /// Mapping behaviour.
    pub mapping: NatMapping,
    /// Filtering behaviour.
    pub filtering: NatFiltering,
    next_port: u16,
    /// (inside, destination or None) -> public port.
    out: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// public port -> (inside, remotes it sent to).
    inbound: HashMap<u16, (SocketAddr, HashSet<SocketAddr>)>,
}

impl Nat {
    /// A NAT with the given public IP and behaviour.
    pub fn new(public_ip: IpAddr, mapping: NatMapping, filtering: NatFiltering) -> Self {
        Nat {
            public_ip,
            mapping,
            filtering,
            next_port: 40000,
            out: HashMap::new(),
            inbound: HashMap::new(),
        }
    }

    fn outbound(&mut self, from: SocketAddr, to: SocketAddr) -> SocketAddr {
        let key = match self.mapping {
            NatMapping::EndpointIndependent => (from, None),
            NatMapping::AddressAndPortDependent => (from, Some(to)),
        };
        let port = match self.out.get(&key) {
            Some(p) => *p,
            None => {
                let mut p = if self.mapping == NatMapping::EndpointIndependent
                    && !self.inbound.contains_key(&from.port())
                {
                    from.port()
                } else {
                    self.next_port
                };
                while self.inbound.contains_key(&p) {
                    self.next_port = self.next_port.wrapping_add(1).max(1024);
                    p = self.next_port;
                }
                self.out.insert(key, p);
                self.inbound.insert(p, (from, HashSet::new()));
                p
            }
        };
        if let Some((_, remotes)) = self.inbound.get_mut(&port) {
            remotes.insert(to);
        }
        SocketAddr::new(self.public_ip, port)
    }

    fn inbound(&self, from: SocketAddr, to: SocketAddr) -> Option<SocketAddr> {
        let (inside, remotes) = self.inbound.get(&to.port())?;
        let ok = match self.filtering {
            NatFiltering::EndpointIndependent => true,
            NatFiltering::AddressDependent => remotes.iter().any(|r| r.ip() == from.ip()),
            NatFiltering::AddressAndPortDependent => remotes.contains(&from),
        };
        ok.then_some(*inside)
    }
}

/// A datagram delivered by the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source as the receiver sees it (after NAT translation).
    pub from: SocketAddr,
    /// The receiving socket (after NAT translation).
    pub to: SocketAddr,
    /// The bytes.
    pub data: Vec<u8>,
}

struct Pending {
    at: Instant,
    order: u64,
    dgram: Datagram,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (o.at, o.order).cmp(&(self.at, self.order))
    }
}

/// The simulated network. See the module docs.
pub struct Network {
    now: Instant,
    start: Instant,
    rng: StdRng,
    default_link: LinkConfig,
    links: HashMap<(IpAddr, IpAddr), LinkConfig>,
    state: HashMap<(IpAddr, IpAddr), LinkState>,
    nats: Vec<(HashSet<IpAddr>, Nat)>,
    queue: BinaryHeap<Pending>,
    order: u64,
    nat_drops: u64,
}

impl Network {
    /// A network whose paths all behave like `default_link`, seeded with
    /// `seed`. The virtual clock starts at an arbitrary instant.
    pub fn new(seed: u64, default_link: LinkConfig) -> Self {
        let start = Instant::now();
        Network {
            now: start,
            start,
            rng: StdRng::seed_from_u64(seed),
            default_link,
            links: HashMap::new(),
            state: HashMap::new(),
            nats: Vec::new(),
            queue: BinaryHeap::new(),
            order: 0,
            nat_drops: 0,
        }
    }

    /// Sets the behaviour of the direction `from` → `to` (IP level, as sent
    /// before any NAT translation).
    pub fn set_link(&mut self, from: IpAddr, to: IpAddr, config: LinkConfig) {
        self.links.insert((from, to), config);
    }

    /// Puts the hosts `inside` behind `nat`: their datagrams leave with the
    /// NAT's public address, and datagrams to that address come in only as
    /// its filtering allows.
    pub fn add_nat(&mut self, inside: impl IntoIterator<Item = IpAddr>, nat: Nat) {
        self.nats.push((inside.into_iter().collect(), nat));
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time elapsed since the network was made.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Moves the clock forward to `t` (never backwards).
    pub fn advance_to(&mut self, t: Instant) {
        if t > self.now {
            self.now = t;
        }
    }

    /// When the next datagram is due, if any is in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|p| p.at)
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Datagrams dropped by NAT filtering or for lack of a mapping.
    pub fn nat_drops(&self) -> u64 {
        self.nat_drops
    }

    /// Counters of the direction `from` → `to` (IP level).
    pub fn link_stats(&self, from: IpAddr, to: IpAddr) -> LinkStats {
        self.state
            .get(&(from, to))
            .map(|s| s.stats.clone())
            .unwrap_or_default()
    }

    /// Zeroes every link's counters (to measure a time window).
    pub fn reset_stats(&mut self) {
        for s in self.state.values_mut() {
            s.stats = LinkStats::default();
        }
    }

    fn uniform(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.random_range(0..=max.as_nanos() as u64))
    }

    /// Sends `data` from `from` to `to` at the current time.
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let key = (from.ip(), to.ip());
        let cfg = self.links.get(&key).unwrap_or(&self.default_link).clone();
        // NAT on the way out.
        let mut src = from;
        if let Some((_, nat)) = self
            .nats
            .iter_mut()
            .find(|(ips, _)| ips.contains(&from.ip()))
        {
            src = nat.outbound(from, to);
        }
        let now = self.now;
        let st = self.state.entry(key).or_default();
        st.stats.sent += 1;
        if data.len() > cfg.mtu {
            st.stats.mtu_drops += 1;
            return;
        }
        let mut lost = cfg.loss > 0.0 && self.rng.random_bool(cfg.loss.clamp(0.0, 1.0));
        if let Some(b) = cfg.burst {
            let st = self.state.entry(key).or_default();
            let flip = if st.burst_bad { b.p_exit } else { b.p_enter };
            if self.rng.random_bool(flip.clamp(0.0, 1.0)) {
                st.burst_bad = !st.burst_bad;
            }
            if st.burst_bad && self.rng.random_bool(b.loss.clamp(0.0, 1.0)) {
                lost = true;
            }
        }
        let st = self.state.entry(key).or_default();
        if lost {
            st.stats.lost += 1;
            return;
        }
        // Bottleneck queue.
        let mut depart = now;
        if let Some(bps) = cfg.bandwidth_bps {
            let start = st.busy_until.map_or(now, |b| b.max(now));
            let backlog = ((start - now).as_secs_f64() * bps as f64 / 8.0) as usize;
            if backlog + data.len() > cfg.queue_bytes {
                st.stats.queue_drops += 1;
                return;
            }
            let tx = Duration::from_secs_f64(data.len() as f64 * 8.0 / bps as f64);
            st.busy_until = Some(start + tx);
            let wait = (start - now).as_micros() as u64;
            st.stats.queue_delay_us_sum += wait;
            st.stats.queue_delay_us_max = st.stats.queue_delay_us_max.max(wait);
            depart = start + tx;
        }
        let copies = if cfg.duplicate > 0.0 && self.rng.random_bool(cfg.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        for c in 0..copies {
            let mut at = depart + cfg.delay + self.uniform(cfg.jitter);
            if cfg.reorder > 0.0 && self.rng.random_bool(cfg.reorder.clamp(0.0, 1.0)) {
                at += self.uniform(cfg.reorder_delay);
            }
            let st = self.state.entry(key).or_default();
            st.stats.delivered += 1;
            st.stats.bytes_delivered += data.len() as u64;
            if c > 0 {
                st.stats.duplicated += 1;
            }
            self.order += 1;
            self.queue.push(Pending {
                at,
                order: self.order,
                dgram: Datagram {
                    from: src,
                    to,
                    data: data.to_vec(),
                },
            });
        }
    }

    /// The next datagram due at or before [`Network::now`], after inbound
    /// NAT translation (datagrams a NAT filters out are dropped silently
    /// and counted in [`Network::nat_drops`]).
    pub fn deliver(&mut self) -> Option<Datagram> {
        loop {
            if self.queue.peek()?.at > self.now {
                return None;
            }
            // Invariant: peek() was Some just above.
            let mut d = self.queue.pop().expect("peeked").dgram;
            if let Some((_, nat)) = self.nats.iter().find(|(_, n)| n.public_ip == d.to.ip()) {
                match nat.inbound(d.from, d.to) {
                    Some(inside) => d.to = inside,
                    None => {
                        self.nat_drops += 1;
                        continue;
                    }
                }
            }
            return Some(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn run(net: &mut Network) -> Vec<(Instant, Datagram)> {
        let mut out = Vec::new();
        while let Some(t) = net.next_delivery() {
            net.advance_to(t);
            while let Some(d) = net.deliver() {
                out.push((net.now(), d));
            }
        }
        out
    }

    #[test]
    fn same_seed_same_outcome() {
        let cfg = LinkConfig {
            loss: 0.2,
            duplicate: 0.1,
            reorder: 0.3,
            reorder_delay: Duration::from_millis(30),
            jitter: Duration::from_millis(5),
            ..LinkConfig::default()
        };
        let go = |seed| {
            let mut net = Network::new(seed, cfg.clone());
            let start = net.now();
            for i in 0..200u32 {
                net.send(addr("1.0.0.1:1"), addr("1.0.0.2:2"), &i.to_be_bytes());
            }
            run(&mut net)
                .into_iter()
                .map(|(t, d)| (t - start, d.data))
                .collect::<Vec<_>>()
        };
        assert_eq!(go(1), go(1));
        assert_ne!(go(1), go(2));
        let r = go(3);
        assert!(r.len() > 120 && r.len() < 200, "{}", r.len());
    }

    #[test]
    fn bandwidth_and_queue() {
        let cfg = LinkConfig {
            delay: Duration::ZERO,
            bandwidth_bps: Some(8_000_000), // 1 byte per µs
            queue_bytes: 10_000,
            ..LinkConfig::default()
        };
        let mut net = Network::new(1, cfg);
        let start = net.now();
        for _ in 0..20 {
            net.send(addr("1.0.0.1:1"), addr("1.0.0.2:2"), &[0; 1000]);
        }
        let got = run(&mut net);
        // 10 fit in the queue (the one being sent counts against it too).
        assert_eq!(got.len(), 10);
        assert_eq!(got[9].0 - start, Duration::from_micros(10_000));
        let s = net.link_stats("1.0.0.1".parse().unwrap(), "1.0.0.2".parse().unwrap());
        assert_eq!(s.queue_drops, 10);
        assert_eq!(s.queue_delay_us_max, 9000);
    }

    #[test]
    fn mtu_drops() {
        let cfg = LinkConfig {
            mtu: 100,
            ..LinkConfig::default()
        };
        let mut net = Network::new(1, cfg);
        net.send(addr("1.0.0.1:1"), addr("1.0.0.2:2"), &[0; 101]);
        net.send(addr("1.0.0.1:1"), addr("1.0.0.2:2"), &[0; 100]);
        assert_eq!(run(&mut net).len(), 1);
    }

    #[test]
    fn nat_mapping_and_filtering() {
        let mut net = Network::new(1, LinkConfig::default());
        let inside = addr("10.0.0.2:5000");
        let peer = addr("203.0.113.9:7000");
        let other = addr("203.0.113.10:7000");
        net.add_nat(
            ["10.0.0.2".parse().unwrap()],
            Nat::new(
                "198.51.100.1".parse().unwrap(),
                NatMapping::EndpointIndependent,
                NatFiltering::AddressAndPortDependent,
            ),
        );
        // Unsolicited inbound is dropped.
        net.send(peer, addr("198.51.100.1:5000"), b"x");
        assert!(run(&mut net).is_empty());
        assert_eq!(net.nat_drops(), 1);
        // Outbound opens a port-preserving mapping for that peer only.
        net.send(inside, peer, b"out");
        let got = run(&mut net);
        assert_eq!(got[0].1.from, addr("198.51.100.1:5000"));
        net.send(peer, addr("198.51.100.1:5000"), b"in");
        net.send(other, addr("198.51.100.1:5000"), b"no");
        let got = run(&mut net);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.to, inside);
        assert_eq!(got[0].1.data, b"in");
    }

    #[test]
    fn symmetric_nat_new_port_per_destination() {
        let mut net = Network::new(1, LinkConfig::default());
        net.add_nat(
            ["10.0.0.2".parse().unwrap()],
            Nat::new(
                "198.51.100.1".parse().unwrap(),
                NatMapping::AddressAndPortDependent,
                NatFiltering::AddressAndPortDependent,
            ),
        );
        net.send(addr("10.0.0.2:5000"), addr("203.0.113.9:1"), b"a");
        net.send(addr("10.0.0.2:5000"), addr("203.0.113.9:2"), b"b");
        let got = run(&mut net);
        assert_ne!(got[0].1.from.port(), got[1].1.from.port());
    }
}
