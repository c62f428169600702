//! Broken routers and links under running crust services, in the network
//! lab (`netlab::lab`): a NAT that reboots mid-stream (its conntrack table
//! flushed, so it maps the flow to a new port), and a peer's link down for
//! 30 s. Each host runs `crust-lab-peer` as its own process. Run as root
//! with `CRUST_LAB=1` (see `.ci/lab`); otherwise ignored.
//!
//! Bounds (each a timeout of a wait, none a measured threshold):
//! - a stream whose path broke is reported lost by both ends within the
//!   inactivity timeout (4 s; heartbeats every 1 s), plus 1 s for the
//!   processes to say so;
//! - the dialler connects again (bootstrap: its cache, or the beacon)
//!   within the bootstrap limit given.
//!
//! The NAT test takes about 10 s, the link test about 40 s (30 of them the
//! link being down).

use std::time::{Duration, Instant};

use netlab::lab::{IGNORE_REASON, Lab, NatKind, SiteOptions};

mod common;
use common::lab_peer::LabPeer;

const INACTIVITY: Duration = Duration::from_secs(4);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const START: Duration = Duration::from_secs(20);
/// Reported lost within the inactivity timeout, plus the processes' time.
const LOST_BOUND: Duration = Duration::from_secs(5);
const REFIND_LIMIT: Duration = Duration::from_secs(20);

fn start(host: &netlab::lab::Host, network: &str, args: &[&str]) -> LabPeer {
    let inactivity = INACTIVITY.as_millis().to_string();
    let connect = CONNECT_TIMEOUT.as_millis().to_string();
    let mut all = vec![
        "--network",
        network,
        "--inactivity-ms",
        &inactivity,
        "--connect-timeout-ms",
        &connect,
        "--beacon-period-ms",
        "1000",
    ];
    all.extend_from_slice(args);
    LabPeer::start(host, &all)
}

/// The endpoint on `ip` among a `endpoints ...` line's.
fn endpoint_on(eps: &str, ip: std::net::Ipv4Addr) -> String {
    eps.split_whitespace()
        .find(|e| e.starts_with(&format!("tcp://{ip}:")))
        .unwrap_or_else(|| panic!("no TCP endpoint on {ip} in {eps}"))
        .to_string()
}

/// The peer address of an `accepted <local> <peer endpoint>` line.
fn accepted_from(line: &str) -> std::net::SocketAddr {
    let ep: crust::Endpoint = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    ep.addr
}

/// A hard NAT (a new external port per flow) loses its state mid-stream,
/// as a rebooting router does: `conntrack -F` on it. The stream's packets
/// then leave from a new port the server knows nothing of, so both ends
/// must report the stream lost, and the client connects again (through
/// its cache), from yet another port.
#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_fault_nat_reboot_mid_stream() {
    let _ = IGNORE_REASON;
    let lab = Lab::new("reboot_nat").expect("lab");
    let server = lab
        .site("srv", NatKind::Public, SiteOptions::default())
        .unwrap();
    let client = lab
        .site("cli", NatKind::Hard, SiteOptions::default())
        .unwrap();
    let listen = format!("tcp://{}:5483", server.addr);
    let mut s = start(&server.host, "reboot-nat", &["--listen", &listen]);
    let mut c = start(&client.host, "reboot-nat", &[]);
    let (_, eps) = s.wait("endpoints ", START);
    let ep = endpoint_on(&eps, server.addr);
    c.wait("endpoints ", START);
    c.send(&format!("connect {ep}"));
    c.wait("connected ", CONNECT_TIMEOUT + Duration::from_secs(5));
    let (_, first) = s.wait("accepted ", Duration::from_secs(5));
    let first = accepted_from(&first);
    assert_eq!(first.ip(), std::net::IpAddr::V4(client.public_addr));

    let (router, _) = client.router.as_ref().unwrap();
    let flushed = Instant::now();
    router
        .run(&["conntrack", "-F"])
        .expect("conntrack -F on the client's router");
    let (t_s, s_end) = s.wait("ended accepted ", LOST_BOUND);
    let (t_c, c_end) = c.wait("ended dialled ", LOST_BOUND);
    // The server hears nothing more on the old flow: lost by heartbeats.
    assert!(s_end.starts_with("peer-lost "), "server: {s_end}");

    c.send(&format!("bootstrap {} {ep}", REFIND_LIMIT.as_millis()));
    let (t_again, again) = c.wait("bootstrapped ", REFIND_LIMIT + Duration::from_secs(2));
    let (_, second) = s.wait("accepted ", Duration::from_secs(5));
    let second = accepted_from(&second);
    assert_ne!(
        second.port(),
        first.port(),
        "the rebooted NAT should map the new flow to another port"
    );
    eprintln!(
        "FIGURE nat_reboot: server reported the stream lost after {:?} ({s_end}), client after \
         {:?} ({c_end}); connected again after {:?} ({again}); inactivity timeout {INACTIVITY:?}",
        t_s - flushed,
        t_c - flushed,
        t_again - flushed,
    );
}

/// A peer's link goes down for 30 s, then up: both ends report the stream
/// lost, and once the link is back the dialler finds the server again.
#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_fault_link_down_30_s_then_up() {
    let lab = Lab::new("reboot_link").expect("lab");
    let server = lab
        .site("srv", NatKind::Public, SiteOptions::default())
        .unwrap();
    let client = lab
        .site("cli", NatKind::Public, SiteOptions::default())
        .unwrap();
    let listen = format!("tcp://{}:5483", server.addr);
    let mut s = start(&server.host, "reboot-link", &["--listen", &listen]);
    let mut c = start(&client.host, "reboot-link", &[]);
    let (_, eps) = s.wait("endpoints ", START);
    let ep = endpoint_on(&eps, server.addr);
    c.wait("endpoints ", START);
    c.send(&format!("connect {ep}"));
    c.wait("connected ", CONNECT_TIMEOUT + Duration::from_secs(5));
    s.wait("accepted ", Duration::from_secs(5));

    let down = Instant::now();
    client.host.set_link("eth0", false).expect("link down");
    let (t_s, s_end) = s.wait("ended accepted ", LOST_BOUND);
    let (t_c, c_end) = c.wait("ended dialled ", LOST_BOUND);
    assert!(s_end.starts_with("peer-lost "), "server: {s_end}");
    // The fault's length, not a wait for an event.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    client.host.set_link("eth0", true).expect("link up");
    let up = Instant::now();
    c.send(&format!("bootstrap {} {ep}", REFIND_LIMIT.as_millis()));
    let (t_again, again) = c.wait("bootstrapped ", REFIND_LIMIT + Duration::from_secs(2));
    s.wait("accepted ", Duration::from_secs(5));
    eprintln!(
        "FIGURE link_down: server reported the stream lost after {:?} ({s_end}), client after \
         {:?} ({c_end}); found again {:?} after the link came back ({again})",
        t_s - down,
        t_c - down,
        t_again - up,
    );
}
