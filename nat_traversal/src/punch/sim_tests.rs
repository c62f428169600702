//! The punch core in `netlab::sim`'s deterministic network, with NATs of
//! each mapping and filtering kind (virtual clock, seeded loss and
//! secrets), and a third party on the public segment that copies probes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netlab::sim::{LinkConfig, Nat, NatFiltering, NatMapping, Network};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::rendezvous::{Filtering, Mapping, NatBehaviour, gen_rendezvous_info_rng};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Public,
    Easy,     // EIM, port-preserving, port-restricted filtering
    FullCone, // EIM, endpoint-independent filtering
    Hard,     // EDM, port-restricted filtering
}

impl Kind {
    pub(crate) fn behaviour(self) -> NatBehaviour {
        let (mapping, filtering) = match self {
            Kind::Public => (Mapping::NoNat, Filtering::EndpointIndependent),
            Kind::Easy => (
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent,
            ),
            Kind::FullCone => (Mapping::EndpointIndependent, Filtering::EndpointIndependent),
            Kind::Hard => (
                Mapping::EndpointDependent,
                Filtering::AddressAndPortDependent,
            ),
        };
        NatBehaviour { mapping, filtering }
    }

    fn nat(self, public: IpAddr) -> Option<Nat> {
        let (m, f) = match self {
            Kind::Public => return None,
            Kind::Easy => (
                NatMapping::EndpointIndependent,
                NatFiltering::AddressAndPortDependent,
            ),
            Kind::FullCone => (
                NatMapping::EndpointIndependent,
                NatFiltering::EndpointIndependent,
            ),
            Kind::Hard => (
                NatMapping::AddressAndPortDependent,
                NatFiltering::AddressAndPortDependent,
            ),
        };
        Some(Nat::new(public, m, f))
    }
}

/// Side `i`'s socket and its public IP: a public host has one address; a
/// NATed one sits in its own private subnet (10.i.0.0/16) behind
/// 198.51.100.(i+1).
pub(crate) fn side_addrs(i: usize, kind: Kind) -> (SocketAddr, IpAddr) {
    if kind == Kind::Public {
        let a: SocketAddr = format!("203.0.113.{}:4000", 10 + i).parse().unwrap();
        (a, a.ip())
    } else {
        (
            format!("10.{i}.0.10:4000").parse().unwrap(),
            format!("198.51.100.{}", 1 + i).parse().unwrap(),
        )
    }
}

/// The endpoints a side would list: its mapped address as a STUN server
/// saw it (for a hard NAT, a port the peer will never see) and its local one.
pub(crate) fn endpoints(i: usize, kind: Kind) -> Vec<SocketAddr> {
    let (local, public) = side_addrs(i, kind);
    match kind {
        Kind::Public => vec![local],
        Kind::Hard => vec![SocketAddr::new(public, 50_000 + i as u16), local],
        _ => vec![SocketAddr::new(public, local.port()), local],
    }
}

/// A private address of another side's site: unroutable from here.
fn unroutable(from_side: usize, to: SocketAddr) -> bool {
    matches!(to.ip(), IpAddr::V4(v4) if v4.octets()[0] == 10 && usize::from(v4.octets()[1]) != from_side)
}

/// A host on the public segment that copies every probe it sees towards
/// side 0 and sends the copy from its own address, ahead of the original.
const ATTACKER: &str = "203.0.113.66:6666";

struct World {
    /// Side 0's address as the internet reaches it (its mapping for a
    /// port-preserving NAT).
    reach0: SocketAddr,
    net: Network,
    locals: [SocketAddr; 2],
    cores: [PunchCore; 2],
    /// Sources each side heard authentic probes from, by sender.
    heard_from_peer: [Vec<SocketAddr>; 2],
    copier: bool,
    copies_sent: u32,
}

fn world(a: Kind, b: Kind, loss: f64, seed: u64, cfg: PunchConfig) -> World {
    let mut rng = StdRng::seed_from_u64(seed);
    let link = LinkConfig {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(30),
        loss,
        ..LinkConfig::default()
    };
    let mut net = Network::new(seed, link);
    let (pa, qa) = gen_rendezvous_info_rng(&mut rng, endpoints(0, a), a.behaviour());
    let (pb, qb) = gen_rendezvous_info_rng(&mut rng, endpoints(1, b), b.behaviour());
    let mut locals = [side_addrs(0, a).0, side_addrs(1, b).0];
    for (i, kind) in [a, b].into_iter().enumerate() {
        let (local, public) = side_addrs(i, kind);
        if let Some(nat) = kind.nat(public) {
            net.add_nat([local.ip()], nat);
        }
        locals[i] = local;
    }
    let now = net.now();
    let (l0, p0) = side_addrs(0, a);
    World {
        reach0: SocketAddr::new(p0, l0.port()),
        net,
        locals,
        cores: [
            PunchCore::new(pa, qb, cfg.clone(), now),
            PunchCore::new(pb, qa, cfg, now),
        ],
        heard_from_peer: [Vec::new(), Vec::new()],
        copier: false,
        copies_sent: 0,
    }
}

