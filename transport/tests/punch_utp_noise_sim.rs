//! End to end on virtual time: two hosts behind two simulated NATs
//! (`netlab::sim`) punch a UDP hole with `nat_traversal`'s punch core, open
//! a uTP connection in rendezvous mode over the punched addresses (the lower
//! key sends the SYN), and run the Noise IK handshake over it, the
//! initiator proving the key the other side expects. Every step is a sans-IO
//! core, so the whole sequence is deterministic for a seed; the test asserts
//! the sequence of events, and that a peer holding another key fails.

use std::net::SocketAddr;
use std::time::Duration;

use nat_traversal::punch::{Classified, PunchConfig, PunchCore, Punched};
use nat_traversal::rendezvous::{Filtering, Mapping, NatBehaviour, gen_rendezvous_info_rng};
use netlab::sim::{LinkConfig, Nat, NatFiltering, NatMapping, Network};
use rand::SeedableRng;
use rand::rngs::StdRng;
use transport::proto::{Initiator, Responder};
use transport::utp::proto::{ConnectionHandle, Endpoint, EndpointConfig, MAX_DATAGRAM};
use transport::{Identity, Protocol, PublicKey};

const LOCAL: [&str; 2] = ["10.0.0.10:4000", "10.1.0.10:4000"];
const PUBLIC: [&str; 2] = ["198.51.100.1", "198.51.100.2"];

/// What happened, in order, to whom (0 or 1).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Punched(usize),
    UtpEstablished(usize),
    /// The responder accepted the initiator's key.
    NoiseAccepted(usize, PublicKey),
    /// The initiator finished: the responder proved the key it expected.
    NoiseFinished(usize, PublicKey),
    NoiseFailed(usize, String),
}

enum Stage {
    Punching(Box<PunchCore>),
    Utp(ConnectionHandle),
    Done,
}

struct Side {
    local: SocketAddr,
    identity: Identity,
    /// The key we expect the peer to prove (from its rendezvous info).
    expect: PublicKey,
    stage: Stage,
    utp: Endpoint,
    peer: Option<Punched>,
    initiator: Option<Initiator>,
    inbox: Vec<u8>,
    responded: bool,
}

fn nat(i: usize, kind: (NatMapping, NatFiltering)) -> Nat {
    Nat::new(PUBLIC[i].parse().unwrap(), kind.0, kind.1)
}

