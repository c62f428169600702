//! The async (tokio) face of crust: the same service, controller, listener
//! and streams, as futures, for tokio programs and for many thousands of
//! streams without a thread each.
//!
//! It runs on the same core as the blocking face (the same hello, frames,
//! limits and heartbeat rules, [`crate::proto`]) and on the shared crust
//! runtime: each stream is one driver task there, which reads, writes and
//! heartbeats; `send` and `recv` talk to it through bounded queues (at most
//! a message or two wait for a reader that is not reading).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> crust::Result<()> {
//! use crust::{Config, aio::Service};
//!
//! let config = Config::loopback().network_name("aio-doc").beacon_enabled(false);
//! let server = Service::new_from_config(config.clone()).await?;
//! let client = Service::new_from_config(config).await?;
//! let endpoint = server.controller.accepting_endpoints()[0].known_endpoints()[0].endpoint;
//! let s = client.controller.connect(&endpoint).await?;
//! s.send(b"ping").await?;
//! let mut t = server.acceptor.accept().await?;
//! assert_eq!(t.recv().await?, b"ping");
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use transport::{Endpoint, ListenEndpoint, Path, PublicKey};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::proto::{self, Frame, Liveness, LivenessAction};
use crate::service::{
    self, Accepted, AcceptingEndpoint, Connected, Flavor, ServiceBeaconState, Shared,
};
use crate::stream::lock;

/// Messages a sender may queue ahead of the driver.
const OUT_QUEUE: usize = 16;
/// How long closing a stream waits for the peer to acknowledge it (uTP:
/// the ack of our FIN).
const CLOSE_LINGER: Duration = Duration::from_secs(10);
/// Messages up to this size go out as one write with their header.
const COALESCE: usize = 16 * 1024;

/// A running crust service, async: the same public parts as
/// [`crate::Service`]. Dropping all of them shuts it down.
#[derive(Debug)]
pub struct Service {
    /// Accepts incoming connections.
    pub acceptor: ServiceListener,
    /// Turns the LAN beacon on and off (the same type as the blocking
    /// service's: its calls never wait on the network).
    pub beacon_state: ServiceBeaconState,
    /// Yields the endpoints that peers of our network announce on the LAN.
    pub beacon_receiver: ServiceBeaconReceiver,
    /// Connect, listeners, hole punching.
    pub controller: ServiceController,
}

impl Service {
    /// Starts a service from the default config file, as
    /// [`crate::Service::new`].
    ///
    /// # Errors
    ///
    /// As [`crate::Service::new`].
    pub async fn new() -> Result<Service> {
        Service::new_from_config(Config::from_default_location()?).await
    }

    /// Starts a service with `config`, as [`crate::Service::new_from_config`].
    ///
    /// # Errors
    ///
    /// As [`crate::Service::new_from_config`].
    pub async fn new_from_config(config: Config) -> Result<Service> {
        let (shared, incoming, beacons) = Shared::start(config, Flavor::Aio).await?;
        Ok(Service {
            acceptor: ServiceListener {
                rx: tokio::sync::Mutex::new(incoming),
                _shared: shared.clone(),
            },
            beacon_state: ServiceBeaconState::new(shared.clone()),
            beacon_receiver: ServiceBeaconReceiver {
                rx: beacons,
                _shared: shared.clone(),
            },
            controller: ServiceController {
                inner: crate::ServiceController::from_shared(shared),
            },
        })
    }
}

/// Accepts connections from peers of our network, async.
#[derive(Debug)]
pub struct ServiceListener {
    rx: tokio::sync::Mutex<mpsc::Receiver<Accepted>>,
    _shared: Arc<Shared>,
}

impl ServiceListener {
    /// Waits until a peer has connected.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the service's tasks ended.
    pub async fn accept(&self) -> Result<Stream> {
        match self.rx.lock().await.recv().await {
            Some(Accepted::Aio(s)) => Ok(s),
            // Invariant: an async service's accept tasks make async streams.
            Some(Accepted::Blocking(_)) => Err(Error::Closed(
                "a blocking stream reached an async listener (a bug)".into(),
            )),
            None => Err(Error::Closed("the service stopped accepting".into())),
        }
    }
}

