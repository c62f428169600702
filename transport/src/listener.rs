//! The blocking listener.

use std::net::SocketAddr;
use std::time::Duration;

use crate::aio::{self, ListenerOptions};
use crate::endpoint::{Endpoint, ToListenEndpoints};
use crate::error::{Error, Result};
use crate::identity::{Identity, PublicKey};
use crate::stream::Stream;

/// Accepts encrypted connections, used like [`std::net::TcpListener`].
///
/// Accepting and the handshakes run as tasks on the shared runtime, so a slow
/// or silent client never holds up the others, and connections are accepted
/// between calls to [`accept`](Listener::accept). Dropping the listener
/// closes its sockets before the drop returns.
///
/// ```
/// use std::time::Duration;
/// use transport::{Identity, Listener, Stream};
///
/// let server_id = Identity::generate();
/// let client_id = Identity::generate();
/// let listener = Listener::bind(&server_id, "tcp://127.0.0.1:0")?;
/// let endpoint = listener.endpoints()[0];
/// let dialler = client_id.clone();
/// let client = std::thread::spawn(move || {
///     Stream::direct_connect(&dialler, &endpoint, Duration::from_secs(5))
/// });
/// let server_side = listener.accept()?;
/// let client_side = client.join().unwrap()?;
/// assert_eq!(server_side.peer_public_key(), client_id.public_key());
/// assert_eq!(client_side.peer_public_key(), server_id.public_key());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Listener {
    inner: aio::Listener,
}

impl Listener {
    /// Binds every listen endpoint (e.g. `"tcp://0.0.0.0:5483"`,
    /// `"utp://[::]:5483"`, or several) and starts accepting as `identity`.
    /// A uTP endpoint's UDP socket carries all its connections.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the endpoint that could not be bound,
    /// [`Error::InvalidEndpoint`].
    pub fn bind(identity: &Identity, endpoints: impl ToListenEndpoints) -> Result<Listener> {
        Listener::bind_with(identity, endpoints, ListenerOptions::default())
    }

    /// Binds with explicit [`ListenerOptions`].
    ///
    /// # Errors
    ///
    /// As [`bind`](Listener::bind).
    pub fn bind_with(
        identity: &Identity,
        endpoints: impl ToListenEndpoints,
        options: ListenerOptions,
    ) -> Result<Listener> {
        let listen = endpoints.to_listen_endpoints()?;
        let inner = crust_runtime::block_on(aio::Listener::bind_with(identity, listen, options))
            .map_err(|e| Error::io("transport::Listener::bind", e))??;
        Ok(Listener { inner })
    }

    /// Blocks until a client has connected and completed the handshake.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the listener's tasks ended; an
    /// [`Error::Io`] if called from a current-thread tokio runtime (use
    /// [`aio::Listener`] there).
    pub fn accept(&self) -> Result<Stream> {
        self.accept_inner(None)
    }

    /// Like [`accept`](Listener::accept), but gives up after `timeout` with
    /// [`Error::TimedOut`].
    ///
    /// # Errors
    ///
    /// As [`accept`](Listener::accept), plus [`Error::TimedOut`].
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Stream> {
        self.accept_inner(Some(timeout))
    }

    fn accept_inner(&self, timeout: Option<Duration>) -> Result<Stream> {
        loop {
            let wait = self.inner.accept_incoming();
            let incoming = match timeout {
                None => crust_runtime::block_on(wait),
                Some(t) => crust_runtime::block_on(async move {
                    tokio::time::timeout(t, wait)
                        .await
                        .map_err(|_| Error::TimedOut {
                            what: "accepting a connection".into(),
                            after: t,
                        })?
                }),
            }
            .map_err(|e| Error::io("transport::Listener::accept", e))??;
            let aio_stream = match aio::Stream::new(incoming.io, incoming.session) {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("dropping a connection that closed before accept: {e}");
                    continue;
                }
            };
            return Stream::from_aio(aio_stream)
                .map_err(|e| Error::io("accepting a connection", e));
        }
    }

    /// An iterator over accepted streams; it never ends by itself (like
    /// `TcpListener::incoming`).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The endpoints peers can dial, with our public key.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.inner.endpoints().to_vec()
    }

    /// The endpoints, each saying whether it is NAT-restricted (see
    /// [`ListenerOptions::mapping`]).
    pub fn published_endpoints(&self) -> Vec<aio::PublishedEndpoint> {
        self.inner.published_endpoints().to_vec()
    }

    /// The bound local socket addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.local_addrs().to_vec()
    }

    /// The public key this listener proves.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public_key()
    }

    /// How many connections hold a handshake slot right now (they have not
    /// proven themselves yet).
    pub fn pending_handshakes(&self) -> usize {
        self.inner.pending_handshakes()
    }

    /// How many proven streams wait for [`accept`](Listener::accept).
    pub fn queued_streams(&self) -> usize {
        self.inner.queued_streams()
    }
}

/// Iterator returned by [`Listener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a Listener,
}

impl Iterator for Incoming<'_> {
    type Item = Result<Stream>;

    fn next(&mut self) -> Option<Result<Stream>> {
        Some(self.listener.accept())
    }
}

