//! Learning a socket's external addresses: STUN servers (and what they say
//! of our NAT's mapping and filtering behaviour) and UPnP IGD port mappings.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Result;
use crate::rendezvous::{Filtering, Mapping, NatBehaviour};
use crate::stun::StunConfig;

/// A way to learn external addresses.
#[derive(Clone, Debug)]
pub enum HolePunchServerAddr {
    /// A STUN Binding server (ours, [`crate::SimpleUdpHolePunchServer`], or
    /// any RFC 5389/8489 server) on this UDP (and TCP) address.
    Simple(SocketAddr),
    /// A UPnP Internet Gateway Device.
    IgdGateway(IgdGateway),
}

/// A UPnP IGD found by discovery.
#[derive(Clone)]
pub struct IgdGateway {
    pub(crate) gw: Arc<igd_next::aio::Gateway<igd_next::aio::tokio::Tokio>>,
}

impl IgdGateway {
    /// The gateway's control address.
    pub fn addr(&self) -> SocketAddr {
        self.gw.addr
    }
}

impl fmt::Debug for IgdGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IgdGateway({} {})", self.gw.addr, self.gw.service_type)
    }
}

/// Options of a [`MappingContext`].
///
/// The library ships no list of public STUN servers: it contacts only the
/// servers given here or with [`MappingContext::add_servers`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MappingOptions {
    /// STUN servers to ask.
    pub stun_servers: Vec<SocketAddr>,
    /// Whether to look for a UPnP IGD (SSDP multicast on the local network).
    pub igd: bool,
    /// The bound on IGD discovery.
    pub igd_timeout: Duration,
    /// The lease of IGD port mappings; they are renewed at half of it while
    /// in use.
    pub igd_lease: Duration,
    /// Restricts discovery to this local address: SSDP is sent from it and
    /// [`crate::MappedUdpSocket::new`] binds to it. `None`: any.
    pub local_ip: Option<IpAddr>,
    /// Timing of each STUN transaction.
    pub stun: StunConfig,
    /// Timing of the RFC 5780 filtering tests (whose "no answer" is a
    /// result, so they wait less).
    pub filtering_test: StunConfig,
}

/// Chainable setters, one per field: start from `MappingOptions::default()`.
///
/// ```
/// let opts = nat_traversal::MappingOptions::default().igd(false);
/// assert!(!opts.igd);
/// ```
impl MappingOptions {
    /// Sets [`stun_servers`](MappingOptions::stun_servers).
    pub fn stun_servers(mut self, stun_servers: Vec<SocketAddr>) -> Self {
        self.stun_servers = stun_servers;
        self
    }

    /// Sets [`igd`](MappingOptions::igd).
    pub fn igd(mut self, igd: bool) -> Self {
        self.igd = igd;
        self
    }

    /// Sets [`igd_timeout`](MappingOptions::igd_timeout).
    pub fn igd_timeout(mut self, igd_timeout: Duration) -> Self {
        self.igd_timeout = igd_timeout;
        self
    }

    /// Sets [`igd_lease`](MappingOptions::igd_lease).
    pub fn igd_lease(mut self, igd_lease: Duration) -> Self {
        self.igd_lease = igd_lease;
        self
    }

    /// Sets [`local_ip`](MappingOptions::local_ip).
    pub fn local_ip(mut self, local_ip: Option<IpAddr>) -> Self {
        self.local_ip = local_ip;
        self
    }

    /// Sets [`stun`](MappingOptions::stun).
    pub fn stun(mut self, stun: StunConfig) -> Self {
        self.stun = stun;
        self
    }

    /// Sets [`filtering_test`](MappingOptions::filtering_test).
    pub fn filtering_test(mut self, filtering_test: StunConfig) -> Self {
        self.filtering_test = filtering_test;
        self
    }
}