/// Yields endpoints that services of our network announce by beacon, async
/// (see [`crate::ServiceBeaconReceiver`]).
#[derive(Debug)]
pub struct ServiceBeaconReceiver {
    rx: mpsc::Receiver<Endpoint>,
    _shared: Arc<Shared>,
}

impl ServiceBeaconReceiver {
    /// Waits until a peer's endpoint is heard.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the service stopped.
    pub async fn next(&mut self) -> Result<Endpoint> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| Error::Closed("the service stopped".into()))
    }
}

/// Controls the service, async where the call waits on the network. Cheap
/// to clone, `Send + Sync`.
#[derive(Clone, Debug)]
pub struct ServiceController {
    inner: crate::ServiceController,
}

impl ServiceController {
    /// Connects to `endpoint` as [`crate::ServiceController::connect`].
    ///
    /// # Errors
    ///
    /// As [`crate::ServiceController::connect`].
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Stream> {
        self.connect_timeout(endpoint, self.inner.shared().connect_timeout())
            .await
    }

    /// Like [`connect`](Self::connect) with an explicit bound.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_timeout(&self, endpoint: &Endpoint, timeout: Duration) -> Result<Stream> {
        let ctx = self.inner.shared().dial_ctx();
        let c = service::dial(ctx, *endpoint, timeout).await?;
        log::info!("connected to {endpoint}");
        self.record(*endpoint);
        Ok(Stream::start(c))
    }

    /// Records a reached endpoint in the cache, off the async threads (the
    /// file is written with `fsync`).
    fn record(&self, ep: Endpoint) {
        let shared = self.inner.shared().clone();
        if shared.note_reached(ep) {
            crust_runtime::handle().spawn_blocking(move || shared.save_cache());
        }
    }

    /// Connects to up to `n` peers among the contacts, the cache and
    /// beacon-found peers, as [`crate::ServiceController::bootstrap_many`].
    ///
    /// # Errors
    ///
    /// [`Error::Bootstrap`] listing every attempt.
    pub async fn bootstrap_many(&self, n: usize, timeout: Duration) -> Result<Vec<Stream>> {
        let got = service::bootstrap(self.inner.shared().clone(), n.max(1), timeout).await?;
        Ok(got
            .into_iter()
            .map(|c| {
                self.record(c.peer);
                Stream::start(c)
            })
            .collect())
    }

    /// Prepares a rendezvous, as
    /// [`crate::ServiceController::prepare_rendezvous`]: send its
    /// [`info`](crate::PreparedRendezvous::info) to the peer, then call
    /// [`rendezvous_connect`](Self::rendezvous_connect) with the peer's.
    ///
    /// # Errors
    ///
    /// As [`crate::ServiceController::prepare_rendezvous`].
    pub async fn prepare_rendezvous(&self) -> Result<crate::PreparedRendezvous> {
        service::prepare_rendezvous(self.inner.shared()).await
    }

    /// Connects through both NATs to the peer whose info is `theirs`, as
    /// [`crate::ServiceController::rendezvous_connect`] (the race bounded by
    /// [`transport::rendezvous::DEFAULT_TIMEOUT`]).
    ///
    /// # Errors
    ///
    /// As [`crate::ServiceController::rendezvous_connect`].
    pub async fn rendezvous_connect(
        &self,
        prepared: crate::PreparedRendezvous,
        theirs: &nat_traversal::PubRendezvousInfo,
    ) -> Result<Stream> {
        self.rendezvous_connect_timeout(prepared, theirs, transport::rendezvous::DEFAULT_TIMEOUT)
            .await
    }

    /// Like [`rendezvous_connect`](Self::rendezvous_connect) with an
    /// explicit bound on the race.
    ///
    /// # Errors
    ///
    /// As [`rendezvous_connect`](Self::rendezvous_connect).
    pub async fn rendezvous_connect_timeout(
        &self,
        prepared: crate::PreparedRendezvous,
        theirs: &nat_traversal::PubRendezvousInfo,
        timeout: Duration,
    ) -> Result<Stream> {
        let c = service::rendezvous_connect(self.inner.shared(), prepared, theirs, timeout).await?;
        log::info!("rendezvous with {} ({})", c.peer, c.t.path());
        Ok(Stream::start(c))
    }

    /// Starts listening on one more endpoint.
    ///
    /// # Errors
    ///
    /// As [`crate::ServiceController::add_listener`].
    pub async fn add_listener(&self, endpoint: ListenEndpoint) -> Result<()> {
        self.inner.shared().add_listener(endpoint).await
    }

    /// Stops listening on `endpoint`.
    ///
    /// # Errors
    ///
    /// As [`crate::ServiceController::remove_listener`].
    pub fn remove_listener(&self, endpoint: &ListenEndpoint) -> Result<()> {
        self.inner.remove_listener(endpoint)
    }

    /// The service's listeners and how peers reach each.
    pub fn accepting_endpoints(&self) -> Vec<AcceptingEndpoint> {
        self.inner.accepting_endpoints()
    }

    /// Every endpoint peers can dial us at.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.inner.endpoints()
    }

    /// The service's public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public_key()
    }

    /// The service's network name.
    pub fn network_name(&self) -> &str {
        self.inner.network_name()
    }

    /// Network-change events from now on, async: see
    /// [`crate::ServiceController::endpoints_changed`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> crust::Result<()> {
    /// # let config = crust::Config::loopback().beacon_enabled(false);
    /// let service = crust::aio::Service::new_from_config(config).await?;
    /// let mut changes = service.controller.endpoints_changed();
    /// let quiet = std::time::Duration::from_millis(10);
    /// assert!(tokio::time::timeout(quiet, changes.next()).await.is_err());
    /// # Ok(()) }
    /// ```
    pub fn endpoints_changed(&self) -> EndpointChanges {
        EndpointChanges {
            rx: self.inner.shared().changes.subscribe(),
        }
    }

    /// The blocking controller of the same service (for its other calls:
    /// the mapping context, hole-punch servers).
    pub fn blocking(&self) -> &crate::ServiceController {
        &self.inner
    }
}

