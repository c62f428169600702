//! The service: listeners, beacon, connects, limits and the heartbeat task.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nat_traversal::aio::StunServer;
use nat_traversal::{HolePunchServerAddr, MappedUdpSocket, MappingContext, MappingOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use transport::wire::RejectCode;
use transport::{Endpoint, Identity, ListenEndpoint, ListenerOptions, PublicKey};

use crate::cache::{CacheStore, EndpointCache};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::proto::{self, BeaconPayload, CRUST_VERSION, Frame, Hello};
use crate::stream::{Inner, Stream, StreamSettings, lock};

/// How many recently heard beacon endpoints bootstrap may try.
const HEARD_KEPT: usize = 64;
/// How many bootstrap attempts run at once (one that never answers does not
/// hold up the next: they start every [`BOOTSTRAP_SPACING`] until this many
/// are in flight).
const BOOTSTRAP_PARALLEL: usize = 32;
/// The least time between two bootstrap dials: a cache or beacon full of
/// addresses never turns us into a flood.
const BOOTSTRAP_SPACING: Duration = Duration::from_millis(20);
/// How many peers heard by the beacon while a bootstrap runs it may add to
/// what it tries.
const BOOTSTRAP_MAX_HEARD: usize = 4 * HEARD_KEPT;

/// How many beacon-found endpoints wait for
/// [`ServiceBeaconReceiver::next`]; more are dropped and counted.
const BEACON_QUEUE: usize = 256;

/// A running crust service: a struct of public parts that can be moved to
/// where each is used. Dropping all four shuts the service down: its
/// listeners, beacon, STUN server and tasks stop and their sockets close.
/// Streams already open stay usable (and keep their heartbeats) until they
/// are dropped.
///
/// ```
/// use crust::{Config, Service};
///
/// // Loopback only, a fresh identity: sends nothing off `lo`.
/// let config = Config::loopback().network_name("doc-service").beacon_port(50_321);
/// let a = Service::new_from_config(config.clone())?;
/// let b = Service::new_from_config(config)?;
/// let endpoint = a.controller.accepting_endpoints()[0].known_endpoints()[0].endpoint;
/// let s = b.controller.connect(&endpoint)?;
/// s.send(b"ping")?;
/// let t = a.acceptor.accept()?;
/// assert_eq!(t.recv()?, b"ping");
/// assert_eq!(t.peer_public_key(), b.controller.public_key());
/// # Ok::<(), crust::Error>(())
/// ```
#[derive(Debug)]
pub struct Service {
    /// Accepts incoming connections.
    pub acceptor: ServiceListener,
    /// Turns the LAN beacon on and off.
    pub beacon_state: ServiceBeaconState,
    /// Yields the endpoints that peers of our network announce on the LAN.
    pub beacon_receiver: ServiceBeaconReceiver,
    /// Everything else: connect, listeners, hole punching.
    pub controller: ServiceController,
}

/// Counts of live connections, for the limits, and the live streams, for
/// the network-change driver.
#[derive(Default)]
pub(crate) struct Counters {
    state: Mutex<CountState>,
    pub(crate) live: crate::netwatch::LiveStreams,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct CountState {
    inbound: usize,
    per_key: HashMap<PublicKey, usize>,
}

/// Holds one connection's place in the [`Counters`]; gives it back on drop.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    pub(crate) counters: Arc<Counters>,
    key: PublicKey,
    inbound: bool,
}

impl Counters {
    /// Takes a place, or says which limit is reached.
    fn acquire(
        self: &Arc<Self>,
        key: PublicKey,
        inbound: bool,
        max_inbound: usize,
        max_per_peer: usize,
    ) -> std::result::Result<ConnGuard, String> {
        let mut st = lock(&self.state);
        if inbound && st.inbound >= max_inbound {
            return Err(format!("{max_inbound} inbound connections (max_inbound)"));
        }
        let n = st.per_key.get(&key).copied().unwrap_or(0);
        if n >= max_per_peer {
            return Err(format!(
                "{max_per_peer} connections with this key (max_per_peer)"
            ));
        }
        st.per_key.insert(key, n + 1);
        if inbound {
            st.inbound += 1;
        }
        Ok(ConnGuard {
            counters: self.clone(),
            key,
            inbound,
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut st = lock(&self.counters.state);
        if self.inbound {
            st.inbound -= 1;
        }
        if let Some(n) = st.per_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                st.per_key.remove(&self.key);
            }
        }
    }
}

/// The streams whose heartbeats one timer task keeps. The task holds only a
/// weak reference: it ends once the service and all its streams are gone.
#[derive(Default)]
pub(crate) struct Heart {
    streams: Mutex<Vec<Weak<Inner>>>,
}

impl Heart {
    fn start(tick: Duration) -> Arc<Heart> {
        let heart = Arc::new(Heart::default());
        let weak = Arc::downgrade(&heart);
        crust_runtime::handle().spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(heart) = weak.upgrade() else { break };
                let now = Instant::now();
                let mut streams = lock(&heart.streams);
                streams.retain(|w| w.upgrade().is_some_and(|s| s.tick(now)));
            }
        });
        heart
    }

    fn register(&self, s: &Arc<Inner>) {
        lock(&self.streams).push(Arc::downgrade(s));
    }
}

/// What the accept tasks and connects need; shared by every part.
pub(crate) struct Shared {
    config: Config,
    identity: Identity,
    flavor: Flavor,
    pub(crate) counters: Arc<Counters>,
    heart: Arc<Heart>,
    listeners: Mutex<Vec<ListenerEntry>>,
    incoming_tx: mpsc::Sender<Accepted>,
    mapping: MappingContext,
    stun: StunServer,
    beacon: Mutex<BeaconRun>,
    beacon_tx: mpsc::Sender<Endpoint>,
    beacon_stats: Arc<BeaconStats>,
    /// Our hello as it stands (the listeners change).
    hello: Arc<Mutex<Hello>>,
    /// The bootstrap cache in memory, and its file.
    cache: Mutex<EndpointCache>,
    cache_store: CacheStore,
    /// Serialises cache file writes, so the last write is the newest list.
    cache_save: Mutex<()>,
    /// What went wrong opening the cache, for the caller.
    cache_warning: Option<String>,
    /// Recently heard beacon endpoints, for bootstrap.
    heard: Arc<Mutex<VecDeque<Endpoint>>>,
    /// Counts additions to `heard`, so a running bootstrap learns of
    /// peers heard after it started.
    heard_version: Arc<tokio::sync::watch::Sender<u64>>,
    /// The host's addresses as last read, and the network-change rules.
    pub(crate) netwatch: Mutex<crate::netwatch::NetWatch>,
    /// Network-change events for [`ServiceController::endpoints_changed`].
    pub(crate) changes: tokio::sync::broadcast::Sender<crate::netwatch::NetworkChange>,
    next_listener_id: AtomicU64,
}

