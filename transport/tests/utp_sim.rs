//! uTP cores driven over the deterministic simulated network
//! (`netlab::sim`): property test over 1,000 seeds, a long transfer across
//! the sequence-number wrap, LEDBAT on a bottleneck, and crust-like
//! bidirectional transfers through 20% loss each way (issue 16: no stall
//! longer than `MAX_GAP`). The two 10 MiB loss tests take about 40 s
//! together (optimized test profile, 2 cores).

use std::net::SocketAddr;
use std::time::Duration;

use netlab::sim::{LinkConfig, Network};
use transport::utp::proto::{ConnectionHandle, Endpoint, EndpointConfig, MAX_DATAGRAM, State};

struct Sim {
    net: Network,
    eps: [Endpoint; 2],
    addrs: [SocketAddr; 2],
    buf: Vec<u8>,
}

impl Sim {
    fn new(seed: u64, link: LinkConfig) -> Sim {
        let net = Network::new(seed, link);
        let now = net.now();
        let mk = |s| {
            Endpoint::new(
                EndpointConfig::default().seed(seed.wrapping_mul(31).wrapping_add(s)),
                now,
            )
        };
        let mut b = mk(2);
        b.set_listening(true);
        Sim {
            net,
            eps: [mk(1), b],
            addrs: [
                "10.0.0.1:6881".parse().unwrap(),
                "10.0.0.2:6881".parse().unwrap(),
            ],
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    fn flush(&mut self) {
        let now = self.net.now();
        for i in 0..2 {
            while let Some(t) = self.eps[i].poll_transmit(now, &mut self.buf) {
                assert!(t.len <= 1452, "datagram of {} bytes", t.len);
                self.net
                    .send(self.addrs[i], t.destination, &self.buf[..t.len]);
            }
        }
    }

    /// Moves to the next event; false when nothing is left to happen.
    fn step(&mut self) -> bool {
        self.flush();
        let next = [
            self.net.next_delivery(),
            self.eps[0].poll_timeout(),
            self.eps[1].poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.net.advance_to(next);
        let now = self.net.now();
        while let Some(d) = self.net.deliver() {
            let i = if d.to == self.addrs[0] { 0 } else { 1 };
            self.eps[i].handle_datagram(now, d.from, &d.data);
        }
        for ep in &mut self.eps {
            ep.handle_timeout(now);
        }
        true
    }
}

/// Outcome of one transfer of `data` from endpoint 0 to endpoint 1.
#[derive(Debug)]
enum Outcome {
    Complete { sim_time: Duration },
    Failed(String),
}

/// Byte `i` of the stream a transfer sends.
fn byte_at(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 29) as u8 ^ (i >> 20) as u8
}

fn fill(offset: usize, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = byte_at(offset + k);
    }
}

fn transfer(seed: u64, link: LinkConfig, len: usize) -> Outcome {
    let mut sim = Sim::new(seed, link);
    let now = sim.net.now();
    let a = sim.eps[0].connect(now, sim.addrs[1]).unwrap();
    let mut b: Option<ConnectionHandle> = None;
    let mut written = 0;
    let mut received = 0usize;
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut wbuf = vec![0u8; 64 * 1024];
    let mut expect = vec![0u8; 64 * 1024];
    let mut last_progress = sim.net.now();
    let mut b_closed = false;
    let mut same_time_steps = 0u32;
    let mut last_now = sim.net.now();
    loop {
        // Application on A: write what fits, close when all is written.
        if let Some(c) = sim.eps[0].connection_mut(a)
            && c.is_established()
            && written < len
        {
            loop {
                let n = (len - written).min(wbuf.len());
                fill(written, &mut wbuf[..n]);
                let w = c.write(&wbuf[..n]);
                written += w;
                if w < n || written == len {
                    break;
                }
            }
            if written == len {
                c.close();
            }
        }
        // Application on B: accept, read everything, close at EOF.
        if b.is_none() {
            b = sim.eps[1].accept().map(|(h, _)| h);
        }
        if let Some(h) = b {
            let c = sim.eps[1].connection_mut(h).unwrap();
            loop {
                match c.read(&mut rbuf) {
                    Some(0) => {
                        if let Some(e) = c.error() {
                            return Outcome::Failed(format!("receiver: {e}"));
                        }
                        if !b_closed {
                            c.close();
                            b_closed = true;
                        }
                        break;
                    }
                    Some(n) => {
                        fill(received, &mut expect[..n]);
                        assert!(
                            received + n <= len && expect[..n] == rbuf[..n],
                            "seed {seed}: wrong bytes at offset {received}"
                        );
                        received += n;
                        last_progress = sim.net.now();
                    }
                    None => break,
                }
            }
        }
        let done = |s: Option<State>| s == Some(State::Closed);
        let sa = sim.eps[0].connection(a).map(|c| c.state());
        let sb = b.and_then(|h| sim.eps[1].connection(h)).map(|c| c.state());
        if done(sa) && done(sb) {
            assert_eq!(received, len, "seed {seed}: closed early");
            if std::env::var("UTP_TRACE").is_ok() {
                eprintln!(
                    "seed {seed}: {:?} simulated, sender {:?}, receiver {:?}",
                    sim.net.elapsed(),
                    sim.eps[0].connection(a).unwrap().stats(),
                    sim.eps[1].connection(b.unwrap()).unwrap().stats()
                );
            }
            return Outcome::Complete {
                sim_time: sim.net.elapsed(),
            };
        }
        if sa == Some(State::Failed) {
            let e = sim.eps[0]
                .connection(a)
                .unwrap()
                .error()
                .unwrap()
                .to_string();
            return Outcome::Failed(format!("sender: {e}"));
        }
        let now = sim.net.now();
        assert!(
            now - last_progress < Duration::from_secs(300),
            "seed {seed}: no progress for 5 minutes of simulated time \
             ({received} of {len} bytes, states {sa:?} {sb:?})"
        );
        if now == last_now {
            same_time_steps += 1;
            assert!(
                same_time_steps < 100_000,
                "seed {seed}: livelock at one instant (states {sa:?} {sb:?}, {received} bytes)"
            );
        } else {
            same_time_steps = 0;
            last_now = now;
        }
        if !sim.step() {
            panic!("seed {seed}: nothing left to happen, states {sa:?} {sb:?}");
        }
    }
}

fn lossy() -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        loss: 0.10,
        duplicate: 0.10,
        reorder: 0.10,
        reorder_delay: Duration::from_millis(40),
        ..LinkConfig::default()
    }
}

