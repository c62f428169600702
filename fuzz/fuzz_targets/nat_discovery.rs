//! The RFC 5780 discovery core driven by a script: each step either
//! answers the current request (success with a fuzzed mapped address and
//! optional OTHER-ADDRESS, or an error response), feeds arbitrary bytes
//! from an arbitrary source, fails the send, or lets time pass. Checks: no
//! panic; it always ends (every step is bounded by its transaction's
//! timeout); the report names only the configured servers (and the
//! alternate it was told of).
#![no_main]
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nat_traversal::discovery::NatDiscovery;
use nat_traversal::stun::{Class, Message, StunConfig};

fuzz_target!(|data: &[u8]| {
    let servers: Vec<SocketAddr> = vec![
        "203.0.113.1:3478".parse().unwrap(),
        "203.0.113.5:3478".parse().unwrap(),
    ];
    let cfg = StunConfig::default()
        .rto(Duration::from_millis(100))
        .max_transmits(3)
        .timeout(Duration::from_millis(500));
    let t0 = Instant::now();
    let mut d = NatDiscovery::new(
        servers.clone(),
        vec!["192.168.1.2:4000".parse().unwrap()],
        cfg.clone(),
        cfg,
        u64::from(data.first().copied().unwrap_or(0)),
        t0,
    );
    let mut now = t0;
    let mut last: Option<(SocketAddr, Vec<u8>)> = None;
    let mut alternates = Vec::new();
    let mut rest = data.get(1..).unwrap_or_default();
    let mut steps = 0;
    while d.outcome().is_none() {
        steps += 1;
        assert!(steps < 10_000, "discovery does not end");
        while let Some(t) = d.poll_transmit(now) {
            last = Some(t);
        }
        let (op, arg) = match rest {
            [op, arg, tail @ ..] => {
                rest = tail;
                (*op, *arg)
            }
            _ => (0xff, 0),
        };
        match op % 4 {
            0 if last.is_some() => {
                let (to, req) = last.clone().unwrap();
                let Ok(req) = Message::decode(&req) else { continue };
                let mut m = Message {
                    class: Some(if arg & 1 == 0 { Class::Success } else { Class::Error }),
                    method: req.method,
                    transaction_id: req.transaction_id,
                    ..Message::default()
                };
                if arg & 1 == 1 {
                    m.error_code = Some((420, "x".into()));
                } else if arg & 2 == 0 {
                    m.xor_mapped_address =
                        Some(SocketAddr::from(([198, 51, 100, arg], 4000 + u16::from(arg))));
                }
                if arg & 4 != 0 {
                    let o = SocketAddr::from(([203, 0, 113, arg | 1], 3479));
                    alternates.push(o);
                    m.other_address = Some(o);
                }
                d.handle_input(&m.encode(), to, now);
            }
            1 => {
                let n = usize::from(arg).min(rest.len());
                let from = SocketAddr::from(([203, 0, 113, arg], 3478));
                d.handle_input(&rest[..n], from, now);
                rest = &rest[n..];
            }
            2 if last.is_some() => {
                let (to, _) = last.clone().unwrap();
                d.handle_send_error(to, "unreachable".into(), now);
            }
            _ => {
                if let Some(t) = d.poll_timeout() {
                    now = now.max(t);
                    d.handle_timeout(now);
                }
            }
        }
    }
    let r = d.outcome().unwrap();
    for (s, _) in &r.stun {
        assert!(servers.contains(s));
    }
    for (s, _) in &r.seen {
        assert!(servers.contains(s) || alternates.contains(s));
    }
});