struct ListenerEntry {
    id: u64,
    asked: ListenEndpoint,
    listener: Arc<transport::aio::Listener>,
    /// Its accepting endpoints, re-derived when the host's addresses change.
    endpoints: Vec<Endpoint>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct BeaconRun {
    running: Option<(beacon::BeaconController, JoinHandle<()>)>,
    period: Option<Duration>,
}

/// Beacon messages the service did not pass on.
#[derive(Debug, Default)]
struct BeaconStats {
    malformed: AtomicU64,
    other_network: AtomicU64,
    dropped: AtomicU64,
}

/// Stops listeners: their accept tasks end, then (from an ordinary thread)
/// their sockets are closed before this returns.
fn close_listeners(entries: Vec<ListenerEntry>) {
    for e in &entries {
        e.task.abort();
    }
    let close = move || {
        for ListenerEntry { listener, task, .. } in entries {
            // The task holds a reference to the listener: wait until it let
            // go, so the drop below is the last and closes the sockets.
            let _ = crust_runtime::handle().block_on(task);
            drop(listener);
        }
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        // The last reference went on a runtime worker (a task of the
        // service's own), which must not block: an ordinary thread waits.
        std::thread::spawn(close);
    } else {
        close();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        close_listeners(std::mem::take(&mut *lock(&self.listeners)));
        if let Some((_, task)) = lock(&self.beacon).running.take() {
            task.abort();
        }
        log::info!("crust service {} shut down", self.identity.public_key());
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("public_key", &self.identity.public_key())
            .field("network", &self.config.network_name)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts a service from the default config file ([`Config::from_default_location`])
    /// or, with none, the defaults: TCP and uTP listeners on ephemeral ports
    /// of every interface, the beacon on, network `"crust"`, and the identity
    /// in the per-user data directory (created with owner-only permissions on
    /// first run, so the endpoints keep their key across restarts).
    ///
    /// Set `CRUST_CONFIG` to name a config file and `CRUST_DATA_DIR` to keep
    /// the identity elsewhere (two services of one user on one host need two
    /// identities).
    ///
    /// # Errors
    ///
    /// As [`new_from_config`](Service::new_from_config), and the config
    /// file's errors.
    pub fn new() -> Result<Service> {
        Service::new_from_config(Config::from_default_location()?)
    }

    /// Starts a service with `config`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid config; [`Error::Transport`] when a
    /// listen endpoint cannot be bound or the identity file cannot be read
    /// or written (it names the file); [`Error::Io`] when the beacon port
    /// cannot be bound.
    pub fn new_from_config(config: Config) -> Result<Service> {
        let (shared, incoming_rx, beacon_rx) =
            crust_runtime::block_on(Shared::start(config, Flavor::Blocking))
                .map_err(|e| Error::io("crust::Service::new_from_config", e))??;
        Ok(Service {
            acceptor: ServiceListener {
                rx: tokio::sync::Mutex::new(incoming_rx),
                shared: shared.clone(),
            },
            beacon_state: ServiceBeaconState::new(shared.clone()),
            beacon_receiver: ServiceBeaconReceiver {
                rx: tokio::sync::Mutex::new(beacon_rx),
                shared: shared.clone(),
            },
            controller: ServiceController { shared },
        })
    }
}

/// Which face a service's accepted streams take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// [`Stream`]: a blocking socket, heartbeats on the service's timer.
    Blocking,
    /// [`crate::aio::Stream`]: a driver task per stream.
    Aio,
}

/// A stream whose hellos are done, in the service's flavor.
pub(crate) enum Accepted {
    Blocking(Arc<Inner>),
    Aio(crate::aio::Stream),
}

/// A connection whose transport handshake and hellos are done: what either
/// face of a stream is made from.
pub(crate) struct Connected {
    pub(crate) t: transport::aio::Stream,
    pub(crate) peer: Endpoint,
    pub(crate) listeners: Vec<Endpoint>,
    pub(crate) settings: StreamSettings,
    pub(crate) guard: ConnGuard,
}

impl Connected {
    /// The blocking face: the socket leaves the runtime.
    fn into_blocking(self, heart: &Heart) -> Result<Arc<Inner>> {
        let peer = self.peer;
        let t = transport::Stream::from_aio(self.t)
            .map_err(|e| Error::io(format!("taking over the stream to {peer}"), e))?;
        let counters = self.guard.counters.clone();
        let inner = Arc::new(Inner::new(
            t,
            peer,
            self.listeners,
            self.settings,
            self.guard,
        ));
        heart.register(&inner);
        let weak: Weak<dyn crate::netwatch::LocalLoss> = Arc::downgrade(&inner) as _;
        counters.live.register(weak);
        Ok(inner)
    }
}

/// A rendezvous prepared by [`ServiceController::prepare_rendezvous`]: its
/// mapped sockets and the info to send to the peer.
#[derive(Debug)]
pub struct PreparedRendezvous {
    inner: transport::rendezvous::aio::PreparedRendezvous,
}

impl PreparedRendezvous {
    /// Our rendezvous info (endpoints, NAT behaviour, our static key), to
    /// send to the peer: `info().encode()` or its JSON form.
    pub fn info(&self) -> &nat_traversal::PubRendezvousInfo {
        self.inner.info()
    }
}

/// Prepares a rendezvous on the service's mapping context and identity
/// (both calls, blocking and async, come here).
pub(crate) async fn prepare_rendezvous(shared: &Shared) -> Result<PreparedRendezvous> {
    let inner =
        transport::rendezvous::aio::PreparedRendezvous::prepare(&shared.mapping, &shared.identity)
            .await
            .map_err(|e| Error::transport("preparing a rendezvous", e))?;
    Ok(PreparedRendezvous { inner })
}

/// The rendezvous race within `timeout`, then the hellos within the
/// connect timeout: a stream ready to start.
pub(crate) async fn rendezvous_connect(
    shared: &Shared,
    prepared: PreparedRendezvous,
    theirs: &nat_traversal::PubRendezvousInfo,
    timeout: Duration,
) -> Result<Connected> {
    let ctx = shared.dial_ctx();
    let hello_timeout = shared.config.connect_timeout;
    let t = prepared
        .inner
        .connect(theirs, timeout)
        .await
        .map_err(|e| Error::transport("rendezvous", e))?;
    let ep = Endpoint::new(t.protocol(), t.peer_addr(), t.peer_public_key());
    tokio::time::timeout(hello_timeout, send_and_read_hellos(&ctx, t, ep))
        .await
        .map_err(|_| Error::TimedOut {
            what: format!("the hello exchange with {ep}"),
            after: hello_timeout,
        })?
}

/// What [`Shared::start`] gives: the service's state, its accepted streams
/// and its beacon-found endpoints.
pub(crate) type Started = (
    Arc<Shared>,
    mpsc::Receiver<Accepted>,
    mpsc::Receiver<Endpoint>,
);

impl Shared {
    /// Everything a service starts: identity, NAT context, STUN server,
    /// listeners, beacon.
    pub(crate) async fn start(config: Config, flavor: Flavor) -> Result<Started> {
        config.validate()?;
        let identity = load_identity(&config)?;
        let mapping = nat_traversal::aio::discover(
            MappingOptions::default()
                .stun_servers(config.hole_punch_servers.clone())
                .igd(config.igd)
                .local_ip(config.mapping_local_ip),
        )
        .await
        .map_err(|e| Error::io("starting NAT discovery", os_err(e)))?;
        let stun_ip = config
            .mapping_local_ip
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let stun = start_stun(stun_ip).await?;
        // Often enough for a peer whose inactivity timeout is shorter than
        // ours (heartbeats then go at a third of it).
        let tick = (config.heartbeat_period / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(250));
        let (incoming_tx, incoming_rx) = mpsc::channel(config.limits.accept_queue);
        let (beacon_tx, beacon_rx) = mpsc::channel(BEACON_QUEUE);
        let watch = crate::netwatch::NetWatch::new(
            crate::netwatch::read_snapshot(),
            config.beacon.interfaces.clone(),
        );
        let (cache_store, cached, cache_warning) = match config.cache_path()? {
            Some(path) => CacheStore::open(&path),
            None => (CacheStore::memory(), Vec::new(), None),
        };
        let shared = Arc::new(Shared {
            identity,
            flavor,
            counters: Arc::default(),
            heart: Heart::start(tick),
            listeners: Mutex::new(Vec::new()),
            incoming_tx,
            mapping,
            stun,
            beacon: Mutex::new(BeaconRun::default()),
            beacon_tx,
            beacon_stats: Arc::default(),
            hello: Arc::new(Mutex::new(Hello {
                version: CRUST_VERSION,
                network: config.network_name.clone(),
                inactivity_timeout: config.inactivity_timeout,
                listeners: Vec::new(),
            })),
            cache: Mutex::new(EndpointCache::new(config.cache_size, cached)),
            cache_store,
            cache_save: Mutex::new(()),
            cache_warning,
            heard: Arc::default(),
            heard_version: Arc::new(tokio::sync::watch::Sender::new(0)),
            netwatch: Mutex::new(watch),
            changes: tokio::sync::broadcast::channel(crate::netwatch::CHANGES_KEPT).0,
            next_listener_id: AtomicU64::new(0),
            config,
        });
        for le in shared.config.listen.clone() {
            shared.add_listener(le).await?;
        }
        if shared.config.beacon.enabled {
            shared.start_beacon()?;
        }
        crust_runtime::handle().spawn(crate::netwatch::run(
            Arc::downgrade(&shared),
            shared.config.network_poll_interval,
        ));
        log::info!(
            "crust service {} on network {:?} accepting on {}",
            shared.identity.public_key(),
            shared.config.network_name,
            shared
                .endpoints()
                .iter()
                .map(|e| format!("{}://{}", e.protocol, e.addr))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok((shared, incoming_rx, beacon_rx))
    }
}

/// The other crates' errors as `io::Error` (they convert into it).
fn os_err(e: impl Into<std::io::Error>) -> std::io::Error {
    e.into()
}

/// Our STUN server on a free port. It takes the same port for UDP and TCP,
/// and a free UDP port may be taken for TCP: try a few.
async fn start_stun(ip: std::net::IpAddr) -> Result<StunServer> {
    let mut attempt = 0;
    loop {
        match StunServer::bind(SocketAddr::new(ip, 0), None)
            .await
            .map_err(os_err)
        {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 16 => attempt += 1,
            Err(e) => return Err(Error::io(format!("starting the STUN server on {ip}"), e)),
        }
    }
}

fn load_identity(config: &Config) -> Result<Identity> {
    if config.ephemeral_identity {
        return Ok(Identity::generate());
    }
    let path = config.identity_path()?;
    if path.exists() {
        return Identity::load(&path)
            .map_err(|e| Error::transport("loading the service identity", e));
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating the data directory {}", dir.display()), e))?;
    }
    let id = Identity::generate();
    id.save(&path)
        .map_err(|e| Error::transport("storing a new service identity", e))?;
    log::info!("created identity {} in {}", id.public_key(), path.display());
    Ok(id)
}

impl Shared {
    fn settings(&self) -> StreamSettings {
        StreamSettings {
            max_message: self.config.max_message_size,
            heartbeat_period: self.config.heartbeat_period,
            inactivity_timeout: self.config.inactivity_timeout,
        }
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        lock(&self.listeners)
            .iter()
            .flat_map(|l| l.endpoints.clone())
            .collect()
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// Each listener's id and bound endpoints (real ports), for the
    /// network-change driver.
    pub(crate) fn listener_bounds(&self) -> Vec<(u64, Vec<ListenEndpoint>)> {
        lock(&self.listeners)
            .iter()
            .map(|l| (l.id, bound_of(l)))
            .collect()
    }

    /// Replaces listeners' accepting endpoints (by id; listeners removed
    /// meanwhile are skipped), then re-announces. Returns the endpoints
    /// before and after, all listeners together.
    pub(crate) fn set_listener_endpoints(
        &self,
        new: &[(u64, Vec<Endpoint>)],
    ) -> (Vec<Endpoint>, Vec<Endpoint>) {
        let before = self.endpoints();
        for l in lock(&self.listeners).iter_mut() {
            if let Some((_, eps)) = new.iter().find(|(id, _)| *id == l.id) {
                l.endpoints = eps.clone();
            }
        }
        self.refresh_announcements();
        (before, self.endpoints())
    }

    /// Makes the beacon (if on) re-read the interfaces and announce now.
    pub(crate) fn beacon_follow(&self) {
        if let Some((ctl, _)) = &lock(&self.beacon).running
            && let Err(e) = ctl.refresh_interfaces()
        {
            log::warn!("cannot make the beacon follow the interfaces: {e}");
        }
    }

    fn our_hello(&self) -> Hello {
        Hello {
            version: CRUST_VERSION,
            network: self.config.network_name.clone(),
            inactivity_timeout: self.config.inactivity_timeout,
            listeners: self
                .endpoints()
                .iter()
                .map(|e| (e.protocol, e.addr))
                .collect(),
        }
    }

    fn beacon_payload(&self) -> Vec<u8> {
        BeaconPayload {
            network: self.config.network_name.clone(),
            public_key: self.identity.public_key(),
            listeners: self.our_hello().listeners,
        }
        .encode()
    }

    pub(crate) async fn add_listener(self: &Arc<Self>, le: ListenEndpoint) -> Result<()> {
        let options = ListenerOptions::default()
            .handshake_timeout(self.config.handshake_timeout)
            .max_pending_handshakes(self.config.limits.max_pending_handshakes);
        let listener = transport::aio::Listener::bind_with(&self.identity, le, options)
            .await
            .map_err(|e| Error::transport(format!("listening on {le}"), e))?;
        let listener = Arc::new(listener);
        let ctx = AcceptCtx {
            network: self.config.network_name.clone(),
            settings: self.settings(),
            handshake_timeout: self.config.handshake_timeout,
            max_inbound: self.config.limits.max_inbound,
            max_per_peer: self.config.limits.max_per_peer,
            counters: self.counters.clone(),
            heart: self.heart.clone(),
            incoming: self.incoming_tx.clone(),
            hello: self.hello.clone(),
            flavor: self.flavor,
            max_hellos: self.config.limits.max_pending_handshakes,
        };
        let task = crust_runtime::handle().spawn(accept_loop(listener.clone(), Arc::new(ctx)));
        let bound: Vec<ListenEndpoint> = listener
            .local_addrs()
            .iter()
            .map(|a| ListenEndpoint::new(le.protocol, *a))
            .collect();
        let endpoints = crate::netwatch::listener_endpoints(
            &bound,
            lock(&self.netwatch).current(),
            self.identity.public_key(),
        );
        lock(&self.listeners).push(ListenerEntry {
            id: self.next_listener_id.fetch_add(1, Ordering::Relaxed),
            asked: le,
            listener,
            endpoints,
            task,
        });
        self.refresh_announcements();
        Ok(())
    }

    pub(crate) fn remove_listener(&self, le: &ListenEndpoint) -> Result<()> {
        let removed: Vec<ListenerEntry> = {
            let mut ls = lock(&self.listeners);
            let (gone, kept) = std::mem::take(&mut *ls).into_iter().partition(|l| {
                l.asked == *le
                    || l.listener
                        .local_addrs()
                        .iter()
                        .any(|a| ListenEndpoint::new(le.protocol, *a) == *le)
            });
            *ls = kept;
            gone
        };
        if removed.is_empty() {
            return Err(Error::Io {
                context: "removing a listener".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no listener on {le}"),
                ),
            });
        }
        close_listeners(removed);
        log::info!("stopped listening on {le}");
        self.refresh_announcements();
        Ok(())
    }

