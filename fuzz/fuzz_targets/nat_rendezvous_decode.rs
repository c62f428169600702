//! Rendezvous-info decoder on arbitrary bytes: no panic, and what decodes
//! re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nat_traversal::PubRendezvousInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = PubRendezvousInfo::decode(data) {
        assert_eq!(info.encode(), data);
    }
});
