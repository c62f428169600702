//! Fuzzes the uTP packet decoder: never panics; what decodes re-encodes to
//! a packet that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transport::utp::proto::packet::{Packet, MAX_DATAGRAM};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::decode(data) else {
        return;
    };
    // Re-encode what we understood (a SACK longer than 255 cannot occur).
    let mut out = vec![0u8; data.len() + MAX_DATAGRAM];
    let n = p.header.encode(p.sack, p.payload, &mut out);
    let q = Packet::decode(&out[..n]).expect("re-encoded packet decodes");
    assert_eq!(p.header, q.header);
    assert_eq!(p.sack, q.sack);
    assert_eq!(p.payload, q.payload);
});