impl Default for MappingOptions {
    fn default() -> MappingOptions {
        MappingOptions {
            stun_servers: Vec::new(),
            igd: true,
            igd_timeout: Duration::from_secs(2),
            igd_lease: Duration::from_secs(120),
            local_ip: None,
            stun: StunConfig::default(),
            filtering_test: StunConfig {
                rto: Duration::from_millis(200),
                max_rto: Duration::from_millis(400),
                max_transmits: 5,
                timeout: Duration::from_millis(1500),
            },
        }
    }
}

/// What the library knows of ways to map sockets: UPnP gateways and STUN
/// servers. Cheap to clone (a handle); keep one for the life of the program.
#[derive(Clone, Debug)]
pub struct MappingContext {
    pub(crate) inner: Arc<ContextInner>,
}

#[derive(Debug)]
pub(crate) struct ContextInner {
    pub(crate) opts: MappingOptions,
    pub(crate) servers: Mutex<Vec<HolePunchServerAddr>>,
}

impl MappingContext {
    /// A context with default options: looks for a UPnP IGD on the local
    /// network (waiting at most [`MappingOptions::igd_timeout`]) and knows
    /// no STUN server until [`add_servers`](Self::add_servers).
    ///
    /// Sends SSDP multicast on the local network. To stay off the network
    /// (tests), use [`with_options`](Self::with_options) with `igd: false`.
    pub fn new() -> Result<MappingContext> {
        MappingContext::with_options(MappingOptions::default())
    }

    /// A context with `opts`.
    ///
    /// ```
    /// use nat_traversal::{MappingContext, MappingOptions};
    /// let mc = MappingContext::with_options(
    ///     MappingOptions::default()
    ///         .igd(false)
    ///         .stun_servers(vec!["127.0.0.1:3478".parse().unwrap()]),
    /// )
    /// .unwrap();
    /// assert_eq!(mc.stun_servers().len(), 1);
    /// ```
    pub fn with_options(opts: MappingOptions) -> Result<MappingContext> {
        crust_runtime::block_on(aio::discover(opts))?
    }

    /// Adds servers.
    pub fn add_servers(&self, servers: impl IntoIterator<Item = HolePunchServerAddr>) {
        let mut s = self.inner.servers.lock().unwrap_or_else(|e| e.into_inner());
        s.extend(servers);
    }

