//! Network change: the sans-IO core that turns successive snapshots of the
//! host's interface addresses into decisions.
//!
//! The service reads the host's addresses every
//! [`network_poll_interval`](crate::Config::network_poll_interval) and hands
//! each reading to a [`NetWatch`]. When they differ from the last one,
//! [`NetWatch::update`] returns a [`Plan`]:
//!
//! - the [`AddressChange`]: addresses added and removed (an interface that
//!   stops running counts as removing its addresses);
//! - each listener's accepting endpoints, re-derived from the new addresses
//!   (a listener on an unspecified address publishes every address of its
//!   family; one on a specific address publishes it only while the host has
//!   it, loopback always);
//! - which beacon interfaces to start and stop (within the configured
//!   interface restriction, so a beacon on `lo` stays on `lo`);
//! - which live streams to declare lost: those whose local address left the
//!   host ([`Plan::stream_lost`]).
//!
//! No sockets, no clock: the tests below feed it made-up snapshots.
//!
//! ```
//! use crust::netwatch::{HostAddr, NetWatch, Snapshot};
//! use crust::{ListenEndpoint, Protocol};
//!
//! let eth0 = |ip: &str| HostAddr::new("eth0", Some(2), ip.parse().unwrap(), 27);
//! let lo = HostAddr::new("lo", Some(1), "127.0.0.1".parse().unwrap(), 8);
//! let key = transport::Identity::generate().public_key();
//! let listeners = [vec![ListenEndpoint::new(Protocol::Tcp, "0.0.0.0:5483".parse().unwrap())]];
//!
//! let mut watch = NetWatch::new(Snapshot::new([lo.clone(), eth0("198.51.100.1")]), None);
//! // The address moves to another subnet.
//! let plan = watch
//!     .update(Snapshot::new([lo, eth0("198.51.100.33")]), &listeners, key)
//!     .expect("a change");
//! assert_eq!(plan.change.removed[0].ip.to_string(), "198.51.100.1");
//! assert_eq!(plan.listeners[0][0].addr, "198.51.100.33:5483".parse().unwrap());
//! assert!(plan.endpoints_changed());
//! assert!(plan.stream_lost("198.51.100.1:40000".parse().unwrap()));
//! assert!(!plan.stream_lost("127.0.0.1:40000".parse().unwrap()));
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use transport::{Endpoint, ListenEndpoint, PublicKey};

use crate::error::{Error, Result};
use crate::service::Shared;
use crate::stream::lock;

/// One address of a running interface of the host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct HostAddr {
    /// The interface's name (as `ip link` shows it).
    pub interface: String,
    /// The interface's index, if known (the scope of IPv6 link-local
    /// addresses).
    pub index: Option<u32>,
    /// The address.
    pub ip: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

