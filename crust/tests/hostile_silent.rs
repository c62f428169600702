//! Silent and idle peers against a running Service while good peers
//! exchange messages with it: streams that send their hello and then
//! nothing, streams that only ever heartbeat, and transport handshakes that
//! never send a hello (within the hello slots and beyond them). Bounds: see
//! `common::under_attack`.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crust::transport::wire::crust_frame;
use crust::{Limits, Protocol, Service};

mod common;

use common::{
    Bounds, T, Target, ended_within, hello_done, hostile, serial, under_attack, unknown_key,
};

const NETWORK: &str = "hostile-silent";

/// A fresh good client's connect and one echo, timed.
fn fresh_connect(target: &Target, p: Protocol) -> Result<Duration, String> {
    let client = Service::new_from_config(target.config.clone().beacon_enabled(false))
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let s = client
        .controller
        .connect_timeout(&target.endpoint(p), T)
        .map_err(|e| e.to_string())?;
    s.send(b"fresh").map_err(|e| e.to_string())?;
    s.recv_timeout(T).map_err(|e| e.to_string())?;
    Ok(t0.elapsed())
}

/// Waits for every stream to be ended by the target; returns the time from
/// `since` to the last end.
fn all_end(streams: &mut [crust::transport::Stream], since: Instant, limit: Duration) -> Duration {
    for (i, s) in streams.iter_mut().enumerate() {
        let left = limit
            .saturating_sub(since.elapsed())
            .max(Duration::from_millis(1));
        assert!(
            ended_within(s, left).is_some(),
            "silent stream {i} still open {limit:?} after"
        );
    }
    since.elapsed()
}

#[test]
fn hello_then_nothing() {
    let _serial = serial();
    let config = hostile(NETWORK);
    let limit = config.inactivity_timeout + Duration::from_secs(2);
    let target = Target::start(config);
    let eps = [
        target.endpoint(Protocol::Tcp),
        target.endpoint(Protocol::Utp),
    ];
    let n = 100;
    // The silent streams (both ends here) and one echo thread each, held
    // until the target declares them lost.
    let bounds = Bounds {
        peak_fds: 2 * n + 32,
        peak_threads: n + 8,
        peak_rss_kib: 64 * 1024,
    };
    under_attack("hello then nothing", &target, bounds, || {
        let mut silent: Vec<_> = (0..n)
            .map(|i| hello_done(&eps[usize::from(i % 4 == 3)], NETWORK).expect("hellos"))
            .collect();
        let last_hello = Instant::now();
        let fresh =
            fresh_connect(&target, Protocol::Tcp).expect("a fresh connect while 100 sit silent");
        let took = all_end(&mut silent, last_hello, limit);
        println!(
            "figure hello then nothing: {n} silent streams all ended {took:?} after the last hello \
             (inactivity timeout {:?}, bound {limit:?}); a fresh connect meanwhile took {fresh:?}",
            target.config.inactivity_timeout
        );
    });
    assert_eq!(
        target.endings().get("lost"),
        Some(&n),
        "{:?}",
        target.endings()
    );
}

#[test]
fn heartbeats_only() {
    let _serial = serial();
    let target = Target::start(hostile(NETWORK));
    let eps = [
        target.endpoint(Protocol::Tcp),
        target.endpoint(Protocol::Utp),
    ];
    let n = 50;
    let hold = 3 * target.config.inactivity_timeout;
    let bounds = Bounds {
        peak_fds: 2 * n + 32,
        peak_threads: n + 8,
        peak_rss_kib: 64 * 1024,
    };
    under_attack("heartbeats only", &target, bounds, || {
        let mut idle: Vec<_> = (0..n)
            .map(|i| hello_done(&eps[usize::from(i % 4 == 3)], NETWORK).expect("hellos"))
            .collect();
        let t0 = Instant::now();
        let mut beats = 0;
        while t0.elapsed() < hold {
            for s in &mut idle {
                s.write_all(&[crust_frame::HEARTBEAT]).expect("heartbeat");
                beats += 1;
            }
            // Heartbeats at the target's own rate (a third of its timeout
            // would do; it asks for its heartbeat period).
            std::thread::sleep(target.config.heartbeat_period);
        }
        // Heartbeats keep a peer alive: none was dropped.
        assert!(
            target.live.load(Ordering::Relaxed) >= n + 2,
            "idle but heartbeating peers were dropped: {:?}",
            target.endings()
        );
        for s in &mut idle {
            s.write_all(&[crust_frame::CLOSE]).expect("close");
        }
        println!(
            "figure heartbeats only: {n} streams sent {beats} heartbeats over {hold:?}, all kept, then closed"
        );
    });
    assert_eq!(
        target.endings().get("closed"),
        Some(&(n + 2)),
        "{:?}",
        target.endings()
    );
}

#[test]
fn no_hello_within_and_beyond_the_hello_slots() {
    let _serial = serial();
    let slots = 64;
    let config = hostile(NETWORK).limits(Limits::default().max_pending_handshakes(slots));
    let timeout = config.handshake_timeout;
    let target = Target::start(config);
    let eps = [
        target.endpoint(Protocol::Tcp),
        target.endpoint(Protocol::Utp),
    ];
    for n in [slots / 2, 3 * slots] {
        // Beyond the slots, the longest waiting gives its slot up to each
        // newcomer: every silent stream still ends within one handshake
        // timeout (plus 2 s margin) of the last, and none holds up a good
        // client.
        let limit = timeout + Duration::from_secs(2);
        let name = format!("{n} without a hello ({slots} hello slots)");
        let bounds = Bounds {
            peak_fds: 2 * n + 32,
            peak_threads: 8,
            peak_rss_kib: 64 * 1024,
        };
        under_attack(&name, &target, bounds, || {
            let mut silent: Vec<_> = (0..n)
                .map(|i| unknown_key(&eps[usize::from(i % 4 == 3)]).expect("handshake"))
                .collect();
            let last = Instant::now();
            // Fresh good clients meanwhile connect, within the slots and
            // beyond them.
            let fresh: Vec<_> = (0..4)
                .map(|_| fresh_connect(&target, Protocol::Tcp))
                .collect();
            let took = all_end(&mut silent, last, limit);
            println!(
                "figure {name}: all ended {took:?} after the last handshake (handshake timeout {:?}, \
                 bound {limit:?}); fresh connects meanwhile: {fresh:?}",
                target.config.handshake_timeout
            );
            assert!(fresh.iter().all(|r| r.is_ok()), "{fresh:?}");
        });
    }
}
