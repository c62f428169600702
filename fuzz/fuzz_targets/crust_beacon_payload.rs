//! The crust service's beacon payload inside a beacon packet, as the
//! service's beacon pump reads it: never a panic; a decoded payload
//! re-encodes to one that decodes the same; the endpoints taken from it are
//! only on the sender's own address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crust::proto::{BeaconPayload, MAX_ENDPOINTS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the datagram's source; the rest is the payload.
    let (ctl, payload) = data.split_first().unwrap_or((&0, &[]));
    let from = match ctl % 4 {
        0 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 5484),
        1 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 7)), 5484),
        2 => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 5484),
        _ => SocketAddr::new(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()), 5484),
    };
    for bytes in [payload, data] {
        if let Ok(p) = BeaconPayload::decode(bytes) {
            assert!(p.listeners.len() <= MAX_ENDPOINTS);
            assert_eq!(BeaconPayload::decode(&p.encode()).unwrap(), p);
            for ep in p.endpoints_from(from) {
                assert_eq!(ep.public_key, p.public_key);
                let same = match (ep.addr.ip(), from.ip()) {
                    (IpAddr::V4(a), IpAddr::V6(b)) | (IpAddr::V6(b), IpAddr::V4(a)) => {
                        b.to_ipv4_mapped() == Some(a)
                    }
                    (a, b) => a == b,
                };
                assert!(same, "{ep} taken from a beacon sent by {from}");
            }
        }
    }
    // Inside a beacon packet, as it arrives.
    let mut packet = Vec::new();
    if beacon::packet::encode(b"fuzzfuzz", payload, &mut packet).is_ok() {
        let p = beacon::packet::decode(&packet).unwrap();
        let _ = BeaconPayload::decode(p.data);
    }
});
