//! The punch core in a small deterministic simulated network with NATs of
//! each mapping and filtering kind (virtual clock, seeded loss).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::rendezvous::{Filtering, Mapping, NatBehaviour, gen_rendezvous_info_with};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Public,
    Easy,     // EIM, port-preserving, port-restricted filtering
    FullCone, // EIM, endpoint-independent filtering
    Hard,     // EDM, port-restricted filtering
}

impl Kind {
    fn behaviour(self) -> NatBehaviour {
        match self {
            Kind::Public => NatBehaviour {
                mapping: Mapping::NoNat,
                filtering: Filtering::EndpointIndependent,
            },
            Kind::Easy => NatBehaviour {
                mapping: Mapping::EndpointIndependent,
                filtering: Filtering::AddressAndPortDependent,
            },
            Kind::FullCone => NatBehaviour {
                mapping: Mapping::EndpointIndependent,
                filtering: Filtering::EndpointIndependent,
            },
            Kind::Hard => NatBehaviour {
                mapping: Mapping::EndpointDependent,
                filtering: Filtering::AddressAndPortDependent,
            },
        }
    }
}

struct Nat {
    kind: Kind,
    public: IpAddr,
    // (internal, destination or None for EIM) -> external port
    out: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    // external port -> internal
    back: HashMap<u16, SocketAddr>,
    // (external port, remote) pairs we sent to
    allowed: HashSet<(u16, SocketAddr)>,
    next_port: u16,
}

impl Nat {
    fn outbound(&mut self, from: SocketAddr, to: SocketAddr) -> SocketAddr {
        if self.kind == Kind::Public {
            return from;
        }
        let key = if self.kind == Kind::Hard {
            (from, Some(to))
        } else {
            (from, None)
        };
        let port = match self.out.get(&key) {
            Some(p) => *p,
            None => {
                let p = if self.kind == Kind::Hard {
                    self.next_port += 7;
                    self.next_port
                } else {
                    from.port()
                };
                self.out.insert(key, p);
                self.back.insert(p, from);
                p
            }
        };
        self.allowed.insert((port, to));
        SocketAddr::new(self.public, port)
    }

    fn inbound(&self, from: SocketAddr, to: SocketAddr) -> Option<SocketAddr> {
        if self.kind == Kind::Public {
            return Some(to);
        }
        let internal = *self.back.get(&to.port())?;
        match self.kind {
            Kind::FullCone => Some(internal),
            _ => self
                .allowed
                .contains(&(to.port(), from))
                .then_some(internal),
        }
    }
}

struct Side {
    local: SocketAddr,
    nat: Nat,
    core: PunchCore,
}

struct World {
    sides: [Side; 2],
    inflight: Vec<(Instant, usize, SocketAddr, SocketAddr, Vec<u8>)>,
    rng: StdRng,
    loss: f64,
    now: Instant,
    delivered: u32,
}

fn side_addrs(i: usize, kind: Kind) -> (SocketAddr, IpAddr) {
    if kind == Kind::Public {
        let a: SocketAddr = format!("203.0.113.{}:4000", 10 + i).parse().unwrap();
        (a, a.ip())
    } else {
        (
            format!("192.0.2.{}:4000", 10 + i).parse().unwrap(),
            format!("198.51.100.{}", 1 + i).parse().unwrap(),
        )
    }
}

/// The endpoints a side would list: its mapped address as a STUN server
/// saw it (for a hard NAT, a port the peer will never see) and its local one.
fn endpoints(i: usize, kind: Kind) -> Vec<SocketAddr> {
    let (local, public) = side_addrs(i, kind);
    match kind {
        Kind::Public => vec![local],
        Kind::Hard => vec![SocketAddr::new(public, 50_000 + i as u16), local],
        _ => vec![SocketAddr::new(public, local.port()), local],
    }
}

fn world(a: Kind, b: Kind, loss: f64, seed: u64, cfg: PunchConfig) -> World {
    let now = Instant::now();
    let (pa, qa) = gen_rendezvous_info_with(endpoints(0, a), a.behaviour());
    let (pb, qb) = gen_rendezvous_info_with(endpoints(1, b), b.behaviour());
    let mk = |i: usize, kind: Kind, ours, theirs| {
        let (local, public) = side_addrs(i, kind);
        Side {
            local,
            nat: Nat {
                kind,
                public,
                out: HashMap::new(),
                back: HashMap::new(),
                allowed: HashSet::new(),
                next_port: 40_000 + 1000 * i as u16,
            },
            core: PunchCore::new(ours, theirs, cfg.clone(), now),
        }
    };
    World {
        sides: [mk(0, a, pa, qb), mk(1, b, pb, qa)],
        inflight: Vec::new(),
        rng: StdRng::seed_from_u64(seed),
        loss,
        now,
        delivered: 0,
    }
}