impl World {
    /// Runs until both cores finish; returns the outcomes.
    fn run(&mut self) -> [Result<Punched, PunchFailure>; 2] {
        let attacker: SocketAddr = ATTACKER.parse().unwrap();
        for _step in 0..1_000_000 {
            let now = self.net.now();
            for i in 0..2 {
                while let Some((to, bytes)) = self.cores[i].poll_transmit(now) {
                    if !unroutable(i, to) {
                        self.net.send(self.locals[i], to, &bytes);
                    }
                }
                self.cores[i].handle_timeout(now);
            }
            while let Some(d) = self.net.deliver() {
                let Some(j) = self.locals.iter().position(|l| *l == d.to) else {
                    continue; // nobody there (the attacker's own address)
                };
                if self.copier && j == 0 && d.from != attacker {
                    // The copier saw it on the public segment: one copy
                    // races ahead of the original (handled first), one
                    // arrives later through the network (a replay).
                    let t = self.net.now();
                    assert!(self.cores[0].handle_datagram(&d.data, attacker, t));
                    // And the same copy again: a replay from that source.
                    assert!(self.cores[0].handle_datagram(&d.data, attacker, t));
                    self.net.send(attacker, self.reach0, &d.data);
                    self.copies_sent += 1;
                }
                assert!(self.cores[j].handle_datagram(&d.data, d.from, self.net.now()));
                if d.from != attacker {
                    self.heard_from_peer[j].push(d.from);
                }
            }
            if self.cores.iter().all(|c| c.outcome().is_some()) {
                break;
            }
            let next = self
                .cores
                .iter()
                .filter_map(|c| c.poll_timeout())
                .chain(self.net.next_delivery())
                .min();
            match next {
                Some(t) if t > self.net.now() => self.net.advance_to(t),
                Some(_) => {}
                None => break,
            }
        }
        [
            self.cores[0].outcome().cloned().expect("side 0 finished"),
            self.cores[1].outcome().cloned().expect("side 1 finished"),
        ]
    }
}

