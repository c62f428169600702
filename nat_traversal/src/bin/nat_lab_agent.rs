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
//! - `quit`.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

fn main() {
    let stdin = io::stdin();
    let mut socks = HashMap::new();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let out = match run(&words, &mut socks) {
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

fn run(w: &[&str], socks: &mut HashMap<u16, UdpSocket>) -> io::Result<String> {
    match w.first().copied() {
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
