//! Attack: 400 authenticated connections while the application does not
//! accept. The accept queue fills, then every further dialler gets the
//! typed busy rejection at once (nothing hangs, no handshake slot stays
//! taken), and as soon as the application serves the queue again good
//! clients connect.

mod attack_common;

use std::sync::Arc;

use attack_common::*;
use transport::{Error, Identity, Listener, ListenerOptions, Stream};

const ATTACKERS: usize = 400;
const GOOD: usize = 40;
const GOOD_DURING: usize = 20;

#[test]
fn a_slow_acceptor_sheds_load_with_busy_and_recovers() {
    let options = ListenerOptions::default();
    let queue = options.accept_queue;
    let listener =
        Arc::new(Listener::bind_with(&Identity::generate(), "tcp://127.0.0.1:0", options).unwrap());
    let ep = listener.endpoints()[0];
    let fds = open_fds();

    // Authenticated attackers (real diallers, from 127.0.0.1) while nobody
    // accepts; each holds its stream open.
    let mut held = Vec::new();
    let mut busy = 0;
    for _ in 0..ATTACKERS {
        match Stream::direct_connect(&Identity::generate(), ep, T) {
            Ok(s) => held.push(s),
            Err(Error::Busy { .. }) => busy += 1,
            Err(e) => panic!("an attacker got {e}, not busy"),
        }
    }
    assert!(listener.queued_streams() <= queue);
    // No queued stream keeps a handshake slot (the last attacker's admission
    // record may still be in flight).
    wait_until("the slots are free", || listener.pending_handshakes() == 0);
    // An attacker whose first message passed the queue check while the one
    // before it was still proving itself may find its source's share used
    // up when its own admission record arrives: it is closed without a
    // rejection (its connect had already returned). So count the queue.
    let attackers_queued = listener.queued_streams();
    println!(
        "figure slow-acceptor: {attackers_queued} of {ATTACKERS} attackers queued \
         ({} connected, {busy} refused as busy at once)",
        held.len()
    );
    assert!(busy > 0 && attackers_queued <= held.len() && held.len() <= queue);
    // Good clients from another source while nobody accepts: the queue's
    // per-source share leaves them places (they wait there for `accept`).
    let mut during = Tally::default();
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..GOOD_DURING {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send(good_tcp(&ep, ip(OTHER))).unwrap());
    }
    // Wait until every good client is queued or has already failed (a
    // failure returns at once; a queued one waits for its echo).
    let mut early = 0;
    let start = std::time::Instant::now();
    loop {
        while let Ok(o) = rx.try_recv() {
            during.add(o);
            early += 1;
        }
        let queued = listener.queued_streams();
        if queued + early == attackers_queued + GOOD_DURING {
            break;
        }
        assert!(
            start.elapsed() < T,
            "good clients neither queued nor failed: queued {queued}, early {early}, \
             pending {}, attackers queued {}: {during:?}",
            listener.pending_handshakes(),
            attackers_queued
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // From the attacker's own source, the share is used up: busy at once.
    let same = good_tcp(&ep, ip(ATTACKER));
    println!(
        "figure slow-acceptor same-source while not accepting: {same:?} (its queue share is used up)"
    );
    assert!(matches!(same, Outcome::Busy));
    // The application serves again: it drains the attackers' streams and
    // echoes the good clients, who were waiting in the queue.
    let echo = Echoer::start(listener.clone());
    for _ in early..GOOD_DURING {
        during.add(rx.recv_timeout(T).unwrap());
    }
    during.print("slow-acceptor other-source (queued while not accepting)");
    during.assert_95("slow-acceptor other-source");
    // Right after the attackers stop being served (their streams accepted
    // and dropped), good clients from either source connect.
    drop(held);
    let mut after = Tally::default();
    let mut after_same = Tally::default();
    for _ in 0..GOOD {
        after.add(good_tcp(&ep, ip(OTHER)));
        after_same.add(good_tcp(&ep, ip(ATTACKER)));
    }
    after.print("slow-acceptor after, other-source");
    after_same.print("slow-acceptor after, same-source");
    after.assert_95("slow-acceptor after, other-source");
    after_same.assert_95("slow-acceptor after, same-source");
    drop(echo);
    wait_until("the queue is empty", || listener.queued_streams() == 0);
    wait_until("fds are back near baseline", || open_fds() <= fds + 8);
}