#[test]
fn clean_link_transfer_and_close() {
    match transfer(1, LinkConfig::default(), 300_000) {
        Outcome::Complete { sim_time } => {
            assert!(sim_time < Duration::from_secs(10), "{sim_time:?}")
        }
        o => panic!("{o:?}"),
    }
}

/// The seeds to run: `UTP_SEED=n` runs seed `n` alone (to replay a
/// failure), `UTP_SEEDS=n` runs seeds `0..n`, else `0..default`.
fn seeds(default: u64) -> std::ops::Range<u64> {
    let var = |name| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    match (var("UTP_SEED"), var("UTP_SEEDS")) {
        (Some(one), _) => one..one + 1,
        (None, Some(n)) => 0..n,
        (None, None) => 0..default,
    }
}

/// Whether a failure is the connect giving up after its whole SYN budget
/// (`Config::syn_retransmissions`) was lost: the configured limit of a
/// connect, not a failure of the transfer.
fn is_syn_budget_spent(e: &str) -> bool {
    e.starts_with("sender: uTP connect to") && e.contains("timed out after 5 retransmissions")
}

/// Every seed delivers exactly the bytes sent, in order (DESIGN §4: "under
/// any seed"); with `allow_connect_budget`, a seed whose every SYN (or
/// SYN-ACK) a loss burst ate may instead fail to connect, and is listed.
/// A failure names its seeds and how to replay one.
fn assert_every_seed_completes(
    what: &str,
    link: LinkConfig,
    bytes: usize,
    seeds: std::ops::Range<u64>,
    allow_connect_budget: bool,
) {
    let n = seeds.end - seeds.start;
    let mut failures = Vec::new();
    let mut not_connected = Vec::new();
    for seed in seeds {
        if std::env::var("UTP_TRACE").is_ok() {
            eprintln!("seed {seed}");
        }
        if let Outcome::Failed(e) = transfer(seed, link.clone(), bytes) {
            eprintln!("{what}: seed {seed} failed: {e}");
            if allow_connect_budget && is_syn_budget_spent(&e) {
                not_connected.push(seed);
            } else {
                failures.push(seed);
            }
        }
    }
    if !not_connected.is_empty() {
        eprintln!("{what}: seeds {not_connected:?} spent their SYN budget before connecting");
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {n} seeds failed: {failures:?} (replay one with UTP_SEED=<seed>)",
        failures.len()
    );
}

