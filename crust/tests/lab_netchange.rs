//! Network change in the network lab (`netlab::lab`): a host's address
//! moves to another subnet while a peer is connected to it. Run as root
//! with `CRUST_LAB=1` (see `.ci/lab`); otherwise ignored.
//!
//! Each host runs `crust-lab-peer` as its own process (`ip netns exec`);
//! its beacon uses every interface of its namespace, which are only the
//! lab's.
//!
//! Bounds (each a timeout of a wait, none a measured threshold):
//! - the stream on the old address ends with `AddressLost` well before the
//!   inactivity timeout (20 s), so the network-change driver ended it, not
//!   the heartbeats;
//! - the peer finds the host again (beacon or cache) within two beacon
//!   periods + the bootstrap timeout + one poll interval.
//!
//! The whole test takes about 5 s (lab setup included).

use std::time::{Duration, Instant};

use netlab::lab::{IGNORE_REASON, Lab};

const POLL: Duration = Duration::from_millis(200);
const BEACON_PERIOD: Duration = Duration::from_millis(1000);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(2000);
/// `ServiceController::bootstrap`'s default bound: twice the connect timeout.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_millis(4000);
const INACTIVITY: Duration = Duration::from_secs(20);

mod common;
use common::lab_peer::LabPeer;

/// Starts `crust-lab-peer` with this test's settings and `args`.
fn start(host: &netlab::lab::Host, args: &[&str]) -> LabPeer {
    let poll = POLL.as_millis().to_string();
    let period = BEACON_PERIOD.as_millis().to_string();
    let connect = CONNECT_TIMEOUT.as_millis().to_string();
    let inactivity = INACTIVITY.as_millis().to_string();
    let mut all = vec![
        "--network",
        "netchange",
        "--poll-ms",
        &poll,
        "--beacon-period-ms",
        &period,
        "--connect-timeout-ms",
        &connect,
        "--inactivity-ms",
        &inactivity,
    ];
    all.extend_from_slice(args);
    LabPeer::start(host, &all)
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_netchange_address_moves_to_another_subnet() {
    let _ = IGNORE_REASON;
    let lab = Lab::new("netchange").expect("lab");
    // One bridge carrying two subnets: the old one and the new one. The
    // peer has an address in both, so it hears the moved host's beacon and
    // can reach it once it moved.
    let seg = lab.segment("lan", "198.51.100.0/27").expect("segment");
    let a = lab.host("a").expect("host a");
    let b = lab.host("b").expect("host b");
    let old_ip = lab.attach(&a, &seg, "eth0").expect("attach a");
    let _ip_b = lab.attach(&b, &seg, "eth0").expect("attach b");
    let new_ip = "198.51.100.33";
    b.run(&["ip", "addr", "add", "198.51.100.34/27", "dev", "eth0"])
        .expect("b's address in the new subnet");

    let mut pa = start(&a, &["--listen", "tcp://0.0.0.0:0"]);
    let mut pb = start(&b, &["--listen", "tcp://0.0.0.0:0"]);
    let (_, eps) = pa.wait("endpoints ", Duration::from_secs(20));
    let old_ep = eps
        .split_whitespace()
        .find(|e| e.contains(&format!("{old_ip}:")))
        .unwrap_or_else(|| panic!("no endpoint on {old_ip} in {eps}"))
        .to_string();
    let port = old_ep
        .split(&format!("{old_ip}:"))
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("a port")
        .to_string();
    pb.wait("endpoints ", Duration::from_secs(20));

    // b connects to a on the old address (and caches it).
    pb.helper
        .send_line(&format!("connect {old_ep}"))
        .expect("send connect");
    pb.wait("connected ", CONNECT_TIMEOUT + Duration::from_secs(5));
    let (_, accepted) = pa.wait("accepted ", Duration::from_secs(5));
    assert!(
        accepted.starts_with(&format!("{old_ip}:{port} ")),
        "a's stream is on its old address: {accepted}"
    );

    // The move: the old address goes, one on the other subnet comes.
    let moved = Instant::now();
    a.run(&["ip", "addr", "del", &format!("{old_ip}/27"), "dev", "eth0"])
        .expect("delete the old address");
    a.run(&["ip", "addr", "add", &format!("{new_ip}/27"), "dev", "eth0"])
        .expect("add the new address");
    // b looks for a again, as a program whose peer vanished would.
    let find_limit = 2 * BEACON_PERIOD + BOOTSTRAP_TIMEOUT + POLL;
    pb.helper
        .send_line(&format!("bootstrap {} {old_ep}", find_limit.as_millis()))
        .expect("send bootstrap");

    // (a) the stream bound to the old address is reported lost, by the
    // network-change driver (the kind says so), long before the heartbeats
    // would have.
    let (t_lost, ended) = pa.wait("ended accepted ", INACTIVITY / 2);
    assert!(
        ended.starts_with("address-lost "),
        "the stream ended for its address: {ended}"
    );
    assert!(ended.contains(&format!("{old_ip}:{port}")), "{ended}");

    // (b) endpoints_changed() yields the new endpoint, and not the old one.
    let (t_changed, changed) = pa.wait("changed ", INACTIVITY / 2);
    assert!(
        changed.contains(&format!("tcp://{new_ip}:{port}/")),
        "the new endpoint: {changed}"
    );
    assert!(
        !changed.contains(&format!("{old_ip}:")),
        "the old endpoint is gone: {changed}"
    );

    // (c) b finds a again on its new address.
    let (t_found, found) = pb.wait("bootstrapped ", find_limit + Duration::from_secs(2));
    assert!(
        found.starts_with(&format!("tcp://{new_ip}:{port}/")),
        "b reached a on its new address: {found}"
    );
    let (_, again) = pa.wait("accepted ", Duration::from_secs(5));
    assert!(again.starts_with(&format!("{new_ip}:{port} ")), "{again}");

    eprintln!(
        "netchange: stream lost after {:?}, endpoints_changed after {:?}, \
         peer found again after {:?} (bootstrap tries: {}); poll {POLL:?}, beacon period \
         {BEACON_PERIOD:?}, bootstrap timeout {BOOTSTRAP_TIMEOUT:?}, target {find_limit:?}",
        t_lost - moved,
        t_changed - moved,
        t_found - moved,
        found.split_whitespace().nth(1).unwrap_or("?"),
    );
}
