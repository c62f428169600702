//! The socket-mapping driver: runs [`NatDiscovery`] over a UDP socket (and
//! plain Binding transactions over TCP), asks the UPnP gateway through the
//! IGD driver, and assembles the endpoints a socket offers.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;

use super::igd::{self, IgdMapping};
use super::ignorable;
use super::stun::stun_binding_tcp;
use crate::discovery::{NatDiscovery, mapping_behaviour};
use crate::mapping::{HolePunchServerAddr, MappedSocketAddr, MappingContext, MappingOptions};
use crate::portmap::IgdOutcome;
use crate::rendezvous::{Filtering, Mapping, NatBehaviour};
use crate::{Error, Result};

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
    pub igd_mapping: Option<IgdMapping>,
}

/// The endpoints a mapped socket offers, for UDP and TCP alike: its local
/// addresses, each address STUN saw (restricted when behind a NAT), and a
/// UPnP mapping of the first local address when the gateway grants one (a
/// double NAT or a refusing gateway adds nothing).
async fn endpoints_and_igd(
    mc: &MappingContext,
    proto: igd_next::PortMappingProtocol,
    locals: &[SocketAddr],
    local: SocketAddr,
    seen: &[(SocketAddr, SocketAddr)],
    mapping: Mapping,
) -> (Vec<MappedSocketAddr>, IgdOutcome, Option<IgdMapping>) {
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
            igd::map_port(mc, &g, proto, lan, stun_ip).await
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
    Ok(MappingContext::from_parts(opts, servers))
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
    // The source address the routing table picks towards each server (a
    // UDP connect sends nothing); with no server, towards a documentation
    // address, which only consults the default route.
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

/// Runs a [`NatDiscovery`] over `socket` until it has an outcome (bounded:
/// every transaction in it is). Datagrams that are no answer are dropped.
pub async fn run_discovery(
    socket: &UdpSocket,
    mut d: NatDiscovery,
) -> Result<crate::discovery::DiscoveryReport> {
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        while let Some((to, req)) = d.poll_transmit(now) {
            match socket.send_to(&req, to).await {
                Err(e) if !ignorable(&e) => {
                    log::debug!("STUN: cannot send to {to}: {e}");
                    d.handle_send_error(to, e.to_string(), Instant::now());
                }
                _ => {}
            }
        }
        if let Some(r) = d.outcome() {
            return Ok(r.clone());
        }
        let Some(deadline) = d.poll_timeout() else {
            return Err(std::io::Error::other("NAT discovery stopped without a result").into());
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    d.handle_input(&buf[..n], from, Instant::now());
                }
                Err(e) if ignorable(&e) => {}
                Err(e) => return Err(e.into()),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                d.handle_timeout(Instant::now());
            }
        }
    }
}

/// Maps a UDP socket: asks every STUN server one after the other (each
/// bounded), learns mapping and filtering behaviour in the order of
/// [`crate::discovery`], and tries the UPnP gateway.
pub async fn map_udp(socket: &UdpSocket, mc: &MappingContext) -> Result<MappingReport> {
    let opts = mc.options();
    let servers = mc.stun_servers();
    let local = socket.local_addr()?;
    let locals = local_endpoints(local, &servers).await;
    let d = NatDiscovery::new(
        servers,
        locals.clone(),
        opts.stun.clone(),
        opts.filtering_test.clone(),
        rand::random(),
        Instant::now(),
    );
    let r = run_discovery(socket, d).await?;
    let (endpoints, igd_outcome, igd_mapping) = endpoints_and_igd(
        mc,
        igd_next::PortMappingProtocol::UDP,
        &locals,
        local,
        &r.seen,
        r.nat.mapping,
    )
    .await;
    Ok(MappingReport {
        endpoints,
        stun: r
            .stun
            .into_iter()
            .map(|(server, res)| (server, res.map_err(|error| Error::Stun { server, error })))
            .collect(),
        nat: r.nat,
        igd: igd_outcome,
        igd_mapping,
    })
}

/// Maps a TCP port: asks every STUN server over TCP from reusable sockets
/// bound to `local`, and tries the UPnP gateway.
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
