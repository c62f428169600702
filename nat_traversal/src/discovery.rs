//! NAT behaviour discovery (RFC 5780) as a sans-IO state machine: which
//! STUN request to send to which server next, and what the answers (and the
//! silences) say of the NAT's mapping and filtering.
//!
//! # The test order
//!
//! 1. A plain Binding request to every server, one after the other (on one
//!    socket; concurrent transactions would be told apart by id, but the
//!    order keeps the filtering tests clean).
//! 2. The first server whose answer carries OTHER-ADDRESS (an RFC 5780
//!    server) gets the filtering tests at once, before anything is sent to
//!    its alternate address (which would open the NAT's filter to it and
//!    fake an open result): test II, CHANGE-REQUEST change IP and port: an
//!    answer means endpoint-independent filtering; else test III, change
//!    port only: an answer means address-dependent; else
//!    address-and-port-dependent. Silence is a result here, so these use
//!    the shorter `filtering` timing.
//! 3. When no other server answered from the alternate's IP, a plain
//!    Binding request to the alternate address: the mapping it reports tells
//!    the mapping behaviour as a second server would.
//! 4. The mapping behaviour ([`mapping_behaviour`]): our own address seen →
//!    no NAT; one external address for servers at two or more IPs →
//!    endpoint-independent; different ones → endpoint-dependent; fewer than
//!    two IPs answered → unknown.
//!
//! # Driving it
//!
//! Send what [`NatDiscovery::poll_transmit`] gives (to the address it
//! names), feed every datagram to [`NatDiscovery::handle_input`], call
//! [`NatDiscovery::handle_timeout`] at [`NatDiscovery::poll_timeout`], and
//! stop when [`NatDiscovery::outcome`] is `Some`. Transaction ids come from
//! the seed, so a run replays.
//!
//! ```
//! use std::time::Instant;
//! use nat_traversal::discovery::NatDiscovery;
//! use nat_traversal::stun::{respond, StunConfig};
//! use nat_traversal::{Filtering, Mapping};
//! let server = "203.0.113.1:3478".parse().unwrap();
//! let us = "192.0.2.7:4000".parse().unwrap();
//! let t0 = Instant::now();
//! let cfg = StunConfig::default();
//! let mut d = NatDiscovery::new(vec![server], vec![us], cfg.clone(), cfg, 7, t0);
//! while d.outcome().is_none() {
//!     while let Some((to, req)) = d.poll_transmit(t0) {
//!         // A server without RFC 5780 that sees our own address: no NAT.
//!         if let Some((resp, _)) = respond(&req, us, to, None, None) {
//!             d.handle_input(&resp, to, t0);
//!         }
//!     }
//!     if let Some(t) = d.poll_timeout() {
//!         d.handle_timeout(t);
//!     }
//! }
//! let r = d.outcome().unwrap();
//! assert_eq!(r.nat.mapping, Mapping::NoNat);
//! assert_eq!(r.nat.filtering, Filtering::Unknown);
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::{RngExt, SeedableRng};

use crate::rendezvous::{Filtering, Mapping, NatBehaviour};
use crate::stun::{BindingResponse, BindingTransaction, StunConfig, StunError};

/// What a [`NatDiscovery`] learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryReport {
    /// Each server's answer to the plain Binding request, in the order
    /// given: the address it saw, or why not.
    pub stun: Vec<(SocketAddr, Result<SocketAddr, StunError>)>,
    /// Every (server, mapped address) pair, the alternate's included.
    pub seen: Vec<(SocketAddr, SocketAddr)>,
    /// The RFC 5780 server used for the filtering tests and its
    /// OTHER-ADDRESS, if any.
    pub rfc5780: Option<(SocketAddr, SocketAddr)>,
    /// The mapping and filtering behaviour.
    pub nat: NatBehaviour,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Test I to `servers[i]`.
    Binding(usize),
    /// Test II (change IP and port) to the RFC 5780 server; then the next
    /// server is `next`.
    ChangeBoth { next: usize },
    /// Test III (change port).
    ChangePort { next: usize },
    /// A plain request to the alternate address.
    Alternate,
}

