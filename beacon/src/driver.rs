//! The socket driver: one task on the shared runtime per beacon, moving
//! datagrams between its sockets and its [`BeaconCore`].

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::core::{BeaconCore, Outcome, Stats};
use crate::interfaces::{self, Targets};
use crate::packet::MAX_PACKET_LEN;
use crate::{Error, Message, Result};

/// What the driver needs besides the core.
#[derive(Debug, Clone)]
pub(crate) struct DriverConfig {
    pub(crate) port: u16,
    pub(crate) interfaces: Option<Vec<String>>,
    pub(crate) ipv4: bool,
    pub(crate) ipv6: bool,
    pub(crate) group: Ipv6Addr,
    pub(crate) refresh: Duration,
}

/// Changes asked for by the controller, applied by the driver.
#[derive(Debug, Default)]
struct Pending {
    data: Option<Vec<u8>>,
    period: Option<Duration>,
    refresh: bool,
}

/// State shared by the beacon, its controller and its driver task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) port: u16,
    pub(crate) id: Vec<u8>,
    closed: AtomicBool,
    pending: Mutex<Pending>,
    wake: Notify,
    stats: [AtomicU64; 9],
}

impl Shared {
    pub(crate) fn new(port: u16, id: Vec<u8>) -> Self {
        Shared {
            port,
            id,
            closed: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            stats: Default::default(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn closed_error(&self) -> Error {
        Error::Closed { port: self.port }
    }

    pub(crate) fn set_data(&self, data: Vec<u8>) -> Result<()> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        self.lock().data = Some(data);
        self.wake.notify_one();
        Ok(())
    }

    pub(crate) fn set_period(&self, period: Duration) -> Result<()> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        self.lock().period = Some(period);
        self.wake.notify_one();
        Ok(())
    }

    pub(crate) fn refresh_interfaces(&self) -> Result<()> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        self.lock().refresh = true;
        self.wake.notify_one();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A poisoned lock only means a thread panicked while storing a value;
        // the value itself is always whole.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, s: &Stats) {
        let v = [
            s.received,
            s.delivered,
            s.own_echoes,
            s.dropped,
            s.sends,
            s.answers,
            s.ignored,
            s.overflowed,
            s.send_errors,
        ];
        for (a, v) in self.stats.iter().zip(v) {
            a.store(v, Ordering::Relaxed);
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let v: Vec<u64> = self
            .stats
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        Stats {
            received: v[0],
            delivered: v[1],
            own_echoes: v[2],
            dropped: v[3],
            sends: v[4],
            answers: v[5],
            ignored: v[6],
            overflowed: v[7],
            send_errors: v[8],
        }
    }
}

/// Marks the beacon closed when the task ends, however it ends.
struct CloseGuard(Arc<Shared>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn bind_error(what: &'static str, addr: SocketAddr, source: io::Error) -> Error {
    Error::Bind { what, addr, source }
}

/// Binds the IPv4 socket: `0.0.0.0:port`, shared (`SO_REUSEADDR`,
/// `SO_REUSEPORT`), allowed to broadcast.
pub(crate) fn bind_v4(port: u16) -> Result<std::net::UdpSocket> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| bind_error("create", addr, e))?;
    s.set_reuse_address(true)
        .and_then(|()| s.set_reuse_port(true))
        .and_then(|()| s.set_broadcast(true))
        .and_then(|()| s.set_nonblocking(true))
        .map_err(|e| bind_error("set options of", addr, e))?;
    s.bind(&addr.into())
        .map_err(|e| bind_error("bind", addr, e))?;
    Ok(s.into())
}

/// Binds the IPv6 socket: `[::]:port`, IPv6 only, shared, multicast loop on
/// (so beacons on one host hear each other).
pub(crate) fn bind_v6(port: u16) -> Result<std::net::UdpSocket> {
    let addr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| bind_error("create", addr, e))?;
    s.set_only_v6(true)
        .and_then(|()| s.set_reuse_address(true))
        .and_then(|()| s.set_reuse_port(true))
        .and_then(|()| s.set_multicast_loop_v6(true))
        .and_then(|()| s.set_multicast_hops_v6(1))
        .and_then(|()| s.set_nonblocking(true))
        .map_err(|e| bind_error("set options of", addr, e))?;
    s.bind(&addr.into())
        .map_err(|e| bind_error("bind", addr, e))?;
    Ok(s.into())
}

/// The driver task's state (its sockets are kept apart, see [`run`]).
struct State {
    core: BeaconCore,
    cfg: DriverConfig,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Message>,
    targets: Targets,
    joined: BTreeSet<u32>,
    failing: BTreeSet<SocketAddr>,
    stats: Stats,
    first_refresh: bool,
}

