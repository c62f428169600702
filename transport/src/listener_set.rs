//! The async [`ListenerSet`]: listeners that share one accept queue and
//! hand the streams of pending rendezvous to them.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nat_traversal::{ListenerEndpoint, ListenerProtocol, MappingContext};
use tokio::sync::{Mutex, mpsc};

use crate::aio::{Incoming, Listener, Stream};
use crate::endpoint::{Endpoint, Protocol};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::rendezvous::aio::PreparedRendezvous;
use crate::rendezvous::tokens::{self, DEFAULT_MAX_TOKENS, Token, TokenTable};

/// Settings of a [`ListenerSet`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ListenerSetOptions {
    /// How many rendezvous prepared by the set may be pending at once (the
    /// token table's bound); one more is refused with
    /// [`Error::TooManyPendingRendezvous`]. Default 256.
    pub max_pending_rendezvous: usize,
    /// How long a prepared rendezvous' token stays good before
    /// [`connect`](PreparedRendezvous::connect) is called (the info travels
    /// to the peer meanwhile); `connect` then keeps it for its timeout
    /// plus [`TOKEN_GRACE`]. Default 120 s.
    pub prepared_lifetime: Duration,
    /// How many streams may wait for [`accept`](ListenerSet::accept).
    /// Default 128.
    pub accept_queue: usize,
}

/// How long after a rendezvous' deadline its token is still good.
pub const TOKEN_GRACE: Duration = Duration::from_secs(2);

impl Default for ListenerSetOptions {
    fn default() -> Self {
        ListenerSetOptions {
            max_pending_rendezvous: DEFAULT_MAX_TOKENS,
            prepared_lifetime: Duration::from_secs(120),
            accept_queue: 128,
        }
    }
}

impl ListenerSetOptions {
    /// Sets [`max_pending_rendezvous`](Self::max_pending_rendezvous).
    pub fn max_pending_rendezvous(mut self, n: usize) -> Self {
        self.max_pending_rendezvous = n.max(1);
        self
    }

    /// Sets [`prepared_lifetime`](Self::prepared_lifetime).
    pub fn prepared_lifetime(mut self, t: Duration) -> Self {
        self.prepared_lifetime = t;
        self
    }

    /// Sets [`accept_queue`](Self::accept_queue).
    pub fn accept_queue(mut self, n: usize) -> Self {
        self.accept_queue = n.max(1);
        self
    }
}

/// What the listeners' routing tasks share with the set and its prepared
/// rendezvous.
pub(crate) struct Shared {
    table: std::sync::Mutex<TokenTable<mpsc::Sender<Incoming>>>,
}

fn lock_table(s: &Shared) -> std::sync::MutexGuard<'_, TokenTable<mpsc::Sender<Incoming>>> {
    s.table.lock().unwrap_or_else(|e| e.into_inner())
}

/// A prepared rendezvous' hold on its token: the token leaves the table
/// when this is dropped (the rendezvous ended, won or lost).
pub(crate) struct TokenLink {
    pub(crate) token: Token,
    shared: Weak<Shared>,
}

impl TokenLink {
    /// The rendezvous knows its peer's key and deadline now.
    pub(crate) fn expect(&self, key: [u8; 32], deadline: Instant) {
        if let Some(s) = self.shared.upgrade() {
            lock_table(&s).expect(&self.token, key, deadline + TOKEN_GRACE, Instant::now());
        }
    }
}

impl Drop for TokenLink {
    fn drop(&mut self) {
        if let Some(s) = self.shared.upgrade() {
            lock_table(&s).remove(&self.token, Instant::now());
        }
    }
}

struct Member {
    id: u64,
    listener: Arc<Listener>,
    router: tokio::task::JoinHandle<()>,
}

/// Several listeners (TCP, uTP, several addresses) behind one accept
/// queue, and the rendezvous they take part in, async. See
/// [`crate::ListenerSet`] for the blocking one.
///
/// [`prepare_rendezvous`](Self::prepare_rendezvous) publishes the
/// listeners' endpoints in the rendezvous info with a fresh token; a peer
/// that dials one of them carries the token in its encrypted handshake, and
/// the set hands that stream to the pending rendezvous, never to
/// [`accept`](Self::accept). A stream with an unknown, expired or used
/// token is closed (logged at most once per 10 s); a stream with no token
/// goes to `accept`. Every listener must prove the same key.
pub struct ListenerSet {
    mc: MappingContext,
    options: ListenerSetOptions,
    shared: Arc<Shared>,
    accept_tx: mpsc::Sender<Incoming>,
    accept_rx: Mutex<mpsc::Receiver<Incoming>>,
    members: std::sync::Mutex<Vec<Member>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ListenerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("aio::ListenerSet")
            .field("endpoints", &self.endpoints())
            .finish_non_exhaustive()
    }
}

