//! Beacons in the network lab (`netlab::lab`): real namespaces, veths and
//! bridges. Run as root with `CRUST_LAB=1` (see `.ci/lab`); otherwise these
//! tests are ignored, and panic with a clear message if forced.
//!
//! Each lab host runs `beacon-peer` as its own process (`ip netns exec`): the
//! shared runtime's worker threads would not follow a `setns`. Inside the
//! namespaces the beacons use every interface, as a user's would: the lab's
//! interfaces are all there is.

mod common;

use std::time::Duration;

use common::Peer;
use netlab::lab::{Host, Lab};

const PORT: &str = "5483";

fn peer(host: &Host, name: &str, extra: &[&str]) -> Peer {
    let mut args = vec!["--port", PORT, "--data", name];
    args.extend_from_slice(extra);
    Peer::start(name, &["ip", "netns", "exec", host.namespace()], &args)
}

/// Three hosts on one bridge; each runs a beacon with `family_flag`
/// (`--no-ipv6` or `--no-ipv4`); all must hear the other two, never
/// themselves. Returns the peers for further checks.
fn three_on_a_bridge(lab: &Lab, family_flag: &str) -> Vec<Peer> {
    let seg = lab.segment("lan", "198.51.100.0/27").expect("segment");
    let names = ["h0", "h1", "h2"];
    let mut peers: Vec<Peer> = names
        .iter()
        .map(|n| {
            let h = lab.host(n).expect("host");
            lab.attach(&h, &seg, "eth0").expect("attach");
            peer(&h, n, &[family_flag, "--period-ms", "500"])
        })
        .collect();
    for (i, p) in peers.iter_mut().enumerate() {
        let others: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| *n)
            .collect();
        p.wait_until("the two other hosts", |p| {
            others.iter().all(|o| p.heard_data(o.as_bytes()))
        });
        assert!(
            !p.heard_data(names[i].as_bytes()),
            "{} heard itself: {:?}",
            names[i],
            p.heard
        );
        let s = p.query_stats();
        assert!(s[3] > 0, "{}: own echoes were filtered: {s:?}", names[i]);
        assert_eq!(s[0], 0, "{}: nothing dropped: {s:?}", names[i]);
    }
    peers
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_three_hosts_find_each_other_by_ipv4_broadcast() {
    let lab = Lab::new("beacon-v4").expect("lab");
    let peers = three_on_a_bridge(&lab, "--no-ipv6");
    for p in &peers {
        for h in &p.heard {
            assert!(h.from.starts_with("198.51.100."), "{}: {h:?}", p.name);
        }
    }
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_three_hosts_find_each_other_by_ipv6_multicast() {
    let lab = Lab::new("beacon-v6").expect("lab");
    let peers = three_on_a_bridge(&lab, "--no-ipv4");
    for p in &peers {
        for h in &p.heard {
            // Link-local scope: the sender's link-local or lab address.
            assert!(h.from.starts_with('['), "{}: {h:?}", p.name);
        }
    }
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_host_behind_a_router_is_not_found() {
    let lab = Lab::new("beacon-routed").expect("lab");
    let lan = lab.segment("lan", "198.51.100.0/28").expect("lan");
    let other = lab.segment("other", "198.51.100.16/28").expect("other");
    let router = lab.host("r").expect("router");
    let r_lan = lab.attach(&router, &lan, "eth0").expect("attach");
    let r_other = lab.attach(&router, &other, "eth1").expect("attach");
    router.enable_forwarding().expect("forwarding");
    let near: Vec<Host> = (0..2)
        .map(|i| {
            let h = lab.host(&format!("near{i}")).expect("host");
            lab.attach(&h, &lan, "eth0").expect("attach");
            h.route_default(r_lan).expect("route");
            h
        })
        .collect();
    let far = lab.host("far").expect("host");
    let far_addr = lab.attach(&far, &other, "eth0").expect("attach");
    far.route_default(r_other).expect("route");
    // The far host is reachable by unicast: only the beacon's link scope
    // keeps it apart.
    near[0]
        .run(&["ping", "-c1", "-W2", &far_addr.to_string()])
        .expect("far host reachable through the router");

    let fast = ["--period-ms", "100"];
    let mut n0 = peer(&near[0], "near0", &fast);
    let mut n1 = peer(&near[1], "near1", &fast);
    let mut f = peer(&far, "far", &fast);
    n0.wait_until("near1", |p| p.heard_data(b"near1"));
    n1.wait_until("near0", |p| p.heard_data(b"near0"));
    // Let the far beacon send many times (IPv4 and IPv6) before judging.
    common::wait_for("the far beacon to send 20 times", || {
        (f.query_stats()[2] >= 20).then_some(())
    });
    // Everything the near hosts sent by now has reached the far host's link
    // or not at all; ask the near hosts for their counters after that.
    n0.query_stats();
    n1.query_stats();
    f.pump(Duration::from_millis(200));
    n0.pump(Duration::from_millis(10));
    n1.pump(Duration::from_millis(10));
    assert!(f.heard.is_empty(), "far heard {:?}", f.heard);
    assert!(!n0.heard_data(b"far"), "near0 heard far: {:?}", n0.heard);
    assert!(!n1.heard_data(b"far"), "near1 heard far: {:?}", n1.heard);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_interface_brought_up_after_start_is_picked_up() {
    let lab = Lab::new("beacon-late").expect("lab");
    let seg = lab.segment("lan", "203.0.113.0/28").expect("segment");
    let old = lab.host("old").expect("host");
    lab.attach(&old, &seg, "eth0").expect("attach");
    let late = lab.host("late").expect("host");
    lab.attach_down(&late, &seg, "eth0").expect("attach down");

    // Long periods: neither would send again within the hang guard, so the
    // late host is only found through the fresh burst it sends when its
    // interface comes up, and the old host's answer to it.
    let slow = ["--period-ms", "600000", "--refresh-ms", "200"];
    let mut o = peer(&old, "old", &slow);
    let mut l = peer(&late, "late", &slow);
    // The late beacon runs with its interface down.
    l.pump(Duration::from_secs(1));
    assert!(l.heard.is_empty(), "{:?}", l.heard);
    late.set_link("eth0", true).expect("link up");
    l.wait_until("the old host", |p| p.heard_data(b"old"));
    o.wait_until("the late host", |p| p.heard_data(b"late"));
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_restricted_beacon_uses_only_its_interfaces() {
    let lab = Lab::new("beacon-restricted").expect("lab");
    let seg_a = lab.segment("a", "192.0.2.0/28").expect("segment a");
    let seg_b = lab.segment("b", "192.0.2.16/28").expect("segment b");
    let multi = lab.host("multi").expect("host");
    lab.attach(&multi, &seg_a, "eth0").expect("attach");
    lab.attach(&multi, &seg_b, "eth1").expect("attach");
    let ha = lab.host("ha").expect("host");
    lab.attach(&ha, &seg_a, "eth0").expect("attach");
    let hb = lab.host("hb").expect("host");
    lab.attach(&hb, &seg_b, "eth0").expect("attach");

    let fast = ["--period-ms", "100"];
    let mut m = peer(
        &multi,
        "multi",
        &["--interface", "eth0", "--period-ms", "100"],
    );
    let mut a = peer(&ha, "on-a", &fast);
    let mut b = peer(&hb, "on-b", &fast);
    m.wait_until("the host on its interface", |p| p.heard_data(b"on-a"));
    a.wait_until("the restricted host", |p| p.heard_data(b"multi"));
    // The other segment's broadcasts reach the restricted beacon's socket
    // (bound to 0.0.0.0) and are ignored; wait until some were, and until
    // the restricted beacon has sent many times.
    common::wait_for("datagrams from eth1 ignored", || {
        let s = m.query_stats();
        (s[4] >= 5 && s[2] >= 20).then_some(())
    });
    b.query_stats();
    b.pump(Duration::from_millis(50));
    assert!(
        !m.heard_data(b"on-b"),
        "restricted heard eth1: {:?}",
        m.heard
    );
    assert!(
        !b.heard_data(b"multi"),
        "restricted sent on eth1: {:?}",
        b.heard
    );
    assert!(b.heard.is_empty(), "{:?}", b.heard);
}

/// The figure for the issue note: time from a beacon's start to its first
/// message from a peer that was already running (median of 20), on two lab
/// hosts on one bridge, with the default 1 s period. Prints the figures
/// (run with `--nocapture`) and asserts a bound that follows from the
/// protocol, not from this machine's speed: a running beacon sends at least
/// once per period (1 s, the default), so every newcomer hears it within
/// two periods (one lost or late send allowed) of starting, with early
/// answers or without.
#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_discovery_time_of_a_running_peer() {
    let lab = Lab::new("beacon-time").expect("lab");
    let seg = lab.segment("lan", "198.51.100.0/28").expect("segment");
    let a = lab.host("a").expect("host");
    lab.attach(&a, &seg, "eth0").expect("attach");
    let b = lab.host("b").expect("host");
    lab.attach(&b, &seg, "eth0").expect("attach");
    let tx = |what: &str| -> u64 {
        a.run(&["cat", &format!("/sys/class/net/eth0/statistics/tx_{what}")])
            .expect("interface counters")
            .trim()
            .parse()
            .expect("counter")
    };
    let (bytes0, packets0) = (tx("bytes"), tx("packets"));
    // BEACON_LAB_NO_ANSWER=1 measures the same without early answers, for
    // comparison (the newcomer then waits for the running beacon's period).
    let no_answer = std::env::var("BEACON_LAB_NO_ANSWER").as_deref() == Ok("1");
    let running_args: &[&str] = if no_answer { &["--no-answer"] } else { &[] };
    let mut running = peer(&a, "running", running_args);
    running.pump(Duration::from_millis(500)); // past its start-up burst
    let mut times = Vec::new();
    for round in 0..20 {
        let mut newcomer = peer(&b, &format!("new{round}"), &[]);
        newcomer.wait_until("the running peer", |p| p.heard_data(b"running"));
        let first = newcomer
            .heard
            .iter()
            .find(|h| h.data == b"running")
            .map(|h| h.micros)
            .expect("heard");
        times.push(first);
        drop(newcomer);
        // Space the rounds beyond the running beacon's answer rate limit, so
        // each newcomer is a lone newcomer (back to back, answers come at most
        // one per ANSWER_MIN_GAP).
        std::thread::sleep(beacon::core::ANSWER_MIN_GAP * 3);
        running.pump(Duration::from_millis(1));
    }
    println!("in order of the rounds (us): {times:?}");
    times.sort_unstable();
    let median = (times[9] + times[10]) / 2;
    println!(
        "beacon discovery of a running peer (lab, 20 runs{}): median {:.1} ms, min {:.1} ms, \
         max {:.1} ms; all (us): {times:?}",
        if no_answer { ", early answers off" } else { "" },
        median as f64 / 1000.0,
        times[0] as f64 / 1000.0,
        times[19] as f64 / 1000.0
    );
    assert_eq!(times.len(), 20);
    let bound = 2 * Duration::from_secs(1);
    assert!(
        times.iter().all(|&t| Duration::from_micros(t) <= bound),
        "a newcomer waited longer than two periods ({bound:?}): {times:?}"
    );
    let sends = running.query_stats()[2];
    let (bytes, packets) = (tx("bytes") - bytes0, tx("packets") - packets0);
    println!(
        "running beacon (7 bytes of data, 8-byte id): {sends} sends, eth0 sent {packets} frames, \
         {bytes} bytes: {:.1} bytes per frame (an IPv4 broadcast and an IPv6 multicast per send, \
         plus the kernel's own IPv6 chatter)",
        bytes as f64 / packets as f64
    );
}
