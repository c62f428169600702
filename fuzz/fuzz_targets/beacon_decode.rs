//! Fuzzes the beacon datagram decoder and the core's handling of datagrams:
//! never a panic, and whatever decodes re-encodes to the same bytes.
#![no_main]

use std::time::{Duration, Instant};

use beacon::core::{BeaconCore, CoreConfig, Outcome};
use beacon::packet::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode(data) {
        let mut out = Vec::new();
        encode(p.id, p.data, &mut out).expect("a decoded packet is within the limits");
        assert_eq!(out, data, "decode/encode round trip");
    }
    let t0 = Instant::now();
    let mut core = BeaconCore::new(
        CoreConfig::new(Duration::from_secs(1)),
        vec![0x42; 8],
        b"me",
        t0,
    )
    .expect("valid core");
    match core.handle_datagram(t0, data) {
        Outcome::Message(m) => assert_eq!(decode(data), Ok(m)),
        Outcome::OwnEcho => assert!(decode(data).is_ok_and(|p| p.id == [0x42; 8])),
        Outcome::Dropped(_) => assert!(decode(data).is_err()),
    }
    assert_eq!(core.stats().received, 1);
    // The schedule still advances after any input.
    assert!(core.poll_transmit(t0).is_some());
});
