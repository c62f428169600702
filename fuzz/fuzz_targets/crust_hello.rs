//! The crust hello, as the service reads it from a new stream: a hello
//! frame header, then the body. Never a panic; a decoded hello re-encodes
//! to bytes that decode the same, within the hello size limit.
#![no_main]

use crust::proto::{Frame, Hello, MAX_HELLO_LEN, decode_frame};
use libfuzzer_sys::fuzz_target;
use transport::wire::crust_frame;

fuzz_target!(|data: &[u8]| {
    // The body on its own.
    if let Ok(h) = Hello::decode(data) {
        let mut out = Vec::new();
        h.encode(&mut out);
        assert!(out.len() - 3 <= MAX_HELLO_LEN);
        assert_eq!(Hello::decode(&out[3..]).unwrap(), h);
    }
    // The body behind a correct frame header, as read off the wire.
    let mut framed = vec![crust_frame::HELLO];
    framed.extend_from_slice(&(data.len().min(u16::MAX as usize) as u16).to_be_bytes());
    framed.extend_from_slice(&data[..data.len().min(u16::MAX as usize)]);
    match decode_frame(&framed, 1 << 16) {
        Ok(Some((Frame::Hello(h), used))) => {
            assert_eq!(used, framed.len());
            assert_eq!(Hello::decode(data).unwrap(), h);
        }
        Ok(Some((other, _))) => panic!("a hello frame decoded as {other:?}"),
        Ok(None) => panic!("a whole hello frame asked for more bytes"),
        Err(_) => assert!(Hello::decode(data).is_err()),
    }
});