/// The RFC 5780 discovery, sans IO (see the [module docs](self)).
#[derive(Debug)]
pub struct NatDiscovery {
    servers: Vec<SocketAddr>,
    locals: Vec<SocketAddr>,
    stun_cfg: StunConfig,
    filtering_cfg: StunConfig,
    rng: rand::rngs::StdRng,
    current: Option<(Step, SocketAddr, BindingTransaction)>,
    stun: Vec<(SocketAddr, Result<SocketAddr, StunError>)>,
    seen: Vec<(SocketAddr, SocketAddr)>,
    rfc5780: Option<(SocketAddr, SocketAddr)>,
    filtering: Filtering,
    outcome: Option<DiscoveryReport>,
}

impl NatDiscovery {
    /// A discovery against `servers` (asked in this order) for a socket
    /// whose own addresses are `locals`. `stun` times the plain requests,
    /// `filtering` the filtering tests; `seed` gives the transaction ids.
    pub fn new(
        servers: Vec<SocketAddr>,
        locals: Vec<SocketAddr>,
        stun: StunConfig,
        filtering: StunConfig,
        seed: u64,
        now: Instant,
    ) -> NatDiscovery {
        let mut d = NatDiscovery {
            servers,
            locals,
            stun_cfg: stun,
            filtering_cfg: filtering,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            current: None,
            stun: Vec::new(),
            seen: Vec::new(),
            rfc5780: None,
            filtering: Filtering::Unknown,
            outcome: None,
        };
        d.start(Step::Binding(0), now);
        d
    }

    /// Starts `step`, or the first step after it that applies; finishes when
    /// none is left.
    fn start(&mut self, mut step: Step, now: Instant) {
        loop {
            let (to, change, cfg) = match step {
                Step::Binding(i) => match self.servers.get(i) {
                    Some(s) => (*s, None, self.stun_cfg.clone()),
                    None => {
                        step = Step::Alternate;
                        match self.rfc5780 {
                            Some((_, o)) if !self.seen.iter().any(|(s, _)| s.ip() == o.ip()) => {
                                continue;
                            }
                            _ => return self.finish(),
                        }
                    }
                },
                Step::ChangeBoth { .. } | Step::ChangePort { .. } => {
                    let Some((server, _)) = self.rfc5780 else {
                        return self.finish(); // unreachable by construction
                    };
                    let change = match step {
                        Step::ChangeBoth { .. } => (true, true),
                        _ => (false, true),
                    };
                    (server, Some(change), self.filtering_cfg.clone())
                }
                Step::Alternate => match self.rfc5780 {
                    Some((_, o)) => (o, None, self.stun_cfg.clone()),
                    None => return self.finish(),
                },
            };
            let tid: [u8; 12] = self.rng.random();
            self.current = Some((step, to, BindingTransaction::new(tid, change, cfg, now)));
            return;
        }
    }

    fn finish(&mut self) {
        self.current = None;
        let mapping = mapping_behaviour(&self.locals, &self.seen);
        self.outcome = Some(DiscoveryReport {
            stun: std::mem::take(&mut self.stun),
            seen: self.seen.clone(),
            rfc5780: self.rfc5780,
            nat: NatBehaviour {
                mapping,
                filtering: self.filtering,
            },
        });
    }

