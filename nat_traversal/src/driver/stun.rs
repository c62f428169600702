//! The STUN drivers on tokio: the Binding client over UDP and TCP (over
//! [`crate::stun::BindingTransaction`]) and the [`StunServer`] (over
//! [`crate::stun::Responder`]).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

use super::ignorable;
use crate::stun::codec::{self, Message};
use crate::stun::{
    AddressPair, BindingResponse, BindingTransaction, Responder, ResponderConfig, ResponderStats,
    StunConfig, StunError,
};
use crate::{Error, Result};

fn stun_io_error(server: SocketAddr, error: StunError) -> Error {
    Error::Stun { server, error }
}

/// One STUN Binding transaction over `socket` to `server`: our external
/// address as `server` sees it. With `change` (change IP, change port) it
/// is an RFC 5780 behaviour test. Datagrams that are not the answer are
/// dropped. Fails with [`io::ErrorKind::TimedOut`] after `cfg.timeout`.
pub async fn stun_binding(
    socket: &UdpSocket,
    server: SocketAddr,
    change: Option<(bool, bool)>,
    cfg: &StunConfig,
) -> Result<BindingResponse> {
    let mut t = BindingTransaction::new(rand::random(), change, cfg.clone(), Instant::now());
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        while let Some(req) = t.poll_transmit(now) {
            match socket.send_to(&req, server).await {
                Err(e) if !ignorable(&e) => return Err(e.into()),
                _ => {}
            }
        }
        t.handle_timeout(now);
        if let Some(r) = t.result() {
            return r.clone().map_err(|e| stun_io_error(server, e));
        }
        let Some(deadline) = t.poll_timeout() else {
            return Err(io::Error::other("STUN transaction stopped without a result").into());
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    t.handle_input(&buf[..n], from);
                }
                Err(e) if ignorable(&e) => {}
                Err(e) => return Err(e.into()),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

/// A TCP socket with `SO_REUSEADDR` and `SO_REUSEPORT`, bound to `local`.
pub fn reusable_tcp_socket(local: SocketAddr) -> Result<TcpSocket> {
    let s = if local.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    #[cfg(unix)]
    s.set_reuseport(true)?;
    s.bind(local)?;
    Ok(s)
}

/// STUN Binding over TCP (RFC 8489 §6.2.2) from a reusable socket bound to
/// `local` (so the answer is the mapping of that local port): connects,
/// asks, reads one framed answer, closes. Bounded by `cfg.timeout`.
pub async fn stun_binding_tcp(
    local: SocketAddr,
    server: SocketAddr,
    cfg: &StunConfig,
) -> Result<BindingResponse> {
    let tid: codec::TransactionId = rand::random();
    let fut = async {
        let sock = reusable_tcp_socket(local)?;
        let mut stream = sock.connect(server).await?;
        stream
            .write_all(&Message::binding_request(tid).encode())
            .await?;
        let m = read_stun_frame(&mut stream).await?;
        let m = Message::decode(&m).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if m.transaction_id != tid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "STUN answer over TCP for another transaction",
            )
            .into());
        }
        let mapped = m
            .reflexive_address()
            .ok_or_else(|| stun_io_error(server, StunError::NoMappedAddress))?;
        Ok::<_, Error>(BindingResponse {
            mapped,
            from: server,
            response_origin: m.response_origin,
            other_address: m.other_address,
        })
    };
    tokio::time::timeout(cfg.timeout, fut)
        .await
        .map_err(|_| stun_io_error(server, StunError::TimedOut { sent: 1 }))?
}

async fn read_stun_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = [0u8; codec::HEADER_LEN];
    stream.read_exact(&mut head).await?;
    if !codec::is_stun(&head) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not STUN"));
    }
    let len = codec::framed_len(&head).unwrap_or(codec::HEADER_LEN);
    if len > codec::MAX_MESSAGE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "STUN message too long",
        ));
    }
    let mut m = head.to_vec();
    m.resize(len, 0);
    stream.read_exact(&mut m[codec::HEADER_LEN..]).await?;
    Ok(m)
}

/// The most TCP clients a [`StunServer`] serves at once.
const MAX_TCP_CLIENTS: usize = 64;
/// How long a TCP client may take to send its request.
const TCP_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A STUN Binding server over UDP and TCP, running as tasks on the current
/// runtime until dropped (drop aborts them and so closes the sockets).
#[derive(Debug)]
pub struct StunServer {
    udp: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
    pair: Option<AddressPair>,
    responder: Arc<Mutex<Responder>>,
    tasks: Vec<JoinHandle<()>>,
}

impl StunServer {
    /// Binds on `primary` (UDP and TCP). With `alternate` (another IP and
    /// another port) it also binds the other three combinations and answers
    /// RFC 5780 CHANGE-REQUEST. Port 0 picks free ports.
    ///
    /// Its sockets and tasks live on the shared runtime (`crust-runtime`),
    /// whichever runtime awaits this: the server keeps serving when the
    /// caller's runtime ends.
    ///
    /// Answers and rate limit: [`ResponderConfig::default`] (see
    /// [`crate::stun::responder`]); [`bind_with`](Self::bind_with) to choose.
    pub async fn bind(primary: SocketAddr, alternate: Option<SocketAddr>) -> Result<StunServer> {
        StunServer::bind_with(primary, alternate, ResponderConfig::default()).await
    }