/// Runs the whole sequence for `seed`; `impostor` gives side 1 another
/// identity than the one side 0 expects.
fn run(seed: u64, kinds: [(NatMapping, NatFiltering); 2], impostor: bool) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let link = LinkConfig {
        delay: Duration::from_millis(15),
        jitter: Duration::from_millis(10),
        loss: 0.05,
        ..LinkConfig::default()
    };
    let mut net = Network::new(seed, link);
    let secrets = [[seed as u8 | 1; 32], [0x80 | seed as u8; 32]];
    let real_keys = secrets.map(|s| Identity::from_secret_bytes(s).public_key());
    // The impostor's key sorts against side 0's as side 1's real key does,
    // so the roles (who sends the SYN and message 1) stay the same.
    let impostor_secret = (0u8..=255)
        .map(|b| [b; 32])
        .find(|s| {
            let k = Identity::from_secret_bytes(*s).public_key();
            k != real_keys[1]
                && (k.as_bytes() < real_keys[0].as_bytes())
                    == (real_keys[1].as_bytes() < real_keys[0].as_bytes())
        })
        .unwrap();
    let behaviour = NatBehaviour {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::AddressAndPortDependent,
    };
    let mut infos = Vec::new();
    for i in 0..2 {
        let local: SocketAddr = LOCAL[i].parse().unwrap();
        let mapped = SocketAddr::new(PUBLIC[i].parse().unwrap(), local.port());
        net.add_nat([local.ip()], nat(i, kinds[i]));
        let (p, q) = gen_rendezvous_info_rng(&mut rng, vec![mapped, local], behaviour);
        infos.push((p, q.with_static_key(*real_keys[i].as_bytes())));
    }
    let now = net.now();
    let mut sides: Vec<Side> = (0..2)
        .map(|i| {
            let theirs = infos[1 - i].1.clone();
            let expect = PublicKey::from_bytes(theirs.static_key.unwrap());
            let identity = if impostor && i == 1 {
                Identity::from_secret_bytes(impostor_secret)
            } else {
                Identity::from_secret_bytes(secrets[i])
            };
            Side {
                local: LOCAL[i].parse().unwrap(),
                identity,
                expect,
                stage: Stage::Punching(Box::new(PunchCore::new(
                    infos[i].0.clone(),
                    theirs,
                    PunchConfig::default(),
                    now,
                ))),
                utp: Endpoint::new(EndpointConfig::default().seed(seed * 2 + i as u64), now),
                peer: None,
                initiator: None,
                inbox: Vec::new(),
                responded: false,
            }
        })
        .collect();
    // Both know both secrets: the uTP rendezvous nonce is their
    // concatenation in byte order.
    let mut nonce = [infos[0].1.secret, infos[1].1.secret];
    nonce.sort();
    let nonce = nonce.concat();
    let mut events = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let deadline = net.now() + Duration::from_secs(30);
    while net.now() < deadline && events.len() < 6 {
        let now = net.now();
        for (i, s) in sides.iter_mut().enumerate() {
            if let Stage::Punching(core) = &mut s.stage {
                while let Some((to, bytes)) = core.poll_transmit(now) {
                    net.send(s.local, to, &bytes);
                }
                core.handle_timeout(now);
                if let Some(o) = core.outcome() {
                    let p = o.clone().unwrap_or_else(|e| panic!("side {i}: {e}"));
                    events.push(Event::Punched(i));
                    s.peer = Some(p);
                    // The lower key sends the SYN and the Noise message 1.
                    let initiator = s.identity.public_key().as_bytes() < s.expect.as_bytes();
                    let h = s
                        .utp
                        .rendezvous(now, p.peer_addr, &nonce, initiator)
                        .unwrap();
                    s.stage = Stage::Utp(h);
                }
            }
            if let Stage::Utp(h) = s.stage {
                step_utp(i, s, h, &mut events);
            }
            while let Some(t) = s.utp.poll_transmit(now, &mut buf) {
                net.send(s.local, t.destination, &buf[..t.len]);
            }
        }
        let next = sides
            .iter_mut()
            .flat_map(|s| {
                let punch = match &s.stage {
                    Stage::Punching(c) => c.poll_timeout(),
                    _ => None,
                };
                [punch, s.utp.poll_timeout()]
            })
            .chain([net.next_delivery()])
            .flatten()
            .min();
        let Some(next) = next else { break };
        net.advance_to(next.max(net.now()));
        let now = net.now();
        while let Some(d) = net.deliver() {
            let Some(i) = sides.iter().position(|s| s.local == d.to) else {
                continue;
            };
            let s = &mut sides[i];
            match &mut s.stage {
                Stage::Punching(core) => {
                    if core.classify(&d.data) == Classified::Probe {
                        core.handle_datagram(&d.data, d.from, now);
                    } else if core.handle_peer_data(d.from, now) {
                        // The peer finished and sent its uTP SYN: it is
                        // handled once we are in the uTP stage.
                        s.utp.handle_datagram(now, d.from, &d.data);
                    }
                }
                // Late probes reach the uTP endpoint too: it must ignore
                // them.
                _ => s.utp.handle_datagram(now, d.from, &d.data),
            }
        }
        for s in &mut sides {
            s.utp.handle_timeout(now);
        }
    }
    events
}

/// Frames: a 2-byte big-endian length, then the handshake body.
fn take_frame(inbox: &mut Vec<u8>) -> Option<Vec<u8>> {
    if inbox.len() < 2 {
        return None;
    }
    let len = transport::proto::check_handshake_frame_len([inbox[0], inbox[1]]).ok()?;
    if inbox.len() < 2 + len {
        return None;
    }
    let body = inbox[2..2 + len].to_vec();
    inbox.drain(..2 + len);
    Some(body)
}