impl World {
    /// Runs until both cores finish; returns the outcomes.
    fn run(&mut self) -> [Result<Punched, PunchFailure>; 2] {
        for _step in 0..100_000 {
            for i in 0..2 {
                while let Some((to, bytes)) = self.sides[i].core.poll_transmit(self.now) {
                    let local = self.sides[i].local;
                    let src = self.sides[i].nat.outbound(local, to);
                    if self.rng.random_bool(self.loss) {
                        continue;
                    }
                    let delay = Duration::from_millis(self.rng.random_range(10..40));
                    self.inflight.push((self.now + delay, i, src, to, bytes));
                }
            }
            // deliver what is due
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = self.inflight.drain(..).partition(|p| p.0 <= now);
            self.inflight = later;
            for (_, from_side, src, dst, bytes) in due {
                let j = 1 - from_side;
                let (local, public) = (self.sides[j].local, self.sides[j].nat.public);
                if dst.ip() != public && dst != local {
                    continue; // a private address of another site: unroutable
                }
                let Some(internal) = self.sides[j].nat.inbound(src, dst) else {
                    continue; // filtered
                };
                if internal != local {
                    continue;
                }
                self.delivered += 1;
                assert!(self.sides[j].core.handle_datagram(&bytes, src, self.now));
            }
            for s in self.sides.iter_mut() {
                s.core.handle_timeout(self.now);
            }
            if self.sides.iter().all(|s| s.core.outcome().is_some()) && self.inflight.is_empty() {
                break;
            }
            let next = self
                .sides
                .iter()
                .filter_map(|s| s.core.poll_timeout())
                .chain(self.inflight.iter().map(|p| p.0))
                .min();
            match next {
                Some(t) if t > self.now => self.now = t,
                Some(_) => {}
                None => break,
            }
        }
        [
            self.sides[0]
                .core
                .outcome()
                .cloned()
                .expect("side 0 finished"),
            self.sides[1]
                .core
                .outcome()
                .cloned()
                .expect("side 1 finished"),
        ]
    }
}

fn assert_punched(a: Kind, b: Kind, loss: f64, seed: u64) -> [Punched; 2] {
    let mut w = world(a, b, loss, seed, PunchConfig::default());
    let [ra, rb] = w.run();
    let pa = ra.unwrap_or_else(|e| panic!("{a:?}x{b:?} seed {seed}: side a: {e}"));
    let pb = rb.unwrap_or_else(|e| panic!("{a:?}x{b:?} seed {seed}: side b: {e}"));
    // Each side's peer address is the address the other side's packets
    // come from, which is where our packets get in.
    let a_seen_by_b = w.sides[0].nat.outbound(w.sides[0].local, pa.peer_addr);
    assert_eq!(
        pb.peer_addr, a_seen_by_b,
        "b's peer is a's mapping towards b"
    );
    [pa, pb]
}

#[test]
fn cone_and_public_pairs_punch() {
    for (a, b) in [
        (Kind::Easy, Kind::Easy),
        (Kind::Easy, Kind::Public),
        (Kind::Easy, Kind::FullCone),
        (Kind::Public, Kind::Public),
        (Kind::FullCone, Kind::FullCone),
    ] {
        for seed in 0..20 {
            let [pa, pb] = assert_punched(a, b, 0.0, seed);
            assert!(pa.elapsed < Duration::from_secs(1), "{a:?}x{b:?}: {pa:?}");
            assert!(pb.elapsed < Duration::from_secs(1), "{a:?}x{b:?}: {pb:?}");
        }
    }
}

#[test]
fn hard_side_punches_through_to_full_cone_and_public_by_retargeting() {
    for (a, b) in [(Kind::Hard, Kind::FullCone), (Kind::Hard, Kind::Public)] {
        for seed in 0..20 {
            let [pa, pb] = assert_punched(a, b, 0.0, seed);
            // The hard side was reached at a port it never listed.
            assert!(
                pb.peer_addr.port() != 4000 && pb.peer_addr.port() < 50_000,
                "{pb:?}"
            );
            let _ = pa;
        }
    }
}