    /// Like [`bind`](Self::bind), with what the UDP answers carry and their
    /// rate limit (TCP answers are the same, never rate-limited: a TCP
    /// source cannot be spoofed, and at most 64 clients are served at once).
    pub async fn bind_with(
        primary: SocketAddr,
        alternate: Option<SocketAddr>,
        cfg: ResponderConfig,
    ) -> Result<StunServer> {
        crust_runtime::spawn(Self::bind_on_this_runtime(primary, alternate, cfg))
            .await
            .map_err(|e| Error::io("starting the STUN server")(io::Error::other(e)))?
    }

    async fn bind_on_this_runtime(
        primary: SocketAddr,
        alternate: Option<SocketAddr>,
        cfg: ResponderConfig,
    ) -> Result<StunServer> {
        let p_sock = UdpSocket::bind(primary).await?;
        let primary = p_sock.local_addr()?;
        let mut socks = vec![p_sock];
        let pair = match alternate {
            None => None,
            Some(alt) => {
                if alt.ip() == primary.ip() {
                    return Err(Error::InvalidArgument(
                        "the alternate STUN address needs another IP than the primary",
                    ));
                }
                let a_sock = UdpSocket::bind(alt).await?;
                let alt = a_sock.local_addr()?;
                if alt.port() == primary.port() {
                    return Err(Error::InvalidArgument(
                        "the alternate STUN address needs another port than the primary",
                    ));
                }
                let pair = AddressPair {
                    primary,
                    alternate: alt,
                };
                let [_, pa, ap, _] = pair.sockets();
                socks.push(UdpSocket::bind(pa).await?);
                socks.push(UdpSocket::bind(ap).await?);
                socks.push(a_sock);
                Some(pair)
            }
        };
        let socks: Arc<Vec<UdpSocket>> = Arc::new(socks);
        let tcp_cfg = cfg.clone().rate_limit(None);
        let responder = Arc::new(Mutex::new(Responder::new(pair, cfg, Instant::now())));
        let mut udp = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..socks.len() {
            let local = socks[i].local_addr()?;
            udp.push(local);
            let socks = socks.clone();
            let responder = responder.clone();
            tasks.push(tokio::spawn(async move {
                serve_udp(socks, i, local, responder).await;
            }));
        }
        let mut tcp = Vec::new();
        let tcp_addrs = match pair {
            Some(p) => vec![p.primary, p.alternate],
            None => vec![primary],
        };
        for a in tcp_addrs {
            let l = reusable_tcp_socket(a)?.listen(128)?;
            tcp.push(l.local_addr()?);
            tasks.push(tokio::spawn(serve_tcp(l, tcp_cfg.clone())));
        }
        log::info!("STUN server on UDP {udp:?}, TCP {tcp:?}");
        Ok(StunServer {
            udp,
            tcp,
            pair,
            responder,
            tasks,
        })
    }

    /// The UDP addresses it answers on (the primary first).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// The TCP addresses it answers on.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// The RFC 5780 address pair, when it has one.
    pub fn pair(&self) -> Option<AddressPair> {
        self.pair
    }

    /// What the UDP responder did so far (requests, answers, bytes in and
    /// out, requests refused by the rate limit).
    pub fn stats(&self) -> ResponderStats {
        self.responder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats()
    }

    /// Stops the server and waits until its sockets are closed.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve_udp(
    socks: Arc<Vec<UdpSocket>>,
    i: usize,
    local: SocketAddr,
    responder: Arc<Mutex<Responder>>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = match socks[i].recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) if ignorable(&e) => continue,
            Err(e) => {
                log::warn!("STUN server on {local}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let reply = responder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handle_request(&buf[..n], from, local, Instant::now());
        let Some(reply) = reply else {
            continue;
        };
        let out = socks
            .iter()
            .find(|s| s.local_addr().ok() == Some(reply.from))
            .unwrap_or(&socks[i]);
        if let Err(e) = out.send_to(&reply.bytes, reply.to).await {
            log::debug!("STUN server: cannot answer {from}: {e}");
        }
    }
}

async fn serve_tcp(listener: TcpListener, cfg: ResponderConfig) {
    let mut clients = JoinSet::new();
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                log::warn!("STUN server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while clients.try_join_next().is_some() {}
        if clients.len() >= MAX_TCP_CLIENTS {
            log::debug!("STUN server: too many TCP clients, dropping {from}");
            continue;
        }
        let cfg = cfg.clone();
        clients.spawn(async move {
            let client = serve_tcp_client(stream, from, cfg);
            let _ = tokio::time::timeout(TCP_CLIENT_TIMEOUT, client).await;
        });
    }
}

async fn serve_tcp_client(
    mut stream: TcpStream,
    from: SocketAddr,
    cfg: ResponderConfig,
) -> io::Result<()> {
    let local = stream.local_addr()?;
    // No RFC 5780 over TCP: a change request gets 420.
    let mut responder = Responder::new(None, cfg, Instant::now());
    loop {
        let req = read_stun_frame(&mut stream).await?;
        match responder.handle_request(&req, from, local, Instant::now()) {
            Some(reply) => stream.write_all(&reply.bytes).await?,
            None => return Ok(()),
        }
    }
}
