//! The mapping context and its options: the STUN servers and UPnP gateway
//! a socket's external addresses are learned from. Types only, no I/O: the
//! drivers are in [`crate::aio`] ([`crate::aio::map_udp`],
//! [`crate::aio::discover`]), the decisions in [`crate::discovery`] and
//! [`crate::portmap`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

impl ContextInner {
    /// The UPnP gateway answers elsewhere now (it restarted at another
    /// control address): later mappings go to `found`.
    pub(crate) fn replace_igd(&self, found: IgdGateway) {
        let mut s = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = s
            .iter_mut()
            .find(|x| matches!(x, HolePunchServerAddr::IgdGateway(_)))
        {
            *slot = HolePunchServerAddr::IgdGateway(found);
        }
    }
}

impl MappingContext {
    /// A context from its parts (the blocking constructors are
    /// [`MappingContext::new`] and [`MappingContext::with_options`], the
    /// async one [`crate::aio::discover`]).
    pub(crate) fn from_parts(opts: MappingOptions, servers: Vec<HolePunchServerAddr>) -> Self {
        MappingContext {
            inner: Arc::new(ContextInner {
                opts,
                servers: Mutex::new(servers),
            }),
        }
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
