//! Garbage on every port a running Service opens (TCP listener, uTP socket,
//! beacon port, STUN server over UDP and TCP) while good peers exchange
//! messages with it over TCP and uTP. Bounds: see `common::under_attack`.

use std::time::Duration;

use crust::{Protocol, Service};

mod common;

use common::{Bounds, Rng, Target, hostile, serial, tcp_garbage, udp_garbage, under_attack};

/// After the attack the target still takes new connections on both
/// protocols.
fn still_serving(target: &Target) {
    let client = Service::new_from_config(target.config.clone().beacon_enabled(false)).unwrap();
    for p in [Protocol::Tcp, Protocol::Utp] {
        let s = client
            .controller
            .connect_timeout(&target.endpoint(p), common::T)
            .unwrap_or_else(|e| panic!("a new {p} connect after the attack: {e}"));
        s.send(b"after").unwrap();
        assert_eq!(s.recv_timeout(common::T).unwrap(), b"after");
    }
}

#[test]
fn garbage_on_every_port() {
    let _serial = serial();
    let target = Target::start(hostile("hostile-garbage"));
    let tcp = target.endpoint(Protocol::Tcp).addr;
    let utp = target.endpoint(Protocol::Utp).addr;
    let stun = target.stun_addr();
    let beacon = target.beacon_addr();
    let mut rng = Rng::new(1);
    // Connections are opened one after another and closed after their
    // garbage: at most a few hundred are open at once, on both ends.
    let bounds = Bounds {
        peak_fds: 2 * 300 + 16,
        peak_threads: 4,
        peak_rss_kib: 64 * 1024,
    };
    under_attack("garbage", &target, bounds, || {
        let tcp_sent = tcp_garbage(tcp, 300, 2048, &mut rng);
        // uTP: half the datagrams look like a version-1 SYN or DATA header.
        udp_garbage(utp, 5_000, 1_500, &[0x41, 0x00], &mut rng);
        udp_garbage(utp, 2_000, 1_500, &[0x01, 0x00], &mut rng);
        // Beacon: half start with the beacon packet's magic and version.
        udp_garbage(beacon, 5_000, 1_200, b"CRBN\x01", &mut rng);
        // STUN: half look like a binding request with the magic cookie.
        udp_garbage(
            stun,
            5_000,
            600,
            &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42],
            &mut rng,
        );
        let stun_sent = tcp_garbage(stun, 100, 2048, &mut rng);
        println!(
            "figure garbage: {tcp_sent} TCP garbage connections, {stun_sent} to STUN/TCP, 17,000 datagrams"
        );
    });
    assert_eq!(
        target.accepted.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "garbage was never accepted as a stream (the two are the good peers)"
    );
    still_serving(&target);
    // The beacon still hears real peers after garbage on its port.
    let mut target = target;
    let other = Service::new_from_config(
        target
            .config
            .clone()
            .beacon_period(Duration::from_millis(100)),
    )
    .unwrap();
    let mut rx = target.beacon_receiver.take().unwrap();
    let heard = loop {
        let ep = rx
            .next_timeout(common::T)
            .expect("a beacon after the garbage");
        if ep.public_key == other.controller.public_key() {
            break ep;
        }
    };
    println!(
        "figure garbage: beacon dropped (malformed, other network, queue full) = {:?}; heard {heard}",
        rx.dropped()
    );
}