    /// The current transaction has a result: record it and go on.
    fn advance(&mut self, now: Instant) {
        let Some((step, to, t)) = &self.current else {
            return;
        };
        let Some(r) = t.result().cloned() else {
            return;
        };
        let (step, to) = (*step, *to);
        let r: Result<BindingResponse, StunError> = r;
        let next = match step {
            Step::Binding(i) => {
                self.stun
                    .push((to, r.as_ref().map(|b| b.mapped).map_err(Clone::clone)));
                match r {
                    Ok(b) => {
                        self.seen.push((to, b.mapped));
                        match b.other_address {
                            Some(o) if self.rfc5780.is_none() => {
                                self.rfc5780 = Some((to, o));
                                Step::ChangeBoth { next: i + 1 }
                            }
                            _ => Step::Binding(i + 1),
                        }
                    }
                    Err(_) => Step::Binding(i + 1),
                }
            }
            Step::ChangeBoth { next } => {
                if r.is_ok() {
                    self.filtering = Filtering::EndpointIndependent;
                    Step::Binding(next)
                } else {
                    Step::ChangePort { next }
                }
            }
            Step::ChangePort { next } => {
                self.filtering = if r.is_ok() {
                    Filtering::AddressDependent
                } else {
                    Filtering::AddressAndPortDependent
                };
                Step::Binding(next)
            }
            Step::Alternate => {
                if let Ok(b) = r {
                    self.seen.push((to, b.mapped));
                }
                self.current = None;
                return self.finish();
            }
        };
        self.start(next, now);
    }

    /// The next request to send and where to, if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let (_, to, t) = self.current.as_mut()?;
        t.poll_transmit(now).map(|b| (*to, b))
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next (`None`
    /// once finished).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.as_ref().and_then(|(_, _, t)| t.poll_timeout())
    }

    /// Time passes: a transaction whose time is up fails, and the next
    /// begins.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, _, t)) = self.current.as_mut() {
            t.handle_timeout(now);
        }
        self.advance(now);
    }

    /// A datagram arrived from `from`. Returns whether it was the answer to
    /// the current request (a late answer to an earlier one, or anything
    /// else, is not, and changes nothing).
    pub fn handle_input(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) -> bool {
        let Some((_, _, t)) = self.current.as_mut() else {
            return false;
        };
        let ours = t.handle_input(bytes, from);
        if ours {
            self.advance(now);
        }
        ours
    }

    /// A request to `to` could not be sent (`reason`): the current test
    /// fails at once, as a timeout would end it, and the next begins.
    pub fn handle_send_error(&mut self, to: SocketAddr, reason: String, now: Instant) {
        if let Some((_, dest, t)) = self.current.as_mut()
            && *dest == to
        {
            t.fail(StunError::Unreachable { reason });
            self.advance(now);
        }
    }

    /// The outcome, once every test is done.
    pub fn outcome(&self) -> Option<&DiscoveryReport> {
        self.outcome.as_ref()
    }
}