impl State {
    fn publish(&self) {
        let mut s = self.core.stats();
        s.ignored = self.stats.ignored;
        s.overflowed = self.stats.overflowed;
        s.send_errors = self.stats.send_errors;
        self.shared.publish(&s);
    }

    /// Applies the controller's requests; returns whether it asked for an
    /// interface refresh (done by the caller, which holds the sockets).
    fn apply_pending(&mut self, now: Instant) -> bool {
        let pending = std::mem::take(&mut *self.shared.lock());
        if let Some(data) = pending.data
            && let Err(e) = self.core.set_data(&data)
        {
            // The controller checks the limit first; this is a bug if seen.
            log::error!("beacon on port {}: {e}", self.cfg.port);
        }
        if let Some(period) = pending.period
            && let Err(e) = self.core.set_period(period, now)
        {
            // The controller checks the range first; this is a bug if seen.
            log::error!("beacon on port {}: {e}", self.cfg.port);
        }
        pending.refresh
    }

    fn refresh(&mut self, now: Instant, sock6: Option<&UdpSocket>) {
        let port = self.cfg.port;
        let list = match if_addrs::get_if_addrs() {
            Ok(l) => l,
            Err(e) => {
                log::warn!("beacon on port {port}: cannot list network interfaces: {e}");
                return;
            }
        };
        let new = interfaces::select(
            &list,
            self.cfg.interfaces.as_deref(),
            self.cfg.ipv4,
            self.cfg.ipv6,
        );
        let first = std::mem::replace(&mut self.first_refresh, false);
        if first && let Some(names) = &self.cfg.interfaces {
            for n in names {
                if !list.iter().any(|i| &i.name == n) {
                    log::warn!(
                        "beacon on port {port}: interface {n:?} does not exist (yet); \
                         it will be used if it appears"
                    );
                }
            }
        }
        if new == self.targets && !first {
            return;
        }
        if let Some(s) = sock6 {
            let want: BTreeSet<u32> = new.v6.iter().map(|t| t.index).collect();
            for t in &new.v6 {
                if self.joined.contains(&t.index) {
                    continue;
                }
                match s.join_multicast_v6(&self.cfg.group, t.index) {
                    Ok(()) => {
                        self.joined.insert(t.index);
                    }
                    Err(e) => log::warn!(
                        "beacon on port {port}: cannot join {} on {}: {e}",
                        self.cfg.group,
                        t.name
                    ),
                }
            }
            for idx in self.joined.clone() {
                if !want.contains(&idx) {
                    // The interface may be gone already, taking the membership.
                    let _ = s.leave_multicast_v6(&self.cfg.group, idx);
                    self.joined.remove(&idx);
                }
            }
        }
        let old_b = self.targets.broadcasts();
        let gained = new.broadcasts().iter().any(|b| !old_b.contains(b))
            || new
                .v6
                .iter()
                .any(|t| !self.targets.v6.iter().any(|o| o.index == t.index));
        let v4: Vec<String> = new
            .v4
            .iter()
            .map(|t| format!("{} ({})", t.broadcast, t.name))
            .collect();
        let v6: Vec<&str> = new.v6.iter().map(|t| t.name.as_str()).collect();
        if new.v4.is_empty() && new.v6.is_empty() {
            log::warn!(
                "beacon on port {port}: no usable interface is up{}; it sends when one comes up",
                match &self.cfg.interfaces {
                    Some(n) => format!(" among {n:?}"),
                    None => String::new(),
                }
            );
        } else {
            log::info!(
                "beacon on port {port}: broadcasting to [{}], multicasting to {} on {v6:?}",
                v4.join(", "),
                self.cfg.group
            );
        }
        self.targets = new;
        // Forget failures of destinations that are gone (bounded memory).
        let port = self.cfg.port;
        let current: BTreeSet<SocketAddr> =
            self.targets
                .broadcasts()
                .into_iter()
                .map(|b| SocketAddr::V4(SocketAddrV4::new(b, port)))
                .chain(
                    self.targets.v6.iter().map(|t| {
                        SocketAddr::V6(SocketAddrV6::new(self.cfg.group, port, 0, t.index))
                    }),
                )
                .collect();
        self.failing.retain(|d| current.contains(d));
        if gained && !first {
            self.core.restart_burst(now);
        }
    }

