//! LAN peer discovery by UDP broadcast and IPv6 link-local multicast.
//!
//! A [`Beacon`] sends a short message (`id || data`) every `period` to every
//! up IPv4 interface's broadcast address and to an IPv6 link-local multicast
//! group on every IPv6 interface, and hands you what other beacons on the same
//! port send. Its `id` is random and fixed for its life, so it never hears
//! itself. Use it to find copies of your program on the local network; crust
//! puts its listening endpoints in `data`.
//!
//! ```no_run
//! # // no_run: it broadcasts on every interface and waits for a peer.
//! use std::time::Duration;
//!
//! let (mut beacon, controller) =
//!     beacon::Beacon::new(5483, 8, b"tcp://192.0.2.7:5483", Duration::from_secs(1))?;
//! let mut buf = Vec::new();
//! let from = beacon.next_message(&mut buf)?;
//! println!("{from} says {}", String::from_utf8_lossy(&buf));
//! controller.set_data(b"tcp://192.0.2.7:6000")?;
//! # Ok::<(), beacon::Error>(())
//! ```
//!
//! # Contents
//!
//! - [`Beacon`], [`BeaconController`]: the blocking API. [`Beacon::builder`]
//!   gives the options: the interfaces to use (tests use `lo` only), IPv4 and
//!   IPv6 on or off, the multicast group, how often interfaces are re-read.
//! - [`aio`]: the same beacon for async (tokio) code.
//! - [`core`]: the sans-IO state machine (send schedule, echo filter), and
//!   [`packet`]: the wire format. No sockets, no clock: use them to run a
//!   beacon over your own I/O, or to test.
//!
//! # How it works
//!
//! - **Sockets.** One IPv4 socket bound to `0.0.0.0:port` with `SO_BROADCAST`,
//!   one IPv6 socket bound to `[::]:port` joined to the group (default
//!   [`DEFAULT_MULTICAST_GROUP`], `ff02::114`) on each interface; both with
//!   `SO_REUSEADDR` and `SO_REUSEPORT`, so any number of beacons, in one
//!   process or many, share a port on one host and all hear every message.
//!   On `lo` (which cannot multicast), IPv4 broadcast to 127.255.255.255
//!   reaches every beacon on the host.
//! - **Interfaces** are read with `if-addrs` at start and every
//!   [`BeaconBuilder::interface_refresh`] (default 5 s): an interface that
//!   comes up later is used from then on, with a fresh burst of sends.
//! - **Timing.** A burst at start (sends at 0, 50, 150 and 350 ms), then one
//!   send per period; a beacon that hears a new id answers within 20 ms (at
//!   most one answer per 100 ms), so a newcomer finds the beacons already
//!   running in about a round trip, not in a period: 11 to 14 ms median from
//!   start to first message in the network lab, against up to a period
//!   without answers. See [`core`].
//! - **One task, no thread**: each beacon is a task on the shared crust
//!   runtime ([`crust_runtime`]). Dropping a [`Beacon`] ends the task and
//!   closes its sockets before `drop` returns (from an ordinary thread; from a
//!   runtime thread it signals and returns at once, and the task ends right
//!   after). The [`BeaconController`] then returns
//!   [`std::io::ErrorKind::NotConnected`].
//! - **Bad input** (other programs' datagrams on the port, truncated or
//!   oversized ones) is dropped and counted ([`Beacon::dropped`]), never
//!   returned and never a panic. Received messages wait in a bounded queue
//!   ([`BeaconBuilder::queue_len`]); when it is full, new ones are counted in
//!   [`Stats::overflowed`] and lost.
//! - **A restricted beacon** (given [`BeaconBuilder::interfaces`]) sends only
//!   on those interfaces and ignores datagrams whose source is not on them
//!   (IPv4 subnet, IPv6 link scope or prefix).
//! - A message reaches a beacon once per path: a peer heard over IPv4 and
//!   IPv6 shows up twice, with both addresses.
//!
//! # Limits
//!
//! `data` is at most [`MAX_DATA_LEN`] (1024) bytes and the id at most
//! [`MAX_ID_BYTES`] (64), so a beacon datagram is at most 1094 bytes and is
//! never fragmented.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod aio;
pub mod core;
mod driver;
mod error;
mod interfaces;
pub mod packet;

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, oneshot};

