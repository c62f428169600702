//! Two peers behind NATs meeting through a third, then talking directly.
//!
//! The `hub` is a public crust peer: it accepts crust streams, runs a STUN
//! server (`SimpleUdpHolePunchServer`) for its peers, and introduces two
//! peers that name each other's key by forwarding each one's rendezvous
//! info to the other. A `peer` bootstraps to the hub, asks it to introduce
//! a peer key, then connects to that peer through the punched hole
//! (`ServiceController::rendezvous_connect`) and echoes: the hub carries
//! only the introduction, never the data.
//!
//! ```text
//! rendezvous_peer hub --listen tcp://0.0.0.0:5483 --stun 0.0.0.0:3478
//! rendezvous_peer peer --hub tcp://203.0.113.7:5483/?pubkey=... \
//!     --stun 203.0.113.7:3478 --to <the other peer's key>
//! ```
//!
//! Without `--to` a peer prints `key <its key>` and reads the other's key
//! from its standard input (one line), so two peers can be paired by hand
//! or by a script. The hub prints `endpoint: <endpoint>` for each of its
//! endpoints; a peer prints `connected path=<path> ms=<n> ...` then
//! `echoed <n>`, or `failed ms=<n> <error>` (exit status 2) when no path
//! through the two NATs works (both behind address-dependent NATs, say).
//!
//! The hub's protocol, one crust message each (UTF-8, at most
//! [`MAX_REQUEST`] bytes):
//!
//! - peer → hub: `introduce <their key: 64 hex> <our rendezvous info: hex>`
//!   (the info must carry the sender's own static key, the one its stream
//!   to the hub proved, or the hub refuses it);
//! - hub → peer: `peer <key> <their rendezvous info: hex>` once both have
//!   asked for each other, or `refused <why>`.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use crust::{Config, Endpoint, PublicKey, Service};
use nat_traversal::{PubRendezvousInfo, SimpleUdpHolePunchServer};

/// The largest request or answer the hub exchanges: an info is at most
/// 1,024 bytes, so 2,048 hex digits, plus a key and the word.
const MAX_REQUEST: usize = 4096;
/// How long the hub keeps a request waiting for its counterpart.
const INTRODUCTION_TTL: Duration = Duration::from_secs(60);
/// Requests the hub keeps waiting at once (one per peer).
const MAX_WAITING: usize = 1024;
/// Messages a peer sends and checks through the punched stream.
const ECHOES: usize = 5;

