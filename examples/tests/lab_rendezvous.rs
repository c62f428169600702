//! Network lab: rendezvous connections (`transport::rendezvous`) between
//! two hosts behind real kernel NATs, with our STUN server (RFC 5780) on the
//! lab's internet: UDP punch + uTP and TCP punch raced, Noise IK proving the
//! info's key. Each test prints `FIGURE` lines (time, winning protocol) for
//! the repeat script. Run with `CRUST_LAB=1` as root (see `.ci/lab`).

use std::path::Path;
use std::time::Duration;

use netlab::lab::NatKind::{self, *};
use netlab::lab::{Helper, Host, IGNORE_REASON, Lab, Site, SiteOptions, field};

const T: Duration = Duration::from_secs(40);
/// The rendezvous timeout the tests give.
const TIMEOUT_MS: u64 = 10_000;

fn agent(host: &Host) -> Helper {
    host.spawn(Path::new(env!("CARGO_BIN_EXE_rendezvous_lab_agent")), &[])
        .expect("start agent")
}

fn cmd(h: &mut Helper, line: &str) -> String {
    h.send_line(line).expect("send to agent");
    h.recv_line(T).expect("agent answer")
}

struct World {
    lab: Lab,
    stun: String,
    _server: Helper,
}

fn world(test: &str) -> World {
    let _ = IGNORE_REASON;
    let lab = Lab::new(test).expect("build lab");
    let inet = lab.internet().unwrap();
    let (h, ip1) = lab.public_host("stun").unwrap();
    let ip2 = lab.add_address(&h, &inet, "eth0").unwrap();
    let mut server = agent(&h);
    let r = cmd(&mut server, &format!("stun-server {ip1}:3478 {ip2}:3479"));
    assert!(r.starts_with("ready"), "{r}");
    World {
        lab,
        stun: format!("{ip1}:3478"),
        _server: server,
    }
}

struct Peer {
    site: Site,
    agent: Helper,
    info: String,
    /// Open file descriptors of the agent before it prepared.
    fds_before: usize,
}

fn fds(h: &mut Helper) -> usize {
    let r = cmd(h, "fds");
    r.strip_prefix("fds ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{r}"))
}

impl World {
    fn peer(&self, name: &str, kind: NatKind, loss: u8) -> Peer {
        let site = self
            .lab
            .site(name, kind, SiteOptions { loss_percent: loss })
            .expect("build site");
        let mut a = agent(&site.host);
        let fds_before = fds(&mut a);
        let igd = if kind.has_upnp() { "igd" } else { "noigd" };
        let r = cmd(&mut a, &format!("prepare {} {igd}", self.stun));
        let info = r
            .strip_prefix("info ")
            .unwrap_or_else(|| panic!("{name}: {r}"))
            .to_string();
        Peer {
            site,
            agent: a,
            info,
            fds_before,
        }
    }
}

fn connect(a: &mut Peer, b: &mut Peer) -> (String, String) {
    a.agent
        .send_line(&format!("connect {} {TIMEOUT_MS}", b.info))
        .unwrap();
    b.agent
        .send_line(&format!("connect {} {TIMEOUT_MS}", a.info))
        .unwrap();
    (
        a.agent.recv_line(T).expect("answer of a"),
        b.agent.recv_line(T).expect("answer of b"),
    )
}

fn connects(test: &str, ka: NatKind, kb: NatKind, loss: u8) {
    let w = world(test);
    let mut a = w.peer("a", ka, loss);
    let mut b = w.peer("b", kb, loss);
    let (la, lb) = connect(&mut a, &mut b);
    for (side, line) in [("a", &la), ("b", &lb)] {
        assert!(
            line.starts_with("connected"),
            "{test} side {side}: {line}\n a: {la}\n b: {lb}"
        );
        assert_eq!(field(line, "data"), "ok", "{line}");
        assert!(field(line, "path").starts_with("hole-punched"), "{line}");
    }
    assert_eq!(
        field(&la, "path"),
        field(&lb, "path"),
        "the ends kept different streams"
    );
    let peer: std::net::SocketAddr = field(&la, "peer").parse().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(b.site.public_addr), "{la}");
    println!(
        "FIGURE pair={test} ms_a={} ms_b={} path={}",
        field(&la, "ms"),
        field(&lb, "ms"),
        field(&la, "path")
    );
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_rendezvous_easy_easy() {
    connects("rv_easy_easy", Easy, Easy, 0);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_rendezvous_easy_public() {
    connects("rv_easy_public", Easy, Public, 0);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_rendezvous_easy_full_cone() {
    connects("rv_easy_fullcone", Easy, FullCone, 0);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_rendezvous_hard_full_cone() {
    connects("rv_hard_fullcone", Hard, FullCone, 0);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_rendezvous_easy_upnp_hard() {
    connects("rv_upnp_hard", EasyUpnp, Hard, 0);
}

/// Not run by CI (no `lab_` prefix): it fails 6 times in 20 (each a
/// 10 s timeout of both attempts; the passes took 0.1 to 4.1 s). uTP
/// under 20% loss stalls (issue 16's `fault_lossy_utp_transfer` too), and
/// the TCP punch's SYNs back off past the budget. Run it with
/// `cargo test -p crust-examples --test lab_rendezvous -- --ignored fault_`.
#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn fault_rendezvous_easy_easy_with_20_percent_loss() {
    connects("rv_easy_easy_loss", Easy, Easy, 20);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_rendezvous_hard_hard_fails_typed_in_time() {
    let w = world("rv_hard_hard");
    let mut a = w.peer("a", Hard, 0);
    let mut b = w.peer("b", Hard, 0);
    let (la, lb) = connect(&mut a, &mut b);
    for line in [&la, &lb] {
        assert!(line.starts_with("failed"), "{line}");
        let ms: u64 = field(line, "ms").parse().unwrap();
        assert!(ms <= TIMEOUT_MS + 1000, "took {ms} ms: {line}");
        assert!(
            line.contains("UDP punch + uTP") && line.contains("TCP punch"),
            "{line}"
        );
        println!("FIGURE pair=rv_hard_hard failed ms={ms}");
    }
    // No socket is left behind in the agents after the attempt (the
    // aborted tasks close theirs as the runtime gets to them).
    for p in [&mut a, &mut b] {
        let before = p.fds_before;
        let back = netlab::lab::wait_until(Duration::from_secs(3), || fds(&mut p.agent) <= before);
        assert!(
            back,
            "fds left open: {} before, {} after",
            before,
            fds(&mut p.agent)
        );
    }
}
