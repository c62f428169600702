//! The crust frame decoder (messages, heartbeats, hello, reject, close)
//! and the service beacon payload: never panic on any bytes, decoded
//! hellos and payloads re-encode to what decodes the same.
#![no_main]

use crust::proto::{BeaconPayload, Frame, Hello, decode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let max = 1 << 16;
    let mut rest = data;
    while let Ok(Some((frame, used))) = decode_frame(rest, max) {
        assert!(used > 0 && used <= rest.len());
        match &frame {
            Frame::Message(r) => assert!(r.end <= used && r.end - r.start <= max),
            Frame::Hello(h) => {
                let mut out = Vec::new();
                h.encode(&mut out);
                let (again, n) = decode_frame(&out, max).unwrap().unwrap();
                assert_eq!(n, out.len());
                assert_eq!(again, Frame::Hello(h.clone()));
            }
            _ => {}
        }
        rest = &rest[used..];
    }
    let _ = Hello::decode(data);
    if let Ok(p) = BeaconPayload::decode(data) {
        assert_eq!(BeaconPayload::decode(&p.encode()).unwrap(), p);
        let _ = p.endpoints_from("127.0.0.1:1".parse().unwrap());
    }
});