pub use crate::core::{MAX_PERIOD, Stats};
use crate::driver::{DriverConfig, Shared};
pub use crate::error::{ConfigError, Error, Result};
pub use crate::packet::{MAX_DATA_LEN, MAX_ID_BYTES};

/// The IPv6 multicast group beacons use unless told otherwise: `ff02::114`,
/// link-local scope, from the IANA block "any private experiment".
pub const DEFAULT_MULTICAST_GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x114);

/// The default id length, in bytes.
pub const DEFAULT_ID_BYTES: usize = 8;

/// The default time between sends.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(1);

/// The default time between two readings of the interface list.
pub const DEFAULT_INTERFACE_REFRESH: Duration = Duration::from_secs(5);

/// The default number of received messages kept until read.
pub const DEFAULT_QUEUE_LEN: usize = 256;

/// A message from another beacon.
///
/// ```
/// let m = beacon::Message {
///     from: "192.0.2.1:5483".parse().unwrap(),
///     id: vec![1, 2, 3, 4, 5, 6, 7, 8],
///     data: b"hi".to_vec(),
/// };
/// assert_eq!(m.data, b"hi");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender's address (with the interface as scope id for IPv6
    /// link-local senders).
    pub from: SocketAddr,
    /// The sender's id: tells apart beacons that share an address (all
    /// beacons on one host send from the same port).
    pub id: Vec<u8>,
    /// Its data (what came after its id).
    pub data: Vec<u8>,
}

/// Options for a beacon. Start with [`Beacon::builder`].
///
/// ```no_run
/// # // no_run: it sends on the loopback interface.
/// use std::time::Duration;
///
/// let (beacon, controller) = beacon::Beacon::builder(5483)
///     .id_bytes(16)
///     .data(b"hello")
///     .period(Duration::from_millis(500))
///     .interfaces(["lo"]) // only this interface (tests must do this)
///     .ipv6(false)
///     .build()?;
/// # Ok::<(), beacon::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BeaconBuilder {
    port: u16,
    id_bytes: usize,
    data: Vec<u8>,
    period: Duration,
    interfaces: Option<Vec<String>>,
    ipv4: bool,
    ipv6: bool,
    group: Ipv6Addr,
    refresh: Duration,
    queue_len: usize,
    answer_new_peers: bool,
}

impl BeaconBuilder {
    /// Options for a beacon on `port`, with the defaults: an
    /// [`DEFAULT_ID_BYTES`]-byte id, empty data, [`DEFAULT_PERIOD`], all
    /// interfaces, IPv4 and IPv6.
    ///
    /// ```
    /// let b = beacon::BeaconBuilder::new(5483);
    /// ```
    pub fn new(port: u16) -> Self {
        BeaconBuilder {
            port,
            id_bytes: DEFAULT_ID_BYTES,
            data: Vec::new(),
            period: DEFAULT_PERIOD,
            interfaces: None,
            ipv4: true,
            ipv6: true,
            group: DEFAULT_MULTICAST_GROUP,
            refresh: DEFAULT_INTERFACE_REFRESH,
            queue_len: DEFAULT_QUEUE_LEN,
            answer_new_peers: true,
        }
    }

