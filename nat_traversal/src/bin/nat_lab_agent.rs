//! Test support, not a user tool: the helper process the network-lab tests
//! start in a lab namespace (`ip netns exec NS nat_lab_agent`). It reads one
//! command per line on stdin and answers with lines on stdout; see
//! `nat_traversal/tests/lab_*.rs`.
//!
//! Commands:
//! - `udp-echo BIND`: answer every datagram with `seen <sender>`; prints `ready <addr>`.
//! - `tcp-echo BIND`: write `seen <peer>\n` to every accepted connection; prints `ready <addr>`.
//! - `udp-probe BIND DST`: send one datagram, print `reply <text>` or `timeout`.
//! - `tcp-probe BIND DST`: connect, print `reply <line>` or `error <why>`.
//! - `udp-open BIND`: keep a UDP socket, keyed by its local port; prints `ready <addr>`.
//! - `udp-send PORT DST TEXT`: send TEXT from the socket kept for PORT; prints `sent`.
//! - `udp-recv PORT MS`: wait up to MS ms on it; prints `got <sender> <text>` or `timeout`.
//! - `stun-server PRIMARY [ALTERNATE]`: run our STUN server; prints `ready <udp addrs>`.
//! - `stun-client SERVER`: one Binding from a new socket; prints `mapped <addr>`.
//! - `map-udp STUN[,STUN...] igd|noigd [port=N] [lease=SECS]`: a MappedUdpSocket
//!   (on local port N, default any; UPnP lease SECS) kept for `punch-udp`;
//!   prints `mapped rv=<hex> nat=<mapping>/<filtering> igd=<outcome> eps=<a,b,..>`.
//! - `punch-udp HEX MS`: punch with the kept socket; then both sides exchange
//!   data; prints `punched peer=<addr> ms=<n> probes=<n> data=ok|none` or
//!   `failed kind=<Kind> <message>`.
//! - `map-tcp STUN[,STUN...] igd|noigd`, `punch-tcp HEX MS`: the same over TCP.
//! - `copy-probes SRC_IP FROM_PORT`: a third party on the path (run it in a
//!   router's namespace): captures every punch probe leaving with source
//!   SRC_IP (the router's WAN address, after NAT) and sends each payload
//!   twice to the same destination from its own socket SRC_IP:FROM_PORT
//!   (a copy from an unlisted address, then a replay of it); prints `ready`.
//! - `copy-count`: prints `copied <n>`.
//! - `quit`.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use nat_traversal::*;

fn main() {
    let stdin = io::stdin();
    let mut st = State::default();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let out = match run(&words, &mut st) {
            Ok(s) => s,
            Err(e) => format!("error {e}"),
        };
        println!("{out}");
        let _ = io::stdout().flush();
        if words.first() == Some(&"quit") {
            break;
        }
    }
}

fn addr(s: Option<&&str>) -> io::Result<SocketAddr> {
    s.ok_or_else(|| io::Error::other("missing address"))?
        .parse()
        .map_err(|e| io::Error::other(format!("bad address: {e}")))
}