#[test]
fn property_1000_seeds_lossy_reordering_duplicating() {
    assert_every_seed_completes("lossy link", lossy(), 256 * 1024, seeds(1000), false);
}

/// 200 MiB through loss and reordering: about 150,000 packets, so the
/// 16-bit sequence numbers wrap twice on each side.
#[test]
fn long_transfer_200mib_crosses_sequence_wrap() {
    let link = LinkConfig {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(1),
        loss: 0.01,
        duplicate: 0.01,
        reorder: 0.01,
        reorder_delay: Duration::from_millis(5),
        ..LinkConfig::default()
    };
    match transfer(7, link, 200 << 20) {
        Outcome::Complete { .. } => {}
        o => panic!("{o:?}"),
    }
}

/// LEDBAT on a 10 Mbit/s bottleneck with a 1 s drop-tail queue: after
/// 30 s the queuing delay we cause stays near the 100 ms target (50 to
/// 250 ms, not the full second) while the link stays at least 80% used.
#[test]
fn ledbat_keeps_queue_near_target_and_link_busy() {
    let a_ip = "10.0.0.1".parse().unwrap();
    let b_ip = "10.0.0.2".parse().unwrap();
    let mut sim = Sim::new(3, LinkConfig::default());
    let bps = 10_000_000u64;
    sim.net.set_link(
        a_ip,
        b_ip,
        LinkConfig {
            delay: Duration::from_millis(20),
            bandwidth_bps: Some(bps),
            queue_bytes: (bps / 8) as usize, // one second
            ..LinkConfig::default()
        },
    );
    let start = sim.net.now();
    let a = sim.eps[0].connect(start, sim.addrs[1]).unwrap();
    let mut b = None;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut measuring = false;
    let mut delays = Vec::new();
    while sim.net.elapsed() < Duration::from_secs(60) {
        let c = sim.eps[0].connection_mut(a).unwrap();
        assert!(c.error().is_none(), "{:?}", c.error());
        if c.is_established() {
            while c.write(&chunk) > 0 {}
        }
        if b.is_none() {
            b = sim.eps[1].accept().map(|(h, _)| h);
        }
        if let Some(h) = b {
            let c = sim.eps[1].connection_mut(h).unwrap();
            while let Some(n) = c.read(&mut rbuf) {
                assert!(n > 0);
            }
        }
        if !measuring && sim.net.elapsed() >= Duration::from_secs(30) {
            sim.net.reset_stats();
            measuring = true;
        }
        if measuring && let Some(d) = sim.eps[0].connection(a).unwrap().queuing_delay() {
            delays.push(d);
        }
        assert!(sim.step());
    }
    let s = sim.net.link_stats(a_ip, b_ip);
    let secs = 30.0;
    let used = s.bytes_delivered as f64 * 8.0 / (bps as f64 * secs);
    let mean = s.mean_queue_delay();
    eprintln!(
        "mean queuing delay {mean:?}, max {} ms, link use {:.1}%, queue drops {}, \
         window {} bytes",
        s.queue_delay_us_max / 1000,
        used * 100.0,
        s.queue_drops,
        sim.eps[0].connection(a).unwrap().congestion_window()
    );
    assert!(
        mean >= Duration::from_millis(50) && mean <= Duration::from_millis(250),
        "mean queuing delay {mean:?}"
    );
    assert!(
        s.queue_delay_us_max < 400_000,
        "queue reached {} ms",
        s.queue_delay_us_max / 1000
    );
    assert!(used >= 0.8, "link use {:.1}%", used * 100.0);
    assert!(!delays.is_empty());
}