impl HostAddr {
    /// An address of interface `interface`.
    ///
    /// ```
    /// let a = crust::netwatch::HostAddr::new("eth0", Some(2), "192.0.2.7".parse().unwrap(), 24);
    /// assert_eq!(a.interface, "eth0");
    /// ```
    pub fn new(
        interface: impl Into<String>,
        index: Option<u32>,
        ip: IpAddr,
        prefix_len: u8,
    ) -> Self {
        HostAddr {
            interface: interface.into(),
            index,
            ip: canonical(ip),
            prefix_len,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The host's addresses at one moment: sorted, without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    addrs: Vec<HostAddr>,
}

impl Snapshot {
    /// A snapshot of these addresses (in any order).
    ///
    /// ```
    /// use crust::netwatch::{HostAddr, Snapshot};
    /// let lo = HostAddr::new("lo", Some(1), "127.0.0.1".parse().unwrap(), 8);
    /// let s = Snapshot::new([lo.clone(), lo]);
    /// assert_eq!(s.addrs().len(), 1);
    /// ```
    pub fn new(addrs: impl IntoIterator<Item = HostAddr>) -> Snapshot {
        let set: BTreeSet<HostAddr> = addrs.into_iter().collect();
        Snapshot {
            addrs: set.into_iter().collect(),
        }
    }

    /// The addresses of the running interfaces in an `if-addrs` listing
    /// (an interface that is down has no usable address).
    pub(crate) fn from_interfaces(list: &[if_addrs::Interface]) -> Snapshot {
        Snapshot::new(list.iter().filter(|i| i.is_oper_up()).map(|i| {
            let prefix_len = match &i.addr {
                if_addrs::IfAddr::V4(a) => a.prefixlen,
                if_addrs::IfAddr::V6(a) => a.prefixlen,
            };
            HostAddr::new(i.name.clone(), i.index, i.ip(), prefix_len)
        }))
    }

    /// The addresses.
    pub fn addrs(&self) -> &[HostAddr] {
        &self.addrs
    }

    /// Whether the host has `ip` (on any interface).
    ///
    /// ```
    /// use crust::netwatch::{HostAddr, Snapshot};
    /// let s = Snapshot::new([HostAddr::new("lo", Some(1), "127.0.0.1".parse().unwrap(), 8)]);
    /// assert!(s.has_ip("127.0.0.1".parse().unwrap()));
    /// assert!(s.has_ip("::ffff:127.0.0.1".parse().unwrap()));
    /// ```
    pub fn has_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.addrs.iter().any(|a| a.ip == ip)
    }

    /// What changed from `self` to `next`.
    ///
    /// ```
    /// use crust::netwatch::{HostAddr, Snapshot};
    /// let a = HostAddr::new("eth0", Some(2), "192.0.2.7".parse().unwrap(), 24);
    /// let b = HostAddr::new("eth0", Some(2), "198.51.100.7".parse().unwrap(), 24);
    /// let c = Snapshot::new([a.clone()]).diff(&Snapshot::new([b.clone()]));
    /// assert_eq!((c.added, c.removed), (vec![b], vec![a]));
    /// ```
    pub fn diff(&self, next: &Snapshot) -> AddressChange {
        AddressChange {
            added: next
                .addrs
                .iter()
                .filter(|a| !self.addrs.contains(a))
                .cloned()
                .collect(),
            removed: self
                .addrs
                .iter()
                .filter(|a| !next.addrs.contains(a))
                .cloned()
                .collect(),
        }
    }

    /// The `(ip, interface index)` list the transport expands unspecified
    /// listen addresses with.
    fn interface_ips(&self) -> Vec<(IpAddr, Option<u32>)> {
        self.addrs.iter().map(|a| (a.ip, a.index)).collect()
    }

    /// The interfaces a beacon can use (running, with an address), within
    /// `only` when given.
    fn beacon_interfaces(&self, only: Option<&[String]>) -> BTreeSet<String> {
        self.addrs
            .iter()
            .filter(|a| only.is_none_or(|names| names.contains(&a.interface)))
            .map(|a| a.interface.clone())
            .collect()
    }
}

/// Addresses that appeared and that went, from one snapshot to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AddressChange {
    /// Addresses the host has now and did not have.
    pub added: Vec<HostAddr>,
    /// Addresses the host had and has no more (or whose interface stopped
    /// running).
    pub removed: Vec<HostAddr>,
}

impl AddressChange {
    /// Whether nothing changed.
    ///
    /// ```
    /// assert!(crust::netwatch::AddressChange::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// What to do about one change of the host's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// The addresses that came and went.
    pub change: AddressChange,
    /// Each listener's accepting endpoints now, in the order the listeners
    /// were given to [`NetWatch::update`].
    pub listeners: Vec<Vec<Endpoint>>,
    /// Each listener's accepting endpoints before the change.
    pub previous: Vec<Vec<Endpoint>>,
    /// Interfaces the beacon should start using.
    pub beacon_start: Vec<String>,
    /// Interfaces the beacon should stop using.
    pub beacon_stop: Vec<String>,
    /// Addresses that left the host: streams bound to them are dead.
    vanished: Vec<IpAddr>,
    /// The host's addresses now.
    now: Snapshot,
}

impl Plan {
    /// Whether any listener's accepting endpoints changed (then the service
    /// re-announces: hello, beacon, and an event for
    /// [`ServiceController::endpoints_changed`](crate::ServiceController::endpoints_changed)).
    pub fn endpoints_changed(&self) -> bool {
        self.listeners != self.previous
    }

    /// Whether the beacon must follow (interfaces to start or stop).
    pub fn beacon_changed(&self) -> bool {
        !self.beacon_start.is_empty() || !self.beacon_stop.is_empty()
    }

    /// Every accepting endpoint now, all listeners together.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.listeners.iter().flatten().copied().collect()
    }

    /// Whether a live stream whose local socket address is `local` is lost:
    /// its address left the host in this change. A stream on an
    /// unspecified local address (a uTP stream on a socket bound to
    /// `0.0.0.0`) cannot be told apart and is left to its heartbeats.
    pub fn stream_lost(&self, local: SocketAddr) -> bool {
        let ip = canonical(local.ip());
        !ip.is_unspecified() && self.vanished.contains(&ip) && !self.now.has_ip(ip)
    }
}

/// The network-change core: the last snapshot, and the rules that turn the
/// next one into a [`Plan`]. See the [module](self) documentation.
#[derive(Clone, Debug)]
pub struct NetWatch {
    current: Snapshot,
    beacon_only: Option<Vec<String>>,
}

