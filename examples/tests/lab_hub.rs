//! Network lab: two crust peers behind real kernel NATs meeting through a
//! hub on the lab's internet (`rendezvous_peer hub`: crust listener, STUN
//! server with two addresses, introductions), then talking directly
//! through the punched hole (`rendezvous_peer peer`). Each test prints a
//! `FIGURE` line (time to the direct stream, path) for
//! `scripts/lab-repeat-rendezvous.sh`. Run with `CRUST_LAB=1` as root (see
//! `.ci/lab`).

use std::path::Path;
use std::time::Duration;

use netlab::lab::NatKind::{self, *};
use netlab::lab::{Helper, IGNORE_REASON, Lab, Site, SiteOptions, field};

/// Bound on each line a process prints (service start, NAT discovery,
/// bootstrap, the introduction, the rendezvous).
const T: Duration = Duration::from_secs(40);
/// The rendezvous timeout the peers are given.
const TIMEOUT_MS: u64 = 10_000;

fn program() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rendezvous_peer"))
}

struct World {
    lab: Lab,
    hub_endpoint: String,
    stun: String,
    _hub: Helper,
}

/// The lab and its hub on the internet segment (two addresses, so the
/// STUN server can answer RFC 5780 behaviour tests).
fn world(test: &str) -> World {
    let _ = IGNORE_REASON;
    let lab = Lab::new(test).expect("build lab");
    let inet = lab.internet().unwrap();
    let (h, ip1) = lab.public_host("hub").unwrap();
    let ip2 = lab.add_address(&h, &inet, "eth0").unwrap();
    let listen = format!("tcp://{ip1}:5483");
    let stun = format!("{ip1}:3478,{ip2}:3479");
    let mut hub = h
        .spawn(program(), &["hub", "--listen", &listen, "--stun", &stun])
        .expect("start the hub");
    let hub_endpoint = hub.expect_prefix("endpoint: ", T).expect("hub endpoint");
    let stun_line = hub.expect_prefix("stun: ", T).expect("hub STUN");
    assert!(stun_line.contains(&format!("{ip1}:3478")), "{stun_line}");
    World {
        lab,
        hub_endpoint,
        stun: format!("{ip1}:3478"),
        _hub: hub,
    }
}

struct Peer {
    site: Site,
    process: Helper,
    key: String,
}

impl World {
    /// A peer behind a NAT of `kind`, bootstrapped to the hub.
    fn peer(&self, name: &str, kind: NatKind) -> Peer {
        let site = self
            .lab
            .site(name, kind, SiteOptions::default())
            .expect("build site");
        let local = site.addr.to_string();
        let timeout = TIMEOUT_MS.to_string();
        let mut args = vec![
            "peer",
            "--hub",
            &self.hub_endpoint,
            "--stun",
            &self.stun,
            "--local-ip",
            &local,
            "--timeout-ms",
            &timeout,
        ];
        if !kind.has_upnp() {
            args.push("--no-igd");
        }
        let mut process = site.host.spawn(program(), &args).expect("start a peer");
        let key = process
            .expect_prefix("key ", T)
            .unwrap_or_else(|e| panic!("peer {name} did not reach the hub: {e}"));
        Peer { site, process, key }
    }
}

/// Tells each peer the other's key; returns each one's result line.
fn introduce(a: &mut Peer, b: &mut Peer) -> (String, String) {
    a.process.send_line(&b.key).unwrap();
    b.process.send_line(&a.key).unwrap();
    let result = |p: &mut Peer| loop {
        let line = p.process.recv_line(T).expect("a peer's result");
        if line.starts_with("connected") || line.starts_with("failed") {
            break line;
        }
    };
    (result(a), result(b))
}

fn meets_directly(test: &str, ka: NatKind, kb: NatKind) {
    let w = world(test);
    let mut a = w.peer("a", ka);
    let mut b = w.peer("b", kb);
    let (la, lb) = introduce(&mut a, &mut b);
    for (side, line) in [("a", &la), ("b", &lb)] {
        assert!(
            line.starts_with("connected"),
            "{test} side {side}: {line}\n a: {la}\n b: {lb}"
        );
        // Punched, not through the hub: the hub carried only the
        // introduction.
        assert!(field(line, "path").starts_with("hole-punched"), "{line}");
    }
    assert_eq!(
        field(&la, "path"),
        field(&lb, "path"),
        "the ends kept different streams"
    );
    let peer: std::net::SocketAddr = field(&la, "peer").parse().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(b.site.public_addr), "{la}");
    for p in [&mut a, &mut b] {
        let echoed = p.process.expect_prefix("echoed ", T).expect("echo result");
        assert_eq!(echoed, "5", "echoes");
        assert!(p.process.wait(T).unwrap().success());
    }
    println!(
        "FIGURE pair={test} ms_a={} ms_b={} total_ms_a={} total_ms_b={} path={}",
        field(&la, "ms"),
        field(&lb, "ms"),
        field(&la, "total_ms"),
        field(&lb, "total_ms"),
        field(&la, "path")
    );
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_hub_easy_easy() {
    meets_directly("hub_easy_easy", Easy, Easy);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_hub_easy_full_cone() {
    meets_directly("hub_easy_fullcone", Easy, FullCone);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_hub_easy_upnp() {
    meets_directly("hub_easy_upnp", Easy, EasyUpnp);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_hub_hard_full_cone() {
    meets_directly("hub_hard_fullcone", Hard, FullCone);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_hub_upnp_hard() {
    meets_directly("hub_upnp_hard", EasyUpnp, Hard);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_hub_hard_hard_fails_typed_in_time() {
    let w = world("hub_hard_hard");
    let mut a = w.peer("a", Hard);
    let mut b = w.peer("b", Hard);
    let (la, lb) = introduce(&mut a, &mut b);
    for p in [(&la, &mut a), (&lb, &mut b)] {
        let (line, peer) = p;
        assert!(line.starts_with("failed"), "{line}");
        let ms: u64 = field(line, "ms").parse().unwrap();
        assert!(ms <= TIMEOUT_MS + 1000, "took {ms} ms: {line}");
        assert!(
            line.contains("UDP punch + uTP") && line.contains("TCP punch"),
            "the error lists both paths: {line}"
        );
        assert_eq!(peer.process.wait(T).unwrap().code(), Some(2), "{line}");
        println!("FIGURE pair=hub_hard_hard failed ms={ms}");
    }
}