/// Burst loss (Gilbert-Elliott), jitter that reorders, and a 1,452-byte
/// MTU (every datagram must fit: the harness asserts it too).
#[test]
fn burst_loss_jitter_and_mtu() {
    let link = LinkConfig {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(15),
        loss: 0.02,
        burst: Some(netlab::sim::BurstLoss {
            p_enter: 0.02,
            p_exit: 0.3,
            loss: 0.8,
        }),
        bandwidth_bps: Some(20_000_000),
        queue_bytes: 200_000,
        mtu: 1452,
        ..LinkConfig::default()
    };
    // Bursts of 80% loss can eat a connect's whole SYN budget (seed 5 of
    // these 50 does); every connection that opens must deliver every byte.
    assert_every_seed_completes("burst loss", link, 512 * 1024, seeds(50), true);
}

/// Rendezvous through two simulated NATs (endpoint-independent mapping,
/// address-and-port-dependent filtering): without a punched hole the SYN
/// is filtered and the rendezvous times out; after each side sent one
/// datagram to the other's public address it succeeds and carries data.
#[test]
fn rendezvous_through_simulated_nats() {
    use netlab::sim::{Nat, NatFiltering, NatMapping};
    use transport::utp::proto::{Config, ConnectionError};

    fn run(punch: bool) -> Result<Vec<u8>, ConnectionError> {
        let a_in: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b_in: SocketAddr = "10.1.0.1:6000".parse().unwrap();
        let a_pub: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let b_pub: SocketAddr = "203.0.113.1:6000".parse().unwrap();
        let mut net = Network::new(
            5,
            LinkConfig {
                loss: 0.02,
                ..LinkConfig::default()
            },
        );
        for (inside, public) in [(a_in, a_pub), (b_in, b_pub)] {
            net.add_nat(
                [inside.ip()],
                Nat::new(
                    public.ip(),
                    NatMapping::EndpointIndependent,
                    NatFiltering::AddressAndPortDependent,
                ),
            );
        }
        let now = net.now();
        let cfg = EndpointConfig::default().connection(
            Config::default()
                .syn_retransmissions(3)
                .rendezvous_timeout(std::time::Duration::from_secs(10)),
        );
        let mut eps = [Endpoint::new(cfg.clone(), now), Endpoint::new(cfg, now)];
        let addrs = [a_in, b_in];
        if punch {
            // Each side sends one datagram to the other's public address:
            // the first is filtered, the second gets through both NATs.
            net.send(a_in, b_pub, b"punch");
            net.send(b_in, a_pub, b"punch");
        }
        let ha = eps[0].rendezvous(now, b_pub, b"nonce", true).unwrap();
        let hb = eps[1].rendezvous(now, a_pub, b"nonce", false).unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut got = Vec::new();
        let mut sent = false;
        let mut rbuf = [0u8; 4096];
        while net.elapsed() < Duration::from_secs(60) {
            let now = net.now();
            for i in 0..2 {
                while let Some(t) = eps[i].poll_transmit(now, &mut buf) {
                    net.send(addrs[i], t.destination, &buf[..t.len]);
                }
            }
            let next = [
                net.next_delivery(),
                eps[0].poll_timeout(),
                eps[1].poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { break };
            net.advance_to(next);
            let now = net.now();
            while let Some(d) = net.deliver() {
                let i = if d.to == a_in { 0 } else { 1 };
                eps[i].handle_datagram(now, d.from, &d.data);
            }
            for ep in &mut eps {
                ep.handle_timeout(now);
            }
            let ca = eps[0].connection_mut(ha).unwrap();
            if let Some(e) = ca.error() {
                return Err(e.clone());
            }
            if ca.is_established() && !sent {
                assert_eq!(ca.write(&[9u8; 100_000]), 100_000);
                ca.close();
                sent = true;
            }
            let cb = eps[1].connection_mut(hb).unwrap();
            if let Some(e) = cb.error() {
                return Err(e.clone());
            }
            while let Some(n) = cb.read(&mut rbuf) {
                if n == 0 {
                    return Ok(got);
                }
                got.extend_from_slice(&rbuf[..n]);
            }
        }
        panic!("neither finished nor failed");
    }

    let e = run(false).unwrap_err();
    assert!(
        matches!(
            e,
            ConnectionError::TimedOut {
                connecting: true,
                ..
            } | ConnectionError::RendezvousTimedOut { .. }
        ),
        "{e}"
    );
    let got = run(true).unwrap();
    assert_eq!(got, vec![9u8; 100_000]);
}

/// What one crust-like bidirectional transfer measured.
#[derive(Debug)]
struct Bidi {
    sim_time: Duration,
    /// The longest stretch in which the receiver read no new byte.
    max_gap: Duration,
    sender_timeouts: u64,
    sender_retransmits: u64,
}

/// A crust-like exchange over one connection: endpoint 0 writes `len`
/// bytes in 64 KiB messages (blocked, as `write_all`, while its send buffer
/// is full), endpoint 1 reads them all and writes a small message every
/// `heartbeat` (a crust heartbeat: two Noise records' worth of bytes);
/// both ends drain what they receive. Ends when the receiver has every
/// byte and the sender every heartbeat sent up to then.
fn bidirectional(
    seed: u64,
    link: LinkConfig,
    batch_loss: f64,
    len: usize,
    heartbeat: Duration,
) -> Result<Bidi, String> {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    const HEARTBEAT_BYTES: usize = 2 * (2 + 16 + 8);
    let mut sim = Sim::new(seed, link);
    let start = sim.net.now();
    let a = sim.eps[0].connect(start, sim.addrs[1]).unwrap();
    let mut b: Option<ConnectionHandle> = None;
    let mut written = 0usize;
    let mut received = 0usize;
    let mut hb_written = 0usize;
    let mut hb_received = 0usize;
    let mut next_hb = start + heartbeat;
    let mut wbuf = vec![0u8; 64 * 1024];
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut expect = vec![0u8; 64 * 1024];
    let mut last_progress = start;
    let mut max_gap = Duration::ZERO;
    loop {
        let now = sim.net.now();
        let ca = sim.eps[0].connection_mut(a).unwrap();
        if let Some(e) = ca.error() {
            return Err(format!("sender: {e} ({received} of {len} bytes)"));
        }
        if ca.is_established() {
            while written < len {
                let n = (len - written).min(wbuf.len());
                fill(written, &mut wbuf[..n]);
                let w = ca.write(&wbuf[..n]);
                written += w;
                if w < n {
                    break;
                }
            }
            while let Some(n) = ca.read(&mut rbuf) {
                if n == 0 {
                    break;
                }
                assert!(
                    rbuf[..n].iter().all(|&x| x == 0xb7),
                    "seed {seed}: heartbeat bytes"
                );
                hb_received += n;
            }
        }
        if b.is_none() {
            b = sim.eps[1].accept().map(|(h, _)| h);
        }
        if let Some(h) = b {
            let cb = sim.eps[1].connection_mut(h).unwrap();
            if let Some(e) = cb.error() {
                return Err(format!("receiver: {e} ({received} of {len} bytes)"));
            }
            while let Some(n) = cb.read(&mut rbuf) {
                if n == 0 {
                    return Err(format!("seed {seed}: receiver saw EOF at {received}"));
                }
                fill(received, &mut expect[..n]);
                assert!(
                    received + n <= len && expect[..n] == rbuf[..n],
                    "seed {seed}: wrong bytes at offset {received}"
                );
                received += n;
                max_gap = max_gap.max(now - last_progress);
                last_progress = now;
            }
            if now >= next_hb {
                cb.write(&[0xb7; HEARTBEAT_BYTES]);
                hb_written += HEARTBEAT_BYTES;
                next_hb = now + heartbeat;
            }
        }
        max_gap = max_gap.max(now - last_progress);
        if received == len && hb_received == hb_written {
            let s = sim.eps[0].connection(a).unwrap().stats().clone();
            return Ok(Bidi {
                sim_time: now - start,
                max_gap,
                sender_timeouts: s.timeouts,
                sender_retransmits: s.retransmits,
            });
        }
        if now - start > Duration::from_secs(3600) {
            return Err(format!(
                "seed {seed}: not done after an hour ({received} of {len})"
            ));
        }
        // Wake for the next heartbeat too.
        if batch_loss > 0.0 {
            flush_batched(&mut sim, &mut rng, batch_loss);
        } else {
            sim.flush();
        }
        let next = [
            sim.net.next_delivery(),
            sim.eps[0].poll_timeout(),
            sim.eps[1].poll_timeout(),
            b.map(|_| next_hb),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return Err(format!("seed {seed}: nothing left to happen"));
        };
        sim.net.advance_to(next);
        let now = sim.net.now();
        while let Some(d) = sim.net.deliver() {
            let i = if d.to == sim.addrs[0] { 0 } else { 1 };
            sim.eps[i].handle_datagram(now, d.from, &d.data);
        }
        for ep in &mut sim.eps {
            ep.handle_timeout(now);
        }
    }
}

/// The longest a crust-like transfer may go without delivering a byte:
/// BEP 29's RTO floor (500 ms) doubled on each consecutive timeout, over
/// the five timeouts libutp survives (it gives up at the fifth in a row):
/// 0.5 + 1 + 2 + 4 + 8 s. A longer gap would have been fatal to libutp, and
/// comes near crust's inactivity timeout (30 s by default).
const MAX_GAP: Duration = Duration::from_millis(15_500);

/// Runs `bidirectional` over `seeds` and asserts every transfer completes
/// (bytes exact: checked as they arrive) without a gap above [`MAX_GAP`].
fn assert_no_stall(what: &str, link: LinkConfig, batch_loss: f64, seeds: std::ops::Range<u64>) {
    let mut worst = (Duration::ZERO, 0);
    let mut slowest = Duration::ZERO;
    let (mut timeouts, mut retransmits) = (0, 0);
    for seed in seeds {
        let r = bidirectional(
            seed,
            link.clone(),
            batch_loss,
            10 << 20,
            Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("{what}: seed {seed}: {e}"));
        if std::env::var("UTP_TRACE").is_ok() {
            eprintln!("{what}: seed {seed}: {r:?}");
        }
        assert!(
            r.max_gap <= MAX_GAP,
            "{what}: seed {seed}: nothing delivered for {:?} (bound {MAX_GAP:?}): {r:?}",
            r.max_gap
        );
        if r.max_gap > worst.0 {
            worst = (r.max_gap, seed);
        }
        slowest = slowest.max(r.sim_time);
        timeouts += r.sender_timeouts;
        retransmits += r.sender_retransmits;
    }
    eprintln!(
        "{what}: longest gap {:?} (seed {}), slowest transfer {slowest:?} simulated, \
         sender timeouts {timeouts}, retransmits {retransmits} (all seeds)",
        worst.0, worst.1
    );
}

/// Issue 16, independent loss: 20% of datagrams lost each way, 10 MiB one
/// way and a heartbeat a second the other way (1 ms delay).
#[test]
fn lossy_20_percent_both_ways_bidirectional() {
    let link = LinkConfig {
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(1),
        loss: 0.20,
        ..LinkConfig::default()
    };
    assert_no_stall("20% loss", link, 0.0, seeds(5));
}

/// A uniform draw in [0, 1) from an xorshift state.
fn draw(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// Sends what the endpoints have as the tokio driver does (consecutive
/// datagrams to one destination, all of one size but the last, up to 32,
/// in one GSO send) and loses each such batch whole with probability
/// `loss`, as a router does that drops the unsegmented GSO packet.
fn flush_batched(sim: &mut Sim, rng: &mut u64, loss: f64) {
    let now = sim.net.now();
    for i in 0..2 {
        let mut batch: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        let mut send = |sim: &mut Sim, batch: &mut Vec<(SocketAddr, Vec<u8>)>| {
            if !batch.is_empty() && draw(rng) >= loss {
                for (to, d) in batch.iter() {
                    sim.net.send(sim.addrs[i], *to, d);
                }
            }
            batch.clear();
        };
        while let Some(t) = sim.eps[i].poll_transmit(now, &mut sim.buf) {
            let d = sim.buf[..t.len].to_vec();
            if let Some((to, first)) = batch.first()
                && (*to != t.destination
                    || d.len() > first.len()
                    || batch.last().unwrap().1.len() < first.len())
            {
                send(sim, &mut batch);
            }
            batch.push((t.destination, d));
            if batch.len() >= 32 {
                send(sim, &mut batch);
            }
        }
        send(sim, &mut batch);
    }
}

/// Issue 16 as the lab has it: the router drops the unsegmented GSO
/// packet, so 20% of the driver's batches (up to 32 datagrams, or the one
/// ack a receiver sends for a batch) are lost whole, both ways. Whole
/// windows are lost and only the RTO recovers them: before the fix this
/// stalled 25 s (seed 6) as the window crept back linearly from one packet
/// after every timeout.
#[test]
fn lossy_20_percent_gso_batches_bidirectional() {
    let link = LinkConfig {
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(1),
        ..LinkConfig::default()
    };
    assert_no_stall("20% of batches lost", link, 0.20, seeds(10));
}