fn port(s: Option<&&str>) -> io::Result<u16> {
    s.ok_or_else(|| io::Error::other("missing port"))?
        .parse()
        .map_err(|e| io::Error::other(format!("bad port: {e}")))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> io::Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err(io::Error::other("odd hex"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(io::Error::other))
        .collect()
}

#[derive(Default)]
struct State {
    socks: HashMap<u16, UdpSocket>,
    servers: Vec<SimpleUdpHolePunchServer>,
    udp: Option<(MappedUdpSocket, PrivRendezvousInfo)>,
    tcp: Option<(MappedTcpSocket, PrivRendezvousInfo)>,
    copied: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The copier of `copy-probes`: an AF_PACKET socket (IP packets of every
/// interface, both directions) and a UDP socket to send copies from.
/// Its thread ends with the process.
fn copy_probes(
    src: std::net::Ipv4Addr,
    from_port: u16,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    // ETH_P_ALL: only "all protocols" taps see outgoing packets too.
    const ETH_P_ALL: u16 = 0x0003;
    let raw = Socket::new(
        Domain::PACKET,
        Type::DGRAM,
        Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
    )?;
    let out = UdpSocket::bind((src, from_port))?;
    std::thread::spawn(move || {
        let mut raw = raw;
        let mut buf = [0u8; 2048];
        // Each probe is copied once: our own copies, seen leaving (with
        // their port rewritten by a hard NAT's masquerade), are not.
        let mut done = std::collections::HashSet::new();
        while let Ok(n) = raw.read(&mut buf) {
            let p = &buf[..n];
            // IPv4, UDP, from `src`, carrying a probe.
            if n < 28 || p[0] >> 4 != 4 || p[9] != 17 || p[12..16] != src.octets() {
                continue;
            }
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if n < ihl + 8 {
                continue;
            }
            let payload = &p[ihl + 8..];
            let sport = u16::from_be_bytes([p[ihl], p[ihl + 1]]);
            // Not our own copies, seen leaving.
            if sport == from_port || !nat_traversal::punch::looks_like_probe(payload) {
                continue;
            }
            if done.len() > 100_000 || !done.insert(payload.to_vec()) {
                continue;
            }
            let dst = std::net::Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            let dport = u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]);
            for _ in 0..2 {
                let _ = out.send_to(payload, (dst, dport));
            }
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    Ok(())
}

fn context(w: &[&str]) -> io::Result<MappingContext> {
    let stun = w
        .get(1)
        .map(|s| {
            s.split(',')
                .filter(|x| !x.is_empty() && *x != "-")
                .map(|x| x.parse())
                .collect::<Result<Vec<SocketAddr>, _>>()
        })
        .transpose()
        .map_err(io::Error::other)?
        .unwrap_or_default();
    let mut opts = MappingOptions::default()
        .stun_servers(stun)
        .igd(w.get(2) == Some(&"igd"));
    if let Some(l) = option(w, "lease") {
        opts.igd_lease = Duration::from_secs(l);
    }
    Ok(MappingContext::with_options(opts)?)
}

fn option(w: &[&str], key: &str) -> Option<u64> {
    w.iter()
        .find_map(|x| x.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
}

fn mapped_line(pubinfo: &PubRendezvousInfo, eps: &[MappedSocketAddr], igd: &IgdOutcome) -> String {
    let eps: Vec<String> = eps
        .iter()
        .map(|e| format!("{}{}", e.addr, if e.nat_restricted { "r" } else { "" }))
        .collect();
    let igd = match igd {
        IgdOutcome::NoGateway => "none".to_string(),
        IgdOutcome::Mapped { external } => format!("mapped:{external}"),
        IgdOutcome::DoubleNat { .. } => "double-nat".to_string(),
        IgdOutcome::Refused { .. } => "refused".to_string(),
        _ => "failed".to_string(),
    };
    format!(
        "mapped rv={} nat={:?}/{:?} igd={igd} eps={}",
        hex(&pubinfo.encode()),
        pubinfo.nat.mapping,
        pubinfo.nat.filtering,
        eps.join(",")
    )
}

fn failed_line(e: &PunchError) -> String {
    match e.failure_kind() {
        Some(k) => format!("failed kind={k:?} {e}"),
        None => format!("failed kind=Io {e}"),
    }
}

fn run(w: &[&str], st: &mut State) -> io::Result<String> {
    let socks = &mut st.socks;
    match w.first().copied() {
        Some("stun-server") => {
            let alt = match w.get(2) {
                Some(a) => Some(addr(Some(a))?),
                None => None,
            };
            let s = SimpleUdpHolePunchServer::bind(addr(w.get(1))?, alt)?;
            let a: Vec<String> = s.addresses().iter().map(|a| a.to_string()).collect();
            st.servers.push(s);
            Ok(format!("ready {}", a.join(",")))
        }
        Some("stun-client") => {
            let server = addr(w.get(1))?;
            let r = crust_runtime::block_on(async move {
                let s = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
                aio::stun_binding(
                    &s,
                    server,
                    None,
                    &nat_traversal::stun::StunConfig::default(),
                )
                .await
            })??;
            Ok(format!("mapped {}", r.mapped))
        }
        Some("copy-probes") => {
            let src: std::net::Ipv4Addr = w
                .get(1)
                .ok_or_else(|| io::Error::other("missing address"))?
                .parse()
                .map_err(io::Error::other)?;
            copy_probes(src, port(w.get(2))?, st.copied.clone())?;
            Ok("ready".to_string())
        }
        Some("copy-count") => Ok(format!(
            "copied {}",
            st.copied.load(std::sync::atomic::Ordering::Relaxed)
        )),
        Some("map-udp") => {
            let mc = context(w)?;
            let port = option(w, "port").unwrap_or(0) as u16;
            let m = MappedUdpSocket::map(UdpSocket::bind(("0.0.0.0", port))?, &mc)?;
            let (p, q) =
                gen_rendezvous_info_with(m.endpoints.iter().map(|e| e.addr).collect(), m.nat);
            let line = mapped_line(&q, &m.endpoints, &m.igd_outcome);
            st.udp = Some((m, p));
            Ok(line)
        }
        Some("map-tcp") => {
            let mc = context(w)?;
            let m = MappedTcpSocket::new(&mc)?;
            let (p, q) =
                gen_rendezvous_info_with(m.endpoints.iter().map(|e| e.addr).collect(), m.nat);
            let line = mapped_line(&q, &m.endpoints, &m.igd_outcome);
            st.tcp = Some((m, p));
            Ok(line)
        }
        Some("punch-udp") => {
            let theirs = PubRendezvousInfo::decode(&unhex(w.get(1).unwrap_or(&""))?)?;
            let ms: u64 = w.get(2).and_then(|m| m.parse().ok()).unwrap_or(8000);
            let (m, p) = st
                .udp
                .take()
                .ok_or_else(|| io::Error::other("map-udp first"))?;
            let cfg = PunchConfig::default().timeout(Duration::from_millis(ms));
            let socket = m.socket;
            let _igd = m.igd;
            match PunchedUdpSocket::punch_hole_with(socket, p, theirs, &cfg) {
                Ok(ps) => {
                    // Data both ways: send every 100 ms until the peer's
                    // data arrived, then 15 more for it (each may be lost on its way).
                    ps.socket
                        .set_read_timeout(Some(Duration::from_millis(100)))?;
                    let mut buf = [0u8; 1500];
                    let mut data = "none";
                    let mut extra = 0;
                    let until = std::time::Instant::now() + Duration::from_secs(4);
                    while std::time::Instant::now() < until && extra < 15 {
                        ps.socket.send_to(b"lab-data", ps.peer_addr)?;
                        if data == "ok" {
                            extra += 1;
                        }
                        if let Ok((n, from)) = ps.socket.recv_from(&mut buf)
                            && from == ps.peer_addr
                            && &buf[..n] == b"lab-data"
                        {
                            data = "ok";
                        }
                    }
                    Ok(format!(
                        "punched peer={} ms={} probes={} data={data}",
                        ps.peer_addr,
                        ps.elapsed.as_millis(),
                        ps.probes_sent
                    ))
                }
                Err(e) => Ok(failed_line(&e)),
            }
        }
        Some("punch-tcp") => {
            let theirs = PubRendezvousInfo::decode(&unhex(w.get(1).unwrap_or(&""))?)?;
            let ms: u64 = w.get(2).and_then(|m| m.parse().ok()).unwrap_or(8000);
            let (m, p) = st
                .tcp
                .take()
                .ok_or_else(|| io::Error::other("map-tcp first"))?;
            let cfg = PunchConfig::default().timeout(Duration::from_millis(ms));
            let start = std::time::Instant::now();
            let _igd = m.igd;
            match tcp_punch_hole_with(m.socket, p, theirs, &cfg) {
                Ok(mut s) => {
                    let ms = start.elapsed().as_millis();
                    s.write_all(b"lab-data")?;
                    s.set_read_timeout(Some(Duration::from_secs(3)))?;
                    let mut buf = [0u8; 8];
                    let data = if s.read_exact(&mut buf).is_ok() && &buf == b"lab-data" {
                        "ok"
                    } else {
                        "none"
                    };
                    Ok(format!(
                        "punched peer={} ms={ms} probes=0 data={data}",
                        s.peer_addr()?
                    ))
                }
                Err(e) => Ok(failed_line(&e)),
            }
        }
        Some("udp-open") => {
            let s = UdpSocket::bind(addr(w.get(1))?)?;
            let local = s.local_addr()?;
            socks.insert(local.port(), s);
            Ok(format!("ready {local}"))
        }
        Some("udp-send") => {
            let s = socks
                .get(&port(w.get(1))?)
                .ok_or_else(|| io::Error::other("no such socket"))?;
            s.send_to(w.get(3).unwrap_or(&"-").as_bytes(), addr(w.get(2))?)?;
            Ok("sent".into())
        }
        Some("udp-recv") => {
            let s = socks
                .get(&port(w.get(1))?)
                .ok_or_else(|| io::Error::other("no such socket"))?;
            let ms: u64 = w.get(2).and_then(|m| m.parse().ok()).unwrap_or(1000);
            s.set_read_timeout(Some(Duration::from_millis(ms.max(1))))?;
            let mut buf = [0u8; 1500];
            match s.recv_from(&mut buf) {
                Ok((n, from)) => Ok(format!("got {from} {}", String::from_utf8_lossy(&buf[..n]))),
                Err(_) => Ok("timeout".into()),
            }
        }
        Some("udp-echo") => {
            let s = UdpSocket::bind(addr(w.get(1))?)?;
            let local = s.local_addr()?;
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while let Ok((_, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(format!("seen {from}").as_bytes(), from);
                }
            });
            Ok(format!("ready {local}"))
        }
        Some("tcp-echo") => {
            let l = TcpListener::bind(addr(w.get(1))?)?;
            let local = l.local_addr()?;
            std::thread::spawn(move || {
                for mut c in l.incoming().flatten() {
                    if let Ok(peer) = c.peer_addr() {
                        let _ = writeln!(c, "seen {peer}");
                    }
                }
            });
            Ok(format!("ready {local}"))
        }
        Some("udp-probe") => {
            let s = UdpSocket::bind(addr(w.get(1))?)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send_to(b"probe", addr(w.get(2))?)?;
            let mut buf = [0u8; 1500];
            match s.recv_from(&mut buf) {
                Ok((n, _)) => Ok(format!("reply {}", String::from_utf8_lossy(&buf[..n]))),
                Err(_) => Ok("timeout".into()),
            }
        }
        Some("tcp-probe") => {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            sock.set_reuse_address(true)?;
            sock.bind(&addr(w.get(1))?.into())?;
            sock.connect_timeout(&addr(w.get(2))?.into(), Duration::from_secs(2))?;
            let mut c: TcpStream = sock.into();
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = [0u8; 200];
            let n = c.read(&mut buf)?;
            Ok(format!(
                "reply {}",
                String::from_utf8_lossy(&buf[..n]).trim()
            ))
        }
        Some("quit") => Ok("bye".into()),
        other => Ok(format!("error unknown command {other:?}")),
    }
}