    /// Every known server.
    pub fn servers(&self) -> Vec<HolePunchServerAddr> {
        self.inner
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The STUN servers.
    pub fn stun_servers(&self) -> Vec<SocketAddr> {
        self.servers()
            .into_iter()
            .filter_map(|s| match s {
                HolePunchServerAddr::Simple(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// The first UPnP gateway, if one was found.
    pub fn igd(&self) -> Option<IgdGateway> {
        self.servers().into_iter().find_map(|s| match s {
            HolePunchServerAddr::IgdGateway(g) => Some(g),
            _ => None,
        })
    }

    /// The options.
    pub fn options(&self) -> &MappingOptions {
        &self.inner.opts
    }
}

/// An external (or local) address of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MappedSocketAddr {
    /// The address.
    pub addr: SocketAddr,
    /// `true` when the address only works for a peer we punch a hole with
    /// (a NAT mapping seen by STUN); `false` when anyone can reach it (an
    /// IGD port mapping, or no NAT).
    pub nat_restricted: bool,
}

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

/// Everything learned while mapping one socket.
#[derive(Debug)]
pub struct MappingReport {
    /// The endpoints to give peers (local first).
    pub endpoints: Vec<MappedSocketAddr>,
    /// Each STUN server's answer.
    pub stun: Vec<(SocketAddr, Result<SocketAddr>)>,
    /// What we learned of our NAT.
    pub nat: NatBehaviour,
    /// What happened with the UPnP gateway.
    pub igd: IgdOutcome,
    /// The port mapping, removed when dropped.
    pub igd_mapping: Option<crate::igd::IgdMapping>,
}

/// Mapping behaviour from what servers at different IPs saw.
pub(crate) fn mapping_behaviour(
    local: &[SocketAddr],
    seen: &[(SocketAddr, SocketAddr)],
) -> Mapping {
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

pub(crate) fn unknown_filtering() -> Filtering {
    Filtering::Unknown
}

/// Async mapping.
pub(crate) mod aio {
    use super::*;
    use crate::Result;
    use crate::aio::{stun_binding, stun_binding_tcp};
    use crate::igd;
    use tokio::net::UdpSocket;

    /// The endpoints a mapped socket offers, for UDP and TCP alike: its local
    /// addresses, each address STUN saw (restricted when behind a NAT), and
    /// a UPnP mapping of the first local address when the gateway grants one
    /// (a double NAT or a refusing gateway adds nothing).
    async fn endpoints_and_igd(
        mc: &MappingContext,
        proto: igd_next::PortMappingProtocol,
        locals: &[SocketAddr],
        local: SocketAddr,
        seen: &[(SocketAddr, SocketAddr)],
        mapping: Mapping,
    ) -> (Vec<MappedSocketAddr>, IgdOutcome, Option<igd::IgdMapping>) {
        let mut endpoints: Vec<MappedSocketAddr> = locals
            .iter()
            .map(|a| MappedSocketAddr {
                addr: *a,
                nat_restricted: false,
            })
            .collect();
        for (_, m) in seen {
            if !endpoints.iter().any(|e| e.addr == *m) {
                endpoints.push(MappedSocketAddr {
                    addr: *m,
                    nat_restricted: mapping != Mapping::NoNat,
                });
            }
        }
        let stun_ip = seen.first().map(|(_, m)| m.ip());
        let (igd_outcome, igd_mapping) = match mc.igd() {
            Some(g) => {
                let lan = locals.first().copied().unwrap_or(local);
                igd::map_port(&g, proto, lan, stun_ip, mc.options().igd_lease).await
            }
            None => (IgdOutcome::NoGateway, None),
        };
        if let IgdOutcome::Mapped { external } = igd_outcome {
            endpoints.push(MappedSocketAddr {
                addr: external,
                nat_restricted: false,
            });
        }
        (endpoints, igd_outcome, igd_mapping)
    }

    /// Builds a [`MappingContext`], looking for an IGD if `opts.igd`
    /// (bounded by `opts.igd_timeout`).
    pub async fn discover(opts: MappingOptions) -> Result<MappingContext> {
        let mut servers: Vec<HolePunchServerAddr> = opts
            .stun_servers
            .iter()
            .map(|a| HolePunchServerAddr::Simple(*a))
            .collect();
        if opts.igd {
            match igd::search(opts.local_ip, opts.igd_timeout).await {
                Ok(g) => servers.push(HolePunchServerAddr::IgdGateway(g)),
                Err(e) => log::info!("no UPnP gateway: {e}"),
            }
        }
        Ok(MappingContext {
            inner: Arc::new(ContextInner {
                opts,
                servers: Mutex::new(servers),
            }),
        })
    }

    /// The local IP the OS would use towards `dest` (no packet is sent).
    async fn local_ip_towards(dest: SocketAddr) -> Option<IpAddr> {
        let bind: SocketAddr = if dest.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let s = UdpSocket::bind(bind).await.ok()?;
        s.connect(dest).await.ok()?;
        s.local_addr().ok().map(|a| a.ip())
    }

    async fn local_endpoints(local: SocketAddr, servers: &[SocketAddr]) -> Vec<SocketAddr> {
        if !local.ip().is_unspecified() {
            return vec![local];
        }
        let mut out = Vec::new();
        // The source address the routing table picks towards each server
        // (a UDP connect sends nothing); with no server, towards a
        // documentation address, which only consults the default route.
        let fallback: SocketAddr = if local.is_ipv4() {
            SocketAddr::from(([192, 0, 2, 1], 9))
        } else {
            SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 9))
        };
        let towards: Vec<SocketAddr> = if servers.is_empty() {
            vec![fallback]
        } else {
            servers.to_vec()
        };
        for s in &towards {
            if let Some(ip) = local_ip_towards(*s).await {
                let a = SocketAddr::new(ip, local.port());
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// Maps a UDP socket: asks every STUN server (concurrently would mix
    /// answers on one socket, so one after the other, each bounded), learns
    /// mapping and filtering behaviour, and tries the UPnP gateway.
    pub async fn map_udp(socket: &UdpSocket, mc: &MappingContext) -> Result<MappingReport> {
        let opts = mc.options();
        let servers = mc.stun_servers();
        let local = socket.local_addr()?;
        let locals = local_endpoints(local, &servers).await;
        let mut stun = Vec::new();
        let mut seen = Vec::new();
        let mut other = None;
        let mut filtering = unknown_filtering();
        for s in &servers {
            match stun_binding(socket, *s, None, &opts.stun).await {
                Ok(r) => {
                    stun.push((*s, Ok(r.mapped)));
                    seen.push((*s, r.mapped));
                    if other.is_none()
                        && let Some(o) = r.other_address
                    {
                        other = Some((*s, o));
                        // RFC 5780 filtering tests first, before this socket
                        // talks to the alternate address (which would open
                        // the NAT's filter to it and fake an open result).
                        filtering = filtering_behaviour(socket, *s, &opts.filtering_test).await;
                    }
                }
                Err(e) => stun.push((*s, Err(e))),
            }
        }
        // One RFC 5780 server and no second server: its alternate address
        // tells the mapping behaviour too.
        if let Some((_, o)) = other {
            let ips: Vec<IpAddr> = seen.iter().map(|(s, _)| s.ip()).collect();
            if !ips.contains(&o.ip())
                && let Ok(r) = stun_binding(socket, o, None, &opts.stun).await
            {
                seen.push((o, r.mapped));
            }
        }
        let mapping = mapping_behaviour(&locals, &seen);
        let nat = NatBehaviour { mapping, filtering };
        let (endpoints, igd_outcome, igd_mapping) = endpoints_and_igd(
            mc,
            igd_next::PortMappingProtocol::UDP,
            &locals,
            local,
            &seen,
            mapping,
        )
        .await;
        Ok(MappingReport {
            endpoints,
            stun,
            nat,
            igd: igd_outcome,
            igd_mapping,
        })
    }

    /// RFC 5780 filtering tests against an RFC 5780 `server`.
    pub async fn filtering_behaviour(
        socket: &UdpSocket,
        server: SocketAddr,
        cfg: &StunConfig,
    ) -> Filtering {
        if stun_binding(socket, server, Some((true, true)), cfg)
            .await
            .is_ok()
        {
            return Filtering::EndpointIndependent;
        }
        if stun_binding(socket, server, Some((false, true)), cfg)
            .await
            .is_ok()
        {
            return Filtering::AddressDependent;
        }
        Filtering::AddressAndPortDependent
    }

    /// Maps a TCP port: asks every STUN server over TCP from reusable
    /// sockets bound to `local`, and tries the UPnP gateway.
    pub async fn map_tcp(local: SocketAddr, mc: &MappingContext) -> Result<MappingReport> {
        let opts = mc.options();
        let servers = mc.stun_servers();
        let locals = local_endpoints(local, &servers).await;
        let mut stun = Vec::new();
        let mut seen = Vec::new();
        for s in &servers {
            match stun_binding_tcp(local, *s, &opts.stun).await {
                Ok(r) => {
                    stun.push((*s, Ok(r.mapped)));
                    seen.push((*s, r.mapped));
                }
                Err(e) => stun.push((*s, Err(e))),
            }
        }
        let mapping = mapping_behaviour(&locals, &seen);
        let (endpoints, igd_outcome, igd_mapping) = endpoints_and_igd(
            mc,
            igd_next::PortMappingProtocol::TCP,
            &locals,
            local,
            &seen,
            mapping,
        )
        .await;
        Ok(MappingReport {
            endpoints,
            stun,
            nat: NatBehaviour {
                mapping,
                filtering: Filtering::Unknown,
            },
            igd: igd_outcome,
            igd_mapping,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