fn step_utp(i: usize, s: &mut Side, h: ConnectionHandle, events: &mut Vec<Event>) {
    let Some(c) = s.utp.connection_mut(h) else {
        return;
    };
    if !c.is_established() {
        return;
    }
    if !events.contains(&Event::UtpEstablished(i)) {
        events.push(Event::UtpEstablished(i));
        if s.identity.public_key().as_bytes() < s.expect.as_bytes() {
            let (init, frame) =
                Initiator::start(&s.identity, &s.expect, Protocol::Utp, b"").unwrap();
            assert_eq!(c.write(&frame), frame.len());
            s.initiator = Some(init);
        }
    }
    let mut tmp = [0u8; 2048];
    while let Some(n) = c.read(&mut tmp) {
        if n == 0 {
            break;
        }
        s.inbox.extend_from_slice(&tmp[..n]);
    }
    let Some(body) = take_frame(&mut s.inbox) else {
        return;
    };
    match s.initiator.take() {
        Some(init) => {
            match init.finish(&body) {
                Ok(session) => events.push(Event::NoiseFinished(i, session.peer())),
                Err(e) => events.push(Event::NoiseFailed(i, e.to_string())),
            }
            s.stage = Stage::Done;
        }
        None if !s.responded => {
            s.responded = true;
            match Responder::respond(&s.identity, Protocol::Utp, &body) {
                Ok(acc) => {
                    assert_eq!(c.write(&acc.reply), acc.reply.len());
                    events.push(Event::NoiseAccepted(i, acc.peer));
                    if acc.peer != s.expect {
                        events.push(Event::NoiseFailed(i, "unexpected key".into()));
                    }
                }
                Err(r) => {
                    if let Some(reply) = r.reply {
                        c.write(&reply);
                    }
                    events.push(Event::NoiseFailed(i, r.error.to_string()));
                }
            }
            s.stage = Stage::Done;
        }
        None => {}
    }
}

const EASY: (NatMapping, NatFiltering) = (
    NatMapping::EndpointIndependent,
    NatFiltering::AddressAndPortDependent,
);
const FULL_CONE: (NatMapping, NatFiltering) = (
    NatMapping::EndpointIndependent,
    NatFiltering::EndpointIndependent,
);

#[test]
fn punch_then_utp_rendezvous_then_noise_through_two_nats() {
    for seed in 0..20 {
        for kinds in [[EASY, EASY], [EASY, FULL_CONE]] {
            let ev = run(seed, kinds, false);
            let pos = |e: &dyn Fn(&Event) -> bool| ev.iter().position(e);
            let punched = |i| pos(&|e| *e == Event::Punched(i));
            let utp = |i| pos(&|e| *e == Event::UtpEstablished(i));
            for i in 0..2 {
                let (p, u) = (punched(i), utp(i));
                assert!(p.is_some() && u.is_some(), "seed {seed}: {ev:?}");
                assert!(p < u, "seed {seed}: uTP before the punch: {ev:?}");
            }
            let accepted = pos(&|e| matches!(e, Event::NoiseAccepted(..)));
            let finished = pos(&|e| matches!(e, Event::NoiseFinished(..)));
            let (Some(a), Some(f)) = (accepted, finished) else {
                panic!("seed {seed}: no Noise handshake: {ev:?}");
            };
            assert!(a < f, "seed {seed}: {ev:?}");
            assert!(utp(0).max(utp(1)) < Some(f), "seed {seed}: {ev:?}");
            // Each side holds the key the other's rendezvous info named.
            let (Event::NoiseAccepted(r, rk), Event::NoiseFinished(n, nk)) =
                (ev[a].clone(), ev[f].clone())
            else {
                unreachable!()
            };
            assert_ne!(r, n);
            assert!(
                !ev.iter().any(|e| matches!(e, Event::NoiseFailed(..))),
                "{ev:?}"
            );
            let keys = [0u8, 1].map(|i| {
                Identity::from_secret_bytes(if i == 0 {
                    [seed as u8 | 1; 32]
                } else {
                    [0x80 | seed as u8; 32]
                })
                .public_key()
            });
            assert_eq!(rk, keys[n], "the responder holds the initiator's key");
            assert_eq!(nk, keys[r], "the initiator holds the responder's key");
        }
    }
}

#[test]
fn a_peer_with_another_key_fails_the_handshake() {
    for seed in 0..10 {
        let ev = run(seed, [EASY, EASY], true);
        assert!(
            ev.iter().any(|e| matches!(e, Event::NoiseFailed(..))),
            "seed {seed}: an impostor was accepted: {ev:?}"
        );
        assert!(
            !ev.iter().any(|e| matches!(e, Event::NoiseFinished(..))),
            "seed {seed}: {ev:?}"
        );
    }
}
