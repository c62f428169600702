//! Beacons in separate processes on one port, on `lo` only (traffic rule):
//! two `beacon-peer` processes and one beacon in this process all hear each
//! other and never themselves.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use beacon::Beacon;
use common::{HANG_GUARD, Peer};

#[test]
fn beacons_in_three_processes_hear_each_other_never_themselves() {
    let port_n = common::test_port(21201);
    let port_s = port_n.to_string();
    let port = port_s.as_str();
    let args = |data: &'static str| {
        vec![
            "--port",
            port,
            "--interface",
            "lo",
            "--data",
            data,
            "--period-ms",
            "200",
        ]
    };
    let mut p1 = Peer::start("p1", &[], &args("proc-one"));
    let mut p2 = Peer::start("p2", &[], &args("proc-two"));
    let (mut me, _ctl) = Beacon::builder(port_n)
        .data("in-process")
        .period(Duration::from_millis(200))
        .interfaces(["lo"])
        .build()
        .unwrap();
    assert_ne!(p1.id, p2.id);

    p1.wait_until("both others", |p| {
        p.heard_data(b"proc-two") && p.heard_data(b"in-process")
    });
    p2.wait_until("both others", |p| {
        p.heard_data(b"proc-one") && p.heard_data(b"in-process")
    });
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut buf = Vec::new();
    while !(seen.contains(&b"proc-one"[..]) && seen.contains(&b"proc-two"[..])) {
        me.next_message_timeout(&mut buf, HANG_GUARD).unwrap();
        assert_ne!(buf, b"in-process", "heard itself");
        seen.insert(buf.clone());
    }

    // Own echoes reached every beacon and were filtered, not returned.
    let s1 = p1.query_stats();
    let s2 = p2.query_stats();
    assert!(s1[3] > 0 && s2[3] > 0, "own echoes: {s1:?} {s2:?}");
    assert_eq!((s1[0], s2[0]), (0, 0), "nothing dropped");
    assert!(
        !p1.heard_data(b"proc-one"),
        "p1 heard itself: {:?}",
        p1.heard
    );
    assert!(
        !p2.heard_data(b"proc-two"),
        "p2 heard itself: {:?}",
        p2.heard
    );
    assert!(me.stats().own_echoes > 0);
    for h in p1.heard.iter().chain(&p2.heard) {
        assert!(h.from.starts_with("127."), "{h:?}");
    }
}