/// Network-change events, async, from
/// [`ServiceController::endpoints_changed`].
#[derive(Debug)]
pub struct EndpointChanges {
    rx: tokio::sync::broadcast::Receiver<crate::NetworkChange>,
}

impl EndpointChanges {
    /// Waits for the next change (a reader that fell behind skips to the
    /// newest few: each carries the full endpoint list).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the service stopped.
    pub async fn next(&mut self) -> Result<crate::NetworkChange> {
        crate::netwatch::next_change(&mut self.rx).await
    }
}

/// What the stream's driver tells the handles when it ends.
#[derive(Debug, Default)]
struct Info {
    failure: Mutex<Option<String>>,
    lost: Mutex<Option<Duration>>,
    address_lost: Mutex<Option<SocketAddr>>,
}

/// Where the driver leaves the next message for the reader: one slot and
/// two wake-ups rather than a channel, so an idle stream holds no channel
/// block (about 1 KiB a stream at 10,000 of them).
#[derive(Debug, Default)]
struct Mailbox {
    state: Mutex<MailState>,
    /// Wakes the reader: a message arrived, or the driver ended.
    filled: tokio::sync::Notify,
    /// Wakes the driver: the slot emptied, or the reader left.
    emptied: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct MailState {
    msg: Option<Vec<u8>>,
    driver_gone: bool,
    reader_gone: bool,
}

impl Mailbox {
    /// Waits until the slot is free (`true`) or the reader is gone
    /// (`false`). Cancel-safe: it takes nothing.
    async fn space(&self) -> bool {
        loop {
            let notified = self.emptied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = lock(&self.state);
                if s.reader_gone {
                    return false;
                }
                if s.msg.is_none() {
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Leaves `m` for the reader (after [`space`](Self::space) said so).
    fn put(&self, m: Vec<u8>) {
        lock(&self.state).msg = Some(m);
        self.filled.notify_one();
    }

    /// Whether the reader is gone.
    fn reader_gone(&self) -> bool {
        lock(&self.state).reader_gone
    }

    /// The next message, or `None` once the driver ended and the slot is
    /// empty. Cancel-safe: a message is taken only when it is returned.
    async fn take(&self) -> Option<Vec<u8>> {
        loop {
            let notified = self.filled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = lock(&self.state);
                if let Some(m) = s.msg.take() {
                    drop(s);
                    self.emptied.notify_one();
                    return Some(m);
                }
                if s.driver_gone {
                    return None;
                }
            }
            notified.await;
        }
    }

    fn close_driver(&self) {
        lock(&self.state).driver_gone = true;
        self.filled.notify_one();
    }

    fn close_reader(&self) {
        let mut s = lock(&self.state);
        s.reader_gone = true;
        s.msg = None;
        drop(s);
        self.emptied.notify_one();
    }
}

/// The driver's end of the [`Mailbox`]: the reader hears `None` once it
/// drops, however the driver ends.
struct MailSender(Arc<Common>);

impl Drop for MailSender {
    fn drop(&mut self) {
        self.0.mail.close_driver();
    }
}

/// The parts of a stream both halves know.
#[derive(Debug)]
struct Common {
    peer: Endpoint,
    listeners: Vec<Endpoint>,
    path: Path,
    local_addr: SocketAddr,
    max_message: usize,
    info: Info,
    /// Wakes the driver when our local address left the host.
    gone: tokio::sync::Notify,
    /// Messages from the driver to the reader.
    mail: Mailbox,
}

impl crate::netwatch::LocalLoss for Common {
    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn local_address_lost(&self) {
        *lock(&self.info.address_lost) = Some(self.local_addr);
        // A stored permit if the driver is busy: it ends at its next wait.
        self.gone.notify_one();
    }
}

impl Common {
    /// The error a handle reports once the driver has ended.
    fn ended(&self) -> Error {
        if let Some(local) = *lock(&self.info.address_lost) {
            return Error::AddressLost {
                peer: self.peer.to_string(),
                local,
            };
        }
        if let Some(silent_for) = *lock(&self.info.lost) {
            return Error::PeerLost {
                peer: self.peer.to_string(),
                silent_for,
            };
        }
        match lock(&self.info.failure).clone() {
            Some(reason) if reason.starts_with("closed:") => {
                Error::Closed(reason["closed:".len()..].trim().to_owned())
            }
            Some(reason) => Error::Protocol {
                peer: self.peer.to_string(),
                reason,
            },
            None => Error::Closed(format!("the stream to {} ended", self.peer)),
        }
    }
}

enum Out {
    Message(Vec<u8>),
    Close(oneshot::Sender<Result<()>>),
}

/// A message stream, async: see [`crate::Stream`] for the blocking one.
/// Dropping both halves closes it.
#[derive(Debug)]
pub struct Stream {
    tx: Sender,
    rx: Receiver,
}

/// The sending half of an async [`Stream`]; clone it freely.
#[derive(Clone, Debug)]
pub struct Sender {
    out: mpsc::Sender<Out>,
    common: Arc<Common>,
}

/// The receiving half of an async [`Stream`].
#[derive(Debug)]
pub struct Receiver {
    common: Arc<Common>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.common.mail.close_reader();
    }
}

impl Stream {
    /// Spawns the driver of a connected stream.
    pub(crate) fn start(c: Connected) -> Stream {
        let common = Arc::new(Common {
            peer: c.peer,
            listeners: c.listeners.clone(),
            path: c.t.path(),
            local_addr: c.t.local_addr(),
            max_message: c.settings.max_message,
            info: Info::default(),
            gone: tokio::sync::Notify::new(),
            mail: Mailbox::default(),
        });
        let weak: std::sync::Weak<dyn crate::netwatch::LocalLoss> = Arc::downgrade(&common) as _;
        c.guard.counters.live.register(weak);
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let mail = MailSender(common.clone());
        crust_runtime::handle().spawn(drive(c, out_rx, mail, common.clone()));
        Stream {
            tx: Sender {
                out: out_tx,
                common: common.clone(),
            },
            rx: Receiver { common },
        }
    }