fn assert_punched(a: Kind, b: Kind, loss: f64, seed: u64) -> [Punched; 2] {
    let mut w = world(a, b, loss, seed, PunchConfig::default());
    let [ra, rb] = w.run();
    let pa = ra.unwrap_or_else(|e| panic!("{a:?}x{b:?} seed {seed}: side a: {e}"));
    let pb = rb.unwrap_or_else(|e| panic!("{a:?}x{b:?} seed {seed}: side b: {e}"));
    // Each side's peer is an address the other side's probes came from,
    // which is where our packets get in.
    assert!(w.heard_from_peer[0].contains(&pa.peer_addr), "{pa:?}");
    assert!(w.heard_from_peer[1].contains(&pb.peer_addr), "{pb:?}");
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
            let [_, pb] = assert_punched(a, b, 0.0, seed);
            // The hard side was reached at a port it never listed.
            assert!(!endpoints(0, a).contains(&pb.peer_addr), "{pb:?}");
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
    let cfg = PunchConfig::default().timeout(Duration::from_secs(3));
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
fn a_copier_on_the_public_segment_cannot_retarget_or_replay() {
    // Side 0 is reachable from the public segment (public, or a full cone
    // NAT); a third host copies every probe towards it, once ahead of the
    // original and once behind it. Side 1 is listed (public, easy) or not
    // (hard: it reaches side 0 from a port it never listed).
    for (a, b) in [
        (Kind::Public, Kind::Public),
        (Kind::FullCone, Kind::Easy),
        (Kind::FullCone, Kind::Hard),
        (Kind::Public, Kind::Hard),
    ] {
        for seed in 0..20 {
            let mut w = world(a, b, 0.0, seed, PunchConfig::default());
            w.copier = true;
            let [r0, r1] = w.run();
            let p0 = r0.unwrap_or_else(|e| panic!("{a:?}x{b:?} seed {seed}: {e}"));
            r1.unwrap_or_else(|e| panic!("{a:?}x{b:?} seed {seed}: side b: {e}"));
            assert!(w.copies_sent > 0);
            assert_ne!(
                p0.peer_addr,
                ATTACKER.parse().unwrap(),
                "{a:?}x{b:?} seed {seed}"
            );
            assert!(w.heard_from_peer[0].contains(&p0.peer_addr));
            assert!(w.cores[0].replays() > 0, "the late copies were replays");
        }
    }
}

#[test]
fn wrong_secret_probes_are_ignored_and_reported() {
    let cfg = PunchConfig::default().timeout(Duration::from_secs(2));
    let mut w = world(Kind::Public, Kind::Public, 0.0, 1, cfg.clone());
    // Side 1 uses a stale rendezvous of side 0: its probes are made with a
    // key side 0 does not derive.
    let mut rng = StdRng::seed_from_u64(99);
    let (stale_priv, _) = gen_rendezvous_info_rng(&mut rng, vec![], NatBehaviour::default());
    let (_, q0) = gen_rendezvous_info_rng(
        &mut rng,
        endpoints(0, Kind::Public),
        Kind::Public.behaviour(),
    );
    w.cores[1] = PunchCore::new(stale_priv, q0, cfg, w.net.now());
    let [r0, r1] = w.run();
    assert_eq!(r0.unwrap_err().kind, PunchFailureKind::WrongSecret);
    assert_eq!(r1.unwrap_err().kind, PunchFailureKind::WrongSecret);
}

#[test]
fn silent_peer_gives_no_response() {
    let now = Instant::now();
    let (p, _) = crate::gen_rendezvous_info(vec![]);
    let (_, q) = crate::gen_rendezvous_info(vec!["203.0.113.9:9".parse().unwrap()]);
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

fn infos(peer: SocketAddr) -> [(PrivRendezvousInfo, PubRendezvousInfo); 2] {
    [
        crate::gen_rendezvous_info(vec![]),
        crate::gen_rendezvous_info(vec![peer]),
    ]
}

#[test]
fn probe_shape_and_authenticity_are_checked() {
    let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let [(p, q_ours), (pp, q)] = infos(peer);
    let now = Instant::now();
    let mut c = PunchCore::new(p.clone(), q.clone(), PunchConfig::default(), now);
    let good = encode_probe(&pp, &q_ours, false, 1, 0).unwrap();
    for n in 0..good.len() {
        assert_eq!(c.classify(&good[..n]), Classified::Other);
    }
    let mut bad_flags = good;
    bad_flags[5] |= 0x80;
    assert_eq!(c.classify(&bad_flags), Classified::Other);
    // Every single-bit change of the signed part or the MAC fails the MAC
    // (the flags' side bit too: then it claims our side).
    for i in 6..PROBE_LEN {
        let mut p = good;
        p[i] ^= 1;
        assert!(c.handle_datagram(&p, peer, now));
        assert!(c.cands.is_empty(), "byte {i} flipped was accepted");
    }
    let mut side = good;
    side[5] ^= FLAG_HIGH;
    assert!(c.handle_datagram(&side, peer, now));
    assert!(c.cands.is_empty());
    // Our own probe reflected back does not verify.
    let ours = encode_probe(&p, &q, false, 1, 0).unwrap();
    assert!(c.handle_datagram(&ours, peer, now));
    assert!(c.cands.is_empty());
    assert!(c.handle_datagram(&good, peer, now));
    assert_eq!(c.cands.len(), 1);
    // The same probe again is a replay.
    assert!(c.handle_datagram(&good, peer, now));
    assert_eq!(c.replays(), 1);
}

#[test]
fn peer_data_after_its_probe_ends_the_punch_but_foreign_data_does_not() {
    let now = Instant::now();
    let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let [(p, q_ours), (pp, q)] = infos(peer);
    let mut c = PunchCore::new(p, q, PunchConfig::default(), now);
    // Data before any probe from the peer proves nothing.
    assert!(!c.handle_peer_data(peer, now));
    let probe = encode_probe(&pp, &q_ours, false, 1, 0).unwrap();
    assert!(c.handle_datagram(&probe, peer, now));
    assert!(c.outcome().is_none());
    let other: SocketAddr = "203.0.113.10:4000".parse().unwrap();
    assert!(!c.handle_peer_data(other, now));
    assert!(c.handle_peer_data(peer, now));
    assert_eq!(c.outcome().unwrap().as_ref().unwrap().peer_addr, peer);
}

#[test]
fn a_contested_peer_must_prove_a_round_trip() {
    // Two unlisted sources send authentic probes (one copies the other):
    // neither acks nor data end the punch until one echoes a probe we sent
    // to it.
    let now = Instant::now();
    let listed: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let [(p, q_ours), (pp, q)] = infos(listed);
    let real: SocketAddr = "198.51.100.2:40001".parse().unwrap();
    let copier: SocketAddr = ATTACKER.parse().unwrap();
    let mut c = PunchCore::new(p, q, PunchConfig::default().acks(3), now);
    let probe = encode_probe(&pp, &q_ours, true, 1, 0).unwrap();
    assert!(c.handle_datagram(&probe, copier, now));
    assert!(c.handle_datagram(&probe, real, now));
    let mut t = now;
    let mut to_real = Vec::new();
    for _ in 0..10 {
        while let Some((to, bytes)) = c.poll_transmit(t) {
            if to == real {
                to_real.push(bytes);
            }
        }
        t += Duration::from_millis(100);
    }
    assert!(c.outcome().is_none(), "acks alone ended a contested punch");
    assert!(!c.handle_peer_data(copier, t));
    assert!(!to_real.is_empty(), "the unlisted real peer was acked too");
    // The real peer echoes the sequence number of one probe we sent it.
    let seq = u64::from_be_bytes(to_real[0][6..14].try_into().unwrap());
    let answer = encode_probe(&pp, &q_ours, true, 2, seq).unwrap();
    assert!(c.handle_datagram(&answer, real, t));
    while c.poll_transmit(t).is_some() {}
    assert_eq!(c.outcome().unwrap().as_ref().unwrap().peer_addr, real);
}
