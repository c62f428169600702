//! The punch core driven by a script of operations: valid probes (with and
//! without ack) from the listed address and from unlisted ones (re-target),
//! probes with a wrong secret, truncated probes, arbitrary datagrams, and
//! time passing. The harness knows both secrets (it reads them from the
//! rendezvous infos), so the fuzzer reaches success, acks and re-targeting,
//! not only rejection. Checks: no panic; success only at an address that
//! sent a valid probe; never success from wrong-secret probes alone.
#![no_main]
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nat_traversal::gen_rendezvous_info;
use nat_traversal::punch::{PunchConfig, PunchCore, encode_probe};

fuzz_target!(|data: &[u8]| {
    let listed: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let sources: [SocketAddr; 4] = [
        listed,
        "203.0.113.9:4001".parse().unwrap(),
        "198.51.100.7:5000".parse().unwrap(),
        "[2001:db8::1]:4000".parse().unwrap(),
    ];
    let (ours, ours_pub) = gen_rendezvous_info(vec![]);
    let (_, theirs) = gen_rendezvous_info(vec![listed]);
    let (our_secret, their_secret) = (ours_pub.secret, theirs.secret);
    let mut now = Instant::now();
    let mut core = PunchCore::new(ours, theirs, PunchConfig::default(), now);
    while core.poll_transmit(now).is_some() {}
    let mut valid_from = Vec::new();
    let mut it = data.iter().copied();
    while let Some(op) = it.next() {
        let from = sources[usize::from(op & 3)];
        let arg = it.next().unwrap_or(0);
        match (op >> 2) & 7 {
            // A valid probe from the peer (sender: theirs, receiver: ours).
            0 | 1 => {
                let p = encode_probe(&their_secret, &our_secret, (op >> 2) & 1 == 1);
                if core.handle_datagram(&p, from, now) {
                    valid_from.push(from);
                }
            }
            // A probe with one byte of a secret wrong.
            2 => {
                let mut p = encode_probe(&their_secret, &our_secret, arg & 1 == 1);
                let i = 6 + usize::from(arg) % 32;
                p[i] ^= 1 | (arg >> 1);
                core.handle_datagram(&p, from, now);
            }
            // A valid probe cut short.
            3 => {
                let p = encode_probe(&their_secret, &our_secret, true);
                core.handle_datagram(&p[..usize::from(arg) % p.len()], from, now);
            }
            // Our own probe reflected back (secrets in the wrong order).
            4 => {
                let p = encode_probe(&our_secret, &their_secret, arg & 1 == 1);
                core.handle_datagram(&p, from, now);
            }
            // Time passes.
            5 => {
                now += Duration::from_millis(u64::from(arg) * 10);
                core.handle_timeout(now);
            }
            // Arbitrary bytes.
            _ => {
                let n = usize::from(arg) % 64;
                let bytes: Vec<u8> = it.by_ref().take(n).collect();
                core.handle_datagram(&bytes, from, now);
            }
        }
        while core.poll_transmit(now).is_some() {}
    }
    if let Some(Ok(punched)) = core.outcome() {
        assert!(
            valid_from.contains(&punched.peer_addr),
            "succeeded at {} which sent no valid probe",
            punched.peer_addr
        );
    }
});
