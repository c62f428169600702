//! The STUN responder under its rate limit, driven by a script: each step
//! takes a source (which of a few /24s and hosts, or IPv6 /56s), a time
//! advance and a datagram (arbitrary bytes, or a valid Binding request with
//! fuzzed attributes). Checks: no panic; the rate-limit table stays within
//! its capacity; every answer decodes, goes back to the source (or its
//! RESPONSE-PORT) and names it in XOR-MAPPED-ADDRESS; the answers never
//! exceed what the global bucket allows for the time elapsed.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nat_traversal::stun::{
    AddressPair, Message, RateLimitConfig, Responder, ResponderConfig,
};

fuzz_target!(|data: &[u8]| {
    let pair = AddressPair {
        primary: "203.0.113.1:3478".parse().unwrap(),
        alternate: "203.0.113.2:3479".parse().unwrap(),
    };
    let cfg = RateLimitConfig::default()
        .table_capacity(8)
        .prefix_burst(3)
        .prefix_rate(1.0)
        .global_burst(10)
        .global_rate(4.0);
    let with_pair = data.first().is_some_and(|b| b & 1 == 1);
    let t0 = Instant::now();
    let mut r = Responder::new(
        with_pair.then_some(pair),
        ResponderConfig::default().rate_limit(Some(cfg)),
        t0,
    );
    let mut now = t0;
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 4 {
        let (src, adv, kind, len) = (rest[0], rest[1], rest[2], rest[3] as usize);
        rest = &rest[4..];
        let body = &rest[..len.min(rest.len())];
        rest = &rest[body.len()..];
        now += Duration::from_millis(u64::from(adv) * 10);
        let ip = if src & 0x80 == 0 {
            IpAddr::V4(Ipv4Addr::new(10, 0, src >> 4, src & 0x0f))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(src & 0x7f) << 4, 0, 0, 0, 1))
        };
        let from = SocketAddr::new(ip, 40000 + u16::from(src));
        let bytes = if kind & 1 == 0 {
            body.to_vec()
        } else {
            let mut m = Message::binding_request([kind; 12]);
            if kind & 2 != 0 {
                m.change_request = Some((kind & 4 != 0, kind & 8 != 0));
            }
            if kind & 16 != 0 {
                m.response_port = Some(u16::from(kind) << 8 | len as u16);
            }
            m.encode()
        };
        let local = pair.sockets()[usize::from(kind >> 6)];
        if let Some(reply) = r.handle_request(&bytes, from, local, now) {
            let m = Message::decode(&reply.bytes).expect("our answer decodes");
            assert_eq!(reply.to.ip(), from.ip());
            if m.error_code.is_none() {
                assert_eq!(m.xor_mapped_address, Some(from));
            }
            if !with_pair {
                assert_eq!(reply.from, local);
            }
        }
        assert!(r.tracked_prefixes() <= 8);
        let elapsed = (now - t0).as_secs_f64();
        assert!(r.stats().answered as f64 <= 10.0 + 4.0 * elapsed + 1e-6);
    }
});