#[test]
fn easy_pair_punches_under_twenty_percent_loss() {
    for seed in 0..200 {
        assert_punched(Kind::Easy, Kind::Easy, 0.2, seed);
    }
}

#[test]
fn hard_pair_fails_with_a_typed_reason_at_the_deadline() {
    let cfg = PunchConfig {
        timeout: Duration::from_secs(3),
        ..PunchConfig::default()
    };
    let mut w = world(Kind::Hard, Kind::Hard, 0.0, 1, cfg.clone());
    for r in w.run() {
        let e = r.unwrap_err();
        assert_eq!(e.kind, PunchFailureKind::EndpointDependentBothSides);
        assert_eq!(e.elapsed, cfg.timeout);
        assert!(
            e.to_string().starts_with("cannot punch this NAT pair"),
            "{e}"
        );
    }
    let mut w = world(Kind::Hard, Kind::Easy, 0.0, 1, cfg);
    for r in w.run() {
        assert_eq!(
            r.unwrap_err().kind,
            PunchFailureKind::EndpointDependentVsRestrictedFiltering
        );
    }
}

#[test]
fn wrong_secret_probes_are_ignored_and_reported() {
    let cfg = PunchConfig {
        timeout: Duration::from_secs(2),
        ..PunchConfig::default()
    };
    let mut w = world(Kind::Public, Kind::Public, 0.0, 1, cfg.clone());
    // Side 1 uses a stale rendezvous of side 0: its probes carry a secret
    // side 0 does not expect.
    let (stale_priv, _) = gen_rendezvous_info_with(vec![], NatBehaviour::default());
    let (_, q0) = gen_rendezvous_info_with(endpoints(0, Kind::Public), Kind::Public.behaviour());
    w.sides[1].core = PunchCore::new(stale_priv, q0, cfg, w.now);
    let [r0, r1] = w.run();
    assert_eq!(r0.unwrap_err().kind, PunchFailureKind::WrongSecret);
    assert_eq!(r1.unwrap_err().kind, PunchFailureKind::WrongSecret);
}

#[test]
fn silent_peer_gives_no_response() {
    let now = Instant::now();
    let (p, _) = gen_rendezvous_info_with(vec![], NatBehaviour::default());
    let (_, q) = gen_rendezvous_info_with(
        vec!["203.0.113.9:9".parse().unwrap()],
        NatBehaviour::default(),
    );
    let mut c = PunchCore::new(p, q, PunchConfig::default(), now);
    let mut t = now;
    while c.outcome().is_none() {
        while c.poll_transmit(t).is_some() {}
        t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
    }
    let e = c.outcome().unwrap().clone().unwrap_err();
    assert_eq!(e.kind, PunchFailureKind::NoResponse);
    // one probe per interval to the one endpoint, bounded
    assert_eq!(e.probes_sent, 80);
}

#[test]
fn probe_codec_rejects_junk() {
    let p = encode_probe(&[1; 16], &[2; 16], true);
    assert_eq!(decode_probe(&p), Some(([1; 16], [2; 16], true)));
    for n in 0..p.len() {
        assert!(decode_probe(&p[..n]).is_none());
    }
    let mut bad = p;
    bad[5] = 2;
    assert!(decode_probe(&bad).is_none());
}

#[test]
fn peer_data_after_its_probe_ends_the_punch_but_foreign_data_does_not() {
    let now = Instant::now();
    let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let (p, q_ours) = gen_rendezvous_info_with(vec![], NatBehaviour::default());
    let (pp, q) = gen_rendezvous_info_with(vec![peer], NatBehaviour::default());
    let mut c = PunchCore::new(p, q, PunchConfig::default(), now);
    // Data before any probe from the peer proves nothing.
    assert!(!c.handle_peer_data(peer, now));
    let probe = encode_probe(&pp.secret, &q_ours.secret, false);
    assert!(c.handle_datagram(&probe, peer, now));
    assert!(c.outcome().is_none());
    let other: SocketAddr = "203.0.113.10:4000".parse().unwrap();
    assert!(!c.handle_peer_data(other, now));
    assert!(c.handle_peer_data(peer, now));
    assert_eq!(c.outcome().unwrap().as_ref().unwrap().peer_addr, peer);
}
