//! The UPnP IGD port-mapping policy, sans IO: which request to make of the
//! gateway next (its external address, then AddPortMapping for our own port,
//! other ports on conflict, a permanent lease when it only grants those),
//! when to give up (a refusing gateway, no free port, no answer), telling a
//! double NAT apart, and when to renew the lease. The driver
//! ([`crate::aio::map_udp`], [`crate::IgdMapping`]) talks to the gateway with
//! `igd-next` and feeds the answers here.
//!
//! ```
//! use std::time::Duration;
//! use nat_traversal::portmap::{AddPortAnswer, PortMapAction, PortMapPolicy};
//! use nat_traversal::IgdOutcome;
//! let mut p = PortMapPolicy::new(4000, None, Duration::from_secs(120), 1);
//! assert_eq!(p.poll_action(), Some(PortMapAction::GetExternalIp));
//! p.handle_external_ip(Ok("198.51.100.1".parse().unwrap()));
//! assert_eq!(p.poll_action(), Some(PortMapAction::AddPort { external_port: 4000, lease_secs: 120 }));
//! p.handle_add_port(AddPortAnswer::Mapped);
//! assert_eq!(p.poll_action(), None);
//! assert!(matches!(p.outcome(), Some(IgdOutcome::Mapped { .. })));
//! assert_eq!(p.renew_every(), Some(Duration::from_secs(60)));
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

/// How many external ports to try when the gateway says a port is taken.
pub const PORT_ATTEMPTS: usize = 8;
/// How many refusals end the attempt (a gateway that refuses our own port
/// refuses the others too).
pub const MAX_REFUSALS: usize = 2;
/// The range other external ports are drawn from on conflict.
pub const OTHER_PORTS: std::ops::Range<u16> = 20_000..60_000;

/// What happened with the UPnP gateway while mapping a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IgdOutcome {
    /// IGD use is off or no gateway was found.
    NoGateway,
    /// A port mapping was made and is offered as a public address.
    Mapped {
        /// The external address of the mapping.
        external: SocketAddr,
    },
    /// The gateway mapped the port, but its external address is not the one
    /// STUN saw: another NAT lies beyond it (double NAT, carrier-grade
    /// NAT). The mapping was removed and is not offered.
    DoubleNat {
        /// The gateway's external address.
        gateway_external: IpAddr,
        /// The address STUN servers saw.
        stun_external: IpAddr,
    },
    /// The gateway refused every mapping (e.g. miniupnpd behind a second
    /// NAT answers 501 to every AddPortMapping).
    Refused {
        /// The gateway's last answer.
        reason: String,
    },
    /// Talking to the gateway failed.
    Failed {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for IgdOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgdOutcome::NoGateway => write!(f, "no UPnP gateway"),
            IgdOutcome::Mapped { external } => write!(f, "UPnP gateway mapped {external}"),
            IgdOutcome::DoubleNat {
                gateway_external,
                stun_external,
            } => write!(
                f,
                "double NAT: the UPnP gateway's external address {gateway_external} is not the \
                 address STUN saw ({stun_external}); its mapping is not offered"
            ),
            IgdOutcome::Refused { reason } => {
                write!(
                    f,
                    "the UPnP gateway refuses every port mapping ({reason}): a sign of a \
                     second, restrictive NAT beyond it (miniupnpd then turns port forwarding \
                     off) or of forwarding disabled on it; no UPnP address is offered"
                )
            }
            IgdOutcome::Failed { reason } => write!(f, "the UPnP gateway failed: {reason}"),
        }
    }
}

/// A request the driver makes of the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMapAction {
    /// GetExternalIPAddress; answer with
    /// [`PortMapPolicy::handle_external_ip`].
    GetExternalIp,
    /// AddPortMapping of our LAN address at `external_port`; answer with
    /// [`PortMapPolicy::handle_add_port`]. `lease_secs` 0 is permanent.
    AddPort {
        /// The external port to ask for.
        external_port: u16,
        /// The lease, in seconds (0: permanent).
        lease_secs: u32,
    },
    /// DeletePortMapping of `external_port` (the mapping is of no use: a
    /// double NAT); no answer is needed.
    RemovePort {
        /// The external port to remove.
        external_port: u16,
    },
}

/// The gateway's answer to an AddPortMapping, as the policy needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddPortAnswer {
    /// The mapping was made.
    Mapped,
    /// The external port is taken (718 ConflictInMappingEntry).
    PortInUse,
    /// Only permanent leases (725 OnlyPermanentLeasesSupported).
    OnlyPermanentLeases,
    /// A refusal (501, 606 and the like): the gateway will not map.
    Refused(String),
    /// Any other error.
    Failed(String),
    /// No answer in time.
    NoAnswer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    External,
    Adding,
    Removing,
    Done,
}

