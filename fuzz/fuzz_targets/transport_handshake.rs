//! Arbitrary first frames into the handshake responder, and arbitrary
//! answers into the initiator.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transport::proto::{Initiator, Responder, check_handshake_frame_len};
use transport::{Identity, Protocol};

fuzz_target!(|data: &[u8]| {
    let a = Identity::from_secret_bytes([1; 32]);
    let b = Identity::from_secret_bytes([2; 32]);
    if data.len() >= 2 {
        let _ = check_handshake_frame_len([data[0], data[1]]);
    }
    let _ = Responder::respond(&b, Protocol::Tcp, data);
    let (init, _) = Initiator::start(&a, &b.public_key(), Protocol::Tcp, b"").unwrap();
    let _ = init.finish(data);
});