/// Several listeners behind one accept queue, and the rendezvous they take
/// part in, blocking (see [`aio::ListenerSet`] for the rules).
///
/// [`accept`](ListenerSet::accept) yields only unsolicited connections: a
/// peer that reaches one of the listeners during a rendezvous prepared by
/// [`prepare_rendezvous`](ListenerSet::prepare_rendezvous) is handed to
/// that rendezvous' `connect` by the token in its handshake.
///
/// ```
/// use std::time::Duration;
/// use transport::{Identity, Listener, ListenerSet, Stream};
///
/// let id = Identity::generate();
/// let mc = nat_traversal::MappingContext::with_options(
///     nat_traversal::MappingOptions::default().igd(false),
/// )?;
/// let set = ListenerSet::new(&mc);
/// set.add_listener(Listener::bind(&id, "tcp://127.0.0.1:0")?)?;
/// let ep = set.endpoints()[0];
/// let client = std::thread::spawn(move || {
///     Stream::direct_connect(&Identity::generate(), &ep, Duration::from_secs(5))
/// });
/// let s = set.accept_timeout(Duration::from_secs(5))?;
/// let c = client.join().unwrap()?;
/// assert_eq!(c.peer_public_key(), id.public_key());
/// assert_eq!(s.local_addr(), c.peer_addr());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ListenerSet {
    inner: aio::ListenerSet,
}

impl ListenerSet {
    /// An empty set whose rendezvous map their sockets through `mc`.
    pub fn new(mc: &nat_traversal::MappingContext) -> ListenerSet {
        ListenerSet {
            inner: aio::ListenerSet::new(mc),
        }
    }

    /// An empty set with explicit [`ListenerSetOptions`](crate::ListenerSetOptions).
    pub fn with_options(
        mc: &nat_traversal::MappingContext,
        options: crate::ListenerSetOptions,
    ) -> ListenerSet {
        ListenerSet {
            inner: aio::ListenerSet::with_options(mc, options),
        }
    }

    /// Adds a listener ([`aio::ListenerSet::add_listener`]).
    ///
    /// # Errors
    ///
    /// [`Error::ListenerKeyMismatch`] when it proves another key than the
    /// set's listeners.
    pub fn add_listener(&self, listener: Listener) -> Result<crate::ListenerId> {
        self.inner.add_listener(listener.inner)
    }

    /// Takes a listener out of the set and gives it back; `None` if it is
    /// not in the set.
    pub fn remove_listener(&self, id: crate::ListenerId) -> Option<Listener> {
        let inner = &self.inner;
        // The set lives on this thread's stack until block_on returns.
        crust_runtime::block_on(inner.remove_listener(id))
            .ok()
            .flatten()
            .map(|inner| Listener { inner })
    }

    /// Every listener's endpoints, with our public key.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.inner.endpoints()
    }

    /// Blocks until an unsolicited client has connected and completed the
    /// handshake.
    ///
    /// # Errors
    ///
    /// As [`Listener::accept`].
    pub fn accept(&self) -> Result<Stream> {
        self.accept_inner(None)
    }

    /// Like [`accept`](ListenerSet::accept), but gives up after `timeout`
    /// with [`Error::TimedOut`].
    ///
    /// # Errors
    ///
    /// As [`Listener::accept_timeout`].
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Stream> {
        self.accept_inner(Some(timeout))
    }

    fn accept_inner(&self, timeout: Option<Duration>) -> Result<Stream> {
        loop {
            let inner = &self.inner;
            let incoming = crust_runtime::block_on(async move {
                match timeout {
                    None => inner.accept_incoming().await,
                    Some(t) => tokio::time::timeout(t, inner.accept_incoming())
                        .await
                        .map_err(|_| Error::TimedOut {
                            what: "accepting a connection".into(),
                            after: t,
                        })?,
                }
            })
            .map_err(|e| Error::io("transport::ListenerSet::accept", e))??;
            let aio_stream = match aio::Stream::new(incoming.io, incoming.session) {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("dropping a connection that closed before accept: {e}");
                    continue;
                }
            };
            return Stream::from_aio(aio_stream)
                .map_err(|e| Error::io("accepting a connection", e));
        }
    }

    /// Prepares a rendezvous that also publishes the listeners' endpoints
    /// ([`aio::ListenerSet::prepare_rendezvous`]).
    ///
    /// # Errors
    ///
    /// As [`aio::ListenerSet::prepare_rendezvous`].
    pub fn prepare_rendezvous(&self) -> Result<crate::rendezvous::Rendezvous> {
        let inner = &self.inner;
        let p = crust_runtime::block_on(inner.prepare_rendezvous())
            .map_err(|e| Error::io("transport::ListenerSet::prepare_rendezvous", e))??;
        Ok(crate::rendezvous::Rendezvous::from_aio(p))
    }

    /// Token refusals so far, by reason.
    pub fn token_refusals(&self) -> crate::rendezvous::tokens::RefusalCounts {
        self.inner.token_refusals()
    }

    /// How many rendezvous prepared by this set are pending.
    pub fn pending_rendezvous(&self) -> usize {
        self.inner.pending_rendezvous()
    }
}
