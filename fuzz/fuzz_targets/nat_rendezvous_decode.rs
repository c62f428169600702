//! Rendezvous-info decoders on arbitrary bytes, binary and JSON: no panic;
//! what decodes passes `validate`, and re-encodes to bytes that decode to
//! the same info (unknown fields are skipped, so the bytes may differ).
#![no_main]
use libfuzzer_sys::fuzz_target;
use nat_traversal::PubRendezvousInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = PubRendezvousInfo::decode(data) {
        assert!(info.validate().is_ok());
        assert_eq!(PubRendezvousInfo::decode(&info.encode()).unwrap(), info);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(info) = serde_json::from_str::<PubRendezvousInfo>(text) {
            assert!(info.validate().is_ok());
            let again = serde_json::to_string(&info).unwrap();
            assert_eq!(serde_json::from_str::<PubRendezvousInfo>(&again).unwrap(), info);
        }
    }
});
