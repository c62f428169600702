//! Oversized and malformed crust frames from peers with a valid transport
//! handshake, before and after the hellos, while good peers exchange
//! messages with the Service. Each bad stream must be ended by the target
//! (within its handshake or inactivity timeout plus a margin), never
//! delivered as a message, never stall the good exchange. Bounds: see
//! `common::under_attack`.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crust::proto::{CRUST_VERSION, MAX_HELLO_LEN, encode_message_header};
use crust::transport::wire::crust_frame;
use crust::{Endpoint, Protocol};

mod common;

use common::{
    Bounds, Target, ended_within, hello_bytes, hello_done, hostile, serial, under_attack,
    unknown_key,
};

const NETWORK: &str = "hostile-frames";
/// The target's message maximum (`common::hostile`).
const MAX: u32 = 64 * 1024;

/// Bytes sent after a valid hello exchange.
fn after_hello() -> Vec<(&'static str, Vec<u8>)> {
    let mut trickled = encode_message_header(MAX).to_vec();
    trickled.extend_from_slice(&[1; 1000]);
    vec![
        (
            "message over the maximum",
            encode_message_header(MAX + 1).to_vec(),
        ),
        ("message of 4 GiB", encode_message_header(u32::MAX).to_vec()),
        ("unknown frame type", vec![0x7f, 1, 2, 3]),
        ("type byte 0", vec![0x00; 8]),
        ("a second hello", hello_bytes(NETWORK)),
        (
            "a reject mid-stream",
            vec![crust_frame::REJECT, 1, 3, b'b', b'a', b'd'],
        ),
        (
            "frames after close",
            [&[crust_frame::CLOSE][..], &encode_message_header(1), b"x"].concat(),
        ),
        ("a full message body never finished", trickled),
        (
            "a truncated header then nothing",
            vec![crust_frame::MESSAGE, 0, 0],
        ),
    ]
}

/// Bytes sent instead of a valid hello.
fn instead_of_hello() -> Vec<(&'static str, Vec<u8>)> {
    let mut bad_utf8 = vec![crust_frame::HELLO, 0, 9, CRUST_VERSION, 3, 0xff, 0xfe, 0xfd];
    bad_utf8.extend_from_slice(&[0, 0, 0, 1, 0]);
    let mut too_many = vec![
        crust_frame::HELLO,
        0,
        0,
        CRUST_VERSION,
        1,
        b'n',
        0,
        0,
        0,
        1,
        200,
    ];
    too_many.extend_from_slice(&[0; 64]);
    let l = (too_many.len() - 3) as u16;
    too_many[1..3].copy_from_slice(&l.to_be_bytes());
    let big = (MAX_HELLO_LEN + 1) as u16;
    vec![
        (
            "a hello over the maximum length",
            vec![crust_frame::HELLO, (big >> 8) as u8, big as u8],
        ),
        (
            "a hello of 65535 bytes",
            vec![crust_frame::HELLO, 0xff, 0xff],
        ),
        ("a hello whose name is not UTF-8", bad_utf8),
        ("a hello with 200 endpoints", too_many),
        ("a hello cut short", hello_bytes(NETWORK)[..6].to_vec()),
        (
            "a message first",
            [&encode_message_header(2)[..], b"hi"].concat(),
        ),
        ("a heartbeat first", vec![crust_frame::HEARTBEAT]),
        ("a reject first", vec![crust_frame::REJECT, 1, 0]),
        ("unknown type first", vec![0xee; 32]),
    ]
}

/// Sends `bytes` (after the hellos if `hello`), then waits for the target
/// to end the stream. Returns how long it took.
fn attack_once(
    ep: &Endpoint,
    hello: bool,
    bytes: &[u8],
    limit: Duration,
) -> Result<Duration, String> {
    let mut s = if hello {
        hello_done(ep, NETWORK).map_err(|e| format!("hellos: {e}"))?
    } else {
        unknown_key(ep).map_err(|e| format!("handshake: {e}"))?
    };
    s.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    ended_within(&mut s, limit).ok_or_else(|| format!("still open after {limit:?}"))
}

#[test]
fn malformed_and_oversized_frames() {
    let _serial = serial();
    let config = hostile(NETWORK);
    // A stream that breaks the protocol is ended at once; one left waiting
    // for bytes that never come ends at the inactivity timeout (after the
    // hellos) or the handshake timeout (before): margin 2 s.
    let limit_after = config.inactivity_timeout + Duration::from_secs(2);
    let limit_before = config.handshake_timeout + Duration::from_secs(2);
    let target = Target::start(config);
    let eps = [
        target.endpoint(Protocol::Tcp),
        target.endpoint(Protocol::Utp),
    ];
    let rounds = 6;
    // Two attacker threads, one connection open at a time each.
    let bounds = Bounds {
        peak_fds: 2 * 2 + 16,
        peak_threads: 2 + 2 + 4,
        peak_rss_kib: 64 * 1024,
    };
    let results = under_attack("malformed frames", &target, bounds, || {
        let spawn = |hello: bool, cases: Vec<(&'static str, Vec<u8>)>, limit: Duration| {
            std::thread::spawn(move || {
                let mut out: Vec<(&'static str, Protocol, Result<Duration, String>)> = Vec::new();
                for r in 0..rounds {
                    let ep = eps[r % 2];
                    for (name, bytes) in &cases {
                        out.push((name, ep.protocol, attack_once(&ep, hello, bytes, limit)));
                    }
                }
                out
            })
        };
        let a = spawn(true, after_hello(), limit_after);
        let b = spawn(false, instead_of_hello(), limit_before);
        let mut all = a.join().unwrap();
        all.extend(b.join().unwrap());
        all
    });
    let mut worst: std::collections::BTreeMap<(&str, Protocol), Duration> = Default::default();
    let mut failed = Vec::new();
    for (name, p, r) in &results {
        match r {
            Ok(d) => {
                let w = worst.entry((name, *p)).or_default();
                *w = (*w).max(*d);
            }
            Err(e) => failed.push(format!("{name} over {p}: {e}")),
        }
    }
    for ((name, p), d) in &worst {
        println!("figure malformed frames: {name} over {p}: ended within {d:?}");
    }
    assert!(failed.is_empty(), "{failed:?}");
    // Only the after-hello attackers and the two good peers were accepted;
    // none of their bad bytes reached the application as a message (the
    // echo would have sent them back and the stream would have ended
    // "closed", not with a protocol error or loss).
    let after = after_hello().len() * rounds;
    assert_eq!(target.accepted.load(Ordering::Relaxed), 2 + after);
    let endings = target.endings();
    println!("figure malformed frames: endings of accepted streams {endings:?}");
}
