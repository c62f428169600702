//! The punch core driven by a script of operations: authentic probes (with
//! and without ack, fresh, replayed, echoing what we sent or not) from the
//! listed address and from unlisted ones, probes with a byte changed,
//! truncated probes, our own probes reflected, arbitrary datagrams, peer
//! data, and time passing. The harness holds both sides' infos, so the
//! fuzzer reaches success, acks, candidates and proofs, not only rejection.
//! Checks: no panic; success only at an address that sent an authentic
//! probe; never success from altered or reflected probes alone.
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
    let (theirs_priv, theirs) = gen_rendezvous_info(vec![listed]);
    let mut now = Instant::now();
    let mut core = PunchCore::new(ours.clone(), theirs.clone(), PunchConfig::default(), now);
    let mut sent: Vec<u64> = Vec::new();
    let mut drain = |core: &mut PunchCore, now: Instant, sent: &mut Vec<u64>| {
        while let Some((_, p)) = core.poll_transmit(now) {
            sent.push(u64::from_be_bytes(p[6..14].try_into().unwrap()));
        }
    };
    drain(&mut core, now, &mut sent);
    let mut valid_from = Vec::new();
    let mut it = data.iter().copied();
    while let Some(op) = it.next() {
        let from = sources[usize::from(op & 3)];
        let arg = it.next().unwrap_or(0);
        let seq = u64::from(arg);
        let echo = if op & 0x80 != 0 {
            sent.get(usize::from(arg) % sent.len().max(1)).copied().unwrap_or(0)
        } else {
            0
        };
        match (op >> 2) & 7 {
            // An authentic probe from the peer.
            0 | 1 => {
                let p = encode_probe(&theirs_priv, &ours_pub, (op >> 2) & 1 == 1, seq, echo)
                    .expect("distinct secrets");
                core.handle_datagram(&p, from, now);
                valid_from.push(from);
            }
            // An authentic probe with one byte changed.
            2 => {
                let mut p = encode_probe(&theirs_priv, &ours_pub, true, seq, echo).unwrap();
                let i = 5 + usize::from(arg) % (p.len() - 5);
                p[i] ^= 1 | (arg >> 1);
                core.handle_datagram(&p, from, now);
            }
            // An authentic probe cut short.
            3 => {
                let p = encode_probe(&theirs_priv, &ours_pub, true, seq, echo).unwrap();
                core.handle_datagram(&p[..usize::from(arg) % p.len()], from, now);
            }
            // Our own probe reflected back.
            4 => {
                let p = encode_probe(&ours, &theirs, arg & 1 == 1, seq, echo).unwrap();
                core.handle_datagram(&p, from, now);
            }
            // Time passes.
            5 => {
                now += Duration::from_millis(u64::from(arg) * 10);
                core.handle_timeout(now);
            }
            // Peer data.
            6 => {
                core.handle_peer_data(from, now);
            }
            // Arbitrary bytes.
            _ => {
                let n = usize::from(arg) % 64;
                let bytes: Vec<u8> = it.by_ref().take(n).collect();
                core.handle_datagram(&bytes, from, now);
            }
        }
        drain(&mut core, now, &mut sent);
    }
    if let Some(Ok(punched)) = core.outcome() {
        assert!(
            valid_from.contains(&punched.peer_addr),
            "succeeded at {} which sent no authentic probe",
            punched.peer_addr
        );
    }
});