    /// Hands the current endpoints to the hellos and the beacon.
    pub(crate) fn refresh_announcements(&self) {
        *lock(&self.hello) = self.our_hello();
        if let Some((ctl, _)) = &lock(&self.beacon).running
            && let Err(e) = ctl.set_data(self.beacon_payload())
        {
            log::warn!("cannot update the beacon's endpoints: {e}");
        }
    }

    fn start_beacon(&self) -> Result<()> {
        let mut run = lock(&self.beacon);
        if run.running.is_some() {
            return Ok(());
        }
        let cfg = &self.config.beacon;
        let mut b = beacon::Beacon::builder(cfg.port)
            .data(self.beacon_payload())
            .period(run.period.unwrap_or(cfg.period));
        if let Some(ifs) = &cfg.interfaces {
            b = b.interfaces(ifs.clone());
        }
        let (beacon, ctl) = b.build_async().map_err(|e| {
            Error::io(
                format!("starting the beacon on UDP port {}", cfg.port),
                os_err(e),
            )
        })?;
        let task = crust_runtime::handle().spawn(beacon_pump(
            beacon,
            self.config.network_name.clone(),
            self.identity.public_key(),
            self.beacon_tx.clone(),
            self.beacon_stats.clone(),
            self.heard.clone(),
            self.heard_version.clone(),
        ));
        log::debug!("beacon on UDP port {} started", cfg.port);
        run.running = Some((ctl, task));
        Ok(())
    }

    fn stop_beacon(&self) {
        if let Some((_, task)) = lock(&self.beacon).running.take() {
            task.abort();
            log::debug!("beacon stopped");
        }
    }

    /// Records an endpoint we reached in the cache; returns whether that
    /// changed it (then the file needs a [`save_cache`](Self::save_cache)).
    pub(crate) fn note_reached(&self, ep: Endpoint) -> bool {
        lock(&self.cache).insert(ep)
    }

    /// Writes the cache as it is now to its file. Blocking: file I/O with
    /// `fsync`. Saves are serialised and each writes the current list, so
    /// the last one on disk is the newest.
    pub(crate) fn save_cache(&self) {
        let _saving = lock(&self.cache_save);
        let list = lock(&self.cache).list();
        self.cache_store.save(&list);
    }

    /// [`note_reached`](Self::note_reached), then the save, on this thread.
    pub(crate) fn record_reached(&self, ep: Endpoint) {
        if self.note_reached(ep) {
            self.save_cache();
        }
    }

    fn forget(&self, ep: &Endpoint) {
        if lock(&self.cache).remove(ep) {
            self.save_cache();
        }
    }

    /// Who bootstrap tries, in order: contacts, the cache, beacon-found
    /// peers; no duplicates, never ourselves.
    fn bootstrap_candidates(&self) -> Vec<Endpoint> {
        let own = self.identity.public_key();
        let mut out: Vec<Endpoint> = Vec::new();
        let cached = lock(&self.cache).list();
        let heard: Vec<Endpoint> = lock(&self.heard).iter().copied().collect();
        for ep in self
            .config
            .hard_coded_contacts
            .iter()
            .copied()
            .chain(cached)
            .chain(heard)
        {
            if ep.public_key != own && !out.contains(&ep) {
                out.push(ep);
            }
        }
        out
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.config.connect_timeout
    }

