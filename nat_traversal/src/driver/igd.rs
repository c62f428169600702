//! The UPnP IGD driver with `igd-next`: bounded discovery, the requests the
//! policy core ([`crate::portmap`]) asks for, leases renewed while in use,
//! removal on drop.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use igd_next::{AddPortError, PortMappingProtocol, SearchOptions};
use tokio::task::JoinHandle;

use crate::Result;
use crate::mapping::{ContextInner, IgdGateway, MappingContext};
use crate::portmap::{AddPortAnswer, IgdOutcome, LeaseRenewal, PortMapAction, PortMapPolicy};

/// The bound on one request to the gateway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
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
    /// The gateway, which the renewal task may replace when the gateway
    /// restarted at another control address.
    gw: Arc<Mutex<IgdGateway>>,
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
        let gw = lock(&self.gw).clone();
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
        let gw = lock(&self.gw).clone();
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

/// An `igd-next` answer as the policy sees it.
fn add_port_answer(
    r: std::result::Result<std::result::Result<(), AddPortError>, tokio::time::error::Elapsed>,
) -> AddPortAnswer {
    match r {
        Ok(Ok(())) => AddPortAnswer::Mapped,
        Ok(Err(AddPortError::PortInUse)) => AddPortAnswer::PortInUse,
        Ok(Err(AddPortError::OnlyPermanentLeasesSupported)) => AddPortAnswer::OnlyPermanentLeases,
        Ok(Err(e)) if refusal(&e) => AddPortAnswer::Refused(e.to_string()),
        Ok(Err(e)) => AddPortAnswer::Failed(e.to_string()),
        Err(_) => AddPortAnswer::NoAnswer,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the renewal task of one mapping needs.
struct Renewer {
    gw: Arc<Mutex<IgdGateway>>,
    /// The context whose gateway is replaced too when it moved.
    ctx: Weak<ContextInner>,
    local_ip: Option<IpAddr>,
    search_timeout: Duration,
    proto: PortMappingProtocol,
    port: u16,
    lan: SocketAddr,
    lease_secs: u32,
}

impl Renewer {
    /// Renews as [`LeaseRenewal`] schedules, until aborted. A renewal that
    /// fails is retried at once on the gateway found by a new search when
    /// that one answers at another control address: a rebooted router
    /// (`miniupnpd` with a random HTTP port, say) forgets its mappings
    /// and moves, and the mapping must come back within one period.
    async fn run(self, every: Duration) {
        let mut renewal = LeaseRenewal::new(every, Instant::now());
        loop {
            tokio::time::sleep_until(renewal.poll_timeout().into()).await;
            if !renewal.handle_timeout(Instant::now()) {
                continue;
            }
            let gw = lock(&self.gw).clone();
            let first = self.add_port(&gw).await;
            let Err(why) = first else {
                log::debug!("UPnP lease of port {} renewed", self.port);
                continue;
            };
            let found = match search(self.local_ip, self.search_timeout).await {
                Ok(found)
                    if found.gw.control_url != gw.gw.control_url || found.gw.addr != gw.gw.addr =>
                {
                    found
                }
                _ => {
                    log::warn!("cannot renew the UPnP lease of port {}: {why}", self.port);
                    continue;
                }
            };
            match self.add_port(&found).await {
                Ok(()) => {
                    log::info!(
                        "UPnP gateway moved to {}: port {} mapped there again",
                        found.gw.addr,
                        self.port
                    );
                    *lock(&self.gw) = found.clone();
                    if let Some(ctx) = self.ctx.upgrade() {
                        ctx.replace_igd(found);
                    }
                }
                Err(e) => log::warn!(
                    "cannot renew the UPnP lease of port {}: {why}; nor at {}: {e}",
                    self.port,
                    found.gw.addr
                ),
            }
        }
    }

    async fn add_port(&self, g: &IgdGateway) -> std::result::Result<(), String> {
        let request = g.gw.add_port(
            self.proto,
            self.port,
            self.lan,
            self.lease_secs,
            DESCRIPTION,
        );
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer from {} in {REQUEST_TIMEOUT:?}",
                g.gw.addr
            )),
        }
    }
}

/// Maps `lan` on `gw` as [`PortMapPolicy`] decides. `stun_ip` is the
/// external IP STUN servers saw, if any: a gateway whose external address
/// differs is a double NAT and its mapping is removed. Every request is
/// bounded by a 5 s timeout. The lease and the rediscovery of a restarted
/// gateway follow `mc`'s options.
pub(crate) async fn map_port(
    mc: &MappingContext,
    g: &IgdGateway,
    proto: PortMappingProtocol,
    lan: SocketAddr,
    stun_ip: Option<IpAddr>,
) -> (IgdOutcome, Option<IgdMapping>) {
    let lease = mc.options().igd_lease;
    let mut policy = PortMapPolicy::new(lan.port(), stun_ip, lease, rand::random());
    while let Some(action) = policy.poll_action() {
        match action {
            PortMapAction::GetExternalIp => {
                let r = match tokio::time::timeout(REQUEST_TIMEOUT, g.gw.get_external_ip()).await {
                    Ok(Ok(ip)) => Ok(ip),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer".to_string()),
                };
                policy.handle_external_ip(r);
            }
            PortMapAction::AddPort {
                external_port,
                lease_secs,
            } => {
                let r = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    g.gw.add_port(proto, external_port, lan, lease_secs, DESCRIPTION),
                )
                .await;
                policy.handle_add_port(add_port_answer(r));
            }
            PortMapAction::RemovePort { external_port } => {
                match tokio::time::timeout(REQUEST_TIMEOUT, g.gw.remove_port(proto, external_port))
                    .await
                {
                    Ok(Ok(())) => log::debug!("UPnP mapping of port {external_port} removed"),
                    Ok(Err(e)) => {
                        log::warn!("cannot remove UPnP mapping of port {external_port}: {e}")
                    }
                    Err(_) => {
                        log::warn!("the gateway did not answer the removal of port {external_port}")
                    }
                }
            }
        }
    }
    let outcome = policy
        .outcome()
        .cloned()
        .unwrap_or_else(|| IgdOutcome::Failed {
            reason: "the port-mapping policy stopped without an outcome".into(),
        });
    let IgdOutcome::Mapped { external } = outcome else {
        return (outcome, None);
    };
    let mut m = IgdMapping {
        gw: Arc::new(Mutex::new(g.clone())),
        proto,
        external,
        renew: None,
    };
    let lease_secs = policy.lease_secs();
    if let Some(every) = policy.renew_every() {
        let renewer = Renewer {
            gw: m.gw.clone(),
            ctx: Arc::downgrade(&mc.inner),
            local_ip: mc.options().local_ip,
            search_timeout: mc.options().igd_timeout,
            proto,
            port: external.port(),
            lan,
            lease_secs,
        };
        m.renew = Some(crust_runtime::spawn(renewer.run(every)));
    }
    (IgdOutcome::Mapped { external }, Some(m))
}