/// The mapping behaviour from what servers at different IPs saw: `seen`
/// holds (server, mapped address) pairs, `local` the socket's own
/// addresses.
///
/// ```
/// use nat_traversal::discovery::mapping_behaviour;
/// use nat_traversal::Mapping;
/// let a = |s: &str| s.parse().unwrap();
/// let seen = [(a("203.0.113.1:3478"), a("198.51.100.9:4000")),
///             (a("203.0.113.2:3478"), a("198.51.100.9:4001"))];
/// assert_eq!(mapping_behaviour(&[a("192.0.2.2:4000")], &seen), Mapping::EndpointDependent);
/// ```
pub fn mapping_behaviour(local: &[SocketAddr], seen: &[(SocketAddr, SocketAddr)]) -> Mapping {
    let Some(first) = seen.first() else {
        return Mapping::Unknown;
    };
    if seen.iter().all(|(_, m)| local.contains(m)) {
        return Mapping::NoNat;
    }
    let mut ips: Vec<IpAddr> = seen.iter().map(|(s, _)| s.ip()).collect();
    ips.sort();
    ips.dedup();
    if ips.len() < 2 {
        return Mapping::Unknown;
    }
    if seen.iter().all(|(_, m)| *m == first.1) {
        Mapping::EndpointIndependent
    } else {
        Mapping::EndpointDependent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{AddressPair, Message, respond};
    use std::time::Duration;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapping_behaviour_from_two_servers() {
        let local = [a("192.0.2.2:4000")];
        let s1 = a("203.0.113.1:3478");
        let s2 = a("203.0.113.2:3478");
        let m1 = a("203.0.113.9:4000");
        let m2 = a("203.0.113.9:4001");
        assert_eq!(mapping_behaviour(&local, &[]), Mapping::Unknown);
        assert_eq!(mapping_behaviour(&local, &[(s1, m1)]), Mapping::Unknown);
        assert_eq!(
            mapping_behaviour(&local, &[(s1, m1), (s2, m1)]),
            Mapping::EndpointIndependent
        );
        assert_eq!(
            mapping_behaviour(&local, &[(s1, m1), (s2, m2)]),
            Mapping::EndpointDependent
        );
        assert_eq!(mapping_behaviour(&[m1], &[(s1, m1)]), Mapping::NoNat);
        // Two servers on one IP cannot tell.
        assert_eq!(
            mapping_behaviour(&local, &[(s1, m1), (a("203.0.113.1:3479"), m1)]),
            Mapping::Unknown
        );
    }

    /// The NAT kinds of the lab, as a pure function of what goes out.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        NoNat,
        FullCone,
        Easy,
        /// Endpoint-independent mapping, address-dependent filtering.
        Restricted,
        Hard,
    }

    const LOCAL: &str = "192.168.1.2:4000";
    const PUBLIC_IP: &str = "198.51.100.9";

    /// A simulated NAT in front of [`LOCAL`], and STUN servers: a datagram
    /// from us to `to`; returns the answer, if the NAT lets it back in.
    struct World {
        kind: Kind,
        /// Destinations we sent to.
        sent_to: Vec<SocketAddr>,
        /// RFC 5780 servers (their primary) and plain ones.
        pairs: Vec<AddressPair>,
        plain: Vec<SocketAddr>,
        /// Servers that do not answer at all.
        dead: Vec<SocketAddr>,
        log: Vec<(SocketAddr, Option<(bool, bool)>)>,
    }

    impl World {
        fn mapped(&self, to: SocketAddr) -> SocketAddr {
            match self.kind {
                Kind::NoNat => a(LOCAL),
                Kind::Hard => {
                    // A port per destination.
                    let last = match to.ip() {
                        IpAddr::V4(v4) => v4.octets()[3],
                        IpAddr::V6(v6) => v6.octets()[15],
                    };
                    let h = u16::from(last) * 101 + to.port() % 101;
                    SocketAddr::new(PUBLIC_IP.parse().unwrap(), 30000 + h)
                }
                _ => SocketAddr::new(PUBLIC_IP.parse().unwrap(), 4000),
            }
        }

        fn lets_in(&self, from: SocketAddr) -> bool {
            match self.kind {
                Kind::NoNat | Kind::FullCone => true,
                Kind::Restricted => self.sent_to.iter().any(|d| d.ip() == from.ip()),
                Kind::Easy | Kind::Hard => self.sent_to.contains(&from),
            }
        }

        fn send(&mut self, to: SocketAddr, req: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
            self.sent_to.push(to);
            self.log
                .push((to, Message::decode(req).ok().and_then(|m| m.change_request)));
            if self.dead.contains(&to) {
                return None;
            }
            let mapped = self.mapped(to);
            let (resp, origin) = if let Some(p) = self
                .pairs
                .iter()
                .find(|p| p.sockets().contains(&to))
                .copied()
            {
                respond(req, mapped, to, Some(p), None)?
            } else if self.plain.contains(&to) {
                respond(req, mapped, to, None, None)?
            } else {
                return None;
            };
            self.lets_in(origin).then_some((resp, origin))
        }
    }

    fn world(kind: Kind) -> World {
        World {
            kind,
            sent_to: vec![],
            pairs: vec![AddressPair {
                primary: a("203.0.113.1:3478"),
                alternate: a("203.0.113.2:3479"),
            }],
            plain: vec![],
            dead: vec![],
            log: vec![],
        }
    }

    /// Runs a discovery on virtual time; returns the report and how long it
    /// took.
    fn run(w: &mut World, servers: Vec<SocketAddr>) -> (DiscoveryReport, Duration) {
        let t0 = Instant::now();
        let stun = StunConfig::default();
        let filtering = StunConfig::default()
            .timeout(Duration::from_millis(1500))
            .max_transmits(5);
        let mut d = NatDiscovery::new(servers, vec![a(LOCAL)], stun, filtering, 1, t0);
        let mut now = t0;
        for _ in 0..1000 {
            if d.outcome().is_some() {
                break;
            }
            while let Some((to, req)) = d.poll_transmit(now) {
                if let Some((resp, from)) = w.send(to, &req) {
                    assert!(d.handle_input(&resp, from, now));
                    // A duplicate is not taken twice.
                    assert!(!d.handle_input(&resp, from, now));
                }
            }
            if let Some(t) = d.poll_timeout() {
                now = t.max(now);
                d.handle_timeout(now);
            }
        }
        (d.outcome().expect("finished").clone(), now - t0)
    }

    fn nat(r: &DiscoveryReport) -> (Mapping, Filtering) {
        (r.nat.mapping, r.nat.filtering)
    }

    #[test]
    fn each_nat_kind_behind_one_rfc5780_server() {
        let srv = a("203.0.113.1:3478");
        for (kind, want) in [
            (
                Kind::NoNat,
                (Mapping::NoNat, Filtering::EndpointIndependent),
            ),
            (
                Kind::FullCone,
                (Mapping::EndpointIndependent, Filtering::EndpointIndependent),
            ),
            (
                Kind::Restricted,
                (Mapping::EndpointIndependent, Filtering::AddressDependent),
            ),
            (
                Kind::Easy,
                (
                    Mapping::EndpointIndependent,
                    Filtering::AddressAndPortDependent,
                ),
            ),
            (
                Kind::Hard,
                (
                    Mapping::EndpointDependent,
                    Filtering::AddressAndPortDependent,
                ),
            ),
        ] {
            let mut w = world(kind);
            let (r, _) = run(&mut w, vec![srv]);
            assert_eq!(nat(&r), want, "{kind:?}");
            assert_eq!(r.rfc5780, Some((srv, a("203.0.113.2:3479"))));
            // The order: test I, then the filtering tests before anything
            // goes to the alternate address, then the alternate.
            let order = w.log.clone();
            let alt = a("203.0.113.2:3479");
            let first_alt = order.iter().position(|(to, _)| *to == alt).unwrap();
            assert!(
                order[..first_alt].iter().all(|(to, _)| *to == srv),
                "{kind:?}: {order:?}"
            );
            assert_eq!(order[0], (srv, None));
            assert!(
                order[first_alt..]
                    .iter()
                    .all(|(to, c)| *to == alt && c.is_none())
            );
        }
    }

    #[test]
    fn filtering_tests_stop_at_the_first_answer() {
        let srv = a("203.0.113.1:3478");
        let mut w = world(Kind::FullCone);
        run(&mut w, vec![srv]);
        let changes: Vec<_> = w.log.iter().filter_map(|(_, c)| *c).collect();
        assert_eq!(changes, vec![(true, true)]);
        let mut w = world(Kind::Easy);
        let (_, took) = run(&mut w, vec![srv]);
        let mut changes: Vec<_> = w.log.iter().filter_map(|(_, c)| *c).collect();
        changes.dedup();
        assert_eq!(changes, vec![(true, true), (false, true)]);
        // Both silent filtering tests ran their 1.5 s out, nothing else
        // waited.
        assert_eq!(took, Duration::from_millis(3000));
    }

    #[test]
    fn two_plain_servers_tell_the_mapping_not_the_filtering() {
        let (s1, s2) = (a("203.0.113.10:3478"), a("203.0.113.20:3478"));
        for (kind, want) in [
            (Kind::Easy, Mapping::EndpointIndependent),
            (Kind::Hard, Mapping::EndpointDependent),
            (Kind::NoNat, Mapping::NoNat),
        ] {
            let mut w = world(kind);
            w.pairs.clear();
            w.plain = vec![s1, s2];
            let (r, _) = run(&mut w, vec![s1, s2]);
            assert_eq!(nat(&r), (want, Filtering::Unknown), "{kind:?}");
            assert_eq!(r.stun.len(), 2);
            assert!(w.log.iter().all(|(_, c)| c.is_none()));
        }
        // One plain server: the mapping is unknown.
        let mut w = world(Kind::Easy);
        w.pairs.clear();
        w.plain = vec![s1];
        let (r, _) = run(&mut w, vec![s1]);
        assert_eq!(nat(&r), (Mapping::Unknown, Filtering::Unknown));
    }

    #[test]
    fn a_dead_server_is_reported_and_skipped() {
        let dead = a("203.0.113.50:3478");
        let srv = a("203.0.113.1:3478");
        let mut w = world(Kind::Hard);
        w.dead = vec![dead];
        let (r, _) = run(&mut w, vec![dead, srv]);
        assert!(matches!(r.stun[0], (s, Err(StunError::TimedOut { sent: 7 })) if s == dead));
        assert!(r.stun[1].1.is_ok());
        assert_eq!(
            nat(&r),
            (
                Mapping::EndpointDependent,
                Filtering::AddressAndPortDependent
            )
        );
        // A server we cannot send to fails at once.
        let t0 = Instant::now();
        let cfg = StunConfig::default();
        let mut d = NatDiscovery::new(vec![dead, srv], vec![], cfg.clone(), cfg, 1, t0);
        let (to, _) = d.poll_transmit(t0).unwrap();
        assert_eq!(to, dead);
        d.handle_send_error(dead, "no route".into(), t0);
        let (to, _) = d.poll_transmit(t0).unwrap();
        assert_eq!(to, srv);
        // No server at all.
        let mut w = world(Kind::Easy);
        let (r, took) = run(&mut w, vec![]);
        assert_eq!(nat(&r), (Mapping::Unknown, Filtering::Unknown));
        assert_eq!(took, Duration::ZERO);
    }

    #[test]
    fn a_second_server_at_the_alternate_ip_spares_the_alternate_request() {
        let srv = a("203.0.113.1:3478");
        let other = a("203.0.113.2:3478");
        let mut w = world(Kind::Easy);
        w.plain = vec![other];
        let (r, _) = run(&mut w, vec![srv, other]);
        assert_eq!(
            nat(&r),
            (
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent
            )
        );
        assert!(!w.log.iter().any(|(to, _)| *to == a("203.0.113.2:3479")));
    }

    #[test]
    fn junk_and_late_answers_change_nothing() {
        let srv = a("203.0.113.1:3478");
        let t0 = Instant::now();
        let cfg = StunConfig::default();
        let mut d = NatDiscovery::new(vec![srv], vec![a(LOCAL)], cfg.clone(), cfg, 3, t0);
        let (_, req) = d.poll_transmit(t0).unwrap();
        assert!(!d.handle_input(b"junk", srv, t0));
        let other = Message::binding_request([0xee; 12]).encode();
        let (resp, _) = respond(&other, a(LOCAL), srv, None, None).unwrap();
        assert!(!d.handle_input(&resp, srv, t0));
        let (resp, _) = respond(&req, a(LOCAL), srv, None, None).unwrap();
        assert!(d.handle_input(&resp, srv, t0));
        assert!(d.outcome().is_some());
        assert!(!d.handle_input(&resp, srv, t0));
        assert!(d.poll_transmit(t0).is_none());
        assert!(d.poll_timeout().is_none());
        // The same seed gives the same transaction ids.
        let mut e = NatDiscovery::new(
            vec![srv],
            vec![],
            StunConfig::default(),
            StunConfig::default(),
            3,
            t0,
        );
        assert_eq!(e.poll_transmit(t0).unwrap().1, req);
    }
}