    /// The id length in bytes, 0 to [`MAX_ID_BYTES`]. With 0 the beacon cannot
    /// tell its own messages and returns them too: filter them yourself.
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).id_bytes(16);
    /// ```
    pub fn id_bytes(mut self, n: usize) -> Self {
        self.id_bytes = n;
        self
    }

    /// The data to send, at most [`MAX_DATA_LEN`] bytes.
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).data("tcp://192.0.2.7:5483");
    /// ```
    pub fn data<D: AsRef<[u8]>>(mut self, data: D) -> Self {
        self.data = data.as_ref().to_vec();
        self
    }

    /// The time between sends (after the start-up burst). Above zero, at
    /// most [`MAX_PERIOD`] (a day).
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).period(std::time::Duration::from_secs(2));
    /// ```
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// Uses only the interfaces with these names (as `ip link` shows them):
    /// sends only there, and ignores datagrams from elsewhere. Names that do
    /// not exist yet are used once they appear.
    ///
    /// Tests and CI outside network namespaces must restrict beacons to `lo`.
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).interfaces(["lo"]);
    /// ```
    pub fn interfaces<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.interfaces = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Uses every interface (the default).
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).interfaces(["lo"]).all_interfaces();
    /// ```
    pub fn all_interfaces(mut self) -> Self {
        self.interfaces = None;
        self
    }

    /// IPv4 broadcast on or off (default on).
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).ipv4(false);
    /// ```
    pub fn ipv4(mut self, on: bool) -> Self {
        self.ipv4 = on;
        self
    }

    /// IPv6 multicast on or off (default on). If IPv6 is on but the host has
    /// no IPv6 at all, the beacon runs on IPv4 alone (with a warning).
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).ipv6(false);
    /// ```
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }

    /// The IPv6 multicast group (default [`DEFAULT_MULTICAST_GROUP`]). Use a
    /// link-local (`ff02::/16`) group: beacons are for the local link.
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).multicast_group("ff02::115".parse().unwrap());
    /// ```
    pub fn multicast_group(mut self, group: Ipv6Addr) -> Self {
        self.group = group;
        self
    }

    /// How often the interface list is re-read (default
    /// [`DEFAULT_INTERFACE_REFRESH`]). Above zero, at most [`MAX_PERIOD`].
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).interface_refresh(std::time::Duration::from_secs(1));
    /// ```
    pub fn interface_refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// How many received messages are kept until read (default
    /// [`DEFAULT_QUEUE_LEN`], at least 1).
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).queue_len(16);
    /// ```
    pub fn queue_len(mut self, n: usize) -> Self {
        self.queue_len = n;
        self
    }

    /// Whether to answer a newly heard beacon at once rather than at the next
    /// periodic send (default on; see [`core`]).
    ///
    /// ```
    /// let b = beacon::Beacon::builder(5483).answer_new_peers(false);
    /// ```
    pub fn answer_new_peers(mut self, on: bool) -> Self {
        self.answer_new_peers = on;
        self
    }

    fn check(&self) -> Result<()> {
        let bad = |e: ConfigError| Err(Error::Config(e));
        if self.port == 0 {
            return bad(ConfigError::PortZero);
        }
        if self.id_bytes > MAX_ID_BYTES {
            return bad(ConfigError::IdTooLong(self.id_bytes));
        }
        if self.data.len() > MAX_DATA_LEN {
            return Err(Error::DataTooLong {
                len: self.data.len(),
            });
        }
        check_period("period", self.period)?;
        check_period("interface_refresh", self.refresh)?;
        if self.queue_len == 0 {
            return bad(ConfigError::QueueLenZero);
        }
        if !self.ipv4 && !self.ipv6 {
            return bad(ConfigError::NoFamily);
        }
        if matches!(&self.interfaces, Some(v) if v.is_empty()) {
            return bad(ConfigError::NoInterfaces);
        }
        if !self.group.is_multicast() {
            return bad(ConfigError::NotMulticast(self.group));
        }
        Ok(())
    }

    /// Starts the beacon, blocking face.
    ///
    /// # Errors
    ///
    /// [`std::io::ErrorKind::InvalidInput`] for an option out of range (the message
    /// names it and its limit); the operating system's error, naming the
    /// address, if the port cannot be bound (for example, another program
    /// holds it without `SO_REUSEPORT`).
    ///
    /// ```no_run
    /// let (beacon, controller) = beacon::Beacon::builder(5483).interfaces(["lo"]).build()?;
    /// # Ok::<(), beacon::Error>(())
    /// ```
    pub fn build(self) -> Result<(Beacon, BeaconController)> {
        let (inner, ctl) = self.build_async()?;
        Ok((Beacon { inner }, ctl))
    }

    /// Starts the beacon, async face ([`aio::Beacon`]). Can be called from any
    /// thread, inside a runtime or not.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    ///
    /// ```no_run
    /// let (beacon, controller) = beacon::Beacon::builder(5483).interfaces(["lo"]).build_async()?;
    /// # Ok::<(), beacon::Error>(())
    /// ```
    pub fn build_async(self) -> Result<(aio::Beacon, BeaconController)> {
        self.check()?;
        let mut id = vec![0u8; self.id_bytes];
        rand::rng().fill_bytes(&mut id);
        let v4 = if self.ipv4 {
            Some(driver::bind_v4(self.port)?)
        } else {
            None
        };
        let v6 = if self.ipv6 {
            match driver::bind_v6(self.port) {
                Ok(s) => Some(s),
                Err(e) if v4.is_some() => {
                    log::warn!("{e}; the beacon runs on IPv4 only");
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let now = tokio::time::Instant::now().into_std();
        let core_cfg = core::CoreConfig::new(self.period)
            .seeded(rand::rng().next_u64())
            .answering(self.answer_new_peers);
        let core = core::BeaconCore::new(core_cfg, id.clone(), &self.data, now)?;
        let shared = Arc::new(Shared::new(self.port, id));
        let cfg = DriverConfig {
            port: self.port,
            interfaces: self.interfaces,
            ipv4: self.ipv4,
            ipv6: self.ipv6,
            group: self.group,
            refresh: self.refresh,
        };
        let rt = crust_runtime::handle();
        let (sock4, sock6) = {
            let _enter = rt.enter();
            let sock4 = v4.map(tokio::net::UdpSocket::from_std).transpose();
            let sock6 = v6.map(tokio::net::UdpSocket::from_std).transpose();
            (sock4, sock6)
        };
        let register = |source| Error::Io {
            context: "registering the beacon's sockets with the runtime",
            source,
        };
        let (sock4, sock6) = (sock4.map_err(register)?, sock6.map_err(register)?);
        let (tx, rx) = mpsc::channel(self.queue_len);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task = rt.spawn(driver::run(
            core,
            cfg,
            shared.clone(),
            tx,
            sock4,
            sock6,
            shutdown_rx,
        ));
        let beacon = aio::Beacon {
            rx,
            shutdown: Some(shutdown_tx),
            task: Some(task),
            shared: shared.clone(),
        };
        Ok((beacon, BeaconController { shared }))
    }
}

fn check_period(what: &'static str, value: Duration) -> Result<()> {
    if value.is_zero() || value > MAX_PERIOD {
        return Err(Error::PeriodOutOfRange { what, value });
    }
    Ok(())
}

/// A running beacon: sends `id || data` every period and receives other
/// beacons' messages. See the [crate docs](crate).
///
/// Drop it to stop it: its task ends and its sockets are closed before `drop`
/// returns (when dropped on an ordinary thread; on a runtime thread, right
/// after).
#[derive(Debug)]
pub struct Beacon {
    inner: aio::Beacon,
}

/// How long `drop` waits for the task to end before giving up (a hang guard:
/// the task ends within one scheduling round).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

impl Beacon {
    /// Starts a beacon on `port` on every interface, sending `data` after a
    /// random id of `id_bytes` bytes every `period`. For more options (and to
    /// restrict interfaces), use [`Beacon::builder`].
    ///
    /// # Errors
    ///
    /// [`std::io::ErrorKind::InvalidInput`] if `data` is over [`MAX_DATA_LEN`] bytes,
    /// `id_bytes` over [`MAX_ID_BYTES`], `period` zero or `port` 0; the
    /// operating system's error if the port cannot be bound.
    ///
    /// ```no_run
    /// # // no_run: broadcasts on every interface.
    /// use std::time::Duration;
    /// let (beacon, controller) = beacon::Beacon::new(5483, 8, b"hi", Duration::from_secs(1))?;
    /// # Ok::<(), beacon::Error>(())
    /// ```
    ///
    /// Oversized data is refused before anything is sent (shown with the
    /// builder restricted to `lo`, as tests must be; `new` checks the same):
    ///
    /// ```
    /// let err = beacon::Beacon::builder(5483)
    ///     .interfaces(["lo"])
    ///     .data(vec![0; 2000])
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// assert!(err.to_string().contains("1024"));
    /// ```
    pub fn new<D: AsRef<[u8]>>(
        port: u16,
        id_bytes: usize,
        data: D,
        period: Duration,
    ) -> Result<(Beacon, BeaconController)> {
        BeaconBuilder::new(port)
            .id_bytes(id_bytes)
            .data(data)
            .period(period)
            .build()
    }

    /// Options for a beacon on `port`: see [`BeaconBuilder`].
    ///
    /// ```no_run
    /// let (beacon, controller) = beacon::Beacon::builder(5483)
    ///     .data(b"hello")
    ///     .interfaces(["lo"])
    ///     .build()?;
    /// # Ok::<(), beacon::Error>(())
    /// ```
    pub fn builder(port: u16) -> BeaconBuilder {
        BeaconBuilder::new(port)
    }

    /// Blocks until a message from another beacon arrives; puts its data in
    /// `buf` (replacing what was there) and returns the sender's address.
    ///
    /// # Errors
    ///
    /// [`std::io::ErrorKind::Unsupported`] if called from inside a current-thread
    /// tokio runtime (use [`aio`]); an error if the beacon's task has stopped
    /// (a bug).
    ///
    /// ```no_run
    /// # fn f(beacon: &mut beacon::Beacon) -> beacon::Result<()> {
    /// let mut buf = Vec::new();
    /// let from = beacon.next_message(&mut buf)?;
    /// println!("{from}: {}", String::from_utf8_lossy(&buf));
    /// # Ok(()) }
    /// ```
    pub fn next_message(&mut self, buf: &mut Vec<u8>) -> Result<SocketAddr> {
        crust_runtime::block_on(self.inner.next_message(buf)).map_err(Error::runtime)?
    }

    /// Like [`next_message`](Self::next_message), but gives up after
    /// `timeout` with [`std::io::ErrorKind::TimedOut`].
    ///
    /// # Errors
    ///
    /// As [`next_message`](Self::next_message), plus the timeout.
    ///
    /// ```no_run
    /// # fn f(beacon: &mut beacon::Beacon) -> beacon::Result<()> {
    /// use std::time::Duration;
    /// let mut buf = Vec::new();
    /// match beacon.next_message_timeout(&mut buf, Duration::from_secs(3)) {
    ///     Ok(from) => println!("found {from}"),
    ///     Err(e) if e.kind() == std::io::ErrorKind::TimedOut => println!("nobody here"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn next_message_timeout(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<SocketAddr> {
        crust_runtime::block_on(async {
            tokio::time::timeout(timeout, self.inner.next_message(buf)).await
        })
        .map_err(Error::runtime)?
        .map_err(|_| Error::TimedOut { after: timeout })?
    }

    /// Blocks until a message from another beacon arrives and returns it
    /// whole (sender, id and data).
    ///
    /// # Errors
    ///
    /// As [`next_message`](Self::next_message).
    ///
    /// ```no_run
    /// # fn f(beacon: &mut beacon::Beacon) -> beacon::Result<()> {
    /// let msg = beacon.recv()?;
    /// println!("{} (id {:02x?}): {:?}", msg.from, msg.id, msg.data);
    /// # Ok(()) }
    /// ```
    pub fn recv(&mut self) -> Result<Message> {
        crust_runtime::block_on(self.inner.recv()).map_err(Error::runtime)?
    }

    /// Like [`recv`](Self::recv), but gives up after `timeout` with
    /// [`std::io::ErrorKind::TimedOut`].
    ///
    /// # Errors
    ///
    /// As [`next_message_timeout`](Self::next_message_timeout).
    ///
    /// ```no_run
    /// # fn f(beacon: &mut beacon::Beacon) -> beacon::Result<()> {
    /// let msg = beacon.recv_timeout(std::time::Duration::from_secs(3))?;
    /// # Ok(()) }
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message> {
        crust_runtime::block_on(async { tokio::time::timeout(timeout, self.inner.recv()).await })
            .map_err(Error::runtime)?
            .map_err(|_| Error::TimedOut { after: timeout })?
    }

    /// The next message if one is queued, without blocking.
    ///
    /// # Errors
    ///
    /// If the beacon's task has stopped (a bug).
    ///
    /// ```no_run
    /// # fn f(beacon: &mut beacon::Beacon) -> beacon::Result<()> {
    /// while let Some(msg) = beacon.try_next_message()? {
    ///     println!("{}", msg.from);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_next_message(&mut self) -> Result<Option<Message>> {
        self.inner.try_recv()
    }

    /// An endless blocking iterator over other beacons' messages.
    ///
    /// ```no_run
    /// # fn f(beacon: &mut beacon::Beacon) -> beacon::Result<()> {
    /// for msg in beacon.messages().take(3) {
    ///     let msg = msg?;
    ///     println!("{}: {:?}", msg.from, msg.data);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn messages(&mut self) -> Messages<'_> {
        Messages { beacon: self }
    }

    /// This beacon's id (random, fixed for its life).
    ///
    /// ```no_run
    /// # fn f(beacon: &beacon::Beacon) {
    /// println!("I am {:02x?}", beacon.id());
    /// # }
    /// ```
    pub fn id(&self) -> &[u8] {
        self.inner.id()
    }

    /// The UDP port it listens and sends on.
    ///
    /// ```no_run
    /// # fn f(beacon: &beacon::Beacon) {
    /// println!("port {}", beacon.port());
    /// # }
    /// ```
    pub fn port(&self) -> u16 {
        self.inner.port()
    }

    /// How many datagrams were dropped as malformed, truncated, oversized or
    /// foreign.
    ///
    /// ```no_run
    /// # fn f(beacon: &beacon::Beacon) {
    /// println!("{} bad datagrams", beacon.dropped());
    /// # }
    /// ```
    pub fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    /// All counters.
    ///
    /// ```no_run
    /// # fn f(beacon: &beacon::Beacon) {
    /// println!("{:?}", beacon.stats());
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }
}

