//! Shared by the nat_traversal lab tests: sites with agents, our RFC 5780
//! STUN server on the lab's internet, and punching between two sites.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use netlab::lab::{Helper, Host, Lab, NatKind, Site, SiteOptions};

pub const T: Duration = Duration::from_secs(30);

pub fn agent(host: &Host) -> Helper {
    host.spawn(Path::new(env!("CARGO_BIN_EXE_nat_lab_agent")), &[])
        .expect("start agent")
}

pub fn cmd(h: &mut Helper, line: &str) -> String {
    h.send_line(line).expect("send to agent");
    h.recv_line(T).expect("agent answer")
}

/// The value of `key=` in an agent's answer.
pub use netlab::lab::field;

/// A lab with our STUN server (two addresses, RFC 5780) on the internet.
pub struct World {
    pub lab: Lab,
    pub stun: SocketAddr,
    pub stun_alt: SocketAddr,
    _server: Helper,
}

pub fn world(test: &str) -> World {
    let lab = Lab::new(test).expect("build lab");
    let inet = lab.internet().unwrap();
    let (h, ip1) = lab.public_host("stun").unwrap();
    let ip2 = lab.add_address(&h, &inet, "eth0").unwrap();
    let mut server = agent(&h);
    let stun: SocketAddr = (ip1, 3478).into();
    let stun_alt: SocketAddr = (ip2, 3479).into();
    let r = cmd(&mut server, &format!("stun-server {stun} {stun_alt}"));
    assert!(r.starts_with("ready"), "{r}");
    World {
        lab,
        stun,
        stun_alt,
        _server: server,
    }
}

pub struct Peer {
    pub site: Site,
    pub agent: Helper,
    pub mapped: String,
}

impl World {
    pub fn peer(&self, name: &str, kind: NatKind, loss: u8, tcp: bool) -> Peer {
        let site = self
            .lab
            .site(name, kind, SiteOptions { loss_percent: loss })
            .expect("build site");
        let mut a = agent(&site.host);
        let igd = if kind.has_upnp() { "igd" } else { "noigd" };
        let verb = if tcp { "map-tcp" } else { "map-udp" };
        let mapped = cmd(&mut a, &format!("{verb} {} {igd}", self.stun));
        assert!(mapped.starts_with("mapped"), "{name}: {mapped}");
        Peer {
            site,
            agent: a,
            mapped,
        }
    }
}

/// Punches between two mapped peers at once; returns both answers.
pub fn punch(a: &mut Peer, b: &mut Peer, tcp: bool, ms: u64) -> (String, String) {
    let verb = if tcp { "punch-tcp" } else { "punch-udp" };
    let (ra, rb) = (
        field(&a.mapped, "rv").to_string(),
        field(&b.mapped, "rv").to_string(),
    );
    a.agent.send_line(&format!("{verb} {rb} {ms}")).unwrap();
    b.agent.send_line(&format!("{verb} {ra} {ms}")).unwrap();
    let wait = Duration::from_millis(ms) + Duration::from_secs(15);
    let la = a.agent.recv_line(wait).expect("answer of a");
    let lb = b.agent.recv_line(wait).expect("answer of b");
    (la, lb)
}

/// Asserts both sides punched, reached each other's public address and
/// exchanged data; prints the figures for the repeat script.
pub fn assert_punched(pair: &str, a: &Peer, b: &Peer, la: &str, lb: &str) {
    for (side, line, other) in [("a", la, b), ("b", lb, a)] {
        let both = format!(
            "{pair} side {side}: {line}\n a: {la}\n b: {lb}\n a: {}\n b: {}",
            a.mapped, b.mapped
        );
        assert!(line.starts_with("punched"), "{both}");
        assert_eq!(field(line, "data"), "ok", "{both}");
        let peer: SocketAddr = field(line, "peer").parse().unwrap();
        assert_eq!(
            peer.ip(),
            std::net::IpAddr::V4(other.site.public_addr),
            "{pair} side {side}: {line}"
        );
        println!(
            "FIGURE pair={pair} side={side} ms={} probes={}",
            field(line, "ms"),
            field(line, "probes")
        );
    }
}

/// Asserts both sides failed with `kind` (the typed reason's Debug name).
pub fn assert_failed(pair: &str, la: &str, lb: &str, kind: &str) {
    for (side, line) in [("a", la), ("b", lb)] {
        assert!(line.starts_with("failed"), "{pair} side {side}: {line}");
        assert_eq!(field(line, "kind"), kind, "{pair} side {side}: {line}");
        assert!(line.contains("cannot punch this NAT pair"), "{line}");
        println!("FIGURE pair={pair} side={side} failed kind={kind}");
    }
}