#[derive(Parser)]
#[command(version, about = "Two NATed crust peers meeting through a hub")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A public hub: accepts peers, serves STUN, introduces pairs.
    Hub {
        /// Listen endpoints, comma-separated.
        #[arg(long, default_value = "tcp://0.0.0.0:5483")]
        listen: String,
        /// The STUN server's address, and optionally a second address
        /// (another IP and port) for RFC 5780 NAT behaviour discovery.
        #[arg(long, value_delimiter = ',', default_value = "0.0.0.0:3478")]
        stun: Vec<SocketAddr>,
    },
    /// A peer: bootstraps to the hub, is introduced, connects directly.
    Peer {
        /// The hub's endpoint, as `rendezvous_peer hub` printed it.
        #[arg(long)]
        hub: Endpoint,
        /// STUN servers (the hub's), comma-separated.
        #[arg(long, value_delimiter = ',')]
        stun: Vec<SocketAddr>,
        /// The key of the peer to meet; read from stdin when absent.
        #[arg(long)]
        to: Option<PublicKey>,
        /// Map and probe from this local address only.
        #[arg(long)]
        local_ip: Option<IpAddr>,
        /// Do not look for a UPnP gateway.
        #[arg(long)]
        no_igd: bool,
        /// The rendezvous timeout, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match Args::parse().command {
        Cmd::Hub { listen, stun } => hub(&listen, &stun),
        Cmd::Peer {
            hub,
            stun,
            to,
            local_ip,
            no_igd,
            timeout_ms,
        } => peer(&PeerOpts {
            hub,
            stun,
            to,
            local_ip,
            igd: !no_igd,
            timeout: Duration::from_millis(timeout_ms),
        }),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rendezvous_peer: {e}");
            std::process::exit(1);
        }
    }
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A message between a peer and the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Msg {
    /// Peer → hub: introduce me to `to`; here is my info.
    Introduce { to: PublicKey, info: Vec<u8> },
    /// Hub → peer: `key` asked for you too; here is its info.
    Peer { key: PublicKey, info: Vec<u8> },
    /// Hub → peer: the request was refused or expired.
    Refused(String),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Introduce { to, info } => format!("introduce {to} {}", hex::encode(info)),
            Msg::Peer { key, info } => format!("peer {key} {}", hex::encode(info)),
            Msg::Refused(why) => format!("refused {why}"),
        }
        .into_bytes()
    }

    /// Parses an untrusted message: bounded, every field checked.
    fn decode(bytes: &[u8]) -> Result<Msg, String> {
        if bytes.len() > MAX_REQUEST {
            return Err(format!("{} bytes, more than {MAX_REQUEST}", bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        let key_and_info = |rest: &str| -> Result<(PublicKey, Vec<u8>), String> {
            let (key, info) = rest.split_once(' ').ok_or("no rendezvous info")?;
            let key = key.parse().map_err(|e| format!("the key: {e}"))?;
            let info = hex::decode(info).map_err(|e| format!("the info: {e}"))?;
            Ok((key, info))
        };
        match word {
            "introduce" => key_and_info(rest).map(|(to, info)| Msg::Introduce { to, info }),
            "peer" => key_and_info(rest).map(|(key, info)| Msg::Peer { key, info }),
            "refused" => Ok(Msg::Refused(rest.to_string())),
            other => Err(format!(
                "unknown request {:?}",
                other.escape_debug().to_string()
            )),
        }
    }
}

/// What the hub does with a request ([`Introductions::request`]).
#[derive(Debug, PartialEq, Eq)]
enum Intro {
    /// Kept until the other peer asks for the requester (or it expires).
    Waiting,
    /// Both asked: send each the other's info.
    Matched {
        /// The requester, and the info to send it (the other's).
        requester: (PublicKey, Vec<u8>),
        /// The peer it asked for, and the info to send that one.
        other: (PublicKey, Vec<u8>),
    },
    /// Refused, with why (to send back).
    Refused(String),
}

struct Waiting {
    to: PublicKey,
    info: Vec<u8>,
    expires: Instant,
}

/// The hub's decisions, without I/O and on the caller's clock: which
/// requests pair up, which expire, what is refused. Each peer has at most
/// one request waiting (a new one replaces it), and at most [`MAX_WAITING`]
/// wait at once.
struct Introductions {
    waiting: HashMap<PublicKey, Waiting>,
    ttl: Duration,
    max: usize,
}

impl Introductions {
    fn new(ttl: Duration, max: usize) -> Self {
        Introductions {
            waiting: HashMap::new(),
            ttl,
            max,
        }
    }

    /// `from` (the key its stream proved) asks to meet `to`, with `info`.
    fn request(&mut self, now: Instant, from: PublicKey, to: PublicKey, info: Vec<u8>) -> Intro {
        let decoded = match PubRendezvousInfo::decode(&info) {
            Ok(i) => i,
            Err(e) => return Intro::Refused(format!("invalid rendezvous info: {e}")),
        };
        if decoded.static_key != Some(*from.as_bytes()) {
            // Otherwise anyone could hand a victim an info naming a key
            // that is not theirs.
            return Intro::Refused("the info does not carry your own key".into());
        }
        if to == from {
            return Intro::Refused("you asked to meet yourself".into());
        }
        if let Some(w) = self.waiting.get(&to)
            && w.to == from
            && w.expires > now
        {
            let w = self.waiting.remove(&to).expect("just looked up");
            self.waiting.remove(&from);
            return Intro::Matched {
                requester: (from, w.info),
                other: (to, info),
            };
        }
        if !self.waiting.contains_key(&from) && self.waiting.len() >= self.max {
            return Intro::Refused(format!("the hub is busy ({} requests waiting)", self.max));
        }
        let expires = now + self.ttl;
        self.waiting.insert(from, Waiting { to, info, expires });
        Intro::Waiting
    }

    /// Removes and returns the requests that expired by `now`: (requester,
    /// the key it waited for).
    fn expire(&mut self, now: Instant) -> Vec<(PublicKey, PublicKey)> {
        let gone: Vec<PublicKey> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        gone.into_iter()
            .filter_map(|k| self.waiting.remove(&k).map(|w| (k, w.to)))
            .collect()
    }

    /// A peer left: its request goes.
    fn forget(&mut self, peer: &PublicKey) {
        self.waiting.remove(peer);
    }
}

/// The hub's shared state: its decisions and a way to reach each peer.
struct HubState {
    intros: Introductions,
    peers: HashMap<PublicKey, crust::Sender>,
}

fn locked(s: &Mutex<HubState>) -> std::sync::MutexGuard<'_, HubState> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

fn hub(listen: &str, stun: &[SocketAddr]) -> BoxResult<i32> {
    let (primary, alternate) = match stun {
        [p] => (*p, None),
        [p, a] => (*p, Some(*a)),
        _ => return Err("--stun takes one or two addresses".into()),
    };
    let stun_server = SimpleUdpHolePunchServer::bind(primary, alternate)?;
    let config = Config::default()
        .listen(listen.split(',').map(str::trim).filter(|s| !s.is_empty()))?
        .network_name("crust-hub")
        .beacon_enabled(false)
        .igd(false)
        .ephemeral_identity(true)
        .max_message_size(MAX_REQUEST);
    let service = Service::new_from_config(config)?;
    for e in service.controller.endpoints() {
        println!("endpoint: {e}");
    }
    let stun_addrs: Vec<String> = stun_server
        .addresses()
        .iter()
        .map(|a| a.to_string())
        .collect();
    println!("stun: {}", stun_addrs.join(","));
    let state = Arc::new(Mutex::new(HubState {
        intros: Introductions::new(INTRODUCTION_TTL, MAX_WAITING),
        peers: HashMap::new(),
    }));
    {
        // Tells each requester whose counterpart never came.
        let state = state.clone();
        thread::spawn(move || {
            loop {
                thread::sleep(Duration::from_secs(1));
                let mut s = locked(&state);
                for (requester, to) in s.intros.expire(Instant::now()) {
                    if let Some(tx) = s.peers.get(&requester) {
                        let why = format!("{to} did not ask for you within {INTRODUCTION_TTL:?}");
                        let _ = tx.send(&Msg::Refused(why).encode());
                    }
                }
            }
        });
    }
    // One thread per peer keeps the example short; the service bounds
    // inbound streams (`Limits::max_inbound`), so the threads are bounded.
    for stream in service.acceptor.incoming() {
        let state = state.clone();
        thread::spawn(move || serve_peer(stream, &state));
    }
    drop(stun_server);
    Ok(0)
}

/// Reads one peer's requests until its stream ends.
fn serve_peer(stream: crust::Stream, state: &Mutex<HubState>) {
    let key = stream.peer_public_key();
    let (tx, rx) = stream.split();
    locked(state).peers.insert(key, tx.clone());
    log::info!("peer {key} joined");
    let mut buf = Vec::new();
    while rx.recv_into(&mut buf).is_ok() {
        let answer = match Msg::decode(&buf) {
            Ok(Msg::Introduce { to, info }) => {
                let mut s = locked(state);
                match s.intros.request(Instant::now(), key, to, info) {
                    Intro::Waiting => None,
                    Intro::Refused(why) => Some(Msg::Refused(why)),
                    Intro::Matched { requester, other } => {
                        log::info!("introducing {key} and {to}");
                        let (other_key, other_info) = other;
                        match s.peers.get(&other_key) {
                            Some(o)
                                if o.send(
                                    &Msg::Peer {
                                        key,
                                        info: other_info,
                                    }
                                    .encode(),
                                )
                                .is_ok() =>
                            {
                                Some(Msg::Peer {
                                    key: other_key,
                                    info: requester.1,
                                })
                            }
                            _ => Some(Msg::Refused(format!("{other_key} left the hub"))),
                        }
                    }
                }
            }
            Ok(other) => Some(Msg::Refused(format!("not a request: {other:?}"))),
            Err(why) => Some(Msg::Refused(why)),
        };
        if let Some(a) = answer
            && tx.send(&a.encode()).is_err()
        {
            break;
        }
    }
    let mut s = locked(state);
    s.intros.forget(&key);
    s.peers.remove(&key);
    log::info!("peer {key} left");
}

struct PeerOpts {
    hub: Endpoint,
    stun: Vec<SocketAddr>,
    to: Option<PublicKey>,
    local_ip: Option<IpAddr>,
    igd: bool,
    timeout: Duration,
}

fn peer(o: &PeerOpts) -> BoxResult<i32> {
    let started = Instant::now();
    let listen = match o.local_ip {
        Some(ip) => format!("tcp://{}", SocketAddr::new(ip, 0)),
        None => "tcp://0.0.0.0:0".into(),
    };
    let config = Config::default()
        .listen([listen])?
        .network_name("crust-hub")
        .beacon_enabled(false)
        .igd(o.igd)
        .mapping_local_ip(o.local_ip)
        .hole_punch_servers(o.stun.clone())
        .hard_coded_contacts([o.hub])
        .ephemeral_identity(true)
        .max_message_size(MAX_REQUEST.max(4096));
    let service = Service::new_from_config(config)?;
    let me = service.controller.public_key();
    let hub = service.controller.bootstrap()?;
    if hub.peer_public_key() != o.hub.public_key {
        return Err(format!("bootstrapped to {}, not the hub", hub.peer_endpoint()).into());
    }
    println!("key {me}");
    let to = match o.to {
        Some(k) => k,
        None => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().parse()?
        }
    };
    let prepared = service.controller.prepare_rendezvous()?;
    let ours = Msg::Introduce {
        to,
        info: prepared.info().encode(),
    };
    hub.send(&ours.encode())?;
    let wait = INTRODUCTION_TTL + Duration::from_secs(5);
    let theirs = match Msg::decode(&hub.recv_timeout(wait)?) {
        Ok(Msg::Peer { key, info }) if key == to => PubRendezvousInfo::decode(&info)?,
        Ok(Msg::Refused(why)) => return Err(format!("the hub refused: {why}").into()),
        Ok(other) => return Err(format!("unexpected answer from the hub: {other:?}").into()),
        Err(why) => return Err(format!("bad answer from the hub: {why}").into()),
    };
    if theirs.static_key != Some(*to.as_bytes()) {
        return Err("the hub forwarded an info for another key".into());
    }
    let t0 = Instant::now();
    let stream = match service
        .controller
        .rendezvous_connect_timeout(prepared, &theirs, o.timeout)
    {
        Ok(s) => s,
        Err(e) => {
            println!("failed ms={} {e}", t0.elapsed().as_millis());
            return Ok(2);
        }
    };
    println!(
        "connected path={} ms={} total_ms={} peer={}",
        stream.path().to_string().replace(' ', "-"),
        t0.elapsed().as_millis(),
        started.elapsed().as_millis(),
        stream.peer_endpoint().addr,
    );
    if stream.peer_public_key() != to {
        return Err("the stream proved another key".into());
    }
    // The lower key sends and checks; the higher echoes.
    let n = if me < to {
        for i in 0..ECHOES {
            let m = format!("ping {i} from {me}");
            stream.send(m.as_bytes())?;
            let back = stream.recv_timeout(Duration::from_secs(10))?;
            if back != m.as_bytes() {
                return Err(format!("echo {i} came back different").into());
            }
        }
        stream.close()?;
        ECHOES
    } else {
        let mut n = 0;
        while let Ok(m) = stream.recv_timeout(Duration::from_secs(10)) {
            stream.send(&m)?;
            n += 1;
        }
        n
    };
    println!("echoed {n}");
    Ok(if n == ECHOES { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use transport::Identity;

    fn info_of(id: &Identity) -> Vec<u8> {
        let (_, info) = nat_traversal::gen_rendezvous_info(vec!["192.0.2.1:4000".parse().unwrap()]);
        info.with_static_key(*id.public_key().as_bytes()).encode()
    }

    #[test]
    fn two_requests_naming_each_other_are_matched_and_each_gets_the_other_info() {
        let (a, b) = (Identity::generate(), Identity::generate());
        let (ia, ib) = (info_of(&a), info_of(&b));
        let mut t = Introductions::new(Duration::from_secs(60), 8);
        let now = Instant::now();
        let (ka, kb) = (a.public_key(), b.public_key());
        assert_eq!(t.request(now, ka, kb, ia.clone()), Intro::Waiting);
        assert_eq!(
            t.request(now, kb, ka, ib.clone()),
            Intro::Matched {
                requester: (kb, ia),
                other: (ka, ib),
            }
        );
        assert!(t.waiting.is_empty());
    }

    #[test]
    fn an_info_with_another_key_or_none_is_refused() {
        let (a, b) = (Identity::generate(), Identity::generate());
        let mut t = Introductions::new(Duration::from_secs(60), 8);
        let now = Instant::now();
        let r = t.request(now, a.public_key(), b.public_key(), info_of(&b));
        assert!(
            matches!(r, Intro::Refused(ref w) if w.contains("your own key")),
            "{r:?}"
        );
        let (_, keyless) =
            nat_traversal::gen_rendezvous_info(vec!["192.0.2.1:4000".parse().unwrap()]);
        let r = t.request(now, a.public_key(), b.public_key(), keyless.encode());
        assert!(matches!(r, Intro::Refused(_)), "{r:?}");
        let r = t.request(now, a.public_key(), b.public_key(), vec![0xff; 9]);
        assert!(
            matches!(r, Intro::Refused(ref w) if w.contains("invalid")),
            "{r:?}"
        );
        assert!(t.waiting.is_empty());
    }

    #[test]
    fn requests_expire_are_bounded_and_one_per_peer() {
        let ids: Vec<Identity> = (0..4).map(|_| Identity::generate()).collect();
        let target = Identity::generate().public_key();
        let mut t = Introductions::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let k = |i: usize| ids[i].public_key();
        assert_eq!(
            t.request(t0, k(0), target, info_of(&ids[0])),
            Intro::Waiting
        );
        // A second request from the same peer replaces its first.
        assert_eq!(
            t.request(t0, k(0), target, info_of(&ids[0])),
            Intro::Waiting
        );
        assert_eq!(
            t.request(t0, k(1), target, info_of(&ids[1])),
            Intro::Waiting
        );
        let r = t.request(t0, k(2), target, info_of(&ids[2]));
        assert!(
            matches!(r, Intro::Refused(ref w) if w.contains("busy")),
            "{r:?}"
        );
        assert!(t.expire(t0 + Duration::from_secs(59)).is_empty());
        let mut gone = t.expire(t0 + Duration::from_secs(60));
        gone.sort();
        let mut want = vec![(k(0), target), (k(1), target)];
        want.sort();
        assert_eq!(gone, want);
        // An expired request is not matched, even before `expire` ran.
        let (x, y) = (&ids[2], &ids[3]);
        assert_eq!(
            t.request(t0, x.public_key(), y.public_key(), info_of(x)),
            Intro::Waiting
        );
        let late = t0 + Duration::from_secs(61);
        assert_eq!(
            t.request(late, y.public_key(), x.public_key(), info_of(y)),
            Intro::Waiting
        );
    }

    #[test]
    fn messages_round_trip_and_bad_ones_are_errors() {
        let key = Identity::generate().public_key();
        for m in [
            Msg::Introduce {
                to: key,
                info: vec![1, 2, 3],
            },
            Msg::Peer { key, info: vec![] },
            Msg::Refused("no".into()),
        ] {
            assert_eq!(Msg::decode(&m.encode()), Ok(m));
        }
        for bad in [
            &b"hello"[..],
            b"introduce",
            b"introduce abc 00",
            b"peer 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff zz",
            b"\xff\xfe",
            &[b'a'; MAX_REQUEST + 1],
        ] {
            assert!(
                Msg::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
