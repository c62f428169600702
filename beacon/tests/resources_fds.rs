//! File descriptors return to baseline after beacons are dropped (alone in its
//! test binary, so no other test opens or closes descriptors meanwhile).

mod common;

use std::time::Duration;

use beacon::Beacon;
use common::open_fds;

fn start(port: u16) -> (Beacon, beacon::BeaconController) {
    Beacon::builder(port)
        .data("fd")
        .period(Duration::from_millis(100))
        .interfaces(["lo"])
        .build()
        .unwrap()
}

#[test]
fn fds_back_to_baseline_after_drop() {
    // Warm up: the shared runtime opens its own descriptors once.
    drop(start(21401));
    let baseline = open_fds();

    let mut beacons: Vec<_> = (0..8).map(|_| start(21401)).collect();
    let during = open_fds();
    // Two sockets (IPv4 and IPv6) per beacon.
    assert!(
        during >= baseline + 16,
        "baseline {baseline}, during {during}"
    );
    // They run: messages flow between them.
    let mut buf = Vec::new();
    beacons[0]
        .0
        .next_message_timeout(&mut buf, common::HANG_GUARD)
        .unwrap();
    let controllers: Vec<_> = beacons.iter().map(|(_, c)| c.clone()).collect();
    beacons.clear(); // dropped on this (non-runtime) thread: closed on return
    assert_eq!(open_fds(), baseline, "descriptors leaked");
    assert!(controllers.iter().all(|c| !c.is_running()));
}