/// Identifies a listener in a [`ListenerSet`], for
/// [`remove_listener`](ListenerSet::remove_listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

impl ListenerSet {
    /// An empty set whose rendezvous map their sockets through `mc`.
    pub fn new(mc: &MappingContext) -> ListenerSet {
        ListenerSet::with_options(mc, ListenerSetOptions::default())
    }

    /// An empty set with explicit [`ListenerSetOptions`].
    pub fn with_options(mc: &MappingContext, options: ListenerSetOptions) -> ListenerSet {
        let (accept_tx, accept_rx) = mpsc::channel(options.accept_queue.max(1));
        ListenerSet {
            mc: mc.clone(),
            shared: Arc::new(Shared {
                table: std::sync::Mutex::new(TokenTable::new(options.max_pending_rendezvous)),
            }),
            options,
            accept_tx,
            accept_rx: Mutex::new(accept_rx),
            members: std::sync::Mutex::new(Vec::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a listener: its connections go to this set from now on.
    ///
    /// # Errors
    ///
    /// [`Error::ListenerKeyMismatch`] when it proves another key than the
    /// set's listeners.
    pub fn add_listener(&self, listener: Listener) -> Result<ListenerId> {
        let mut members = self.members();
        if let Some(m) = members.first()
            && m.listener.public_key() != listener.public_key()
        {
            return Err(Error::ListenerKeyMismatch {
                set: m.listener.public_key(),
                listener: listener.public_key(),
            });
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let listener = Arc::new(listener);
        let router = crust_runtime::handle().spawn(route(
            listener.clone(),
            self.shared.clone(),
            self.accept_tx.clone(),
        ));
        members.push(Member {
            id,
            listener,
            router,
        });
        Ok(ListenerId(id))
    }

    /// Takes a listener out of the set and gives it back (its queued
    /// streams stay with it). `None` if it is not in the set.
    pub async fn remove_listener(&self, id: ListenerId) -> Option<Listener> {
        let m = {
            let mut members = self.members();
            let i = members.iter().position(|m| m.id == id.0)?;
            members.remove(i)
        };
        m.router.abort();
        let _ = m.router.await;
        // The router held the only other reference; it is gone now.
        Arc::into_inner(m.listener)
    }

    /// How many listeners the set holds.
    pub fn len(&self) -> usize {
        self.members().len()
    }

    /// Whether the set holds no listener.
    pub fn is_empty(&self) -> bool {
        self.members().is_empty()
    }

    /// Every listener's endpoints, with our public key.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.members()
            .iter()
            .flat_map(|m| m.listener.endpoints().to_vec())
            .collect()
    }

    /// The endpoints a prepared rendezvous publishes: every listener's
    /// endpoints that are not NAT-restricted.
    fn rendezvous_endpoints(&self) -> Vec<ListenerEndpoint> {
        self.members()
            .iter()
            .flat_map(|m| m.listener.reachable_endpoints())
            .map(|e| ListenerEndpoint {
                protocol: match e.protocol {
                    Protocol::Tcp => ListenerProtocol::Tcp,
                    Protocol::Utp => ListenerProtocol::Utp,
                },
                addr: e.addr,
            })
            .collect()
    }

    fn identity(&self) -> Result<Identity> {
        self.members()
            .first()
            .map(|m| m.listener.identity().clone())
            .ok_or_else(|| Error::Closed("the listener set has no listener".into()))
    }

    /// Waits for the next unsolicited connection (one that carries no
    /// rendezvous token).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the set is gone (it never is while `self`
    /// lives).
    pub async fn accept(&self) -> Result<Stream> {
        loop {
            let inc = self.accept_incoming().await?;
            match inc.into_local_stream() {
                Ok(s) => return Ok(s),
                Err(e) => log::debug!("dropping a connection that closed before accept: {e}"),
            }
        }
    }

    pub(crate) async fn accept_incoming(&self) -> Result<Incoming> {
        self.accept_rx
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| Error::Closed("listener set".into()))
    }

    /// Prepares a rendezvous ([`PreparedRendezvous::prepare`], as the set's
    /// listeners' identity) whose info also lists the listeners' reachable
    /// endpoints and a fresh token: a peer that reaches one of them
    /// directly gets its stream to this rendezvous' `connect` (the path
    /// says [`Path::Mapped`](crate::Path::Mapped)).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the set has no listener,
    /// [`Error::TooManyPendingRendezvous`] when
    /// [`max_pending_rendezvous`](ListenerSetOptions::max_pending_rendezvous)
    /// are pending, and [`PreparedRendezvous::prepare`]'s errors.
    pub async fn prepare_rendezvous(&self) -> Result<PreparedRendezvous> {
        let identity = self.identity()?;
        let prep = PreparedRendezvous::prepare(&self.mc, &identity).await?;
        let token: [u8; tokens::TOKEN_LEN] = rand::random();
        let (tx, rx) = mpsc::channel(1);
        let now = Instant::now();
        let token = {
            let mut t = lock_table(&self.shared);
            t.handle_timeout(now);
            t.register(token, now + self.options.prepared_lifetime, tx)
                .map_err(Error::TooManyPendingRendezvous)?
        };
        let link = TokenLink {
            token,
            shared: Arc::downgrade(&self.shared),
        };
        Ok(prep.with_listeners(self.rendezvous_endpoints(), link, rx))
    }

    /// Token refusals so far, by reason.
    pub fn token_refusals(&self) -> tokens::RefusalCounts {
        lock_table(&self.shared).refusals()
    }

    /// How many rendezvous prepared by this set are pending.
    pub fn pending_rendezvous(&self) -> usize {
        let mut t = lock_table(&self.shared);
        t.handle_timeout(Instant::now());
        t.len()
    }
}

impl Drop for ListenerSet {
    fn drop(&mut self) {
        let members: Vec<Member> = self.members().drain(..).collect();
        let mut listeners = Vec::with_capacity(members.len());
        let mut routers = Vec::with_capacity(members.len());
        for m in members {
            m.router.abort();
            routers.push(m.router);
            listeners.push(m.listener);
        }
        // Once the routers are gone, `listeners` holds the last references:
        // they drop here, on the caller's thread, closing their sockets
        // before this drop returns (as a lone `Listener` does).
        crust_runtime::finish_in_drop("stopping a listener set", None, async move {
            for r in routers {
                let _ = r.await;
            }
        });
        drop(listeners);
    }
}

/// Takes one listener's proven streams and routes them: no token to
/// `accept`, a live token to its rendezvous, any other token closed. When
/// the set's accept queue is full it holds one unsolicited stream and
/// closes further unsolicited ones (logged at most once per 10 s), so the
/// streams of pending rendezvous never wait behind them.
async fn route(listener: Arc<Listener>, shared: Arc<Shared>, accept: mpsc::Sender<Incoming>) {
    let mut held: Option<Incoming> = None;
    let mut full = crate::admission::RateLimited::new(tokens::REPORT_EVERY);
    loop {
        let inc = tokio::select! {
            permit = accept.reserve(), if held.is_some() => {
                match (permit, held.take()) {
                    (Ok(p), Some(inc)) => p.send(inc),
                    (Ok(_), None) => {}
                    (Err(_), _) => break,
                }
                continue;
            }
            inc = listener.accept_incoming() => match inc {
                Ok(inc) => inc,
                Err(_) => break,
            },
        };
        let Some(token) = tokens::payload_token(&inc.payload) else {
            if held.is_some() {
                if let Some(n) = full.record(Instant::now()) {
                    log::warn!(
                        "listener set: accept queue full, closing unsolicited connections \
                         ({n} since the last report)"
                    );
                }
                continue;
            }
            match accept.try_send(inc) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(inc)) => held = Some(inc),
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
            continue;
        };
        let now = Instant::now();
        let peer = inc.peer_addr();
        let key = *inc.session.peer().as_bytes();
        let mut table = lock_table(&shared);
        table.handle_timeout(now);
        match table.lookup(&token, Some(&key), now) {
            Ok(tx) => {
                drop(table);
                log::debug!("a rendezvous stream from {peer:?} reached our listener");
                if tx.try_send(inc).is_err() {
                    log::debug!("its rendezvous ended meanwhile: closing it");
                }
            }
            Err(why) => {
                let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
                if let Some(line) = table.report(why, peer, now) {
                    log::warn!("{line}");
                }
            }
        }
    }
}