impl NetWatch {
    /// Starts from `initial`; `beacon_interfaces` is the beacon's interface
    /// restriction (`None`: every interface).
    ///
    /// ```
    /// let w = crust::netwatch::NetWatch::new(Default::default(), Some(vec!["lo".into()]));
    /// assert!(w.current().addrs().is_empty());
    /// ```
    pub fn new(initial: Snapshot, beacon_interfaces: Option<Vec<String>>) -> NetWatch {
        NetWatch {
            current: initial,
            beacon_only: beacon_interfaces,
        }
    }

    /// The last snapshot taken in.
    pub fn current(&self) -> &Snapshot {
        &self.current
    }

    /// Takes in the next snapshot. `listeners` holds each listener's bound
    /// endpoints (with their real ports), `key` our public key. Returns
    /// `None` when the addresses did not change.
    pub fn update(
        &mut self,
        next: Snapshot,
        listeners: &[Vec<ListenEndpoint>],
        key: PublicKey,
    ) -> Option<Plan> {
        let change = self.current.diff(&next);
        if change.is_empty() {
            return None;
        }
        let previous = listeners
            .iter()
            .map(|b| listener_endpoints(b, &self.current, key))
            .collect();
        let now_eps = listeners
            .iter()
            .map(|b| listener_endpoints(b, &next, key))
            .collect();
        let only = self.beacon_only.as_deref();
        let before = self.current.beacon_interfaces(only);
        let after = next.beacon_interfaces(only);
        let vanished = change
            .removed
            .iter()
            .map(|a| a.ip)
            .filter(|ip| !next.has_ip(*ip))
            .collect();
        let plan = Plan {
            listeners: now_eps,
            previous,
            beacon_start: after.difference(&before).cloned().collect(),
            beacon_stop: before.difference(&after).cloned().collect(),
            vanished,
            now: next.clone(),
            change,
        };
        self.current = next;
        Some(plan)
    }
}

/// A listener's accepting endpoints given the host's addresses: the
/// transport's expansion of unspecified addresses, and a specific address
/// only while the host has it (loopback always).
///
/// ```
/// use crust::netwatch::{HostAddr, Snapshot, listener_endpoints};
/// use crust::{ListenEndpoint, Protocol};
/// let key = transport::Identity::generate().public_key();
/// let bound = [ListenEndpoint::new(Protocol::Utp, "192.0.2.7:4000".parse().unwrap())];
/// assert!(listener_endpoints(&bound, &Snapshot::default(), key).is_empty());
/// let s = Snapshot::new([HostAddr::new("eth0", Some(2), "192.0.2.7".parse().unwrap(), 24)]);
/// assert_eq!(listener_endpoints(&bound, &s, key).len(), 1);
/// ```
pub fn listener_endpoints(
    bound: &[ListenEndpoint],
    snapshot: &Snapshot,
    key: PublicKey,
) -> Vec<Endpoint> {
    let present: Vec<ListenEndpoint> = bound
        .iter()
        .filter(|le| {
            let ip = le.addr.ip();
            ip.is_unspecified() || ip.is_loopback() || snapshot.has_ip(ip)
        })
        .copied()
        .collect();
    transport::aio::expand_listen_endpoints(&present, &snapshot.interface_ips(), key)
}

/// Something a live stream does when its local address leaves the host.
pub(crate) trait LocalLoss: Send + Sync {
    /// Its local address.
    fn local_addr(&self) -> SocketAddr;
    /// Ends the stream: every handle reports the loss.
    fn local_address_lost(&self);
}

/// The live streams of a service, for the network-change driver. Holds
/// weak references only; dead entries are pruned as it grows, so it stays
/// within twice the number of live streams (plus a constant).
#[derive(Default)]
pub(crate) struct LiveStreams {
    inner: Mutex<LiveInner>,
}

#[derive(Default)]
struct LiveInner {
    streams: Vec<Weak<dyn LocalLoss>>,
    prune_at: usize,
}

impl LiveStreams {
    pub(crate) fn register(&self, s: Weak<dyn LocalLoss>) {
        let mut g = lock(&self.inner);
        if g.streams.len() >= g.prune_at {
            g.streams.retain(|w| w.strong_count() > 0);
            g.prune_at = (2 * g.streams.len()).max(64);
        }
        g.streams.push(s);
    }

    /// Ends every live stream that `plan` says is lost; returns how many.
    pub(crate) fn apply(&self, plan: &Plan) -> usize {
        let live: Vec<_> = {
            let mut g = lock(&self.inner);
            g.streams.retain(|w| w.strong_count() > 0);
            g.streams.iter().filter_map(Weak::upgrade).collect()
        };
        let mut n = 0;
        for s in live {
            let local = s.local_addr();
            if plan.stream_lost(local) {
                log::info!("a stream on {local} is lost: the address left the host");
                s.local_address_lost();
                n += 1;
            }
        }
        n
    }
}

