//! Beacon floods and lying beacons against a running Service (beacon on
//! `lo`), while good peers exchange messages with it: tens of thousands of
//! well-formed beacons of our network from fresh keys, beacons announcing
//! other hosts' addresses, other networks' beacons and beacons claiming our
//! own key. Bounds: see `common::under_attack`; the beacon queue holds at
//! most 256 endpoints (`BEACON_QUEUE` in service.rs).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crust::proto::BeaconPayload;
use crust::{Protocol, PublicKey, Service};

mod common;

use common::{Bounds, Rng, T, Target, hostile, serial, under_attack};

const NETWORK: &str = "hostile-beacon";
/// What the service queues for `beacon_receiver` at most.
const BEACON_QUEUE: usize = 256;

fn beacon(rng: &mut Rng, network: &str, key: PublicKey, at: &[(Protocol, SocketAddr)]) -> Vec<u8> {
    let payload = BeaconPayload {
        network: network.into(),
        public_key: key,
        listeners: at.to_vec(),
    }
    .encode();
    let mut out = Vec::new();
    crust::beacon::packet::encode(&rng.bytes(8), &payload, &mut out).unwrap();
    out
}

fn fresh_key(rng: &mut Rng) -> PublicKey {
    let b: [u8; 32] = rng.bytes(32).try_into().unwrap();
    PublicKey::from_bytes(b)
}

/// Sends `n` beacons made by `make`, paced so loopback's receive buffer
/// does not simply drop them.
fn flood(to: SocketAddr, n: usize, mut make: impl FnMut(usize) -> Vec<u8>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..n {
        let _ = sock.send_to(&make(i), to);
        if i % 32 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Takes every endpoint queued now (until 300 ms pass with none).
fn drain(rx: &mut crust::ServiceBeaconReceiver) -> Vec<crust::Endpoint> {
    let mut got = Vec::new();
    while let Ok(ep) = rx.next_timeout(Duration::from_millis(300)) {
        got.push(ep);
    }
    got
}

#[test]
fn beacon_floods_and_lies() {
    let _serial = serial();
    let mut target = Target::start(hostile(NETWORK));
    let mut rx = target.beacon_receiver.take().unwrap();
    let to = target.beacon_addr();
    let own = target.controller.public_key();
    let lo = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let bounds = Bounds {
        peak_fds: 16,
        peak_threads: 4,
        peak_rss_kib: 64 * 1024,
    };
    let mut rng = Rng::new(7);
    let n = 20_000;
    under_attack("beacon flood", &target, bounds, || {
        flood(to, n, |i| {
            let key = fresh_key(&mut rng);
            let port = 1 + (i % 60_000) as u16;
            beacon(
                &mut rng,
                NETWORK,
                key,
                &[(Protocol::Tcp, lo(port)), (Protocol::Utp, lo(port))],
            )
        });
    });
    let (_, _, queue_full) = rx.dropped();
    let queued = drain(&mut rx);
    println!(
        "figure beacon flood: {n} beacons of fresh keys, 2 endpoints each: {} queued (bound {BEACON_QUEUE}), \
         {queue_full} dropped as the queue was full",
        queued.len()
    );
    assert!(queued.len() <= BEACON_QUEUE);
    assert!(
        queue_full > 0,
        "the flood never filled the queue: {:?}",
        rx.dropped()
    );

    // Lies: other hosts' addresses, other networks, our own key.
    let (_, other_before, _) = rx.dropped();
    let third = [
        "10.0.0.1:5000",
        "192.168.1.10:5483",
        "8.8.8.8:53",
        "127.0.0.2:5000",
        "[::1]:5000",
        "0.0.0.0:5000",
    ]
    .map(|a| a.parse::<SocketAddr>().unwrap());
    let lies = 5_000;
    under_attack("lying beacons", &target, bounds, || {
        flood(to, lies, |i| match i % 3 {
            0 => {
                let key = fresh_key(&mut rng);
                let at: Vec<_> = third.iter().map(|&a| (Protocol::Tcp, a)).collect();
                beacon(&mut rng, NETWORK, key, &at)
            }
            1 => {
                let key = fresh_key(&mut rng);
                beacon(
                    &mut rng,
                    "another-network",
                    key,
                    &[(Protocol::Tcp, lo(5000))],
                )
            }
            _ => beacon(&mut rng, NETWORK, own, &[(Protocol::Tcp, lo(5000))]),
        });
    });
    let yielded = drain(&mut rx);
    let (_, other_after, _) = rx.dropped();
    println!(
        "figure lying beacons: {lies} beacons (other hosts' addresses, another network, our own key): \
         {} endpoints yielded, {} counted as another network",
        yielded.len(),
        other_after - other_before
    );
    assert!(yielded.is_empty(), "lying beacons yielded {yielded:?}");
    assert!(other_after - other_before > 0);

    // A real peer is still heard, at its own address.
    let peer = Service::new_from_config(target.config.clone()).unwrap();
    let heard = loop {
        let ep = rx
            .next_timeout(T)
            .expect("a real peer's beacon after the floods");
        if ep.public_key == peer.controller.public_key() {
            break ep;
        }
        assert_eq!(ep.addr.ip(), lo(0).ip());
    };
    assert!(peer.controller.endpoints().contains(&heard));
}