/// The port-mapping policy for one socket (see the [module docs](self)).
#[derive(Debug)]
pub struct PortMapPolicy {
    lan_port: u16,
    stun_ip: Option<IpAddr>,
    lease_secs: u32,
    rng: rand::rngs::StdRng,
    state: State,
    ext_ip: Option<IpAddr>,
    port: u16,
    attempts: usize,
    refused: usize,
    last: String,
    pending: Option<PortMapAction>,
    outcome: Option<IgdOutcome>,
}

impl PortMapPolicy {
    /// A policy to map LAN port `lan_port` (asked for first) with `lease`
    /// (whole seconds, at least 1). `stun_ip` is the external IP STUN
    /// servers saw, if any: a gateway whose external address differs is a
    /// double NAT. `seed` draws the other ports tried on conflict.
    pub fn new(lan_port: u16, stun_ip: Option<IpAddr>, lease: Duration, seed: u64) -> Self {
        PortMapPolicy {
            lan_port,
            stun_ip,
            lease_secs: lease.as_secs().clamp(1, u64::from(u32::MAX)) as u32,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            state: State::External,
            ext_ip: None,
            port: lan_port,
            attempts: 0,
            refused: 0,
            last: String::new(),
            pending: Some(PortMapAction::GetExternalIp),
            outcome: None,
        }
    }

    /// The next request to make, if any (each is given once; the policy
    /// waits for its answer).
    pub fn poll_action(&mut self) -> Option<PortMapAction> {
        self.pending.take()
    }

    fn done(&mut self, o: IgdOutcome) {
        self.state = State::Done;
        self.pending = None;
        self.outcome = Some(o);
    }

    fn add(&mut self) {
        self.attempts += 1;
        self.pending = Some(PortMapAction::AddPort {
            external_port: self.port,
            lease_secs: self.lease_secs,
        });
    }

    /// The answer to [`PortMapAction::GetExternalIp`].
    pub fn handle_external_ip(&mut self, answer: Result<IpAddr, String>) {
        if self.state != State::External {
            return;
        }
        match answer {
            Ok(ip) => {
                self.ext_ip = Some(ip);
                self.state = State::Adding;
                self.add();
            }
            Err(e) => self.done(IgdOutcome::Failed {
                reason: format!("GetExternalIPAddress: {e}"),
            }),
        }
    }

    /// The answer to [`PortMapAction::AddPort`].
    pub fn handle_add_port(&mut self, answer: AddPortAnswer) {
        if self.state != State::Adding {
            return;
        }
        match answer {
            AddPortAnswer::Mapped => {
                let ext_ip = self.ext_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
                match self.stun_ip.filter(|s| *s != ext_ip) {
                    Some(s) => {
                        self.state = State::Removing;
                        self.pending = Some(PortMapAction::RemovePort {
                            external_port: self.port,
                        });
                        self.outcome = Some(IgdOutcome::DoubleNat {
                            gateway_external: ext_ip,
                            stun_external: s,
                        });
                    }
                    None => self.done(IgdOutcome::Mapped {
                        external: SocketAddr::new(ext_ip, self.port),
                    }),
                }
                return;
            }
            AddPortAnswer::PortInUse => {
                log::debug!("UPnP: external port {} taken, trying another", self.port);
                self.last = format!("port {} in use", self.port);
                self.port = self.rng.random_range(OTHER_PORTS);
            }
            AddPortAnswer::OnlyPermanentLeases if self.lease_secs != 0 => {
                // Removed on drop; the lease cannot bound a crash here.
                self.lease_secs = 0;
                self.port = self.lan_port;
                self.last = "only permanent leases supported".into();
            }
            AddPortAnswer::OnlyPermanentLeases => {
                return self.done(IgdOutcome::Failed {
                    reason: "AddPortMapping: permanent lease refused too".into(),
                });
            }
            AddPortAnswer::Refused(e) => {
                self.refused += 1;
                self.last = e;
                self.port = self.rng.random_range(OTHER_PORTS);
                if self.refused >= MAX_REFUSALS {
                    let reason = std::mem::take(&mut self.last);
                    return self.done(IgdOutcome::Refused { reason });
                }
            }
            AddPortAnswer::Failed(e) => {
                return self.done(IgdOutcome::Failed {
                    reason: format!("AddPortMapping: {e}"),
                });
            }
            AddPortAnswer::NoAnswer => {
                return self.done(IgdOutcome::Failed {
                    reason: "AddPortMapping: no answer".into(),
                });
            }
        }
        if self.attempts >= PORT_ATTEMPTS {
            let last = std::mem::take(&mut self.last);
            return self.done(if self.refused > 0 {
                IgdOutcome::Refused { reason: last }
            } else {
                IgdOutcome::Failed {
                    reason: format!("no free external port ({last})"),
                }
            });
        }
        self.add();
    }