/// How many network-change events wait for a slow reader of
/// [`EndpointChanges`]; past that it skips to the newest (each event carries
/// the full endpoint list, so the newest is enough).
pub(crate) const CHANGES_KEPT: usize = 16;

/// A change of our accepting endpoints after a change of the host's
/// addresses, from [`ServiceController::endpoints_changed`].
///
/// [`ServiceController::endpoints_changed`]: crate::ServiceController::endpoints_changed
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkChange {
    /// Every accepting endpoint now (what to re-announce).
    pub endpoints: Vec<Endpoint>,
    /// Endpoints that are new.
    pub added: Vec<Endpoint>,
    /// Endpoints that are gone.
    pub removed: Vec<Endpoint>,
    /// The host's addresses that came and went.
    pub addresses: AddressChange,
    /// How many live streams were ended because their local address left
    /// the host.
    pub lost_streams: usize,
}

/// Network-change events, blocking: [`next`](EndpointChanges::next),
/// [`next_timeout`](EndpointChanges::next_timeout), or iterate. From
/// [`ServiceController::endpoints_changed`]; see there for an example.
///
/// [`ServiceController::endpoints_changed`]: crate::ServiceController::endpoints_changed
#[derive(Debug)]
pub struct EndpointChanges {
    rx: tokio::sync::broadcast::Receiver<NetworkChange>,
}

impl EndpointChanges {
    pub(crate) fn new(rx: tokio::sync::broadcast::Receiver<NetworkChange>) -> Self {
        EndpointChanges { rx }
    }

    /// Blocks until the next change.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the service stopped; [`Error::Io`] when
    /// called from a current-thread tokio runtime (use the
    /// [`aio`](crate::aio) twin).
    #[allow(clippy::should_implement_trait)] // also an iterator, below
    pub fn next(&mut self) -> Result<NetworkChange> {
        self.next_inner(None)
    }

    /// Like [`next`](Self::next), but gives up after `timeout` with
    /// [`Error::TimedOut`].
    ///
    /// # Errors
    ///
    /// As [`next`](Self::next), plus the timeout.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<NetworkChange> {
        self.next_inner(Some(timeout))
    }

    fn next_inner(&mut self, timeout: Option<Duration>) -> Result<NetworkChange> {
        let rx = &mut self.rx;
        crust_runtime::block_on(async move {
            match timeout {
                None => Ok(next_change(rx).await),
                Some(t) => {
                    tokio::time::timeout(t, next_change(rx))
                        .await
                        .map_err(|_| Error::TimedOut {
                            what: "waiting for a network change".into(),
                            after: t,
                        })
                }
            }
        })
        .map_err(|e| Error::io("crust::EndpointChanges::next", e))??
    }
}

impl Iterator for EndpointChanges {
    type Item = NetworkChange;

    /// The next change; `None` once the service stopped.
    fn next(&mut self) -> Option<NetworkChange> {
        EndpointChanges::next(self).ok()
    }
}

/// The next event, skipping what a slow reader missed.
pub(crate) async fn next_change(
    rx: &mut tokio::sync::broadcast::Receiver<NetworkChange>,
) -> Result<NetworkChange> {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rx.recv().await {
            Ok(c) => return Ok(c),
            Err(RecvError::Lagged(n)) => {
                log::debug!("endpoint changes: {n} older events skipped");
            }
            Err(RecvError::Closed) => return Err(Error::Closed("the service stopped".into())),
        }
    }
}

/// Reads the host's addresses now (an empty snapshot, with a warning, if
/// they cannot be listed).
pub(crate) fn read_snapshot() -> Snapshot {
    match if_addrs::get_if_addrs() {
        Ok(list) => Snapshot::from_interfaces(&list),
        Err(e) => {
            log::warn!("cannot list the host's addresses: {e}");
            Snapshot::default()
        }
    }
}

/// Reads one snapshot of the host's addresses; `None` (and a log line, the
/// first time in a row) when the listing fails, so a passing failure does
/// not look like every address vanishing.
fn try_snapshot(failing: &mut bool) -> Option<Snapshot> {
    match if_addrs::get_if_addrs() {
        Ok(list) => {
            if std::mem::take(failing) {
                log::info!("listing the host's addresses works again");
            }
            Some(Snapshot::from_interfaces(&list))
        }
        Err(e) => {
            if !std::mem::replace(failing, true) {
                log::warn!("cannot list the host's addresses (network change unseen): {e}");
            }
            None
        }
    }
}

