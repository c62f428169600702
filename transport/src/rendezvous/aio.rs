//! The async rendezvous: [`PreparedRendezvous`] (see the [module
//! docs](super)).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use nat_traversal::{IgdMapping, MappingContext, PrivRendezvousInfo, PubRendezvousInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::tokens::{self, Token};
use super::{Attempt, AttemptFailure, RaceCore, Selection};
use crate::aio::{Carrier, Incoming, Stream};
use crate::endpoint::{Endpoint, Protocol};
use crate::error::{Error, Result};
use crate::handshake::{self, FirstMessage};
use crate::identity::{Identity, PublicKey};
use crate::listener_set::TokenLink;
use crate::utp::aio::UtpSocket;

/// A rendezvous whose sockets are mapped and whose info is ready to send
/// (see the [module docs](super)). Its UDP and TCP sockets, and their UPnP
/// mappings, live until [`connect`](Self::connect) ends or it is dropped.
pub struct PreparedRendezvous {
    identity: Identity,
    udp: tokio::net::UdpSocket,
    tcp: socket2::Socket,
    ours: PrivRendezvousInfo,
    info: PubRendezvousInfo,
    _mappings: Vec<IgdMapping>,
    /// From a [`ListenerSet`](crate::aio::ListenerSet): our token, and the
    /// streams our listeners hand over by it.
    listeners: Option<(TokenLink, tokio::sync::mpsc::Receiver<Incoming>)>,
}

impl std::fmt::Debug for PreparedRendezvous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRendezvous")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn map_err(what: &'static str) -> impl Fn(nat_traversal::Error) -> Error {
    move |e| Error::io(what, e.into())
}