    pub(crate) fn dial_ctx(&self) -> DialCtx {
        DialCtx {
            identity: self.identity.clone(),
            hello: lock(&self.hello).clone(),
            settings: self.settings(),
            max_per_peer: self.config.limits.max_per_peer,
            counters: self.counters.clone(),
        }
    }
}

/// A listener's bound endpoints, with their real ports.
fn bound_of(l: &ListenerEntry) -> Vec<ListenEndpoint> {
    l.listener
        .local_addrs()
        .iter()
        .map(|a| ListenEndpoint::new(l.asked.protocol, *a))
        .collect()
}

/// What an accept task needs (not the whole service, so the service can
/// drop while tasks wind down).
struct AcceptCtx {
    network: String,
    settings: StreamSettings,
    handshake_timeout: Duration,
    max_inbound: usize,
    max_per_peer: usize,
    counters: Arc<Counters>,
    heart: Arc<Heart>,
    incoming: mpsc::Sender<Accepted>,
    hello: Arc<Mutex<Hello>>,
    flavor: Flavor,
    max_hellos: usize,
}

async fn accept_loop(listener: Arc<transport::aio::Listener>, ctx: Arc<AcceptCtx>) {
    // At most this many streams wait for their hello at once. A stream
    // that proved its key but sends no hello holds a place only until the
    // handshake timeout, and when every place is taken the stream that has
    // waited longest gives its place up to the newcomer (the transport's
    // admission does the same with silent connections). Before, a new
    // stream waited for a place to free: three slotfuls of silent,
    // authenticated streams (keys are free) held a good client's connect
    // for two handshake timeouts (hostile_silent.rs).
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.max_hellos));
    // Aborted with this task (the service dropped): no hello task outlives it.
    let mut hellos = tokio::task::JoinSet::new();
    // The hello tasks, oldest first (finished ones are skipped and trimmed).
    let mut waiting: VecDeque<tokio::task::AbortHandle> = VecDeque::new();
    loop {
        while hellos.try_join_next().is_some() {}
        let t = match listener.accept().await {
            Ok(t) => t,
            Err(e) => {
                log::debug!("listener stopped: {e}");
                return;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                while let Some(oldest) = waiting.pop_front() {
                    if !oldest.is_finished() {
                        log::debug!(
                            "hello slots full: the longest waiting stream gives its slot up"
                        );
                        oldest.abort();
                        break;
                    }
                }
                // The aborted task lets its permit go as it ends.
                let Ok(p) = slots.clone().acquire_owned().await else {
                    return;
                };
                p
            }
        };
        let task_ctx = ctx.clone();
        let handle = hellos.spawn(async move {
            let ctx = task_ctx;
            let _permit = permit;
            let peer = Endpoint::new(t.protocol(), t.peer_addr(), t.peer_public_key());
            let limit = ctx.handshake_timeout;
            match tokio::time::timeout(limit, admit(t, &ctx, peer)).await {
                Ok(Ok(())) => {}
                Ok(Err(e @ (Error::OtherNetwork { .. } | Error::Rejected { .. }))) => {
                    log::info!("refused {peer}: {e}")
                }
                Ok(Err(e)) => log::debug!("dropped {peer}: {e}"),
                Err(_) => log::debug!("{peer} sent no hello within {limit:?}"),
            }
        });
        waiting.push_back(handle);
        if waiting.len() > 2 * ctx.max_hellos {
            waiting.retain(|h| !h.is_finished());
        }
    }
}

/// Reads the dialler's hello, checks it against our network and limits,
/// answers, and queues the stream for `accept`.
async fn admit(mut t: transport::aio::Stream, ctx: &AcceptCtx, peer: Endpoint) -> Result<()> {
    let hello = match read_first_frame(&mut t, &peer).await? {
        Frame::Hello(h) => h,
        other => {
            return Err(Error::Protocol {
                peer: peer.to_string(),
                reason: format!("expected a hello first, got {other:?}"),
            });
        }
    };
    let refuse = |code: RejectCode, reason: String| (code, reason);
    let verdict = if hello.version != CRUST_VERSION {
        Err(refuse(
            RejectCode::CrustVersion,
            format!("we speak crust v{CRUST_VERSION}, not v{}", hello.version),
        ))
    } else if hello.network != ctx.network {
        Err(refuse(RejectCode::OtherNetwork, ctx.network.clone()))
    } else {
        match ctx
            .counters
            .acquire(peer.public_key, true, ctx.max_inbound, ctx.max_per_peer)
        {
            Ok(guard) => match ctx.incoming.clone().try_reserve_owned() {
                Ok(permit) => Ok((guard, permit)),
                Err(_) => Err(refuse(RejectCode::Busy, "the accept queue is full".into())),
            },
            Err(why) => Err(refuse(RejectCode::Limit, why)),
        }
    };
    let (guard, permit) = match verdict {
        Ok(v) => v,
        Err((code, reason)) => {
            let mut out = Vec::new();
            proto::encode_reject(code, &reason, &mut out);
            let _ = t.write_all(&out).await;
            // Bounded: over uTP a shutdown waits for the FIN's ack.
            let _ = tokio::time::timeout(Duration::from_secs(2), t.shutdown()).await;
            return Err(if code == RejectCode::OtherNetwork {
                Error::OtherNetwork {
                    peer: peer.to_string(),
                    ours: ctx.network.clone(),
                    theirs: hello.network,
                }
            } else {
                Error::Rejected {
                    peer: peer.to_string(),
                    code,
                    reason,
                }
            });
        }
    };
    let mut out = Vec::new();
    lock(&ctx.hello).encode(&mut out);
    let io = |e| Error::io(format!("answering {peer}"), e);
    t.write_all(&out).await.map_err(io)?;
    t.flush().await.map_err(io)?;
    let c = Connected {
        t,
        peer,
        listeners: hello
            .listeners
            .iter()
            .map(|&(p, a)| Endpoint::new(p, a, peer.public_key))
            .collect(),
        settings: ctx.settings.towards(&hello),
        guard,
    };
    let accepted = match ctx.flavor {
        Flavor::Blocking => Accepted::Blocking(c.into_blocking(&ctx.heart)?),
        Flavor::Aio => Accepted::Aio(crate::aio::Stream::start(c)),
    };
    log::info!("accepted {peer}");
    permit.send(accepted);
    Ok(())
}