    /// The outcome, once known (with a double NAT it is known while the
    /// removal is still to be made: poll [`poll_action`](Self::poll_action)
    /// until `None`).
    pub fn outcome(&self) -> Option<&IgdOutcome> {
        self.outcome.as_ref()
    }

    /// The lease granted, in seconds (0: permanent).
    pub fn lease_secs(&self) -> u32 {
        self.lease_secs
    }

    /// How often a granted mapping is renewed: at half its lease (at least
    /// every second); `None` for a permanent one.
    pub fn renew_every(&self) -> Option<Duration> {
        (self.lease_secs != 0)
            .then(|| Duration::from_secs(u64::from(self.lease_secs).div_ceil(2).max(1)))
    }
}

/// When to renew a lease, on the caller's clock: every
/// [`PortMapPolicy::renew_every`] from the grant, whatever the last renewal's
/// fate (a failed renewal is retried at the next turn, while the lease
/// still runs).
///
/// ```
/// use std::time::{Duration, Instant};
/// use nat_traversal::portmap::LeaseRenewal;
/// let t0 = Instant::now();
/// let mut r = LeaseRenewal::new(Duration::from_secs(60), t0);
/// assert_eq!(r.poll_timeout(), t0 + Duration::from_secs(60));
/// assert!(!r.handle_timeout(t0 + Duration::from_secs(59)));
/// assert!(r.handle_timeout(t0 + Duration::from_secs(60)));
/// assert_eq!(r.poll_timeout(), t0 + Duration::from_secs(120));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LeaseRenewal {
    every: Duration,
    next: Instant,
}

impl LeaseRenewal {
    /// Renewals every `every` from `now`.
    pub fn new(every: Duration, now: Instant) -> LeaseRenewal {
        LeaseRenewal {
            every,
            next: crate::deadline_after(now, every),
        }
    }