impl PreparedRendezvous {
    /// Binds one UDP and one reusable TCP socket (on
    /// `MappingOptions::local_ip` if set) and maps both through `mc` (its
    /// STUN servers and UPnP gateway, each bounded by its timeouts).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a socket cannot be bound or the mapping fails.
    pub async fn prepare(mc: &MappingContext, identity: &Identity) -> Result<PreparedRendezvous> {
        let ip = mc
            .options()
            .local_ip
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let udp = tokio::net::UdpSocket::bind((ip, 0))
            .await
            .map_err(|e| Error::io("binding the rendezvous UDP socket", e))?;
        let u = nat_traversal::aio::map_udp(&udp, mc)
            .await
            .map_err(map_err("mapping the rendezvous UDP socket"))?;
        let tcp = nat_traversal::reusable_std_tcp(SocketAddr::new(ip, 0))
            .map_err(|e| Error::io("binding the rendezvous TCP socket", e))?;
        let tcp_local = tcp
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| {
                Error::io(
                    "binding the rendezvous TCP socket",
                    std::io::ErrorKind::Other.into(),
                )
            })?;
        let t = nat_traversal::aio::map_tcp(tcp_local, mc)
            .await
            .map_err(map_err("mapping the rendezvous TCP socket"))?;
        let (ours, info) = nat_traversal::gen_rendezvous_info_with(
            u.endpoints.iter().map(|e| e.addr).collect(),
            u.nat,
        );
        let info = info
            .with_tcp_endpoints(t.endpoints.iter().map(|e| e.addr).collect())
            .with_static_key(*identity.public_key().as_bytes());
        log::debug!(
            "rendezvous prepared: udp {:?}, tcp {:?}",
            info.endpoints,
            info.tcp_endpoints
        );
        Ok(PreparedRendezvous {
            identity: identity.clone(),
            udp,
            tcp,
            ours,
            info,
            _mappings: [u.igd_mapping, t.igd_mapping]
                .into_iter()
                .flatten()
                .collect(),
            listeners: None,
        })
    }

    /// The same, also publishing our listeners' endpoints with the token
    /// whose streams `rx` receives.
    pub(crate) fn with_listeners(
        mut self,
        endpoints: Vec<nat_traversal::ListenerEndpoint>,
        link: TokenLink,
        rx: tokio::sync::mpsc::Receiver<Incoming>,
    ) -> PreparedRendezvous {
        self.info = self.info.with_listeners(endpoints, link.token.0);
        log::debug!(
            "rendezvous prepared with listeners {:?}",
            self.info.listener_endpoints
        );
        self.listeners = Some((link, rx));
        self
    }

    /// Our rendezvous info, to send to the peer by any means (its
    /// `encode()` or JSON): endpoints, NAT behaviour, our static key.
    pub fn info(&self) -> &PubRendezvousInfo {
        &self.info
    }

    /// Connects to the peer whose info is `theirs`, racing the UDP and TCP
    /// attempts, within `timeout` (the deadline of the whole race). When
    /// `theirs` lists listener endpoints and a token, a third attempt dials
    /// them directly; when this rendezvous was prepared by a
    /// [`ListenerSet`](crate::aio::ListenerSet), the peer's dial to our
    /// listeners races too. The stream's [`path`](Stream::path) says which
    /// won.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRendezvousInfo`] when `theirs` names no static key
    /// or our own; [`Error::RendezvousFailed`] listing each attempt with
    /// why when none gave a stream.
    pub async fn connect(self, theirs: &PubRendezvousInfo, timeout: Duration) -> Result<Stream> {
        let their_key = PublicKey::from_bytes(theirs.static_key.ok_or_else(|| {
            Error::InvalidRendezvousInfo("the peer's rendezvous info names no static key".into())
        })?);
        let our_key = self.identity.public_key();
        if their_key == our_key {
            return Err(Error::InvalidRendezvousInfo(
                "the peer's rendezvous info names our own key".into(),
            ));
        }
        let start = Instant::now();
        let mut attempts = vec![Attempt::UdpPunch, Attempt::TcpPunch];
        let their_listeners = match theirs.listener_token {
            Some(t) if !theirs.listener_endpoints.is_empty() => {
                attempts.push(Attempt::TheirListener);
                Some(Token(t))
            }
            _ => None,
        };
        let (link, our_rx) = match self.listeners {
            Some((link, rx)) => {
                link.expect(*their_key.as_bytes(), start + timeout);
                attempts.push(Attempt::OurListener);
                (Some(link), Some(rx))
            }
            None => (None, None),
        };
        let mut core = RaceCore::new(&self.info.secret, &theirs.secret, &attempts, start, timeout);
        let initiator = core.is_selector();
        let ctx = AttemptCtx {
            identity: self.identity.clone(),
            their_key,
            initiator,
            cfg: nat_traversal::PunchConfig::default().timeout(timeout),
            timeout,
            ours: self.ours.clone(),
            our_secret: self.info.secret,
            theirs: theirs.clone(),
        };
        let mut tasks: JoinSet<(Attempt, std::result::Result<Stream, AttemptFailure>)> =
            JoinSet::new();
        {
            let ctx = ctx.clone();
            let udp = self.udp;
            tasks.spawn(async move { (Attempt::UdpPunch, ctx.udp(udp).await) });
        }
        {
            let ctx = ctx.clone();
            let tcp = self.tcp;
            tasks.spawn(async move { (Attempt::TcpPunch, ctx.tcp(tcp).await) });
        }
        if let Some(token) = their_listeners {
            let ctx = ctx.clone();
            tasks.spawn(async move { (Attempt::TheirListener, ctx.their_listener(token).await) });
        }
        if let Some(rx) = our_rx {
            let ctx = ctx.clone();
            tasks.spawn(async move { (Attempt::OurListener, ctx.our_listener(rx).await) });
        }
        let mut refusals = JoinSet::new();
        let result = loop {
            // A winner breaks out below with its stream; here only the
            // failure (all failed, or the deadline).
            if let Some(Err(f)) = core.outcome(Instant::now()) {
                break Err(f);
            }
            let wake = core.poll_timeout().unwrap_or_else(Instant::now);
            tokio::select! {
                Some(r) = tasks.join_next() => {
                    let Ok((a, r)) = r else { continue };
                    match r {
                        Ok(mut s) if initiator => match core.handle_established(a) {
                            Selection::Select => {
                                if let Err(e) = select(&mut s, true).await {
                                    core.handle_failed_at(a, AttemptFailure::Other(e.to_string()), Instant::now());
                                    continue;
                                }
                                log::debug!("rendezvous: selected {a}");
                                break Ok((a, s));
                            }
                            Selection::Refuse => {
                                refusals.spawn(async move { let _ = select(&mut s, false).await; });
                            }
                        },
                        Ok(s) => {
                            // The attempt read the selection byte 1.
                            if core.handle_selected(a) {
                                break Ok((a, s));
                            }
                        }
                        Err(why) => {
                            log::debug!("rendezvous: {a} failed: {why}");
                            core.handle_failed_at(a, why, Instant::now());
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => core.handle_timeout(Instant::now()),
            }
        };
        // The losers: their tasks end here, closing their sockets; our token
        // leaves the table (a late stream with it is refused).
        tasks.abort_all();
        drop(link);
        match result {
            Ok((a, s)) => {
                if !refusals.is_empty() {
                    // Let the refusals leave, bounded, without holding the
                    // caller.
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while refusals.join_next().await.is_some() {}
                        })
                        .await;
                    });
                }
                let path = a.path(s.protocol());
                Ok(s.with_path(path))
            }
            Err(f) => Err(Error::RendezvousFailed(f)),
        }
    }
}