    /// Sends one message (queued for the driver; see [`Sender::send`]).
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    pub async fn send(&self, data: &[u8]) -> Result<()> {
        self.tx.send(data).await
    }

    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`].
    pub async fn recv(&mut self) -> Result<Vec<u8>> {
        self.rx.recv().await
    }

    /// Splits into a cloneable [`Sender`] and a [`Receiver`].
    pub fn split(self) -> (Sender, Receiver) {
        (self.tx, self.rx)
    }

    /// Sends a close frame after the queued messages and shuts the sending
    /// direction; reports what failed.
    ///
    /// # Errors
    ///
    /// The stream's failure, or the socket error.
    pub async fn close(self) -> Result<()> {
        self.tx.close().await
    }

    /// The peer's endpoint.
    pub fn peer_endpoint(&self) -> Endpoint {
        self.tx.common.peer
    }

    /// The peer's proven public key.
    pub fn peer_public_key(&self) -> PublicKey {
        self.tx.common.peer.public_key
    }

    /// The endpoints the peer said it accepts on.
    pub fn peer_listeners(&self) -> &[Endpoint] {
        &self.tx.common.listeners
    }

    /// How the stream is carried.
    pub fn path(&self) -> Path {
        self.tx.common.path
    }

    /// Our local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.tx.common.local_addr
    }
}

impl Sender {
    /// Queues one message for the stream's driver, waiting while its queue
    /// is full.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] (nothing is queued) over the configured
    /// maximum; the stream's failure once it ended ([`Error::PeerLost`],
    /// [`Error::Closed`], ...).
    pub async fn send(&self, data: &[u8]) -> Result<()> {
        if data.len() > self.common.max_message {
            return Err(Error::MessageTooLarge {
                len: data.len() as u64,
                max: self.common.max_message,
            });
        }
        self.out
            .send(Out::Message(data.to_vec()))
            .await
            .map_err(|_| self.common.ended())
    }

    /// Closes the stream (for every handle) as [`Stream::close`].
    ///
    /// # Errors
    ///
    /// As [`Stream::close`].
    pub async fn close(&self) -> Result<()> {
        let (ack, done) = oneshot::channel();
        self.out
            .send(Out::Close(ack))
            .await
            .map_err(|_| self.common.ended())?;
        done.await.map_err(|_| self.common.ended())?
    }
}

impl Receiver {
    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// [`Error::PeerLost`] when the peer was silent for the inactivity
    /// timeout, [`Error::AddressLost`] when our local address left the host,
    /// [`Error::Closed`] when it closed the stream,
    /// [`Error::Protocol`] or [`Error::MessageTooLarge`]-style protocol
    /// errors when it broke the protocol.
    pub async fn recv(&mut self) -> Result<Vec<u8>> {
        match self.common.mail.take().await {
            Some(m) => Ok(m),
            None => Err(self.common.ended()),
        }
    }
}

/// The stream's driver: reads frames, delivers messages, writes what the
/// senders queue, heartbeats, and ends the stream when the peer is lost or
/// gone. One task per stream on the shared runtime.
///
/// A plain function returning the task's future, so the future holds the
/// stream once (an `async fn` keeps its arguments beside the locals taken
/// out of them): an idle stream's task is most of its memory.
fn drive(
    c: Connected,
    out: mpsc::Receiver<Out>,
    inbound: MailSender,
    common: Arc<Common>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let Connected {
        t,
        peer,
        settings,
        guard,
        ..
    } = c;
    run_driver(t, peer, settings, guard, out, inbound, common)
}

async fn run_driver(
    mut t: transport::aio::Stream,
    peer: Endpoint,
    settings: crate::stream::StreamSettings,
    _guard: crate::service::ConnGuard,
    mut out: mpsc::Receiver<Out>,
    inbound: MailSender,
    common: Arc<Common>,
) {
    let mut live = Liveness::new(
        Instant::now(),
        settings.heartbeat_period,
        settings.inactivity_timeout,
    );
    // Plaintext not yet decoded: empty (and holding no memory) while the
    // stream is idle; the transport appends exactly what arrived.
    let mut buf: Vec<u8> = Vec::new();
    let mut held: Option<Vec<u8>> = None;
    let mut out_open = true;
    let fail = |why: String| {
        log::debug!("stream to {peer} ended: {why}");
        *lock(&common.info.failure) = Some(why);
    };
    loop {
        // Decode what is buffered, up to one message held for the reader.
        while held.is_none() {
            match proto::decode_frame(&buf, settings.max_message) {
                Ok(None) => break,
                Ok(Some((Frame::Message(r), used))) => {
                    held = Some(buf[r].to_vec());
                    buf.drain(..used);
                }
                Ok(Some((Frame::Heartbeat, used))) => {
                    buf.drain(..used);
                }
                Ok(Some((Frame::Close, _))) => {
                    fail(format!("closed: {peer} closed the stream"));
                    return;
                }
                Ok(Some((f, _))) => {
                    fail(format!("unexpected frame after the start: {f:?}"));
                    return;
                }
                Err(e) => {
                    log::info!("closing the stream to {peer}: {e}");
                    fail(e.to_string());
                    return;
                }
            }
        }
        if buf.is_empty() && buf.capacity() > 0 {
            buf = Vec::new();
        }
        let now = Instant::now();
        let wake = match live.poll(now) {
            LivenessAction::Wait(at) => at,
            LivenessAction::SendHeartbeat => {
                if let Err(e) = Box::pin(write_frame(&mut t, &proto::HEARTBEAT_FRAME, &[])).await {
                    fail(format!("sending a heartbeat: {e}"));
                    return;
                }
                live.handle_sent(Instant::now());
                continue;
            }
            // A message held for the reader shows the peer was alive.
            LivenessAction::Lost if held.is_none() => {
                let silent = live
                    .lost_at()
                    .map(|at| now.saturating_duration_since(at) + settings.inactivity_timeout)
                    .unwrap_or(settings.inactivity_timeout);
                log::info!("lost {peer}: nothing heard for {silent:?}");
                *lock(&common.info.lost) = Some(silent);
                return;
            }
            LivenessAction::Lost => now + settings.heartbeat_period,
        };
        if !out_open && inbound.0.mail.reader_gone() {
            // Nobody holds the stream any more.
            let _ = Box::pin(write_frame(&mut t, &proto::CLOSE_FRAME, &[])).await;
            return;
        }
        tokio::select! {
            room = inbound.0.mail.space(), if held.is_some() => match room {
                true => {
                    if let Some(m) = held.take() {
                        inbound.0.mail.put(m);
                    }
                }
                false => {
                    // The reader is gone: later messages are dropped.
                    held = None;
                    if !out_open {
                        let _ = Box::pin(write_frame(&mut t, &proto::CLOSE_FRAME, &[])).await;
                        return;
                    }
                }
            },
            got = t.read_append(&mut buf), if held.is_none() => match got {
                Ok(0) => {
                    fail(if buf.is_empty() {
                        format!("closed: {peer} closed the connection")
                    } else {
                        "the connection closed in the middle of a frame".into()
                    });
                    return;
                }
                Ok(_) => live.handle_received(Instant::now()),
                Err(e) => {
                    fail(format!("reading: {e}"));
                    return;
                }
            },
            msg = out.recv(), if out_open => match msg {
                Some(Out::Message(m)) => {
                    let header = proto::encode_message_header(m.len() as u32);
                    if let Err(e) = Box::pin(write_frame(&mut t, &header, &m)).await {
                        fail(format!("sending: {e}"));
                        return;
                    }
                    live.handle_sent(Instant::now());
                }
                Some(Out::Close(ack)) => {
                    let r = Box::pin(write_frame(&mut t, &proto::CLOSE_FRAME, &[])).await;
                    // Over uTP this waits for the peer's ack of our FIN,
                    // so the close frame is not lost if the process exits
                    // next; bounded, as a socket linger is.
                    let _ = tokio::time::timeout(CLOSE_LINGER, t.shutdown()).await;
                    fail("closed: the stream was closed here".into());
                    let _ = ack.send(r.map_err(|e| Error::io(format!("closing the stream to {peer}"), e)));
                    return;
                }
                None => out_open = false,
            },
            () = common.gone.notified() => {
                log::info!("stream to {peer} ended: our address {} left the host", common.local_addr);
                return;
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// Writes a frame's head and body as one record where small, then flushes.
async fn write_frame(
    t: &mut transport::aio::Stream,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    if body.len() <= COALESCE {
        let mut one = Vec::with_capacity(head.len() + body.len());
        one.extend_from_slice(head);
        one.extend_from_slice(body);
        t.write_all(&one).await?;
    } else {
        t.write_all(head).await?;
        t.write_all(body).await?;
    }
    t.flush().await
}