impl Drop for Beacon {
    fn drop(&mut self) {
        let Some(task) = self.inner.stop() else {
            return;
        };
        // The task has been signalled; wait for it to close its sockets.
        let port = self.inner.port();
        crust_runtime::finish_in_drop("closing a beacon", Some(CLOSE_WAIT), async move {
            match task.await {
                Ok(()) => log::debug!("beacon on port {port}: closed"),
                Err(e) => log::error!("beacon on port {port}: task failed: {e}"),
            }
        });
    }
}

/// The blocking iterator returned by [`Beacon::messages`]. It never ends by
/// itself; each item is a message or the error that
/// [`Beacon::next_message`] would return.
///
/// ```no_run
/// # fn f(beacon: &mut beacon::Beacon) {
/// let first: Option<beacon::Result<beacon::Message>> = beacon.messages().next();
/// # }
/// ```
#[derive(Debug)]
pub struct Messages<'a> {
    beacon: &'a mut Beacon,
}

impl Iterator for Messages<'_> {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(
            crust_runtime::block_on(self.beacon.inner.recv())
                .map_err(Error::runtime)
                .and_then(|r| r),
        )
    }
}

/// Changes what a running [`Beacon`] sends and how often. Cheap to clone;
/// usable from any thread.
///
/// Once the beacon is dropped, every call returns
/// [`std::io::ErrorKind::NotConnected`].
///
/// ```no_run
/// use std::time::Duration;
/// let (beacon, controller) = beacon::Beacon::builder(5483).interfaces(["lo"]).build()?;
/// controller.set_data(b"new data")?;
/// controller.set_period(Duration::from_secs(10))?;
/// drop(beacon);
/// assert!(controller.set_data(b"late").is_err());
/// # Ok::<(), beacon::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BeaconController {
    shared: Arc<Shared>,
}

