//! STUN decoder, responder and client transaction on arbitrary bytes: no
//! panic, and whatever decodes re-encodes to something that decodes the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nat_traversal::stun::{respond, AddressPair, BindingTransaction, Message, StunConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode()).expect("re-encoded message decodes");
        assert_eq!(again.xor_mapped_address, m.xor_mapped_address);
        assert_eq!(again.mapped_address, m.mapped_address);
        assert_eq!(again.transaction_id, m.transaction_id);
    }
    let from = "192.0.2.7:5000".parse().unwrap();
    let pair = AddressPair {
        primary: "203.0.113.1:3478".parse().unwrap(),
        alternate: "203.0.113.2:3479".parse().unwrap(),
    };
    let _ = respond(data, from, pair.primary, Some(pair), Some("fuzz"));
    let _ = respond(data, from, pair.primary, None, None);
    let now = std::time::Instant::now();
    let mut t = BindingTransaction::new([0; 12], None, StunConfig::default(), now);
    let _ = t.poll_transmit(now);
    let _ = t.handle_input(data, from);
});
