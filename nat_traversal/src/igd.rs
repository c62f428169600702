//! UPnP IGD port mappings with `igd-next`: bounded discovery, leases renewed
//! while in use, removal on drop, another port on conflict, and telling a
//! double NAT or a refusing gateway apart.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use igd_next::{AddPortError, PortMappingProtocol, SearchOptions};
use tokio::task::JoinHandle;

use crate::Result;
use crate::mapping::{IgdGateway, IgdOutcome};

/// The bound on one request to the gateway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How many external ports to try when the gateway says a port is taken.
const PORT_ATTEMPTS: usize = 8;
const DESCRIPTION: &str = "crust nat_traversal";

/// Looks for a gateway by SSDP from `local_ip` (any if `None`), waiting at
/// most `timeout`.
pub(crate) async fn search(local_ip: Option<IpAddr>, timeout: Duration) -> io::Result<IgdGateway> {
    let bind = SocketAddr::new(local_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0);
    let mut opts = SearchOptions::default();
    opts.bind_addr = bind;
    opts.timeout = Some(timeout);
    opts.single_search_timeout = Some(timeout);
    match tokio::time::timeout(
        timeout + Duration::from_millis(500),
        igd_next::aio::tokio::search_gateway(opts),
    )
    .await
    {
        Ok(Ok(gw)) => {
            log::info!("UPnP gateway at {}", gw.addr);
            Ok(IgdGateway {
                gw: std::sync::Arc::new(gw),
            })
        }
        Ok(Err(e)) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no UPnP gateway: {e}"),
        )),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no UPnP gateway answered in {timeout:?}"),
        )),
    }
}

/// A port mapping on a gateway, renewed at half its lease while this value
/// lives, removed when it is dropped.
#[derive(Debug)]
pub struct IgdMapping {
    gw: IgdGateway,
    proto: PortMappingProtocol,
    external: SocketAddr,
    renew: Option<JoinHandle<()>>,
}

impl IgdMapping {
    /// The external address.
    pub fn external(&self) -> SocketAddr {
        self.external
    }

    /// Removes the mapping now and says whether the gateway agreed (drop
    /// does the same but can only log).
    pub fn remove(mut self) -> Result<()> {
        if let Some(t) = self.renew.take() {
            t.abort();
        }
        let gw = self.gw.clone();
        let (proto, port) = (self.proto, self.external.port());
        // Disarm the drop's own removal.
        self.external.set_port(0);
        crust_runtime::block_on(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, gw.gw.remove_port(proto, port)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(io::Error::other(format!("DeletePortMapping: {e}"))),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "DeletePortMapping: no answer",
                )),
            }
        })?
        .map_err(crate::Error::io("removing the UPnP port mapping"))
    }
}

impl Drop for IgdMapping {
    fn drop(&mut self) {
        if let Some(t) = self.renew.take() {
            t.abort();
        }
        if self.external.port() == 0 {
            return; // removed already
        }
        let gw = self.gw.clone();
        let (proto, port) = (self.proto, self.external.port());
        let remove = async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, gw.gw.remove_port(proto, port)).await {
                Ok(Ok(())) => log::debug!("UPnP mapping of port {port} removed"),
                Ok(Err(e)) => log::warn!("cannot remove UPnP mapping of port {port}: {e}"),
                Err(_) => log::warn!("the gateway did not answer the removal of port {port}"),
            }
        };
        crust_runtime::finish_in_drop("removing a UPnP port mapping", None, remove);
    }
}

fn refusal(e: &AddPortError) -> bool {
    use igd_next::RequestError;
    match e {
        AddPortError::ActionNotAuthorized => true,
        AddPortError::RequestError(RequestError::ErrorCode(code, _)) => {
            // 501 ActionFailed (miniupnpd with forwarding disabled),
            // 606 Action not authorized, 725 OnlyPermanentLeasesSupported
            // is handled apart.
            matches!(code, 501 | 606 | 715 | 716 | 724 | 726 | 727 | 728)
        }
        _ => false,
    }
}