impl BeaconController {
    /// Replaces the data; the next send carries it.
    ///
    /// # Errors
    ///
    /// [`std::io::ErrorKind::InvalidInput`] if `data` is over [`MAX_DATA_LEN`]
    /// bytes; [`std::io::ErrorKind::NotConnected`] if the beacon has been dropped.
    ///
    /// ```no_run
    /// # fn f(controller: &beacon::BeaconController) -> beacon::Result<()> {
    /// controller.set_data("tcp://192.0.2.7:6000")?;
    /// # Ok(()) }
    /// ```
    pub fn set_data<D: AsRef<[u8]>>(&self, data: D) -> Result<()> {
        let data = data.as_ref();
        if data.len() > MAX_DATA_LEN {
            return Err(Error::DataTooLong { len: data.len() });
        }
        self.shared.set_data(data.to_vec())
    }

    /// Replaces the period; the next periodic send is one new period after
    /// the last one (at once if that is past).
    ///
    /// # Errors
    ///
    /// [`std::io::ErrorKind::InvalidInput`] if `period` is zero or over
    /// [`MAX_PERIOD`];
    /// [`std::io::ErrorKind::NotConnected`] if the beacon has been dropped.
    ///
    /// ```no_run
    /// # fn f(controller: &beacon::BeaconController) -> beacon::Result<()> {
    /// controller.set_period(std::time::Duration::from_secs(30))?;
    /// # Ok(()) }
    /// ```
    pub fn set_period(&self, period: Duration) -> Result<()> {
        check_period("period", period)?;
        self.shared.set_period(period)
    }