/// Writes the selection byte (1: this is the stream, 0: it is not).
async fn select(s: &mut Stream, keep: bool) -> std::io::Result<()> {
    s.write_all(&[u8::from(keep)]).await?;
    s.flush().await
}

/// What each attempt needs.
#[derive(Clone)]
struct AttemptCtx {
    identity: Identity,
    their_key: PublicKey,
    initiator: bool,
    cfg: nat_traversal::PunchConfig,
    timeout: Duration,
    ours: PrivRendezvousInfo,
    our_secret: [u8; nat_traversal::rendezvous::SECRET_LEN],
    theirs: PubRendezvousInfo,
}

fn punch_failure(e: nat_traversal::Error) -> AttemptFailure {
    match e {
        nat_traversal::Error::CannotPunch(p) => AttemptFailure::Punch(p),
        other => AttemptFailure::Other(other.to_string()),
    }
}

fn other(what: &str) -> impl Fn(std::io::Error) -> AttemptFailure + '_ {
    move |e| AttemptFailure::Other(format!("{what}: {e}"))
}

impl AttemptCtx {
    /// The uTP rendezvous nonce: both secrets in byte order, so both sides
    /// compute it.
    fn utp_nonce(&self) -> Vec<u8> {
        let mut s = [self.our_secret, self.theirs.secret];
        s.sort();
        [b"crust utp rendezvous".as_slice(), &s[0], &s[1]].concat()
    }

    async fn udp(
        &self,
        sock: tokio::net::UdpSocket,
    ) -> std::result::Result<Stream, AttemptFailure> {
        let p = nat_traversal::aio::punch_hole(&sock, &self.ours, &self.theirs, &self.cfg)
            .await
            .map_err(punch_failure)?;
        log::debug!("rendezvous: UDP punched to {}", p.peer_addr);
        let std = sock.into_std().map_err(other("the punched UDP socket"))?;
        let utp = UtpSocket::from_std(std).map_err(other("the punched UDP socket"))?;
        let s = utp
            .rendezvous_connect(p.peer_addr, &self.utp_nonce(), self.initiator)
            .await
            .map_err(other("uTP rendezvous"))?;
        self.secure(Carrier::Utp(s), Protocol::Utp, p.peer_addr)
            .await
    }

    async fn tcp(&self, sock: socket2::Socket) -> std::result::Result<Stream, AttemptFailure> {
        let setup = || -> std::io::Result<tokio::net::TcpListener> {
            sock.listen(16)?;
            sock.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(sock.into())
        };
        let listener = setup().map_err(other("the TCP punch socket"))?;
        let (s, peer) =
            nat_traversal::aio::tcp_punch_hole(listener, &self.ours, &self.theirs, &self.cfg)
                .await
                .map_err(punch_failure)?;
        log::debug!("rendezvous: TCP punched to {peer}");
        self.secure(Carrier::Tcp(s), Protocol::Tcp, peer).await
    }