    async fn send_due(
        &mut self,
        now: Instant,
        sock4: Option<&UdpSocket>,
        sock6: Option<&UdpSocket>,
    ) {
        let port = self.cfg.port;
        while let Some(wire) = self.core.poll_transmit(now) {
            let wire = wire.to_vec();
            let mut dests: Vec<(SocketAddr, Option<&UdpSocket>)> = Vec::new();
            for b in self.targets.broadcasts() {
                dests.push((SocketAddr::V4(SocketAddrV4::new(b, port)), sock4));
            }
            for t in &self.targets.v6 {
                dests.push((
                    SocketAddr::V6(SocketAddrV6::new(self.cfg.group, port, 0, t.index)),
                    sock6,
                ));
            }
            for (dest, sock) in dests {
                let Some(sock) = sock else { continue };
                match sock.send_to(&wire, dest).await {
                    Ok(_) => {
                        if self.failing.remove(&dest) {
                            log::info!("beacon on port {port}: sending to {dest} works again");
                        }
                    }
                    Err(e) => {
                        self.stats.send_errors += 1;
                        if self.failing.insert(dest) {
                            log::warn!("beacon on port {port}: cannot send to {dest}: {e}");
                        } else {
                            log::debug!("beacon on port {port}: cannot send to {dest}: {e}");
                        }
                    }
                }
            }
            log::trace!(
                "beacon on port {port}: sent {} bytes (sends: {})",
                wire.len(),
                self.core.stats().sends
            );
        }
        self.publish();
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let port = self.cfg.port;
        if self.cfg.interfaces.is_some() && !self.targets.accepts(from) {
            self.stats.ignored += 1;
            log::trace!("beacon on port {port}: ignored datagram from {from} (other interface)");
            self.publish();
            return;
        }
        match self.core.handle_datagram(now, bytes) {
            Outcome::Message(p) => {
                log::trace!(
                    "beacon on port {port}: message of {} bytes from {from}",
                    p.data.len()
                );
                let msg = Message {
                    from,
                    id: p.id.to_vec(),
                    data: p.data.to_vec(),
                };
                // Counters first: a reader who gets this message sees them
                // already counting it.
                self.publish();
                match self.tx.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.stats.overflowed += 1;
                        log::debug!(
                            "beacon on port {port}: receive queue full, message from {from} lost"
                        );
                        self.publish();
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
                return;
            }
            Outcome::OwnEcho => {}
            Outcome::Dropped(e) => {
                log::debug!("beacon on port {port}: dropped datagram from {from}: {e}");
            }
        }
        self.publish();
    }
}

async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs the beacon until `shutdown` fires or its sender is dropped.
///
/// `sock4`/`sock6` must have been registered with the shared runtime.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    core: BeaconCore,
    cfg: DriverConfig,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Message>,
    sock4: Option<UdpSocket>,
    sock6: Option<UdpSocket>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let _guard = CloseGuard(shared.clone());
    let port = cfg.port;
    let refresh = cfg.refresh;
    let mut st = State {
        core,
        cfg,
        shared: shared.clone(),
        tx,
        targets: Targets::default(),
        joined: BTreeSet::new(),
        failing: BTreeSet::new(),
        stats: Stats::default(),
        first_refresh: true,
    };
    let (s4, s6) = (sock4.as_ref(), sock6.as_ref());
    st.refresh(now(), s6);
    let refresh = refresh.min(crate::core::MAX_PERIOD);
    let mut next_refresh = tokio::time::Instant::now() + refresh;
    // One byte more than the largest beacon, to see oversized datagrams.
    let mut buf4 = vec![0u8; MAX_PACKET_LEN + 1];
    let mut buf6 = vec![0u8; MAX_PACKET_LEN + 1];
    log::debug!("beacon on port {port}: started");
    loop {
        let deadline = tokio::time::Instant::from_std(st.core.poll_timeout());
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            () = shared.wake.notified() => {
                if shared.is_closed() {
                    break;
                }
                if st.apply_pending(now()) {
                    st.refresh(now(), s6);
                    // Announce at once: the addresses (and the data) may
                    // have just changed.
                    st.core.restart_burst(now());
                    next_refresh = tokio::time::Instant::now() + refresh;
                }
            }
            r = recv(s4, &mut buf4) => match r {
                Ok((n, from)) => st.on_datagram(now(), from, &buf4[..n]),
                Err(e) => recv_error(port, "IPv4", e).await,
            },
            r = recv(s6, &mut buf6) => match r {
                Ok((n, from)) => st.on_datagram(now(), from, &buf6[..n]),
                Err(e) => recv_error(port, "IPv6", e).await,
            },
            () = tokio::time::sleep_until(deadline) => st.send_due(now(), s4, s6).await,
            () = tokio::time::sleep_until(next_refresh) => {
                st.refresh(now(), s6);
                next_refresh = tokio::time::Instant::now() + refresh;
            }
        }
    }
    log::debug!("beacon on port {port}: stopped");
}

async fn recv_error(port: u16, family: &str, e: io::Error) {
    // UDP receive errors are transient (ICMP reports, interrupted calls); pause
    // a little so a persistent one cannot spin the task.
    log::debug!("beacon on port {port}: {family} receive error: {e}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