fn show(addrs: &[HostAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("{}/{} ({})", a.ip, a.prefix_len, a.interface))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The driver: a task on the shared runtime that reads the host's addresses
/// every `every` and applies each [`Plan`] to the service. Ends with the
/// service (it holds a weak reference).
pub(crate) async fn run(service: Weak<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now: the service just read them
    let mut failing = false;
    loop {
        tick.tick().await;
        if service.strong_count() == 0 {
            break;
        }
        // Read before taking a strong reference, so the service is held
        // only while a change is applied.
        let Some(snapshot) = try_snapshot(&mut failing) else {
            continue;
        };
        let Some(shared) = service.upgrade() else {
            break;
        };
        apply(&shared, snapshot);
        if Arc::strong_count(&shared) == 1 {
            // The user dropped the service meanwhile: its last drop closes
            // listeners and waits for their tasks, which must not happen on
            // a runtime worker (there it could only abort them and leave
            // their sockets to whenever the runtime drops the tasks).
            std::thread::spawn(move || drop(shared));
        }
    }
}

/// Takes in one snapshot; on a change, re-derives the listeners' endpoints
/// and re-announces them, ends the streams that lost their address, makes
/// the beacon follow and tells [`EndpointChanges`] readers.
pub(crate) fn apply(shared: &Shared, snapshot: Snapshot) {
    let bounds = shared.listener_bounds();
    let only: Vec<Vec<ListenEndpoint>> = bounds.iter().map(|(_, b)| b.clone()).collect();
    let Some(plan) = lock(&shared.netwatch).update(snapshot, &only, shared.public_key()) else {
        return;
    };
    log::info!(
        "network change: added [{}], removed [{}]",
        show(&plan.change.added),
        show(&plan.change.removed)
    );
    let lost_streams = shared.counters.live.apply(&plan);
    let new: Vec<(u64, Vec<Endpoint>)> = bounds
        .iter()
        .map(|(id, _)| *id)
        .zip(plan.listeners.iter().cloned())
        .collect();
    let (before, after) = shared.set_listener_endpoints(&new);
    if plan.beacon_changed() || before != after {
        shared.beacon_follow();
    }
    if before != after {
        let change = NetworkChange {
            added: after
                .iter()
                .filter(|e| !before.contains(e))
                .copied()
                .collect(),
            removed: before
                .iter()
                .filter(|e| !after.contains(e))
                .copied()
                .collect(),
            endpoints: after,
            addresses: plan.change.clone(),
            lost_streams,
        };
        log::info!(
            "accepting endpoints now [{}]",
            change
                .endpoints
                .iter()
                .map(|e| format!("{}://{}", e.protocol, e.addr))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // No receiver is fine: nobody asked.
        let _ = shared.changes.send(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transport::{Identity, Protocol};

    fn addr(ifname: &str, ip: &str, len: u8) -> HostAddr {
        let index = if ifname == "lo" { 1 } else { 2 };
        HostAddr::new(ifname, Some(index), ip.parse().unwrap(), len)
    }

    fn lo() -> HostAddr {
        addr("lo", "127.0.0.1", 8)
    }

    fn le(p: Protocol, a: &str) -> ListenEndpoint {
        ListenEndpoint::new(p, a.parse().unwrap())
    }

    fn addrs_of(eps: &[Endpoint]) -> Vec<String> {
        eps.iter()
            .map(|e| format!("{}://{}", e.protocol, e.addr))
            .collect()
    }

    #[test]
    fn no_change_no_plan() {
        let key = Identity::generate().public_key();
        let s = Snapshot::new([lo(), addr("eth0", "192.0.2.7", 24)]);
        let mut w = NetWatch::new(s.clone(), None);
        // Same addresses in another order.
        let again = Snapshot::new([addr("eth0", "192.0.2.7", 24), lo()]);
        assert_eq!(w.update(again, &[], key), None);
        assert_eq!(w.current(), &s);
    }

    #[test]
    fn moving_to_another_subnet_rederives_unspecified_listeners() {
        let key = Identity::generate().public_key();
        let listeners = vec![
            vec![le(Protocol::Tcp, "0.0.0.0:4000")],
            vec![le(Protocol::Utp, "0.0.0.0:4001")],
            vec![le(Protocol::Tcp, "127.0.0.1:4002")],
        ];
        let mut w = NetWatch::new(
            Snapshot::new([lo(), addr("eth0", "198.51.100.1", 27)]),
            None,
        );
        let p = w
            .update(
                Snapshot::new([lo(), addr("eth0", "198.51.100.33", 27)]),
                &listeners,
                key,
            )
            .unwrap();
        assert_eq!(p.change.added, vec![addr("eth0", "198.51.100.33", 27)]);
        assert_eq!(p.change.removed, vec![addr("eth0", "198.51.100.1", 27)]);
        assert_eq!(
            addrs_of(&p.previous[0]),
            ["tcp://198.51.100.1:4000", "tcp://127.0.0.1:4000"]
        );
        assert_eq!(
            addrs_of(&p.listeners[0]),
            ["tcp://198.51.100.33:4000", "tcp://127.0.0.1:4000"]
        );
        assert_eq!(
            addrs_of(&p.listeners[1]),
            ["utp://198.51.100.33:4001", "utp://127.0.0.1:4001"]
        );
        // The loopback listener did not change.
        assert_eq!(p.listeners[2], p.previous[2]);
        assert!(p.endpoints_changed());
        assert_eq!(p.endpoints().len(), 5);
        assert!(p.endpoints().iter().all(|e| e.public_key == key));
        // The interface kept running: the beacon keeps using it.
        assert!(!p.beacon_changed());
    }

    #[test]
    fn streams_on_a_vanished_address_are_lost_others_are_not() {
        let key = Identity::generate().public_key();
        let mut w = NetWatch::new(
            Snapshot::new([
                lo(),
                addr("eth0", "198.51.100.1", 27),
                addr("eth0", "2001:db8:1::1", 64),
            ]),
            None,
        );
        let p = w
            .update(
                Snapshot::new([
                    lo(),
                    addr("eth0", "198.51.100.33", 27),
                    addr("eth0", "2001:db8:1::1", 64),
                ]),
                &[],
                key,
            )
            .unwrap();
        let lost = |s: &str| p.stream_lost(s.parse().unwrap());
        assert!(lost("198.51.100.1:5000"));
        assert!(lost("[::ffff:198.51.100.1]:5000"), "IPv4-mapped form");
        assert!(!lost("198.51.100.33:5000"));
        assert!(!lost("127.0.0.1:5000"));
        assert!(!lost("[2001:db8:1::1]:5000"));
        // A uTP stream on a wildcard socket cannot be told apart.
        assert!(!lost("0.0.0.0:5000"));
        assert!(!lost("[::]:5000"));
        // An address never seen is not "vanished".
        assert!(!lost("192.0.2.99:5000"));
    }

    #[test]
    fn a_prefix_change_on_the_same_address_loses_no_stream() {
        let key = Identity::generate().public_key();
        let mut w = NetWatch::new(Snapshot::new([addr("eth0", "198.51.100.1", 27)]), None);
        let p = w
            .update(Snapshot::new([addr("eth0", "198.51.100.1", 24)]), &[], key)
            .unwrap();
        assert!(!p.change.is_empty());
        assert!(!p.stream_lost("198.51.100.1:5000".parse().unwrap()));
    }

    #[test]
    fn an_address_moving_between_interfaces_loses_no_stream() {
        let key = Identity::generate().public_key();
        let mut w = NetWatch::new(Snapshot::new([addr("eth0", "198.51.100.1", 27)]), None);
        let p = w
            .update(Snapshot::new([addr("eth1", "198.51.100.1", 27)]), &[], key)
            .unwrap();
        assert!(!p.stream_lost("198.51.100.1:5000".parse().unwrap()));
        assert_eq!(p.beacon_start, ["eth1"]);
        assert_eq!(p.beacon_stop, ["eth0"]);
    }

    #[test]
    fn specific_listeners_publish_only_present_addresses() {
        let key = Identity::generate().public_key();
        let listeners = vec![vec![
            le(Protocol::Tcp, "198.51.100.1:4000"),
            le(Protocol::Tcp, "127.0.0.1:4001"),
        ]];
        let mut w = NetWatch::new(
            Snapshot::new([lo(), addr("eth0", "198.51.100.1", 27)]),
            None,
        );
        let p = w.update(Snapshot::new([lo()]), &listeners, key).unwrap();
        assert_eq!(
            addrs_of(&p.previous[0]),
            ["tcp://198.51.100.1:4000", "tcp://127.0.0.1:4001"]
        );
        assert_eq!(addrs_of(&p.listeners[0]), ["tcp://127.0.0.1:4001"]);
        // The address comes back: so does its endpoint.
        let p = w
            .update(
                Snapshot::new([lo(), addr("eth0", "198.51.100.1", 27)]),
                &listeners,
                key,
            )
            .unwrap();
        assert_eq!(
            addrs_of(&p.listeners[0]),
            ["tcp://198.51.100.1:4000", "tcp://127.0.0.1:4001"]
        );
    }

    #[test]
    fn ipv6_link_local_endpoints_carry_their_scope() {
        let key = Identity::generate().public_key();
        let listeners = vec![vec![le(Protocol::Utp, "[::]:4000")]];
        let mut w = NetWatch::new(Snapshot::default(), None);
        let p = w
            .update(
                Snapshot::new([addr("eth0", "fe80::1", 64), addr("eth0", "2001:db8::1", 64)]),
                &listeners,
                key,
            )
            .unwrap();
        assert_eq!(
            addrs_of(&p.listeners[0]),
            ["utp://[2001:db8::1]:4000", "utp://[fe80::1%2]:4000"]
        );
    }

    #[test]
    fn beacons_follow_interfaces_within_the_restriction() {
        let key = Identity::generate().public_key();
        // Restricted to lo: eth0 coming and going never moves the beacon.
        let mut w = NetWatch::new(Snapshot::new([lo()]), Some(vec!["lo".into()]));
        let p = w
            .update(
                Snapshot::new([lo(), addr("eth0", "192.0.2.7", 24)]),
                &[],
                key,
            )
            .unwrap();
        assert!(!p.beacon_changed(), "{p:?}");
        let p = w.update(Snapshot::new([lo()]), &[], key).unwrap();
        assert!(!p.beacon_changed(), "{p:?}");
        // lo itself going away (down) and back is followed.
        let p = w.update(Snapshot::default(), &[], key).unwrap();
        assert_eq!(p.beacon_stop, ["lo"]);
        let p = w.update(Snapshot::new([lo()]), &[], key).unwrap();
        assert_eq!(p.beacon_start, ["lo"]);

        // Unrestricted: a new interface is started, a gone one stopped.
        let mut w = NetWatch::new(Snapshot::new([lo(), addr("eth0", "192.0.2.7", 24)]), None);
        let p = w
            .update(
                Snapshot::new([lo(), addr("wlan0", "198.51.100.7", 24)]),
                &[],
                key,
            )
            .unwrap();
        assert_eq!(p.beacon_start, ["wlan0"]);
        assert_eq!(p.beacon_stop, ["eth0"]);
        // A second address on a used interface changes nothing for the beacon.
        let p = w
            .update(
                Snapshot::new([
                    lo(),
                    addr("wlan0", "198.51.100.7", 24),
                    addr("wlan0", "198.51.100.8", 24),
                ]),
                &[],
                key,
            )
            .unwrap();
        assert!(!p.beacon_changed());
    }

    #[test]
    fn snapshots_from_interfaces_skip_interfaces_that_are_down() {
        use if_addrs::{IfAddr, IfOperStatus, Ifv4Addr, Interface};
        let iface = |name: &str, ip: &str, up: bool| Interface {
            name: name.into(),
            addr: IfAddr::V4(Ifv4Addr {
                ip: ip.parse().unwrap(),
                netmask: "255.255.255.0".parse().unwrap(),
                prefixlen: 24,
                broadcast: None,
            }),
            index: Some(3),
            oper_status: if up {
                IfOperStatus::Up
            } else {
                IfOperStatus::Unknown
            },
            is_p2p: false,
        };
        let s = Snapshot::from_interfaces(&[
            iface("eth0", "192.0.2.7", true),
            iface("eth1", "198.51.100.7", false),
        ]);
        assert_eq!(s.addrs(), [addr_idx("eth0", "192.0.2.7", 24, 3)]);
    }

    fn addr_idx(ifname: &str, ip: &str, len: u8, index: u32) -> HostAddr {
        HostAddr::new(ifname, Some(index), ip.parse().unwrap(), len)
    }

    struct Fake {
        local: SocketAddr,
        lost: std::sync::atomic::AtomicBool,
    }

    impl LocalLoss for Fake {
        fn local_addr(&self) -> SocketAddr {
            self.local
        }
        fn local_address_lost(&self) {
            self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The host's addresses as now, without loopback: what the driver would
    /// see if 127.0.0.1 left the host (nothing on the host changes).
    fn without_loopback() -> Snapshot {
        let now = read_snapshot();
        Snapshot::new(now.addrs().iter().filter(|a| !a.ip.is_loopback()).cloned())
    }

    /// The driver's effect on real loopback streams, by handing it a
    /// snapshot without loopback: blocked `recv`s (TCP and uTP, both ends)
    /// return `AddressLost` at once; streams stay lost, later calls say so.
    #[test]
    fn driver_ends_blocking_streams_whose_address_vanished() {
        let config = crate::Config::loopback()
            .beacon_enabled(false)
            .network_name("netwatch-unit")
            .inactivity_timeout(Duration::from_secs(60))
            .heartbeat_period(Duration::from_secs(20));
        let a = crate::Service::new_from_config(config.clone()).unwrap();
        let b = crate::Service::new_from_config(config).unwrap();
        let mut waiting = Vec::new();
        let mut kept = Vec::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let first_of = |s: &crate::Service, protocol| {
            s.controller
                .endpoints()
                .into_iter()
                .find(|e| e.protocol == protocol)
                .unwrap()
        };
        for protocol in [transport::Protocol::Tcp, transport::Protocol::Utp] {
            // One stream a dialled, one a accepted; only a's address goes.
            let dialled = a.controller.connect(&first_of(&b, protocol)).unwrap();
            let far = b.acceptor.accept_timeout(Duration::from_secs(10)).unwrap();
            let near = b.controller.connect(&first_of(&a, protocol)).unwrap();
            let accepted = a.acceptor.accept_timeout(Duration::from_secs(10)).unwrap();
            near.send(b"hi").unwrap();
            assert_eq!(accepted.recv().unwrap(), b"hi");
            kept.extend([far, near]);
            for (side, s) in [("dialled", dialled), ("accepted", accepted)] {
                let local = s.local_addr();
                if local.ip().is_unspecified() {
                    // A uTP stream on a wildcard socket: not ours to judge
                    // (left to its heartbeats).
                    kept.push(s);
                    continue;
                }
                let tx = tx.clone();
                let name = format!("{protocol} {side} on {local}");
                waiting.push(name.clone());
                std::thread::spawn(move || {
                    let first = s.recv();
                    let again = s.send(b"x");
                    let _ = tx.send((name, local, first, again));
                });
            }
        }
        // A snapshot in which 127.0.0.1 is gone, for a alone.
        apply(a.controller.shared(), without_loopback());
        let mut judged = Vec::new();
        for _ in 0..waiting.len() {
            let (name, local, first, again) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("every blocked recv returns");
            match first {
                Err(Error::AddressLost { local: l, .. }) => assert_eq!(l, local, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
            assert!(
                matches!(again, Err(Error::AddressLost { .. })),
                "{name}: {again:?}"
            );
            judged.push(name);
        }
        // Both TCP ends, and at least the accepted uTP end (its listener is
        // bound to 127.0.0.1).
        assert!(judged.len() >= 3, "{judged:?} of {waiting:?}");
    }

    #[test]
    fn driver_ends_aio_streams_whose_address_vanished() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let config = crate::Config::loopback()
                .beacon_enabled(false)
                .network_name("netwatch-unit-aio")
                .inactivity_timeout(Duration::from_secs(60))
                .heartbeat_period(Duration::from_secs(20));
            let a = crate::aio::Service::new_from_config(config.clone())
                .await
                .unwrap();
            let b = crate::aio::Service::new_from_config(config).await.unwrap();
            let ep = a
                .controller
                .endpoints()
                .into_iter()
                .find(|e| e.protocol == transport::Protocol::Tcp)
                .unwrap();
            let mut changes = a.controller.endpoints_changed();
            let dialled = b.controller.connect(&ep).await.unwrap();
            dialled.send(b"hi").await.unwrap();
            let mut accepted = a.acceptor.accept().await.unwrap();
            assert_eq!(accepted.recv().await.unwrap(), b"hi");
            let local = accepted.local_addr();
            apply(a.controller.blocking().shared(), without_loopback());
            let got = tokio::time::timeout(Duration::from_secs(10), accepted.recv())
                .await
                .expect("recv returns");
            match got {
                Err(Error::AddressLost { local: l, .. }) => assert_eq!(l, local),
                other => panic!("{other:?}"),
            }
            // Loopback listeners keep their endpoints: no change event.
            let quiet = tokio::time::timeout(Duration::from_millis(50), changes.next()).await;
            assert!(quiet.is_err(), "{quiet:?}");
        });
    }

    #[test]
    fn live_streams_end_only_the_lost_and_stay_bounded() {
        let key = Identity::generate().public_key();
        let live = LiveStreams::default();
        let mk = |a: &str| {
            std::sync::Arc::new(Fake {
                local: a.parse().unwrap(),
                lost: Default::default(),
            })
        };
        let on_old = mk("198.51.100.1:5000");
        let on_lo = mk("127.0.0.1:5000");
        let on_old_dyn: std::sync::Arc<dyn LocalLoss> = on_old.clone();
        let on_lo_dyn: std::sync::Arc<dyn LocalLoss> = on_lo.clone();
        live.register(std::sync::Arc::downgrade(&on_old_dyn));
        live.register(std::sync::Arc::downgrade(&on_lo_dyn));
        // Many short-lived streams: the list is pruned as it grows.
        for _ in 0..1000 {
            let gone: std::sync::Arc<dyn LocalLoss> = mk("198.51.100.1:6000");
            live.register(std::sync::Arc::downgrade(&gone));
        }
        assert!(lock(&live.inner).streams.len() <= 130);
        let mut w = NetWatch::new(
            Snapshot::new([lo(), addr("eth0", "198.51.100.1", 27)]),
            None,
        );
        let p = w.update(Snapshot::new([lo()]), &[], key).unwrap();
        assert_eq!(live.apply(&p), 1);
        assert!(on_old.lost.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!on_lo.lost.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(lock(&live.inner).streams.len(), 2);
    }
}