    /// Dials the peer's listener endpoints at once; the first carrier to
    /// connect runs the handshake (proving the key in their info, carrying
    /// the token), the others are closed before they send a byte.
    async fn their_listener(&self, token: Token) -> std::result::Result<Stream, AttemptFailure> {
        let mut dials = JoinSet::new();
        for le in &self.theirs.listener_endpoints {
            let ep = Endpoint {
                protocol: match le.protocol {
                    nat_traversal::ListenerProtocol::Tcp => Protocol::Tcp,
                    nat_traversal::ListenerProtocol::Utp => Protocol::Utp,
                },
                addr: le.addr,
                public_key: self.their_key,
            };
            dials.spawn(async move { (ep, crate::aio::dial_carrier(&ep).await) });
        }
        let mut last = String::from("no listener endpoint");
        let (ep, mut io) = loop {
            match dials.join_next().await {
                Some(Ok((ep, Ok(io)))) => break (ep, io),
                Some(Ok((ep, Err(e)))) => last = format!("{ep}: {e}"),
                Some(Err(_)) => {}
                None => {
                    return Err(AttemptFailure::Other(format!(
                        "no listener endpoint of the peer answered ({last})"
                    )));
                }
            }
        };
        dials.abort_all();
        let payload = tokens::token_payload(&token);
        let session =
            match handshake::initiate_async(&mut io, &self.identity, &ep, &payload, self.timeout)
                .await
            {
                Ok(s) => s,
                Err(Error::PeerKeyMismatch { .. }) => {
                    return Err(AttemptFailure::WrongKey {
                        expected: self.their_key,
                    });
                }
                Err(e) => return Err(AttemptFailure::Other(e.to_string())),
            };
        log::debug!("rendezvous: reached the peer's listener {ep}");
        let mut s = Stream::new(io, session).map_err(other("the listener stream"))?;
        if self.initiator {
            // We select: first the listener's side says it took the stream
            // (its token matched), so we never select a stream it closed.
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.map_err(|e| {
                AttemptFailure::Other(format!(
                    "the peer's listener {ep} did not take our token ({e})"
                ))
            })?;
            if b[0] != 1 {
                return Err(AttemptFailure::Other(format!(
                    "the peer's listener {ep} answered {} instead of taking the stream",
                    b[0]
                )));
            }
            return Ok(s);
        }
        self.await_selection(s).await
    }

    /// Waits for the stream one of our listeners hands over by our token;
    /// it must prove the key in their info.
    async fn our_listener(
        &self,
        mut rx: tokio::sync::mpsc::Receiver<Incoming>,
    ) -> std::result::Result<Stream, AttemptFailure> {
        let inc = rx
            .recv()
            .await
            .ok_or_else(|| AttemptFailure::Other("the listener set was dropped".into()))?;
        if inc.session.peer() != self.their_key {
            // Only before connect: from then on the table checks the key.
            log::warn!(
                "rendezvous: a stream to our listener holds the key {}, not the one the info named",
                inc.session.peer()
            );
            return Err(AttemptFailure::WrongKey {
                expected: self.their_key,
            });
        }
        let mut s = inc
            .into_local_stream()
            .map_err(other("the stream to our listener"))?;
        if !self.initiator {
            // The dialler selects: tell it we took the stream first.
            select(&mut s, true)
                .await
                .map_err(other("acknowledging the stream to our listener"))?;
        }
        self.await_selection(s).await
    }

    /// On the side that does not select, reads the selection byte.
    async fn await_selection(&self, mut s: Stream) -> std::result::Result<Stream, AttemptFailure> {
        if !self.initiator {
            let mut b = [0u8; 1];
            s.read_exact(&mut b)
                .await
                .map_err(other("waiting for the peer's selection"))?;
            if b[0] != 1 {
                return Err(AttemptFailure::NotSelected);
            }
        }
        Ok(s)
    }

    /// The Noise handshake on a punched carrier (the lower key initiates,
    /// proving `their_key`; the other checks the initiator holds it), then,
    /// on the side that does not select, the selection byte.
    async fn secure(
        &self,
        mut io: Carrier,
        protocol: Protocol,
        peer: SocketAddr,
    ) -> std::result::Result<Stream, AttemptFailure> {
        let session = if self.initiator {
            let ep = Endpoint {
                protocol,
                addr: peer,
                public_key: self.their_key,
            };
            match handshake::initiate_async(&mut io, &self.identity, &ep, &[], self.timeout).await {
                Ok(s) => s,
                Err(Error::PeerKeyMismatch { .. }) => {
                    return Err(AttemptFailure::WrongKey {
                        expected: self.their_key,
                    });
                }
                Err(e) => return Err(AttemptFailure::Other(e.to_string())),
            }
        } else {
            let r = handshake::respond_async(&mut io, &self.identity, protocol, peer, || {
                FirstMessage::Answer
            })
            .await
            .map_err(other("the rendezvous handshake"))?;
            if r.session.peer() != self.their_key {
                log::warn!(
                    "rendezvous: {peer} holds the key {}, not the one its info named",
                    r.session.peer()
                );
                return Err(AttemptFailure::WrongKey {
                    expected: self.their_key,
                });
            }
            r.session
        };
        let s = Stream::new(io, session).map_err(other("the rendezvous stream"))?;
        self.await_selection(s).await
    }
}
