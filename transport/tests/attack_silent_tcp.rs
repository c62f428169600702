//! Attack: 1,000 silent TCP connections, opened as fast as the test can
//! (harsher than the probe's 100 per second) and held open, while good
//! clients connect from another source and from the attacker's own.
//!
//! A silent connection has made the least progress of all, so each newcomer
//! beyond the slots displaces the oldest silent one; a good client answers
//! at once and is never the one displaced.

mod attack_common;

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use attack_common::*;
use transport::{Identity, Listener, ListenerOptions};

const SILENT: usize = 1000;
const GOOD_EVERY: usize = 25;

#[test]
fn silent_connections_do_not_lock_good_clients_out() {
    let options = ListenerOptions::default();
    let slots = options.max_pending_handshakes;
    let listener =
        Arc::new(Listener::bind_with(&Identity::generate(), "tcp://127.0.0.1:0", options).unwrap());
    let ep = listener.endpoints()[0];
    let echo = Echoer::start(listener.clone());
    let (fds, rss) = (open_fds(), rss_kib());

    let mut silent: Vec<TcpStream> = Vec::with_capacity(SILENT);
    let (mut other, mut same) = (Tally::default(), Tally::default());
    let mut peak_rss = rss;
    for i in 0..SILENT {
        silent.push(tcp_from(ip(ATTACKER), ep.addr).unwrap());
        assert!(listener.pending_handshakes() <= slots);
        if i % GOOD_EVERY == 0 {
            other.add(good_tcp(&ep, ip(OTHER)));
            same.add(good_tcp(&ep, ip(ATTACKER)));
            peak_rss = peak_rss.max(rss_kib());
        }
    }
    other.print("silent-tcp other-source");
    same.print("silent-tcp same-source");
    println!(
        "figure silent-tcp: {SILENT} silent connections, fds +{}, rss +{} KiB at peak",
        open_fds() - fds,
        peak_rss.saturating_sub(rss)
    );
    other.assert_95("silent-tcp other-source");
    // Our own client ends (one per attacker) plus at most `slots` server
    // ends still held by the listener, plus a little slack.
    assert!(
        open_fds() <= fds + SILENT + slots + 16,
        "fds: {} from {fds}",
        open_fds()
    );
    assert!(
        peak_rss <= rss + 64 * 1024,
        "rss grew from {rss} KiB to {peak_rss} KiB"
    );
    assert_eq!(
        echo.accepted.load(Ordering::Relaxed),
        other.served + same.served
    );

    drop(silent);
    wait_until("the silent connections' slots are free", || {
        listener.pending_handshakes() == 0
    });
    wait_until("fds are back near baseline", || open_fds() <= fds + 8);
    assert!(matches!(good_tcp(&ep, ip(OTHER)), Outcome::Served));
}
