//! Attack: handshakes trickled one byte a second (a real first message,
//! byte by byte), while good clients connect. The first-message deadline
//! (3 s by default, apart from the 10 s handshake timeout) closes every
//! trickler long before its message is complete.

mod attack_common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use attack_common::*;
use transport::proto::Initiator;
use transport::{Identity, Listener, ListenerOptions, Protocol};

const TRICKLERS: usize = 50;

fn closed_by_peer(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let closed = match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn trickled_handshakes_are_cut_at_the_first_message_deadline() {
    let options = ListenerOptions::default();
    let deadline = options.first_message_timeout;
    let listener =
        Arc::new(Listener::bind_with(&Identity::generate(), "tcp://127.0.0.1:0", options).unwrap());
    let ep = listener.endpoints()[0];
    let _echo = Echoer::start(listener.clone());
    let (_, msg1) =
        Initiator::start(&Identity::generate(), &ep.public_key, Protocol::Tcp, b"").unwrap();

    let mut tricklers: Vec<Option<TcpStream>> = (0..TRICKLERS)
        .map(|_| Some(tcp_from(ip(ATTACKER), ep.addr).unwrap()))
        .collect();
    let (mut other, mut same) = (Tally::default(), Tally::default());
    let mut sent = 0;
    let mut cut_after = Vec::new();
    // One byte a second each: the pace is the attack, not a wait for an
    // event. It ends when the listener has closed every trickler (the hang
    // guard is the message's length: a trickler that finishes fails).
    while tricklers.iter().any(Option::is_some) {
        assert!(
            sent < msg1.len(),
            "a trickler delivered its whole first message"
        );
        for slot in tricklers.iter_mut() {
            let Some(s) = slot else { continue };
            if closed_by_peer(s) || (&*s).write_all(&msg1[sent..sent + 1]).is_err() {
                cut_after.push(sent);
                *slot = None;
            }
        }
        sent += 1;
        for _ in 0..4 {
            other.add(good_tcp(&ep, ip(OTHER)));
            same.add(good_tcp(&ep, ip(ATTACKER)));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let most = cut_after.iter().max().copied().unwrap_or(0);
    other.print("trickle other-source");
    same.print("trickle same-source");
    println!(
        "figure trickle: {TRICKLERS} tricklers cut after at most {most} of {} bytes (deadline {deadline:?})",
        msg1.len()
    );
    other.assert_95("trickle other-source");
    assert!(most < msg1.len());
    wait_until("the tricklers' slots are free", || {
        listener.pending_handshakes() == 0
    });
}