    /// Re-reads the interface list now (rather than at the next
    /// [`BeaconBuilder::interface_refresh`]) and announces at once with a
    /// fresh burst: call it when the host's addresses changed, so the
    /// beacon follows the new interfaces (within its
    /// [`interfaces`](BeaconBuilder::interfaces) restriction) and peers hear
    /// the current data without waiting a period.
    ///
    /// # Errors
    ///
    /// [`std::io::ErrorKind::NotConnected`] if the beacon has been dropped.
    ///
    /// ```no_run
    /// # fn f(controller: &beacon::BeaconController) -> beacon::Result<()> {
    /// controller.set_data("tcp://198.51.100.9:6000")?;
    /// controller.refresh_interfaces()?;
    /// # Ok(()) }
    /// ```
    pub fn refresh_interfaces(&self) -> Result<()> {
        self.shared.refresh_interfaces()
    }

    /// Whether the beacon still runs (it has not been dropped).
    ///
    /// ```no_run
    /// # fn f(controller: &beacon::BeaconController) {
    /// if !controller.is_running() { println!("beacon gone"); }
    /// # }
    /// ```
    pub fn is_running(&self) -> bool {
        !self.shared.is_closed()
    }

    /// The beacon's id.
    ///
    /// ```no_run
    /// # fn f(controller: &beacon::BeaconController) {
    /// println!("{:02x?}", controller.id());
    /// # }
    /// ```
    pub fn id(&self) -> &[u8] {
        &self.shared.id
    }
}