/// Reads exactly one hello or reject frame (never a byte more: what follows
/// belongs to the stream).
async fn read_first_frame(t: &mut transport::aio::Stream, peer: &Endpoint) -> Result<Frame> {
    let io = |e| Error::io(format!("reading the hello of {peer}"), e);
    let mut head = [0u8; 3];
    t.read_exact(&mut head).await.map_err(io)?;
    let len = match head[0] {
        transport::wire::crust_frame::HELLO => u16::from_be_bytes([head[1], head[2]]) as usize,
        transport::wire::crust_frame::REJECT => head[2] as usize,
        other => {
            return Err(Error::Protocol {
                peer: peer.to_string(),
                reason: format!("expected a hello, got frame type 0x{other:02x}"),
            });
        }
    };
    if len > proto::MAX_HELLO_LEN {
        return Err(Error::Protocol {
            peer: peer.to_string(),
            reason: format!("a {len}-byte hello is over the maximum"),
        });
    }
    let mut frame = head.to_vec();
    frame.resize(3 + len, 0);
    t.read_exact(&mut frame[3..]).await.map_err(io)?;
    match proto::decode_frame(&frame, 0) {
        Ok(Some((f, _))) => Ok(f),
        Ok(None) => Err(Error::Protocol {
            peer: peer.to_string(),
            reason: "truncated hello".into(),
        }),
        Err(e) => Err(Error::Protocol {
            peer: peer.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// What a connect needs: copies, so no lock is held across the network wait.
pub(crate) struct DialCtx {
    identity: Identity,
    hello: Hello,
    settings: StreamSettings,
    max_per_peer: usize,
    counters: Arc<Counters>,
}

pub(crate) async fn dial(ctx: DialCtx, ep: Endpoint, timeout: Duration) -> Result<Connected> {
    let attempt = async {
        let t = transport::aio::Stream::direct_connect(&ctx.identity, &ep, timeout)
            .await
            .map_err(|e| Error::transport(format!("connecting to {ep}"), e))?;
        send_and_read_hellos(&ctx, t, ep).await
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::TimedOut {
            what: format!("connecting to {ep}"),
            after: timeout,
        })?
}

/// The dialler's side of the hello exchange on a fresh transport stream to
/// `ep`: our hello first, then the peer's (or its reject). Both ends of a
/// rendezvous stream run it, since neither accepted the other.
pub(crate) async fn send_and_read_hellos(
    ctx: &DialCtx,
    mut t: transport::aio::Stream,
    ep: Endpoint,
) -> Result<Connected> {
    {
        let mut out = Vec::new();
        ctx.hello.encode(&mut out);
        let io = |e| Error::io(format!("sending our hello to {ep}"), e);
        t.write_all(&out).await.map_err(io)?;
        t.flush().await.map_err(io)?;
        let theirs = match read_first_frame(&mut t, &ep).await? {
            Frame::Hello(h) => h,
            Frame::Reject {
                code: RejectCode::OtherNetwork,
                reason,
            } => {
                return Err(Error::OtherNetwork {
                    peer: ep.to_string(),
                    ours: ctx.hello.network.clone(),
                    theirs: reason,
                });
            }
            Frame::Reject { code, reason } => {
                return Err(Error::Rejected {
                    peer: ep.to_string(),
                    code,
                    reason,
                });
            }
            other => {
                return Err(Error::Protocol {
                    peer: ep.to_string(),
                    reason: format!("expected a hello, got {other:?}"),
                });
            }
        };
        if theirs.network != ctx.hello.network {
            return Err(Error::OtherNetwork {
                peer: ep.to_string(),
                ours: ctx.hello.network.clone(),
                theirs: theirs.network,
            });
        }
        let guard = ctx
            .counters
            .acquire(ep.public_key, false, usize::MAX, ctx.max_per_peer)
            .map_err(|why| Error::Rejected {
                peer: ep.to_string(),
                code: RejectCode::Limit,
                reason: format!("our own limit: {why}"),
            })?;
        Ok(Connected {
            t,
            peer: ep,
            listeners: theirs
                .listeners
                .iter()
                .map(|&(p, a)| Endpoint::new(p, a, ep.public_key))
                .collect(),
            settings: ctx.settings.towards(&theirs),
            guard,
        })
    }
}

async fn beacon_pump(
    mut beacon: beacon::aio::Beacon,
    network: String,
    own_key: PublicKey,
    tx: mpsc::Sender<Endpoint>,
    stats: Arc<BeaconStats>,
    heard: Arc<Mutex<VecDeque<Endpoint>>>,
    heard_version: Arc<tokio::sync::watch::Sender<u64>>,
) {
    loop {
        let m = match beacon.recv().await {
            Ok(m) => m,
            Err(e) => {
                log::warn!("the beacon stopped: {e}");
                return;
            }
        };
        let p = match BeaconPayload::decode(&m.data) {
            Ok(p) => p,
            Err(e) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                log::debug!("dropping a beacon from {}: {e}", m.from);
                continue;
            }
        };
        if p.network != network {
            stats.other_network.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if p.public_key == own_key {
            continue;
        }
        for ep in p.endpoints_from(m.from) {
            {
                let mut h = lock(&heard);
                if !h.contains(&ep) {
                    h.push_front(ep);
                    h.truncate(HEARD_KEPT);
                    heard_version.send_modify(|v| *v += 1);
                }
            }
            if tx.try_send(ep).is_err() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Accepts connections from peers of our network. Each stream arrives with
/// the transport handshake and both hellos done.
///
/// ```
/// use std::time::Duration;
/// # let config = crust::Config::loopback().beacon_enabled(false);
/// let server = crust::Service::new_from_config(config.clone())?;
/// let client = crust::Service::new_from_config(config)?;
/// let ep = server.controller.accepting_endpoints()[0].known_endpoints()[0].endpoint;
/// let _s = client.controller.connect(&ep)?;
/// let t = server.acceptor.accept_timeout(Duration::from_secs(5))?;
/// assert_eq!(t.peer_public_key(), client.controller.public_key());
/// // Nobody else is coming:
/// let e = server.acceptor.accept_timeout(Duration::from_millis(50)).unwrap_err();
/// assert!(matches!(e, crust::Error::TimedOut { .. }));
/// # Ok::<(), crust::Error>(())
/// ```
#[derive(Debug)]
pub struct ServiceListener {
    rx: tokio::sync::Mutex<mpsc::Receiver<Accepted>>,
    shared: Arc<Shared>,
}

impl ServiceListener {
    /// Blocks until a peer has connected.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when called from a current-thread tokio runtime (use
    /// [`crate::aio`]); [`Error::Closed`] if the service's tasks ended.
    pub fn accept(&self) -> Result<Stream> {
        self.accept_inner(None)
    }

    /// Like [`accept`](Self::accept), but gives up after `timeout` with
    /// [`Error::TimedOut`].
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept), plus the timeout.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Stream> {
        self.accept_inner(Some(timeout))
    }

    fn accept_inner(&self, timeout: Option<Duration>) -> Result<Stream> {
        let got = crust_runtime::block_on(async {
            let mut rx = self.rx.lock().await;
            match timeout {
                None => Ok(rx.recv().await),
                Some(t) => tokio::time::timeout(t, rx.recv()).await.map_err(|_| t),
            }
        })
        .map_err(|e| Error::io("crust::ServiceListener::accept", e))?;
        match got {
            Ok(Some(Accepted::Blocking(inner))) => Ok(Stream::from_inner(inner)),
            // Invariant: a blocking service's accept tasks make blocking
            // streams (the flavor is fixed at start).
            Ok(Some(Accepted::Aio(_))) => Err(Error::Closed(
                "an async stream reached a blocking listener (a bug)".into(),
            )),
            Ok(None) => Err(Error::Closed("the service stopped accepting".into())),
            Err(after) => Err(Error::TimedOut {
                what: "accepting a connection".into(),
                after,
            }),
        }
    }

    /// An iterator of accepted streams; it ends only if the service's tasks
    /// do.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The service's public key.
    pub fn public_key(&self) -> PublicKey {
        self.shared.identity.public_key()
    }
}

/// The iterator of [`ServiceListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a ServiceListener,
}

impl Iterator for Incoming<'_> {
    type Item = Stream;

    fn next(&mut self) -> Option<Stream> {
        loop {
            match self.listener.accept() {
                Ok(s) => return Some(s),
                Err(Error::Closed(_)) => return None,
                Err(e) => log::warn!("accepting: {e}"),
            }
        }
    }
}

/// Beacon state marker: the beacon may be on or off (checked at run time).
#[derive(Debug)]
pub enum Dynamic {}
/// Beacon state marker: the beacon is on.
#[derive(Debug)]
pub enum Enabled {}
/// Beacon state marker: the beacon is off.
#[derive(Debug)]
pub enum Disabled {}

/// Turns the service's LAN beacon on and off, with the state in the type
/// when you want it there: `ServiceBeaconState<Enabled>` is a beacon that is
/// on for as long as you hold it.
///
/// While the beacon is on, the service announces its accepting endpoints on
/// the configured beacon port and hears others' announcements (for the
/// [`ServiceBeaconReceiver`]); while it is off it does neither.
///
/// ```
/// # let service = crust::Service::new_from_config(crust::Config::loopback().beacon_port(50_322))?;
/// let on = service.beacon_state; // Dynamic
/// assert!(on.is_enabled());
/// let off = on.disable();
/// assert!(!off.is_enabled());
/// let mut dynamic: crust::ServiceBeaconState = off.into();
/// dynamic.set_enabled(true)?;
/// assert!(dynamic.is_enabled());
/// # Ok::<(), crust::Error>(())
/// ```
#[derive(Debug)]
pub struct ServiceBeaconState<S = Dynamic> {
    shared: Arc<Shared>,
    _state: PhantomData<S>,
}

impl ServiceBeaconState<Dynamic> {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ServiceBeaconState {
            shared,
            _state: PhantomData,
        }
    }
}

/// [`ServiceBeaconState::enable`] failed; the beacon stays off, and the state
/// comes back.
#[derive(Debug)]
pub struct EnableError<S> {
    /// Why.
    pub error: Error,
    /// The state handle, unchanged.
    pub state: ServiceBeaconState<S>,
}

impl<S> ServiceBeaconState<S> {
    /// Whether the beacon is on.
    pub fn is_enabled(&self) -> bool {
        lock(&self.shared.beacon).running.is_some()
    }

    /// Turns the beacon on.
    ///
    /// # Errors
    ///
    /// [`EnableError`] with the reason (the port cannot be bound, say) and
    /// this handle back.
    pub fn enable(self) -> std::result::Result<ServiceBeaconState<Enabled>, EnableError<S>> {
        match self.shared.start_beacon() {
            Ok(()) => Ok(self.with_state()),
            Err(error) => Err(EnableError { error, state: self }),
        }
    }

    /// Turns the beacon off.
    pub fn disable(self) -> ServiceBeaconState<Disabled> {
        self.shared.stop_beacon();
        self.with_state()
    }

    fn with_state<T>(self) -> ServiceBeaconState<T> {
        ServiceBeaconState {
            shared: self.shared,
            _state: PhantomData,
        }
    }

    fn set_period_inner(&mut self, period: Duration) -> Result<()> {
        if period.is_zero() || period > Duration::from_secs(86_400) {
            return Err(Error::config_field(
                "beacon.period_ms",
                format!("must be from 1 ms to a day, not {period:?}"),
            ));
        }
        let mut run = lock(&self.shared.beacon);
        run.period = Some(period);
        if let Some((ctl, _)) = &run.running {
            ctl.set_period(period)
                .map_err(|e| Error::io("setting the beacon period", os_err(e)))?;
        }
        Ok(())
    }
}

impl ServiceBeaconState<Dynamic> {
    /// Sets the time between beacons (kept while the beacon is off).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a zero period or one over a day.
    pub fn set_period(&mut self, period: Duration) -> Result<()> {
        self.set_period_inner(period)
    }

    /// Turns the beacon on or off.
    ///
    /// # Errors
    ///
    /// As [`enable`](ServiceBeaconState::enable).
    pub fn set_enabled(&mut self, enabled: bool) -> Result<()> {
        if enabled {
            self.shared.start_beacon()
        } else {
            self.shared.stop_beacon();
            Ok(())
        }
    }
}

impl ServiceBeaconState<Enabled> {
    /// Sets the time between beacons.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a zero period or one over a day.
    pub fn set_period(&mut self, period: Duration) -> Result<()> {
        self.set_period_inner(period)
    }
}

impl From<ServiceBeaconState<Enabled>> for ServiceBeaconState<Dynamic> {
    fn from(s: ServiceBeaconState<Enabled>) -> Self {
        s.with_state()
    }
}

impl From<ServiceBeaconState<Disabled>> for ServiceBeaconState<Dynamic> {
    fn from(s: ServiceBeaconState<Disabled>) -> Self {
        s.with_state()
    }
}

/// Yields the endpoints that services of our network announce by beacon on
/// the LAN: only those on the announcing host's own address, never our own.
/// Nothing is dialled unless you dial it. The same endpoint comes again with
/// every beacon period.
///
/// ```
/// use std::time::Duration;
/// // A port of this run: concurrent runs must not hear each other.
/// let port = 40_000 + (std::process::id() % 20_000) as u16;
/// let config = crust::Config::loopback()
///     .network_name("beacon-doc")
///     .beacon_port(port)
///     .beacon_period(Duration::from_millis(100));
/// let mut a = crust::Service::new_from_config(config.clone())?;
/// let b = crust::Service::new_from_config(config)?;
/// let heard = a.beacon_receiver.next_timeout(Duration::from_secs(10))?;
/// assert_eq!(heard.public_key, b.controller.public_key());
/// let stream = a.controller.connect(&heard)?;
/// # Ok::<(), crust::Error>(())
/// ```
#[derive(Debug)]
pub struct ServiceBeaconReceiver {
    rx: tokio::sync::Mutex<mpsc::Receiver<Endpoint>>,
    shared: Arc<Shared>,
}

impl ServiceBeaconReceiver {
    /// Blocks until a peer's endpoint is heard.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when called from a current-thread tokio runtime;
    /// [`Error::Closed`] if the service stopped.
    #[allow(clippy::should_implement_trait)] // the seed's name; also an iterator below
    pub fn next(&mut self) -> Result<Endpoint> {
        self.next_inner(None)
    }

    /// Like [`next`](Self::next), but gives up after `timeout` with
    /// [`Error::TimedOut`].
    ///
    /// # Errors
    ///
    /// As [`next`](Self::next), plus the timeout.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Endpoint> {
        self.next_inner(Some(timeout))
    }

    fn next_inner(&mut self, timeout: Option<Duration>) -> Result<Endpoint> {
        let got = crust_runtime::block_on(async {
            let mut rx = self.rx.lock().await;
            match timeout {
                None => Ok(rx.recv().await),
                Some(t) => tokio::time::timeout(t, rx.recv()).await.map_err(|_| t),
            }
        })
        .map_err(|e| Error::io("crust::ServiceBeaconReceiver::next", e))?;
        match got {
            Ok(Some(ep)) => Ok(ep),
            Ok(None) => Err(Error::Closed("the service stopped".into())),
            Err(after) => Err(Error::TimedOut {
                what: "waiting for a beacon".into(),
                after,
            }),
        }
    }

    /// An iterator of heard endpoints (ends only if the service stops).
    pub fn endpoints(&mut self) -> BeaconEndpoints<'_> {
        BeaconEndpoints { receiver: self }
    }

    /// Beacons dropped so far: `(malformed, other network, queue full)`.
    pub fn dropped(&self) -> (u64, u64, u64) {
        let s = &self.shared.beacon_stats;
        (
            s.malformed.load(Ordering::Relaxed),
            s.other_network.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The iterator of [`ServiceBeaconReceiver::endpoints`].
#[derive(Debug)]
pub struct BeaconEndpoints<'a> {
    receiver: &'a mut ServiceBeaconReceiver,
}

impl Iterator for BeaconEndpoints<'_> {
    type Item = Endpoint;

    fn next(&mut self) -> Option<Endpoint> {
        self.receiver.next().ok()
    }
}

/// The iterator of [`ServiceController::iter_endpoint_cache`].
#[derive(Debug)]
pub struct EndpointCacheIter {
    items: std::vec::IntoIter<Endpoint>,
    controller: ServiceController,
}

impl Iterator for EndpointCacheIter {
    type Item = CachedEndpoint;

    fn next(&mut self) -> Option<CachedEndpoint> {
        self.items.next().map(|endpoint| CachedEndpoint {
            endpoint,
            controller: self.controller.clone(),
        })
    }
}

/// An endpoint in the bootstrap cache.
#[derive(Debug)]
pub struct CachedEndpoint {
    endpoint: Endpoint,
    controller: ServiceController,
}

impl CachedEndpoint {
    /// The endpoint.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// Removes it from the cache.
    pub fn remove(self) {
        self.controller.shared.forget(&self.endpoint);
    }

    /// Connects to it; removes it from the cache if that fails.
    ///
    /// # Errors
    ///
    /// As [`ServiceController::connect`].
    pub fn connect(self) -> Result<Stream> {
        let r = self.controller.connect(&self.endpoint);
        if r.is_err() {
            self.controller.shared.forget(&self.endpoint);
        }
        r
    }
}

/// Tries the bootstrap candidates concurrently; the first `n` that connect
/// win, the rest are cancelled. While the beacon runs and nobody has been
/// reached yet, peers the beacon hears during the attempt are tried too,
/// until the deadline (so a bootstrap right after [`Service::new`] on a LAN
/// finds its neighbours).
pub(crate) async fn bootstrap(
    shared: Arc<Shared>,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Connected>> {
    // Subscribed before the candidates are read, so nothing heard after
    // the read is missed.
    let mut heard = shared.heard_version.subscribe();
    let mut beacon_on = lock(&shared.beacon).running.is_some();
    let mut pending: VecDeque<Endpoint> = shared.bootstrap_candidates().into();
    if pending.is_empty() && !beacon_on {
        return Err(Error::Bootstrap {
            attempts: Vec::new(),
        });
    }
    // Everything queued so far, so a peer is dialled once per bootstrap;
    // bounded, so a beacon flood cannot grow it.
    let mut queued: Vec<Endpoint> = pending.iter().copied().collect();
    let queued_max = queued.len() + BOOTSTRAP_MAX_HEARD;
    let deadline = tokio::time::Instant::now() + timeout;
    let per_attempt = shared.config.connect_timeout;
    let mut running = tokio::task::JoinSet::new();
    let mut attempts: Vec<(Endpoint, String)> = Vec::new();
    let mut won = Vec::new();
    let mut in_flight: Vec<Endpoint> = Vec::new();
    let mut next_start = tokio::time::Instant::now();
    enum Event<T> {
        Joined(T),
        Heard,
        Deadline,
    }
    loop {
        while running.len() < BOOTSTRAP_PARALLEL
            && won.len() + running.len() < n + BOOTSTRAP_PARALLEL
        {
            let Some(ep) = pending.pop_front() else { break };
            tokio::time::sleep_until(next_start).await;
            next_start = tokio::time::Instant::now() + BOOTSTRAP_SPACING;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ctx = shared.dial_ctx();
            in_flight.push(ep);
            running.spawn(async move { (ep, dial(ctx, ep, per_attempt.min(left)).await) });
        }
        let wait_for_beacon = beacon_on && won.is_empty() && queued.len() < queued_max;
        if running.is_empty() && !wait_for_beacon {
            break;
        }
        let event = tokio::select! {
            Some(j) = running.join_next(), if !running.is_empty() => Event::Joined(j),
            changed = heard.changed(), if wait_for_beacon => match changed {
                Ok(()) => Event::Heard,
                // The beacon's side is gone (the service is stopping).
                Err(_) => {
                    beacon_on = false;
                    continue;
                }
            },
            _ = tokio::time::sleep_until(deadline) => Event::Deadline,
        };
        match event {
            Event::Heard => {
                for ep in shared.bootstrap_candidates() {
                    if queued.len() < queued_max && !queued.contains(&ep) {
                        log::debug!("bootstrap: trying {ep}, heard by the beacon meanwhile");
                        queued.push(ep);
                        pending.push_back(ep);
                    }
                }
            }
            Event::Joined(Ok((ep, Ok(c)))) => {
                in_flight.retain(|e| *e != ep);
                log::info!("bootstrapped to {ep}");
                won.push(c);
                if won.len() >= n {
                    break;
                }
            }
            Event::Joined(Ok((ep, Err(e)))) => {
                in_flight.retain(|e| *e != ep);
                log::debug!("bootstrap: {ep}: {e}");
                attempts.push((ep, e.to_string()));
            }
            Event::Joined(Err(e)) => log::warn!("a bootstrap attempt panicked: {e}"),
            Event::Deadline => {
                for ep in in_flight.drain(..) {
                    attempts.push((
                        ep,
                        format!("still connecting at the bootstrap deadline ({timeout:?})"),
                    ));
                }
                break;
            }
        }
    }
    running.abort_all();
    if won.is_empty() {
        for ep in pending {
            attempts.push((ep, "not tried before the bootstrap deadline".into()));
        }
        return Err(Error::Bootstrap { attempts });
    }
    Ok(won)
}

/// An endpoint reachable by others, and whether a NAT may filter it.
///
/// ```
/// # let service = crust::Service::new_from_config(crust::Config::loopback().beacon_enabled(false))?;
/// for a in service.controller.accepting_endpoints() {
///     for m in a.known_endpoints() {
///         assert!(!m.nat_restricted);
///         println!("{}", m.endpoint); // tcp://127.0.0.1:PORT/?pubkey=...
///     }
/// }
/// # Ok::<(), crust::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedEndpoint {
    /// The endpoint (with our key).
    pub endpoint: Endpoint,
    /// Whether a NAT may drop unsolicited connections to it (false for a
    /// local address, which is reachable from its own network).
    pub nat_restricted: bool,
}

/// One listener of the service: where it is bound and how others reach it.
///
/// ```
/// # let service = crust::Service::new_from_config(crust::Config::loopback().beacon_enabled(false))?;
/// let a = &service.controller.accepting_endpoints()[0];
/// assert_ne!(a.local_endpoint().addr.port(), 0); // the real port
/// // With no STUN server and no UPnP gateway, mapping adds nothing.
/// assert_eq!(a.mapped_endpoints()?, a.known_endpoints());
/// # Ok::<(), crust::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct AcceptingEndpoint {
    local: ListenEndpoint,
    known: Vec<MappedEndpoint>,
    mapping: MappingContext,
}

impl AcceptingEndpoint {
    /// The endpoint as bound (the port is the real one, not 0).
    pub fn local_endpoint(&self) -> &ListenEndpoint {
        &self.local
    }

    /// The endpoints known without asking anyone: the local addresses (an
    /// unspecified bind address expanded to the interfaces' addresses).
    pub fn known_endpoints(&self) -> &[MappedEndpoint] {
        &self.known
    }

    /// The endpoints after mapping through STUN servers and UPnP.
    ///
    /// # Errors
    ///
    /// With no hole-punch server and no UPnP gateway this is the known
    /// endpoints. Mapping a listener through them comes with rendezvous
    /// connections; until then it returns [`Error::Unsupported`].
    pub fn mapped_endpoints(&self) -> Result<Vec<MappedEndpoint>> {
        if self.mapping.servers().is_empty() {
            return Ok(self.known.clone());
        }
        Err(Error::Unsupported(
            "mapping a listener's endpoints through STUN or UPnP (arrives with rendezvous \
             connections)"
                .into(),
        ))
    }
}

/// Controls the service: connect, listeners, hole punching. Cheap to clone,
/// `Send + Sync`, and every method takes `&self`, so many threads can use
/// one controller at once; a connect holds no lock while it waits on the
/// network.
///
/// ```
/// # let config = crust::Config::loopback().beacon_enabled(false);
/// let server = crust::Service::new_from_config(config.clone())?;
/// let client = crust::Service::new_from_config(config)?;
/// let ep = server.controller.accepting_endpoints()[0].known_endpoints()[0].endpoint;
/// // From several threads at once:
/// let threads: Vec<_> = (0..4)
///     .map(|_| {
///         let controller = client.controller.clone();
///         std::thread::spawn(move || controller.connect(&ep).map(|s| s.peer_public_key()))
///     })
///     .collect();
/// for t in threads {
///     assert_eq!(t.join().unwrap()?, server.controller.public_key());
/// }
/// // One more listener, then gone again.
/// server.controller.add_listener("utp://127.0.0.1:0".parse().unwrap())?;
/// let added = server.controller.accepting_endpoints().pop().unwrap();
/// server.controller.remove_listener(added.local_endpoint())?;
/// # Ok::<(), crust::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ServiceController {
    shared: Arc<Shared>,
}