    /// When the next renewal is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// Time passes: whether to renew now (then the next one is scheduled).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = crate::deadline_after(self.next.max(now), self.every);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lease() -> Duration {
        Duration::from_secs(120)
    }

    /// Runs the policy against a scripted gateway: `answers` in order.
    fn run(p: &mut PortMapPolicy, answers: &[AddPortAnswer]) -> Vec<PortMapAction> {
        let mut actions = vec![];
        let mut answers = answers.iter();
        while let Some(a) = p.poll_action() {
            actions.push(a);
            match a {
                PortMapAction::GetExternalIp => p.handle_external_ip(Ok(ip("198.51.100.1"))),
                PortMapAction::AddPort { .. } => {
                    p.handle_add_port(answers.next().expect("an answer").clone())
                }
                PortMapAction::RemovePort { .. } => {}
            }
        }
        actions
    }

    #[test]
    fn our_own_port_first() {
        let mut p = PortMapPolicy::new(4000, Some(ip("198.51.100.1")), lease(), 1);
        let acts = run(&mut p, &[AddPortAnswer::Mapped]);
        assert_eq!(acts.len(), 2);
        assert_eq!(
            p.outcome(),
            Some(&IgdOutcome::Mapped {
                external: "198.51.100.1:4000".parse().unwrap()
            })
        );
        assert_eq!(p.renew_every(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn conflicts_move_to_other_ports_then_give_up() {
        let mut p = PortMapPolicy::new(4000, None, lease(), 1);
        let acts = run(
            &mut p,
            &[
                AddPortAnswer::PortInUse,
                AddPortAnswer::PortInUse,
                AddPortAnswer::Mapped,
            ],
        );
        let ports: Vec<u16> = acts
            .iter()
            .filter_map(|a| match a {
                PortMapAction::AddPort { external_port, .. } => Some(*external_port),
                _ => None,
            })
            .collect();
        assert_eq!(ports.len(), 3);
        assert_eq!(ports[0], 4000);
        assert!(ports[1..].iter().all(|p| OTHER_PORTS.contains(p)));
        assert_ne!(ports[1], ports[2]);
        let Some(IgdOutcome::Mapped { external }) = p.outcome() else {
            panic!("{:?}", p.outcome())
        };
        assert_eq!(external.port(), ports[2]);
        // Always taken: 8 attempts, then "no free external port".
        let mut p = PortMapPolicy::new(4000, None, lease(), 2);
        let acts = run(&mut p, &vec![AddPortAnswer::PortInUse; PORT_ATTEMPTS]);
        assert_eq!(acts.len(), 1 + PORT_ATTEMPTS);
        assert!(
            matches!(p.outcome(), Some(IgdOutcome::Failed { reason }) if reason.contains("no free external port"))
        );
    }

    #[test]
    fn a_refusing_gateway_is_left_after_two_refusals() {
        let mut p = PortMapPolicy::new(4000, None, lease(), 1);
        let r = AddPortAnswer::Refused("501 ActionFailed".into());
        let acts = run(&mut p, &[r.clone(), r]);
        assert_eq!(acts.len(), 3);
        assert_eq!(
            p.outcome(),
            Some(&IgdOutcome::Refused {
                reason: "501 ActionFailed".into()
            })
        );
        // A refusal among conflicts still says refused at the end.
        let mut p = PortMapPolicy::new(4000, None, lease(), 1);
        let mut answers = vec![AddPortAnswer::Refused("606".into())];
        answers.extend(std::iter::repeat_n(
            AddPortAnswer::PortInUse,
            PORT_ATTEMPTS - 1,
        ));
        run(&mut p, &answers);
        assert!(matches!(p.outcome(), Some(IgdOutcome::Refused { .. })));
    }

    #[test]
    fn permanent_leases_only() {
        let mut p = PortMapPolicy::new(4000, None, lease(), 1);
        let acts = run(
            &mut p,
            &[AddPortAnswer::OnlyPermanentLeases, AddPortAnswer::Mapped],
        );
        assert_eq!(
            acts[2],
            PortMapAction::AddPort {
                external_port: 4000,
                lease_secs: 0
            }
        );
        assert_eq!(p.renew_every(), None);
        assert!(matches!(p.outcome(), Some(IgdOutcome::Mapped { .. })));
        let mut p = PortMapPolicy::new(4000, None, lease(), 1);
        run(
            &mut p,
            &[
                AddPortAnswer::OnlyPermanentLeases,
                AddPortAnswer::OnlyPermanentLeases,
            ],
        );
        assert!(matches!(p.outcome(), Some(IgdOutcome::Failed { .. })));
    }

    #[test]
    fn a_double_nat_mapping_is_removed_and_not_offered() {
        let mut p = PortMapPolicy::new(4000, Some(ip("203.0.113.9")), lease(), 1);
        let acts = run(&mut p, &[AddPortAnswer::Mapped]);
        assert_eq!(
            acts.last(),
            Some(&PortMapAction::RemovePort {
                external_port: 4000
            })
        );
        assert_eq!(
            p.outcome(),
            Some(&IgdOutcome::DoubleNat {
                gateway_external: ip("198.51.100.1"),
                stun_external: ip("203.0.113.9"),
            })
        );
    }

    #[test]
    fn failures_end_at_once() {
        let mut p = PortMapPolicy::new(4000, None, lease(), 1);
        assert_eq!(p.poll_action(), Some(PortMapAction::GetExternalIp));
        assert_eq!(p.poll_action(), None);
        p.handle_external_ip(Err("no answer".into()));
        assert!(
            matches!(p.outcome(), Some(IgdOutcome::Failed { reason }) if reason.contains("GetExternalIPAddress"))
        );
        for a in [AddPortAnswer::NoAnswer, AddPortAnswer::Failed("402".into())] {
            let mut p = PortMapPolicy::new(4000, None, lease(), 1);
            assert_eq!(run(&mut p, &[a]).len(), 2);
            assert!(matches!(p.outcome(), Some(IgdOutcome::Failed { .. })));
        }
        // Answers out of turn change nothing.
        let mut p = PortMapPolicy::new(4000, None, lease(), 1);
        p.handle_add_port(AddPortAnswer::Mapped);
        assert_eq!(p.outcome(), None);
    }

    #[test]
    fn renewal_timing() {
        let p = PortMapPolicy::new(1, None, Duration::from_secs(3), 1);
        assert_eq!(p.renew_every(), Some(Duration::from_secs(2)));
        let p = PortMapPolicy::new(1, None, Duration::ZERO, 1);
        assert_eq!(
            (p.lease_secs(), p.renew_every()),
            (1, Some(Duration::from_secs(1)))
        );
        let t0 = Instant::now();
        let mut r = LeaseRenewal::new(Duration::from_secs(2), t0);
        let mut renewals = vec![];
        let mut now = t0;
        while now < t0 + Duration::from_secs(9) {
            now = r.poll_timeout();
            if r.handle_timeout(now) {
                renewals.push((now - t0).as_secs());
            }
        }
        assert_eq!(renewals, vec![2, 4, 6, 8, 10]);
        // A late wake-up renews once, not once per missed turn.
        let mut r = LeaseRenewal::new(Duration::from_secs(2), t0);
        assert!(r.handle_timeout(t0 + Duration::from_secs(7)));
        assert!(!r.handle_timeout(t0 + Duration::from_secs(8)));
        assert_eq!(r.poll_timeout(), t0 + Duration::from_secs(9));
        // A huge lease does not panic.
        let r = LeaseRenewal::new(Duration::MAX, t0);
        assert!(r.poll_timeout() > t0);
    }
}
