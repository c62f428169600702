//! Valid transport handshakes from unknown keys against a running Service,
//! while good peers exchange messages with it: keys it never saw that then
//! speak crust properly, send no hello, or name another network or crust
//! version. Bounds: see `common::under_attack`.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crust::proto::{CRUST_VERSION, Frame, Hello};
use crust::transport::wire::RejectCode;
use crust::{Endpoint, Protocol};

mod common;

use common::{Bounds, Target, hello_done, hostile, read_answer, serial, under_attack, unknown_key};

const NETWORK: &str = "hostile-keys";

/// A fresh key that speaks crust properly: hello, one message, its echo,
/// close.
fn proper(ep: &Endpoint) -> Result<(), String> {
    let mut s = hello_done(ep, NETWORK).map_err(|e| e.to_string())?;
    let mut msg = crust::proto::encode_message_header(3).to_vec();
    msg.extend_from_slice(b"hey");
    s.write_all(&msg).map_err(|e| e.to_string())?;
    loop {
        match read_answer(&mut s).map_err(|e| e.to_string())? {
            Frame::Heartbeat => continue,
            Frame::Message(_) => return Ok(()),
            other => return Err(format!("expected the echo, got {other:?}")),
        }
    }
}

/// A hello the target must refuse with `code`.
fn refused(ep: &Endpoint, hello: &Hello, code: RejectCode) -> Result<(), String> {
    let mut s = unknown_key(ep).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    hello.encode(&mut out);
    s.write_all(&out).map_err(|e| e.to_string())?;
    match read_answer(&mut s).map_err(|e| e.to_string())? {
        Frame::Reject { code: c, .. } if c == code => Ok(()),
        other => Err(format!("expected a {code:?} reject, got {other:?}")),
    }
}

#[test]
fn unknown_keys_proper_silent_and_foreign() {
    let _serial = serial();
    let target = Target::start(hostile(NETWORK));
    let eps = [
        target.endpoint(Protocol::Tcp),
        target.endpoint(Protocol::Utp),
    ];
    // Four attacker threads, each with at most one connection open at a
    // time, plus their ends at the target; the accepted ones have an echo
    // thread each while they live.
    let bounds = Bounds {
        peak_fds: 4 * 2 + 16,
        peak_threads: 4 + 4 + 4,
        peak_rss_kib: 64 * 1024,
    };
    let per_thread = 100;
    let failures = under_attack("unknown keys", &target, bounds, || {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut failed = Vec::new();
                    for i in 0..per_thread {
                        // uTP for one connection in four.
                        let ep = eps[usize::from(i % 4 == 3)];
                        let r = match (t + i) % 4 {
                            0 | 1 => proper(&ep),
                            2 => unknown_key(&ep).map(drop).map_err(|e| e.to_string()),
                            _ if i % 2 == 0 => refused(
                                &ep,
                                &Hello {
                                    version: CRUST_VERSION,
                                    network: "someone-else".into(),
                                    inactivity_timeout: Duration::from_secs(30),
                                    listeners: Vec::new(),
                                },
                                RejectCode::OtherNetwork,
                            ),
                            _ => refused(
                                &ep,
                                &Hello {
                                    version: CRUST_VERSION.wrapping_add(1),
                                    network: NETWORK.into(),
                                    inactivity_timeout: Duration::from_secs(30),
                                    listeners: Vec::new(),
                                },
                                RejectCode::CrustVersion,
                            ),
                        };
                        if let Err(e) = r {
                            failed.push(format!("{ep}: {e}"));
                        }
                    }
                    failed
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    println!(
        "figure unknown keys: {} connections from fresh keys, {} answered wrongly",
        4 * per_thread,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "first failures: {:?}",
        &failures[..failures.len().min(5)]
    );
    // Every proper one was accepted (plus the two good peers); the silent
    // and foreign ones never were.
    assert_eq!(
        target.accepted.load(Ordering::Relaxed),
        2 + 4 * per_thread / 2
    );
}