impl ServiceController {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        ServiceController { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Connects to `endpoint`: the transport handshake proves the peer holds
    /// the endpoint's key, then the hellos check that it is on our network.
    /// Bounded by the config's `connect_timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] when the connection or handshake fails (refused,
    /// wrong key, timed out), [`Error::OtherNetwork`] naming both networks,
    /// [`Error::Rejected`] when the peer refused us (limit reached, busy),
    /// [`Error::TimedOut`].
    pub fn connect(&self, endpoint: &Endpoint) -> Result<Stream> {
        self.connect_timeout(endpoint, self.shared.config.connect_timeout)
    }

    /// Like [`connect`](Self::connect) with an explicit bound.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_timeout(&self, endpoint: &Endpoint, timeout: Duration) -> Result<Stream> {
        let ctx = self.shared.dial_ctx();
        let ep = *endpoint;
        let c = crust_runtime::block_on(dial(ctx, ep, timeout))
            .map_err(|e| Error::io("crust::ServiceController::connect", e))??;
        let inner = c.into_blocking(&self.shared.heart)?;
        log::info!("connected to {ep}");
        self.shared.record_reached(ep);
        Ok(Stream::from_inner(inner))
    }

    /// Prepares a rendezvous on the service's mapping context and key: maps
    /// one UDP and one TCP socket (STUN servers, UPnP gateway as
    /// configured). Send [`PreparedRendezvous::info`] to the peer by any
    /// means (a hub, a paste), then call
    /// [`rendezvous_connect`](Self::rendezvous_connect) with its info.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the sockets cannot be bound or mapped.
    pub fn prepare_rendezvous(&self) -> Result<PreparedRendezvous> {
        let shared = self.shared.clone();
        crust_runtime::block_on(async move { prepare_rendezvous(&shared).await })
            .map_err(|e| Error::io("crust::ServiceController::prepare_rendezvous", e))?
    }