/// Maps `lan` (its port first, then other ports on conflict) on `gw`.
/// `stun_ip` is the external IP STUN servers saw, if any: a gateway whose
/// external address differs is a double NAT and its mapping is removed.
pub(crate) async fn map_port(
    g: &IgdGateway,
    proto: PortMappingProtocol,
    lan: SocketAddr,
    stun_ip: Option<IpAddr>,
    lease: Duration,
) -> (IgdOutcome, Option<IgdMapping>) {
    let ext_ip = match tokio::time::timeout(REQUEST_TIMEOUT, g.gw.get_external_ip()).await {
        Ok(Ok(ip)) => ip,
        Ok(Err(e)) => {
            return (
                IgdOutcome::Failed {
                    reason: format!("GetExternalIPAddress: {e}"),
                },
                None,
            );
        }
        Err(_) => {
            return (
                IgdOutcome::Failed {
                    reason: "GetExternalIPAddress: no answer".into(),
                },
                None,
            );
        }
    };
    let mut lease_secs = lease.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
    let mut port = lan.port();
    let mut last = String::new();
    let mut mapped = None;
    let mut refused = 0;
    for attempt in 0..PORT_ATTEMPTS {
        if attempt > 0 {
            port = rand::random_range(20_000..60_000);
        }
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            g.gw.add_port(proto, port, lan, lease_secs, DESCRIPTION),
        )
        .await
        {
            Ok(Ok(())) => {
                mapped = Some(port);
                break;
            }
            Ok(Err(AddPortError::PortInUse)) => {
                log::debug!("UPnP: external port {port} taken, trying another");
                last = format!("port {port} in use");
            }
            Ok(Err(AddPortError::OnlyPermanentLeasesSupported)) if lease_secs != 0 => {
                // Removed on drop; the lease cannot bound a crash here.
                lease_secs = 0;
                port = lan.port();
                last = "only permanent leases supported".into();
            }
            Ok(Err(e)) if refusal(&e) => {
                refused += 1;
                last = e.to_string();
                // A gateway that refuses our own port refuses the others too.
                if refused >= 2 {
                    break;
                }
            }
            Ok(Err(e)) => {
                return (
                    IgdOutcome::Failed {
                        reason: format!("AddPortMapping: {e}"),
                    },
                    None,
                );
            }
            Err(_) => {
                return (
                    IgdOutcome::Failed {
                        reason: "AddPortMapping: no answer".into(),
                    },
                    None,
                );
            }
        }
    }
    let Some(port) = mapped else {
        return if refused > 0 {
            (IgdOutcome::Refused { reason: last }, None)
        } else {
            (
                IgdOutcome::Failed {
                    reason: format!("no free external port ({last})"),
                },
                None,
            )
        };
    };
    let external = SocketAddr::new(ext_ip, port);
    let m = IgdMapping {
        gw: g.clone(),
        proto,
        external,
        renew: None,
    };
    if let Some(s) = stun_ip.filter(|s| *s != ext_ip) {
        drop(m); // removes it
        return (
            IgdOutcome::DoubleNat {
                gateway_external: ext_ip,
                stun_external: s,
            },
            None,
        );
    }
    let mut m = m;
    if lease_secs != 0 {
        let gw = g.clone();
        let every = Duration::from_secs(u64::from(lease_secs).div_ceil(2).max(1));
        m.renew = Some(crust_runtime::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    gw.gw.add_port(proto, port, lan, lease_secs, DESCRIPTION),
                )
                .await
                {
                    Ok(Ok(())) => log::debug!("UPnP lease of port {port} renewed"),
                    Ok(Err(e)) => log::warn!("cannot renew the UPnP lease of port {port}: {e}"),
                    Err(_) => log::warn!("the gateway did not answer the renewal of port {port}"),
                }
            }
        }));
    }
    (IgdOutcome::Mapped { external }, Some(m))
}