    /// Connects to the peer whose rendezvous info is `theirs`, through both
    /// NATs, with [`transport::rendezvous::DEFAULT_TIMEOUT`] (10 s): the
    /// transport races a UDP punch + uTP and a TCP punch, proving the key in
    /// `theirs`; then the two services exchange hellos as on any stream.
    /// The stream has heartbeats and limits like any other; its
    /// [`path`](Stream::path) is [`Path::HolePunched`](transport::Path::HolePunched).
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] wrapping `transport::Error::RendezvousFailed`
    /// (each attempt with why: the punch failure kinds, a wrong key, a
    /// timeout) or `InvalidRendezvousInfo`; [`Error::OtherNetwork`],
    /// [`Error::Rejected`] and [`Error::TimedOut`] as for
    /// [`connect`](Self::connect).
    pub fn rendezvous_connect(
        &self,
        prepared: PreparedRendezvous,
        theirs: &nat_traversal::PubRendezvousInfo,
    ) -> Result<Stream> {
        self.rendezvous_connect_timeout(prepared, theirs, transport::rendezvous::DEFAULT_TIMEOUT)
    }

    /// Like [`rendezvous_connect`](Self::rendezvous_connect) with an
    /// explicit bound on the race (the hello exchange after it is bounded by
    /// the service's connect timeout).
    ///
    /// # Errors
    ///
    /// As [`rendezvous_connect`](Self::rendezvous_connect).
    pub fn rendezvous_connect_timeout(
        &self,
        prepared: PreparedRendezvous,
        theirs: &nat_traversal::PubRendezvousInfo,
        timeout: Duration,
    ) -> Result<Stream> {
        let shared = self.shared.clone();
        let theirs = theirs.clone();
        let c = crust_runtime::block_on(async move {
            rendezvous_connect(&shared, prepared, &theirs, timeout).await
        })
        .map_err(|e| Error::io("crust::ServiceController::rendezvous_connect", e))??;
        let peer = c.peer;
        let stream = Stream::from_inner(c.into_blocking(&self.shared.heart)?);
        log::info!("rendezvous with {peer} ({})", stream.path());
        Ok(stream)
    }

    /// Adds an endpoint to the bootstrap cache (first, as the newest).
    pub fn cache_endpoint(&self, endpoint: Endpoint) {
        self.shared.record_reached(endpoint);
    }

    /// The bootstrap cache, newest first (a snapshot). Each item can be
    /// removed or connected to; a failed connect removes it.
    ///
    /// ```
    /// # let service = crust::Service::new_from_config(crust::Config::loopback().beacon_enabled(false))?;
    /// for cached in service.controller.iter_endpoint_cache() {
    ///     match cached.connect() {
    ///         Ok(stream) => { /* use it */ break }
    ///         Err(e) => eprintln!("{e}"), // and it left the cache
    ///     }
    /// }
    /// # Ok::<(), crust::Error>(())
    /// ```
    pub fn iter_endpoint_cache(&self) -> EndpointCacheIter {
        EndpointCacheIter {
            items: lock(&self.shared.cache).list().into_iter(),
            controller: self.clone(),
        }
    }

    /// What went wrong opening the bootstrap cache at start (a corrupt file
    /// set aside, a file in use by another service), if anything.
    pub fn cache_warning(&self) -> Option<&str> {
        self.shared.cache_warning.as_deref()
    }

    /// Connects to the first peer that answers among the hard-coded
    /// contacts, the cache and beacon-found peers, tried concurrently (at
    /// most 32 at once, a new dial every 20 ms), within the config's
    /// `connect_timeout` per attempt and twice that in all. While the
    /// beacon is on and nobody answered yet, peers the beacon hears during
    /// the call are tried as they are heard, so it may wait for the first
    /// beacon until the deadline.
    ///
    /// # Errors
    ///
    /// [`Error::Bootstrap`] listing every attempt and why it failed.
    pub fn bootstrap(&self) -> Result<Stream> {
        self.bootstrap_timeout(2 * self.shared.config.connect_timeout)
    }

    /// Like [`bootstrap`](Self::bootstrap) within `timeout` in all.
    ///
    /// # Errors
    ///
    /// As [`bootstrap`](Self::bootstrap).
    pub fn bootstrap_timeout(&self, timeout: Duration) -> Result<Stream> {
        Ok(self
            .bootstrap_many(1, timeout)?
            .pop()
            .expect("bootstrap_many(1) returns one stream or an error"))
    }

    /// Connects to up to `n` peers as [`bootstrap`](Self::bootstrap) does,
    /// returning as soon as `n` are connected, or every candidate was tried
    /// and at least one connected (it waits for beacons only while none
    /// has).
    ///
    /// # Errors
    ///
    /// [`Error::Bootstrap`] when none could be reached.
    pub fn bootstrap_many(&self, n: usize, timeout: Duration) -> Result<Vec<Stream>> {
        let shared = self.shared.clone();
        let got = crust_runtime::block_on(bootstrap(shared.clone(), n.max(1), timeout))
            .map_err(|e| Error::io("crust::ServiceController::bootstrap", e))??;
        let mut out = Vec::with_capacity(got.len());
        for c in got {
            let ep = c.peer;
            out.push(Stream::from_inner(c.into_blocking(&shared.heart)?));
            shared.record_reached(ep);
        }
        Ok(out)
    }

    /// Starts listening on one more endpoint (its endpoints go into the
    /// beacon and into later hellos).
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if it cannot be bound.
    pub fn add_listener(&self, endpoint: ListenEndpoint) -> Result<()> {
        crust_runtime::block_on(self.shared.add_listener(endpoint))
            .map_err(|e| Error::io("crust::ServiceController::add_listener", e))?
    }

    /// Stops listening on `endpoint` (as given to [`add_listener`] or in the
    /// config, or as bound). Streams accepted on it stay open.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with `NotFound` if no listener matches.
    ///
    /// [`add_listener`]: Self::add_listener
    pub fn remove_listener(&self, endpoint: &ListenEndpoint) -> Result<()> {
        self.shared.remove_listener(endpoint)
    }

    /// The service's listeners and how peers reach each.
    pub fn accepting_endpoints(&self) -> Vec<AcceptingEndpoint> {
        lock(&self.shared.listeners)
            .iter()
            .flat_map(|l| {
                let eps = l.endpoints.clone();
                l.listener.local_addrs().iter().map(move |a| {
                    let local = ListenEndpoint::new(l.asked.protocol, *a);
                    let known = eps
                        .iter()
                        .filter(|e| e.protocol == local.protocol && e.addr.port() == a.port())
                        .map(|&endpoint| MappedEndpoint {
                            endpoint,
                            nat_restricted: false,
                        })
                        .collect();
                    (local, known)
                })
            })
            .map(|(local, known)| AcceptingEndpoint {
                local,
                known,
                mapping: self.shared.mapping.clone(),
            })
            .collect()
    }

    /// Every endpoint peers can dial us at, from every listener (the
    /// [`known_endpoints`](AcceptingEndpoint::known_endpoints) of
    /// [`accepting_endpoints`](Self::accepting_endpoints), flattened).
    ///
    /// ```
    /// # let service = crust::Service::new_from_config(crust::Config::loopback().beacon_enabled(false))?;
    /// let utp = service.controller.endpoints().into_iter().find(|e| e.protocol == crust::Protocol::Utp);
    /// assert!(utp.is_some());
    /// # Ok::<(), crust::Error>(())
    /// ```
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.shared.endpoints()
    }

    /// Network-change events from now on: each time the host's addresses
    /// change so that our accepting endpoints do (read every
    /// [`network_poll_interval`](crate::Config::network_poll_interval)),
    /// a [`NetworkChange`](crate::NetworkChange) with the new endpoints, so
    /// you can re-announce them. By then the hellos and the beacon already
    /// carry them, and streams whose local address vanished have been ended
    /// ([`Error::AddressLost`]). Each call gives an independent receiver.
    ///
    /// ```
    /// # let service = crust::Service::new_from_config(crust::Config::loopback().beacon_enabled(false))?;
    /// let mut changes = service.controller.endpoints_changed();
    /// // Loopback does not change here: nothing comes.
    /// let e = changes.next_timeout(std::time::Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(e, crust::Error::TimedOut { .. }));
    /// // A program would loop: `for change in changes { announce(change.endpoints) }`.
    /// # Ok::<(), crust::Error>(())
    /// ```
    pub fn endpoints_changed(&self) -> crate::EndpointChanges {
        crate::EndpointChanges::new(self.shared.changes.subscribe())
    }

    /// The service's NAT-traversal context (its STUN servers and UPnP
    /// gateway).
    pub fn mapping_context(&self) -> &MappingContext {
        &self.shared.mapping
    }

    /// Tells the service about one more hole-punch server.
    pub fn add_hole_punch_server(&self, server: HolePunchServerAddr) {
        self.shared.mapping.add_servers([server]);
    }

    /// The service's own hole-punch (STUN) server addresses, which peers may
    /// use to learn their external addresses.
    pub fn hole_punch_addresses(&self) -> Vec<HolePunchServerAddr> {
        self.shared
            .stun
            .udp_addrs()
            .iter()
            .map(|a| HolePunchServerAddr::Simple(*a))
            .collect()
    }

    /// A UDP socket mapped through the service's mapping context.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be bound or mapped.
    pub fn mapped_udp_socket(&self) -> Result<MappedUdpSocket> {
        MappedUdpSocket::new(&self.shared.mapping)
            .map_err(|e| Error::io("mapping a UDP socket", os_err(e)))
    }

    /// The service's public key (in every endpoint it accepts on).
    pub fn public_key(&self) -> PublicKey {
        self.shared.identity.public_key()
    }

    /// The service's network name.
    pub fn network_name(&self) -> &str {
        &self.shared.config.network_name
    }
}
